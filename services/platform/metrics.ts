/**
 * Prometheus metrics of this process (served on the admin port's /metrics). One registry per process;
 * the metric objects are module-level so any module can count without plumbing.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type pg from "pg";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { requestContext } from "./log.js";

export const metricsRegistry = new Registry();
// Includes nodejs_eventloop_lag_seconds, heap, GC and handle counts.
collectDefaultMetrics({ register: metricsRegistry });

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export const rpcRequests = new Counter({
  name: "flowplane_rpc_server_requests_total",
  help: "RPC calls served, by procedure and Connect code",
  labelNames: ["method", "code"] as const,
  registers: [metricsRegistry],
});

export const rpcDuration = new Histogram({
  name: "flowplane_rpc_server_duration_seconds",
  help: "RPC call latency, by procedure and Connect code",
  labelNames: ["method", "code"] as const,
  buckets: LATENCY_BUCKETS,
  registers: [metricsRegistry],
});

export const httpRequests = new Counter({
  name: "flowplane_http_requests_total",
  help: "REST requests answered by the gateway, by method, route pattern and status",
  labelNames: ["method", "route", "status"] as const,
  registers: [metricsRegistry],
});

export const httpDuration = new Histogram({
  name: "flowplane_http_request_duration_seconds",
  help: "REST request latency in the gateway, by method, route pattern and status",
  labelNames: ["method", "route", "status"] as const,
  buckets: LATENCY_BUCKETS,
  registers: [metricsRegistry],
});

export const rateLimitRefusals = new Counter({
  name: "flowplane_rate_limit_refusals_total",
  help: "requests the gateway refused with 429, by route pattern",
  labelNames: ["route"] as const,
  registers: [metricsRegistry],
});

export const consumerMessages = new Counter({
  name: "flowplane_consumer_messages_total",
  help: "JetStream messages handled by durable consumers, by consumer and outcome (acked, terminated, redelivered)",
  labelNames: ["consumer", "outcome"] as const,
  registers: [metricsRegistry],
});

export const executionsByStatus = new Counter({
  name: "flowplane_executions_total",
  help: "executions reaching a status (queued, success, error), by trigger",
  labelNames: ["status", "trigger"] as const,
  registers: [metricsRegistry],
});

export const notificationAttempts = new Counter({
  name: "flowplane_notification_attempts_total",
  help: "notification delivery attempts, by channel (webhook, email, slack) and outcome",
  labelNames: ["channel", "outcome"] as const,
  registers: [metricsRegistry],
});

const pools = new Map<string, pg.Pool>();

new Gauge({
  name: "flowplane_db_pool_connections",
  help: "PostgreSQL pool connections by state: total, idle, and waiting (queued checkouts)",
  labelNames: ["pool", "state"] as const,
  registers: [metricsRegistry],
  collect() {
    this.reset();
    for (const [name, pool] of pools) {
      this.set({ pool: name, state: "total" }, pool.totalCount);
      this.set({ pool: name, state: "idle" }, pool.idleCount);
      this.set({ pool: name, state: "waiting" }, pool.waitingCount);
    }
  },
});

/** Reports a pool's usage under `name` until the returned function is called. */
export function trackPool(name: string, pool: pg.Pool): () => void {
  pools.set(name, pool);
  return () => {
    if (pools.get(name) === pool) pools.delete(name);
  };
}

/** Connect code names as gRPC spells them ("ok", "invalid_argument", ...). */
export function codeLabel(code: Code | undefined): string {
  if (code === undefined) return "ok";
  return (
    Code[code]?.replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`)) ??
    "unknown"
  );
}

const SAFE_ID = /^[A-Za-z0-9._:/+=-]{1,128}$/;

/**
 * Outermost server interceptor: counts and times each call, and runs it inside a request context
 * (request id from the caller's x-request-id, tenant id from the request's `tenantId` field or the
 * caller's x-tenant-id) so every log line written while serving it names both.
 */
export function rpcServerInterceptor(): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const requestId = req.header.get("x-request-id") ?? undefined;
    const message = req.stream ? undefined : (req.message as { tenantId?: unknown });
    const tenantId =
      typeof message?.tenantId === "string" && message.tenantId !== ""
        ? message.tenantId
        : (req.header.get("x-tenant-id") ?? undefined);
    const context = {
      ...(requestId && SAFE_ID.test(requestId) ? { requestId } : {}),
      ...(tenantId && SAFE_ID.test(tenantId) ? { tenantId } : {}),
    };
    const end = rpcDuration.startTimer({ method });
    try {
      const res = await requestContext.run(context, () => next(req));
      end({ code: "ok" });
      rpcRequests.inc({ method, code: "ok" });
      return res;
    } catch (err) {
      const code = codeLabel(ConnectError.from(err).code);
      end({ code });
      rpcRequests.inc({ method, code });
      throw err;
    }
  };
}

/** Client interceptor: carries the request and tenant ids being served to the called service. */
export function rpcContextPropagation(): Interceptor {
  return (next) => async (req) => {
    const current = requestContext.getStore();
    if (current?.requestId && !req.header.has("x-request-id"))
      req.header.set("x-request-id", current.requestId);
    if (current?.tenantId && !req.header.has("x-tenant-id")) req.header.set("x-tenant-id", current.tenantId);
    return next(req);
  };
}

export const consumerRedeliveries = new Counter({
  name: "flowplane_consumer_redeliveries_total",
  help: "JetStream messages received again after an earlier delivery (delivery count > 1), by consumer",
  labelNames: ["consumer"] as const,
  registers: [metricsRegistry],
});

/** Messages of one durable consumer still to process, as JetStream reports them. */
export interface QueueDepth {
  /** Not delivered to any subscriber yet (num_pending). */
  undelivered: number;
  /** Delivered and not acknowledged yet (num_ack_pending). */
  unacked: number;
}

const QUEUE_DEPTH_TIMEOUT_MS = 1_000;
const queueDepthSources = new Map<
  string,
  { stream: string; consumer: string; read: () => Promise<QueueDepth>; refs: number }
>();

new Gauge({
  name: "flowplane_consumer_queue_depth",
  help: "messages waiting for a durable consumer, read from JetStream at scrape time: undelivered (num_pending) and unacked (num_ack_pending)",
  labelNames: ["stream", "consumer", "state"] as const,
  registers: [metricsRegistry],
  async collect() {
    this.reset();
    await Promise.all(
      [...queueDepthSources.values()].map(async ({ stream, consumer, read }) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          const depth = await Promise.race([
            read(),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error("timeout")), QUEUE_DEPTH_TIMEOUT_MS);
            }),
          ]);
          this.set({ stream, consumer, state: "undelivered" }, depth.undelivered);
          this.set({ stream, consumer, state: "unacked" }, depth.unacked);
        } catch {
          // NATS unreachable: no sample rather than a stale or made-up one (readiness reports it).
        } finally {
          clearTimeout(timer);
        }
      }),
    );
  },
});

/**
 * Reports a durable consumer's queue depth on every scrape until the returned function is called;
 * several loops of one consumer in a process share one source.
 */
export function trackQueueDepth(
  stream: string,
  consumer: string,
  read: () => Promise<QueueDepth>,
): () => void {
  const key = `${stream}/${consumer}`;
  const existing = queueDepthSources.get(key);
  if (existing) existing.refs++;
  else queueDepthSources.set(key, { stream, consumer, read, refs: 1 });
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const source = queueDepthSources.get(key);
    if (source && --source.refs === 0) queueDepthSources.delete(key);
  };
}
