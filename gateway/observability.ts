import type { FastifyInstance } from "fastify";
import { requestContext } from "../services/platform/log.js";
import { httpDuration, httpRequests, rateLimitRefusals } from "../services/platform/metrics.js";
import { principalOf } from "./auth.js";

/**
 * Request metrics and log context of the REST gateway: each request runs in a request context (its
 * id, then its tenant once authorized), which names it on every log line and on the RPC calls it makes.
 */
export function instrumentGateway(app: FastifyInstance): void {
  app.addHook("onRequest", (request, _reply, done) => {
    requestContext.run({ requestId: request.id }, done);
  });
  app.addHook("preHandler", async (request) => {
    const context = requestContext.getStore();
    if (!context) return;
    try {
      context.tenantId = principalOf(request).tenantId || undefined;
    } catch {
      // A route without requireScope (health, hooks) has no principal.
    }
  });
  app.addHook("onResponse", async (request, reply) => {
    // The route pattern, not the URL, so ids do not explode the label set.
    const route = request.routeOptions.url ?? "unmatched";
    const labels = { method: request.method, route, status: String(reply.statusCode) };
    httpRequests.inc(labels);
    httpDuration.observe(labels, reply.elapsedTime / 1000);
    if (reply.statusCode === 429) rateLimitRefusals.inc({ route });
  });
}
