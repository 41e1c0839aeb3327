import type { FastifyInstance, FastifyRequest } from "fastify";
import { requestContext } from "../services/platform/log.js";
import { httpDuration, httpRequests, rateLimitRefusals } from "../services/platform/metrics.js";
import {
  contextFromHeaders,
  type Span,
  SpanKind,
  SpanStatusCode,
  startSpan,
  withContext,
} from "../services/platform/telemetry.js";
import { principalOf } from "./auth.js";

/** The route pattern, not the URL, so ids do not explode label sets and span names. */
function routeOf(request: FastifyRequest): string {
  return request.routeOptions.url ?? "unmatched";
}

function headerOf(request: FastifyRequest) {
  return (name: string) => {
    const value = request.headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
}

/**
 * Request metrics, trace and log context of the REST gateway: each request gets a server span (which
 * continues a caller's `traceparent`) and runs in a request context (its id, then its tenant once
 * authorized); both name it on every log line and on the RPC calls it makes.
 */
export function instrumentGateway(app: FastifyInstance): void {
  const spans = new WeakMap<FastifyRequest, Span>();
  app.addHook("onRequest", (request, _reply, done) => {
    const route = routeOf(request);
    const traced = startSpan("gateway", `${request.method} ${route}`, {
      kind: SpanKind.SERVER,
      parent: contextFromHeaders(headerOf(request)),
      attributes: { "http.request.method": request.method, "http.route": route },
    });
    if (traced) spans.set(request, traced.span);
    withContext(traced?.context, () => requestContext.run({ requestId: request.id }, done));
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
    const route = routeOf(request);
    const labels = { method: request.method, route, status: String(reply.statusCode) };
    httpRequests.inc(labels);
    httpDuration.observe(labels, reply.elapsedTime / 1000);
    if (reply.statusCode === 429) rateLimitRefusals.inc({ route });
    const span = spans.get(request);
    if (span) {
      span.setAttribute("http.response.status_code", reply.statusCode);
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
      spans.delete(request);
    }
  });
  app.addHook("onRequestAbort", async (request) => {
    const span = spans.get(request);
    if (!span) return;
    span.setStatus({ code: SpanStatusCode.ERROR, message: "client closed the request" });
    span.end();
    spans.delete(request);
  });
}
