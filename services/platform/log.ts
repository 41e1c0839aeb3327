import { AsyncLocalStorage } from "node:async_hooks";
import pino, { type Logger } from "pino";
import { currentTraceId } from "./telemetry.js";

export type { Logger };

/** What a log line says about the request being served: set per RPC call and per gateway request. */
export interface RequestContext {
  requestId?: string;
  tenantId?: string;
}

/** The request being served in this async flow; read by every logger and by outgoing RPC calls. */
export const requestContext = new AsyncLocalStorage<RequestContext>();

/**
 * JSON logs with the service name on every line, and the request, tenant and trace ids of the request being
 * served (the gateway's request logger already carries `requestId`, so it asks only for the tenant);
 * keys and secrets are redacted wherever they appear.
 */
export function createLogger(
  service: string,
  level = process.env.LOG_LEVEL ?? "info",
  opts: { requestIdFromContext?: boolean; destination?: pino.DestinationStream } = {},
): Logger {
  const withRequestId = opts.requestIdFromContext ?? true;
  const options: pino.LoggerOptions = {
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const traceId = currentTraceId();
      const current = requestContext.getStore();
      if (!current) return traceId ? { traceId } : {};
      const fields: RequestContext & { traceId?: string } = {};
      if (withRequestId && current.requestId) fields.requestId = current.requestId;
      if (current.tenantId) fields.tenantId = current.tenantId;
      if (traceId) fields.traceId = traceId;
      return fields;
    },
    redact: {
      paths: [
        "apiKey",
        "api_key",
        "secret",
        "password",
        "*.apiKey",
        "*.api_key",
        "*.secret",
        "*.password",
        'headers["x-api-key"]',
        'req.headers["x-api-key"]',
        'headers["authorization"]',
        'req.headers["authorization"]',
      ],
      censor: "[redacted]",
    },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}
