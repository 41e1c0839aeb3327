import type { FastifyInstance } from "fastify";
import { principalOf, requireScope, workflowIdOfBody } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { conversationJson } from "../json.js";

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

/** POST /api/getConversationById (seed 001): a conversation with every execution in it. */
export function registerConversationRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: GetConversationBody }>(
    "/api/getConversationById",
    {
      schema: { body: getConversationBodySchema },
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
