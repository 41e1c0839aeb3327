import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { FastifyInstance, FastifyReply, FastifyRequest, preValidationAsyncHookHandler } from "fastify";
import {
  type ApiRateLimit,
  type AuthorizeResponse,
  ExecutionBucket,
  type Limits,
  type Principal,
  RateLimitExceededSchema,
} from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import type { GatewayClients } from "./clients.js";
import { HttpError } from "./errors.js";

export { ExecutionBucket };

/** Scopes the REST routes ask for (shared product decision). */
export type Scope =
  | "workflows:execute"
  | "workflows:read"
  | "workflows:write"
  | "logs:read"
  | "notifications:read"
  | "notifications:write"
  | "tokens:read"
  | "tokens:write";

export interface AuthorizeOptions {
  /** The workflow-execution bucket the request consumes (execute routes). */
  bucket?: ExecutionBucket;
  /** Ask for both execution buckets and the usage, for responses carrying the `limits` block. */
  includeLimits?: boolean;
}

/** X-RateLimit-* (seed 002): the API-call bucket after this request. */
function setRateLimitHeaders(reply: FastifyReply, api: ApiRateLimit | undefined): void {
  if (!api) return;
  reply.header("x-ratelimit-limit", String(api.limitPerMinute));
  reply.header("x-ratelimit-remaining", String(api.remaining));
  if (api.resetAt) reply.header("x-ratelimit-reset", timestampDate(api.resetAt).toISOString());
}

/**
 * An empty bucket answers 429 with Retry-After (whole seconds) and `retryAfter` (epoch ms) in the
 * body (DESIGN §5b); the auth service puts both in the RateLimitExceeded error detail.
 */
export function sendRateLimited(
  request: FastifyRequest,
  reply: FastifyReply,
  err: ConnectError,
): FastifyReply {
  const [detail] = err.findDetails(RateLimitExceededSchema);
  const retryAfterMs = Number(detail?.retryAfterMs ?? 1000n);
  const retryAt = detail?.retryAt ? timestampDate(detail.retryAt).getTime() : Date.now() + retryAfterMs;
  setRateLimitHeaders(reply, detail?.api);
  reply.header("retry-after", String(Math.max(1, Math.ceil(retryAfterMs / 1000))));
  return reply.code(429).send({
    error: err.rawMessage,
    code: "resource_exhausted",
    requestId: request.id,
    retryAfter: retryAt,
  });
}

/**
 * Resolves the request's `x-api-key` to its principal, checked for `action` on `resourceId`, and
 * consumes the request's rate-limit tokens. Unknown, revoked or expired keys (401), missing scopes
 * (403), insufficient credits (400) and a limiter that cannot be reached (503, fail closed) come
 * back from the auth service as Connect codes and are mapped by the error handler. With the
 * gateway's authorization cache (gateway/auth-cache.ts) `auth.authorize` answers a busy key from
 * memory; refusals always come from the auth service.
 */
export async function authorize(
  request: FastifyRequest,
  auth: GatewayClients["auth"],
  action: Scope,
  resourceId = "",
  opts: AuthorizeOptions = {},
): Promise<AuthorizeResponse> {
  const header = request.headers["x-api-key"];
  const apiKey = (Array.isArray(header) ? header[0] : header)?.trim() ?? "";
  if (apiKey === "") throw new HttpError(401, "missing x-api-key header");
  const res = await auth.authorize({
    apiKey,
    action,
    resourceId,
    bucket: opts.bucket ?? ExecutionBucket.UNSPECIFIED,
    includeLimits: opts.includeLimits ?? false,
  });
  if (!res.principal) throw new Error("auth service answered Authorize without a principal");
  return res;
}

const authorized = new WeakMap<FastifyRequest, AuthorizeResponse>();

/**
 * A preValidation hook that authorizes the request before its body or query is validated, so a
 * caller without a valid key learns nothing about the route's input rules (401/403 before 400).
 * `resourceFrom` picks the targeted workflow id from the parsed, not yet validated, body.
 */
export function requireScope(
  auth: GatewayClients["auth"],
  action: Scope,
  resourceFrom?: (body: unknown) => unknown,
  opts: AuthorizeOptions = {},
): preValidationAsyncHookHandler {
  return async function checkScope(request, reply) {
    const resource = resourceFrom?.(request.body);
    let res: AuthorizeResponse;
    try {
      res = await authorize(request, auth, action, typeof resource === "string" ? resource : "", opts);
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.ResourceExhausted) {
        return sendRateLimited(request, reply, err);
      }
      throw err;
    }
    authorized.set(request, res);
    setRateLimitHeaders(reply, res.limits?.api);
  };
}

const refusalReasons = new WeakMap<FastifyRequest, string>();

/**
 * A 401/403 this gateway decides after the key was authorized (a workspaceId other than the key's,
 * an app key on an admin route) goes to the token's audit trail, like the refusals the auth service
 * decides itself. Two app-wide hooks that only act on such answers: the reason is read from the
 * error body as it is sent, and recorded fire-and-forget once the answer is out, so it never delays
 * or fails the request, and an auth service that is down only costs a log line.
 */
export function installRefusalAudit(app: FastifyInstance, auth: GatewayClients["auth"]): void {
  app.addHook("onSend", async (request, reply, payload) => {
    const status = reply.statusCode;
    if ((status === 401 || status === 403) && authorized.has(request)) {
      const route = `${request.method} ${request.routeOptions.url ?? request.url.split("?")[0]}`;
      refusalReasons.set(request, `${route}: ${errorMessageOf(payload) ?? `HTTP ${status}`}`);
    }
    return payload;
  });
  app.addHook("onResponse", async (request, reply) => {
    const reason = refusalReasons.get(request);
    const principal = authorized.get(request)?.principal;
    if (reason === undefined || !principal) return;
    const status = reply.statusCode;
    auth
      .recordRefusal({ tenantId: principal.tenantId, tokenId: principal.tokenId, status, reason })
      .catch((err: unknown) => request.log.warn({ err, status }, "could not audit a gateway refusal"));
  });
}

/** The `error` of a JSON error body as sent, if it is one. */
function errorMessageOf(payload: unknown): string | undefined {
  if (typeof payload !== "string") return undefined;
  try {
    const error = (JSON.parse(payload) as { error?: unknown }).error;
    return typeof error === "string" && error !== "" ? error : undefined;
  } catch {
    return undefined;
  }
}

function authorizedOf(request: FastifyRequest): AuthorizeResponse {
  const res = authorized.get(request);
  if (!res) throw new Error("route is missing its requireScope hook");
  return res;
}

/** The principal `requireScope` resolved for this request. */
export function principalOf(request: FastifyRequest): Principal {
  return authorizedOf(request).principal as Principal;
}

/** The rate limits and usage `requireScope` got for this request (see `includeLimits`). */
export function limitsOf(request: FastifyRequest): Limits | undefined {
  return authorizedOf(request).limits;
}

/** The `workflowId` field of a JSON body, whatever its validity. */
export function workflowIdOfBody(body: unknown): unknown {
  return typeof body === "object" && body !== null
    ? (body as { workflowId?: unknown }).workflowId
    : undefined;
}
