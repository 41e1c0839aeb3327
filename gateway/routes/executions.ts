import type { FastifyInstance } from "fastify";
import type { Execution } from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { executionJson } from "../json.js";
import { anyJsonObject, errorResponses, nullableTimestamp } from "../openapi.js";

const executionParamsSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: "^exec_[0-9a-z]{26}$" } },
} as const;

/** An execution as executionJson shows it. */
export const executionSchema = {
  type: "object",
  required: [
    "executionId",
    "workflowVersion",
    "status",
    "trigger",
    "input",
    "output",
    "path",
    "error",
    "warnings",
    "creditUsage",
    "cost",
    "startedAt",
    "endedAt",
    "durationMs",
  ],
  properties: {
    executionId: { type: "string" },
    workflowVersion: { type: "integer" },
    status: { type: "string", enum: ["queued", "running", "success", "error"] },
    trigger: { type: ["string", "null"], enum: ["api", "webhook", "schedule", "manual", "chat", null] },
    input: anyJsonObject,
    output: { type: ["object", "null"], additionalProperties: true },
    path: { type: "array", items: { type: "string" }, description: "block ids in the order they ran" },
    error: { type: ["string", "null"] },
    warnings: { type: "array", items: { type: "string" } },
    creditUsage: { type: "integer" },
    cost: { type: "number", description: "USD" },
    startedAt: nullableTimestamp,
    endedAt: nullableTimestamp,
    durationMs: { type: "integer" },
  },
} as const;

const executionDetailSchema = {
  ...executionSchema,
  description: "The execution",
  required: [...executionSchema.required, "workflowId", "conversationId"],
  properties: {
    ...executionSchema.properties,
    workflowId: { type: "string" },
    conversationId: { type: "string" },
  },
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
      schema: {
        summary: "Get one execution",
        description: "Any status: queued, running, success or error.",
        tags: ["executions"],
        params: executionParamsSchema,
        response: { 200: executionDetailSchema, ...errorResponses([400, 404]) },
      },
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
      schema: {
        summary: "Cancel a queued or running execution",
        description:
          'The execution ends with status error and error "cancelled"; 400 when it already finished.',
        tags: ["executions"],
        params: executionParamsSchema,
        response: { 200: executionDetailSchema, ...errorResponses([400, 404]) },
      },
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
