import type { FastifyInstance } from "fastify";
import { principalOf, requireScope, workflowIdOfBody } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { conversationJson } from "../json.js";
import { errorResponses, nullableTimestamp } from "../openapi.js";
import { executionSchema } from "./executions.js";

interface GetConversationBody {
  workflowId: string;
  conversationId: string;
}

const getConversationBodySchema = {
  type: "object",
  required: ["workflowId", "conversationId"],
  additionalProperties: false,
  properties: {
    workflowId: { type: "string", minLength: 1, maxLength: 200 },
    conversationId: { type: "string", minLength: 1, maxLength: 200 },
  },
} as const;

const conversationSchema = {
  type: "object",
  description: "The conversation with its executions, oldest first",
  required: ["conversationId", "workflowId", "createdAt", "executions"],
  properties: {
    conversationId: { type: "string" },
    workflowId: { type: "string" },
    createdAt: nullableTimestamp,
    executions: { type: "array", items: executionSchema },
  },
} as const;

/** POST /api/getConversationById (seed 001): a conversation with every execution in it. */
export function registerConversationRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: GetConversationBody }>(
    "/api/getConversationById",
    {
      schema: {
        summary: "Get a conversation and its executions",
        description:
          "The seed's polling pattern for background runs: poll until the last execution's status " +
          "is success or error.",
        tags: ["execute"],
        body: getConversationBodySchema,
        response: { 200: conversationSchema, ...errorResponses([400, 404, 413, 415]) },
      },
      preValidation: requireScope(clients.auth, "workflows:read", workflowIdOfBody),
    },
    async (request) => {
      const { workflowId, conversationId } = request.body;
      const principal = principalOf(request);
      const { conversation } = await clients.executions.getConversation({
        tenantId: principal.tenantId,
        workflowId,
        conversationId,
      });
      if (!conversation) throw new Error("executor answered GetConversation without a conversation");
      return conversationJson(conversation);
    },
  );
}
