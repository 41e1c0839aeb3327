import { createHash } from "node:crypto";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { TokenKind } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { Trigger } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecutionBucket, principalOf, requireScope, workflowIdOfBody } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest } from "../errors.js";
import { executeResponseJson } from "../json.js";
import { errorResponses, objectOf } from "../openapi.js";

interface ExecuteBody {
  workflowId: string;
  version?: number;
  input?: JsonObject;
  conversationId?: string;
}

const executeBodySchema = {
  type: "object",
  required: ["workflowId"],
  additionalProperties: false,
  properties: {
    workflowId: { type: "string", minLength: 1, maxLength: 200 },
    // int32 in the contract; 0 (latest) is expressed by leaving it out.
    version: { type: "integer", minimum: 1, maximum: 2_147_483_647 },
    input: { type: "object" },
    conversationId: { type: "string", maxLength: 200 },
  },
} as const;

const executionStatus = { type: "string", enum: ["queued", "running", "success", "error"] } as const;

const executeResponseSchema = {
  type: "object",
  description: "The finished execution",
  required: ["conversationId", "executionId", "output", "creditUsage", "status"],
  properties: {
    conversationId: { type: "string", description: "pass it back to continue the conversation" },
    executionId: { type: "string" },
    output: {
      type: "object",
      additionalProperties: true,
      description: "output block name → value",
    },
    creditUsage: { type: "integer", description: "credits charged (1 credit = USD 0.001)" },
    status: executionStatus,
    error: { type: "string", description: "why the run failed (status error)" },
  },
} as const;

const backgroundResponseSchema = objectOf(
  {
    conversationId: { type: "string", description: "poll it with POST /api/getConversationById" },
    executionId: { type: "string", description: "or poll GET /api/v1/executions/{id}" },
    creditUsage: { type: "integer", enum: [0], description: "nothing ran yet" },
    status: { type: "string", enum: ["queued"] },
  },
  "The queued execution",
);

const IDEMPOTENCY_KEY_FORMAT = /^[\x21-\x7e]{1,255}$/;

const idempotencyHeaderDocs = {
  type: "object",
  properties: {
    "idempotency-key": {
      type: "string",
      pattern: "^[\\x21-\\x7e]{1,255}$",
      description:
        "Makes retries safe: within 24 h, the same key with the same body answers the first " +
        "response again (header Idempotent-Replayed: true) without running again; with another " +
        "body, or while the first request is still running, 409. Keys are per workspace.",
    },
  },
} as const;

/** JSON with object keys sorted at every depth, so equal bodies serialize equally. */
function canonicalJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as JsonValue)}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The Idempotency-Key header and what "the same request" is for it: the route and the canonical
 * JSON body (so key order and whitespace do not matter). Empty when the header is absent.
 */
function idempotencyOf(request: FastifyRequest): { idempotencyKey: string; requestFingerprint: string } {
  const header = request.headers["idempotency-key"];
  if (header === undefined) return { idempotencyKey: "", requestFingerprint: "" };
  const key = Array.isArray(header) ? undefined : header;
  if (key === undefined || !IDEMPOTENCY_KEY_FORMAT.test(key)) {
    throw badRequest("Idempotency-Key must be given once, as 1 to 255 visible ASCII characters");
  }
  const fingerprint = createHash("sha256")
    .update(`${request.routeOptions.url}\n${canonicalJson(request.body as JsonValue)}`)
    .digest("hex");
  return { idempotencyKey: key, requestFingerprint: fingerprint };
}

function markReplay(reply: FastifyReply, replay: boolean): void {
  if (replay) reply.header("idempotent-replayed", "true");
}

/**
 * `x-flowplane-trigger: manual` marks a run started by a person (the `flowplane run` CLI). Only admin
 * keys may say so; integrations' app keys always run as "api", so their logs cannot be disguised.
 */
function triggerOf(request: FastifyRequest): Trigger {
  const hint = request.headers["x-flowplane-trigger"];
  if (hint === "manual" && principalOf(request).kind === TokenKind.ADMIN) return Trigger.MANUAL;
  return Trigger.API;
}

/**
 * POST /api/executeWorkflow (seed 001): runs a workflow synchronously.
 * POST /api/executeWorkflowBackground (seed 001): queues it and answers at once.
 */
export function registerExecuteRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: ExecuteBody }>(
    "/api/executeWorkflow",
    {
      schema: {
        summary: "Run a workflow and wait for its output",
        description:
          "Runs the workflow's latest (or the given) version with `input` and answers with the " +
          "output components. Consumes one token of the workspace's sync execution bucket.",
        tags: ["execute"],
        body: executeBodySchema,
        response: { 200: executeResponseSchema, ...errorResponses([400, 404, 409, 413, 415]) },
      },
      config: { openapi: { headers: idempotencyHeaderDocs } },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody, {
        bucket: ExecutionBucket.SYNC,
      }),
    },
    async (request, reply) => {
      const { workflowId, version, input, conversationId } = request.body;
      const principal = principalOf(request);
      const res = await clients.executions.execute({
        tenantId: principal.tenantId,
        workflowId,
        version: version ?? 0,
        input: input ?? {},
        conversationId: conversationId ?? "",
        trigger: triggerOf(request),
        ...idempotencyOf(request),
      });
      markReplay(reply, res.idempotentReplay);
      return executeResponseJson(res);
    },
  );

  app.post<{ Body: ExecuteBody }>(
    "/api/executeWorkflowBackground",
    {
      schema: {
        summary: "Queue a workflow run and answer at once",
        description:
          "Stores a queued execution and answers with its conversationId and executionId at once " +
          "(creditUsage 0); poll POST /api/getConversationById or GET /api/v1/executions/{id}. " +
          "Consumes one token of the workspace's async execution bucket.",
        tags: ["execute"],
        body: executeBodySchema,
        response: { 200: backgroundResponseSchema, ...errorResponses([400, 404, 409, 413, 415]) },
      },
      config: { openapi: { headers: idempotencyHeaderDocs } },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody, {
        bucket: ExecutionBucket.ASYNC,
      }),
    },
    async (request, reply) => {
      const { workflowId, version, input, conversationId } = request.body;
      const principal = principalOf(request);
      const res = await clients.executions.executeBackground({
        tenantId: principal.tenantId,
        workflowId,
        version: version ?? 0,
        input: input ?? {},
        conversationId: conversationId ?? "",
        trigger: triggerOf(request),
        ...idempotencyOf(request),
      });
      markReplay(reply, res.idempotentReplay);
      return {
        conversationId: res.conversationId,
        creditUsage: Number(res.creditUsage),
        executionId: res.executionId,
        status: "queued",
      };
    },
  );
}
