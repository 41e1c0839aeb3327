import type { FastifyRequest, preValidationAsyncHookHandler } from "fastify";
import type { Principal } from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import type { GatewayClients } from "./clients.js";
import { HttpError } from "./errors.js";

/** Scopes the REST routes ask for (shared product decision). */
export type Scope = "workflows:execute" | "workflows:read" | "logs:read" | "tokens:write";

/**
 * Resolves the request's `x-api-key` to its principal, checked for `action` on `resourceId`.
 * Unknown, revoked or expired keys (401) and missing scopes (403) come back from the auth service
 * as Connect codes and are mapped by the error handler.
 */
export async function authorize(
  request: FastifyRequest,
  auth: GatewayClients["auth"],
  action: Scope,
  resourceId = "",
): Promise<Principal> {
  const header = request.headers["x-api-key"];
  const apiKey = (Array.isArray(header) ? header[0] : header)?.trim() ?? "";
  if (apiKey === "") throw new HttpError(401, "missing x-api-key header");
  const { principal } = await auth.authorize({ apiKey, action, resourceId });
  if (!principal) throw new Error("auth service answered Authorize without a principal");
  return principal;
}

const principals = new WeakMap<FastifyRequest, Principal>();

/**
 * A preValidation hook that authorizes the request before its body or query is validated, so a
 * caller without a valid key learns nothing about the route's input rules (401/403 before 400).
 * `resourceFrom` picks the targeted workflow id from the parsed, not yet validated, body.
 */
export function requireScope(
  auth: GatewayClients["auth"],
  action: Scope,
  resourceFrom?: (body: unknown) => unknown,
): preValidationAsyncHookHandler {
  return async (request) => {
    const resource = resourceFrom?.(request.body);
    principals.set(
      request,
      await authorize(request, auth, action, typeof resource === "string" ? resource : ""),
    );
  };
}

/** The principal `requireScope` resolved for this request. */
export function principalOf(request: FastifyRequest): Principal {
  const principal = principals.get(request);
  if (!principal) throw new Error("route is missing its requireScope hook");
  return principal;
}

/** The `workflowId` field of a JSON body, whatever its validity. */
export function workflowIdOfBody(body: unknown): unknown {
  return typeof body === "object" && body !== null
    ? (body as { workflowId?: unknown }).workflowId
    : undefined;
}
