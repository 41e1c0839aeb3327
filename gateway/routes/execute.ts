import type { JsonObject } from "@bufbuild/protobuf";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { TokenKind } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { Trigger } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecutionBucket, principalOf, requireScope, workflowIdOfBody } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { executeResponseJson } from "../json.js";

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
      schema: { body: executeBodySchema },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody, {
        bucket: ExecutionBucket.SYNC,
      }),
    },
    async (request) => {
      const { workflowId, version, input, conversationId } = request.body;
      const principal = principalOf(request);
      const res = await clients.executions.execute({
        tenantId: principal.tenantId,
        workflowId,
        version: version ?? 0,
        input: input ?? {},
        conversationId: conversationId ?? "",
        trigger: triggerOf(request),
      });
      return executeResponseJson(res);
    },
  );

  app.post<{ Body: ExecuteBody }>(
    "/api/executeWorkflowBackground",
    {
      schema: { body: executeBodySchema },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody, {
        bucket: ExecutionBucket.ASYNC,
      }),
    },
    async (request) => {
      const { workflowId, version, input, conversationId } = request.body;
      const principal = principalOf(request);
      const res = await clients.executions.executeBackground({
        tenantId: principal.tenantId,
        workflowId,
        version: version ?? 0,
        input: input ?? {},
        conversationId: conversationId ?? "",
        trigger: triggerOf(request),
      });
      return {
        conversationId: res.conversationId,
        creditUsage: Number(res.creditUsage),
        executionId: res.executionId,
        status: "queued",
      };
    },
  );
}
