import type { JsonObject } from "@bufbuild/protobuf";
import type { FastifyInstance } from "fastify";
import type { GatewayClients } from "../clients.js";
import { HttpError } from "../errors.js";
import { errorResponses, objectOf } from "../openapi.js";

/**
 * POST /api/v1/hooks/{hookId}: an inbound webhook. No x-api-key: the caller sends the hook's own
 * secret in `x-hook-secret`; the JSON body becomes the workflow input of a background run.
 */
export function registerHookRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Params: { hookId: string }; Body: JsonObject }>(
    "/api/v1/hooks/:hookId",
    {
      schema: {
        summary: "Trigger a workflow through its inbound hook",
        description:
          "No x-api-key: send the hook's secret in x-hook-secret. The JSON body becomes the " +
          "workflow input of a background run.",
        tags: ["workflows"],
        security: [{ hookSecret: [] }],
        response: {
          202: objectOf(
            {
              conversationId: { type: "string" },
              executionId: { type: "string" },
              workflowId: { type: "string" },
              creditUsage: { type: "integer", enum: [0] },
              status: { type: "string", enum: ["queued"] },
            },
            "The queued execution",
          ),
          ...errorResponses([400, 401, 404, 413, 415], false),
        },
        params: {
          type: "object",
          required: ["hookId"],
          properties: { hookId: { type: "string", minLength: 1, maxLength: 200 } },
        },
        body: { type: "object" },
      },
      // Before the body is validated, as for API keys: an unauthenticated caller learns nothing more.
      preValidation: async (request) => {
        const header = request.headers["x-hook-secret"];
        const secret = (Array.isArray(header) ? header[0] : header)?.trim() ?? "";
        if (secret === "") throw new HttpError(401, "missing x-hook-secret header");
      },
    },
    async (request, reply) => {
      const header = request.headers["x-hook-secret"];
      const secret = ((Array.isArray(header) ? header[0] : header) ?? "").trim();
      const res = await clients.executions.triggerHook({
        hookId: request.params.hookId,
        secret,
        input: request.body,
      });
      return reply.code(202).send({
        conversationId: res.conversationId,
        executionId: res.executionId,
        workflowId: res.workflowId,
        creditUsage: 0,
        status: "queued",
      });
    },
  );
}
