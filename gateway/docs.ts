import swaggerUi from "@fastify/swagger-ui";
import type { FastifyInstance } from "fastify";

/**
 * GET /docs: Swagger UI over /openapi.json's document, without auth. Its scripts and styles are the
 * ones shipped inside @fastify/swagger-ui, so the page works offline.
 */
export function registerDocs(app: FastifyInstance): void {
  app.register(swaggerUi, {
    routePrefix: "/docs",
    staticCSP: true,
    uiConfig: { deepLinking: true, persistAuthorization: false, tryItOutEnabled: false },
  });
}
