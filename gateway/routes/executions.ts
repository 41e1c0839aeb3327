import type { FastifyInstance } from "fastify";
import type { Execution } from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { executionJson } from "../json.js";

const executionParamsSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: "^exec_[0-9a-z]{26}$" } },
} as const;

function executionDetailJson(execution: Execution) {
  return {
    ...executionJson(execution),
    workflowId: execution.workflowId,
    conversationId: execution.conversationId,
  };
}

/**
 * GET /api/v1/executions/{id}: one execution (any status).
 * POST /api/v1/executions/{id}/cancel: cancels a queued or running background execution; it ends
 * with status "error" and error "cancelled" (400 when it already finished).
 */
export function registerExecutionRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.get<{ Params: { id: string } }>(
    "/api/v1/executions/:id",
    {
      schema: { params: executionParamsSchema },
      preValidation: requireScope(clients.auth, "workflows:read"),
    },
    async (request) => {
      const { execution } = await clients.executions.getExecution({
        tenantId: principalOf(request).tenantId,
        executionId: request.params.id,
      });
      return executionDetailJson(execution!);
    },
  );

  app.post<{ Params: { id: string } }>(
    "/api/v1/executions/:id/cancel",
    {
      schema: { params: executionParamsSchema },
      preValidation: requireScope(clients.auth, "workflows:execute"),
    },
    async (request) => {
      const { execution } = await clients.executions.cancelExecution({
        tenantId: principalOf(request).tenantId,
        executionId: request.params.id,
      });
      return executionDetailJson(execution!);
    },
  );
}
