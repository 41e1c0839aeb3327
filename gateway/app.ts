import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import cors from "@fastify/cors";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  LogController,
} from "fastify";
import type { Logger } from "../services/platform/log.js";
import { installRefusalAudit } from "./auth.js";
import type { AuthCache } from "./auth-cache.js";
import { type GatewayClients, labelClients } from "./clients.js";
import { type GatewayConfig, gatewaySettings } from "./config.js";
import { registerDocs } from "./docs.js";
import { errorAnswer, installErrorHandling, schemaErrorFormatter } from "./errors.js";
import { refuseUnusableInput } from "./input-guard.js";
import { errorResponses, objectOf, registerOpenApi, registerOpenApiRoute } from "./openapi.js";
import { registerConversationRoutes } from "./routes/conversations.js";
import { registerExecuteRoutes } from "./routes/execute.js";
import { registerExecutionRoutes } from "./routes/executions.js";
import { registerHookRoutes } from "./routes/hooks.js";
import { registerLogRoutes } from "./routes/logs.js";
import { registerNotificationRoutes } from "./routes/notifications.js";
import { registerTenantRoutes } from "./routes/tenants.js";
import { registerTokenRoutes } from "./routes/tokens.js";
import { registerWorkflowRoutes } from "./routes/workflows.js";

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:/+=-]{1,128}$/;

/** Honours a caller's x-request-id when it is safe to echo and log, else makes one. */
export function requestIdFor(raw: IncomingMessage): string {
  const header = raw.headers["x-request-id"];
  const given = Array.isArray(header) ? header[0] : header;
  return given !== undefined && SAFE_REQUEST_ID.test(given) ? given : randomUUID();
}

export interface GatewayDeps {
  /** Settings not given take their defaults (gatewaySettings). */
  config: Pick<GatewayConfig, "bodyLimitBytes"> &
    Partial<Pick<GatewayConfig, "syncWaitMs" | "rpcTimeoutMs" | "corsOrigins">>;
  log: Logger;
  clients: GatewayClients;
  /**
   * The authorization cache (gateway/auth-cache.ts) the routes' Authorize calls go through; without
   * one every request makes its own Authorize RPC. Its owner feeds it revocation events.
   */
  authCache?: AuthCache;
}

/** Response headers a browser script may read: correlation, rate limits, polling, idempotency. */
const CORS_EXPOSED_HEADERS = [
  "x-request-id",
  "x-ratelimit-limit",
  "x-ratelimit-remaining",
  "x-ratelimit-reset",
  "retry-after",
  "location",
  "idempotent-replayed",
];
const CORS_ALLOWED_HEADERS = ["x-api-key", "idempotency-key", "content-type", "x-request-id", "accept"];

/** GATEWAY_CORS_ORIGINS as @fastify/cors takes it; undefined when CORS is off. */
export function corsOriginOption(setting: string | undefined): string | string[] | undefined {
  const origins = (setting ?? "")
    .split(",")
    .map((o) => o.trim())
    .filter((o) => o !== "");
  if (origins.length === 0) return undefined;
  return origins.includes("*") ? "*" : origins;
}

/** The REST edge (DESIGN §3): authorizes each request with the auth service, then calls the owner. */
export function buildGateway({ config, log, clients, authCache }: GatewayDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Per-request lines would dominate the log at load; failures are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: "requestId" }),
    genReqId: requestIdFor,
    bodyLimit: config.bodyLimitBytes,
    // Unknown fields must be refused, not stripped, and "1" is not an integer.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
    schemaErrorFormatter,
    frameworkErrors(err, request, reply) {
      const requestId = request.id;
      const answer = errorAnswer(err, requestId, config.bodyLimitBytes) ?? {
        status: 400,
        body: { error: "bad request", code: "invalid_argument", requestId },
      };
      (reply as FastifyReply).header("x-request-id", requestId).code(answer.status).send(answer.body);
    },
  });

  // JSON only: a text/plain body is refused with 415 instead of reaching validation as a string.
  app.removeContentTypeParser("text/plain");
  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });
  const corsOrigin = corsOriginOption(config.corsOrigins);
  if (corsOrigin !== undefined) {
    // No credentials: the API key travels in a header, never in cookies.
    app.register(cors, {
      origin: corsOrigin,
      methods: ["GET", "POST", "PUT", "PATCH", "DELETE"],
      allowedHeaders: CORS_ALLOWED_HEADERS,
      exposedHeaders: CORS_EXPOSED_HEADERS,
      maxAge: 600,
    });
  }
  installErrorHandling(app, config.bodyLimitBytes);
  app.addHook("preValidation", refuseUnusableInput);

  const plain = labelClients(clients);
  const labelled: GatewayClients = authCache ? { ...plain, auth: authCache.wrap(plain.auth) } : plain;
  // Leased tokens not spent go back before the process exits.
  if (authCache) app.addHook("onClose", () => authCache.close());
  installRefusalAudit(app, plain.auth);
  // The OpenAPI generator collects routes as they are registered, so the routes go in a plugin
  // loaded after it.
  registerOpenApi(app);
  app.register(async (api) => {
    api.get(
      "/healthz",
      {
        schema: {
          summary: "Liveness of the gateway",
          tags: ["meta"],
          security: [],
          response: {
            200: objectOf({ status: { type: "string", enum: ["ok"] } }, "The gateway is up"),
            ...errorResponses([], false),
          },
        },
      },
      async () => ({ status: "ok" }),
    );
    registerOpenApiRoute(api);
    registerExecuteRoutes(api, labelled, {
      syncWaitMs: config.syncWaitMs ?? gatewaySettings.syncWaitMs.parse(undefined),
      rpcTimeoutMs: config.rpcTimeoutMs ?? gatewaySettings.rpcTimeoutMs.parse(undefined),
    });
    registerWorkflowRoutes(api, labelled);
    registerExecutionRoutes(api, labelled);
    registerHookRoutes(api, labelled);
    registerConversationRoutes(api, labelled);
    registerLogRoutes(api, labelled);
    registerNotificationRoutes(api, labelled);
    registerTokenRoutes(api, labelled);
    registerTenantRoutes(api, labelled);
  });
  registerDocs(app);
  return app;
}
