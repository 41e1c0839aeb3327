import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { FastifyInstance } from "fastify";
import { sendRateLimited } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { HttpError } from "../errors.js";
import { errorResponses, objectOf } from "../openapi.js";

/**
 * POST /api/v1/hooks/{hookId}: an inbound webhook. No x-api-key: the caller sends the hook's own
 * secret in `x-hook-secret`; the JSON body becomes the workflow input of a background run. The run
 * consumes one token of the workspace's async execution bucket (429 + Retry-After when empty) and is
 * refused with 400 "insufficient credits" over the usage limit, as on the execute routes.
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
          ...errorResponses([400, 401, 404, 413, 415, 429], false),
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
      let res: Awaited<ReturnType<GatewayClients["executions"]["triggerHook"]>>;
      try {
        res = await clients.executions.triggerHook({
          hookId: request.params.hookId,
          secret,
          input: request.body,
        });
      } catch (err) {
        // The workspace's async execution bucket is empty: 429 + Retry-After, as on the execute routes.
        if (err instanceof ConnectError && err.code === Code.ResourceExhausted) {
          return sendRateLimited(request, reply, err);
        }
        throw err;
      }
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
