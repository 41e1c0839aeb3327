import type { JsonObject } from "@bufbuild/protobuf";
import type { FastifyInstance } from "fastify";
import { Trigger } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { principalOf, requireScope, workflowIdOfBody } from "../auth.js";
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

/** POST /api/executeWorkflow (seed 001): runs a workflow synchronously. */
export function registerExecuteRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: ExecuteBody }>(
    "/api/executeWorkflow",
    {
      schema: { body: executeBodySchema },
      preValidation: requireScope(clients.auth, "workflows:execute", workflowIdOfBody),
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
        trigger: Trigger.API,
      });
      return executeResponseJson(res);
    },
  );
}
