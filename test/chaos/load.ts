/**
 * Steady mixed load against a gateway, shared by `npm run chaos` and the `mixed` bench: sync executes
 * with Idempotency-Keys, background executes, log polling (the seed's ascending cursor loop) and a
 * webhook receiver counting deliveries per execution with the keys they carried.
 */
import { performance } from "node:perf_hooks";
import { pickPort } from "../../gateway/cli/ports.js";
import { type Stack, startStack } from "../../gateway/cli/stack.js";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.js";

const UNLIMITED = "1000000/1000000";

/**
 * A whole local stack for the load: its own PostgreSQL and nats-server on free ports (their cost is
 * part of what is measured, and a developer's `npm start` keeps the preferred ones), whatever
 * DATABASE_URL/NATS_URL the shell has; the pro plan's limits lifted so the load measures the stack,
 * not the limiter; webhooks to the local receiver allowed.
 */
export async function startLoadStack(opts: {
  dataDir: string;
  logDir: string;
  namespace: string;
  env?: Record<string, string>;
  report: (line: string) => void;
}): Promise<Stack> {
  const saved = { DATABASE_URL: process.env.DATABASE_URL, NATS_URL: process.env.NATS_URL };
  delete process.env.DATABASE_URL;
  delete process.env.NATS_URL;
  try {
    return await startStack({
      dataDir: opts.dataDir,
      logDir: opts.logDir,
      namespace: opts.namespace,
      infrastructurePorts: { postgres: await pickPort(0), nats: await pickPort(0) },
      ports: { auth: 0, executor: 0, logs: 0, notifier: 0, gateway: 0 },
      logLevel: "warn",
      env: {
        AUTH_PLAN_PRO_API: UNLIMITED,
        AUTH_PLAN_PRO_SYNC: UNLIMITED,
        AUTH_PLAN_PRO_ASYNC: UNLIMITED,
        AUTH_PLAN_PRO_USAGE_LIMIT_USD: "1000000",
        NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
        ...opts.env,
      },
      report: opts.report,
    });
  } finally {
    for (const [name, value] of Object.entries(saved)) if (value !== undefined) process.env[name] = value;
  }
}

export type Kind = "sync" | "background" | "logs";

export interface Accepted {
  key: string;
  executionId: string;
  conversationId: string;
  /** How many attempts the key took (1 = answered first time). */
  attempts: number;
}

export interface KindStats {
  /** 2xx answers. */
  ok: number;
  /** Latency of each 2xx answer, ms. */
  latenciesMs: number[];
  /** Failed attempts by cause: an HTTP status ("503") or "network" / "timeout". */
  failures: Map<string, number>;
  /** Keys given up on (never answered 2xx before the load's retry deadline). */
  abandoned: string[];
}

export interface LoadOptions {
  /** Read on every request, so a caller can point the load elsewhere. */
  gatewayUrl: string;
  apiKey: string;
  workspaceId: string;
  workflowId: string;
  /** Concurrent sync loops and the pause after each request, ms. */
  syncConcurrency: number;
  syncPauseMs: number;
  backgroundConcurrency: number;
  backgroundPauseMs: number;
  logsPollMs: number;
  /**
   * Retry a failed execute (5xx, 429, network error, 409 in progress) with the same Idempotency-Key
   * until it is answered, as a careful client would; without it a failure is only counted.
   */
  retry: boolean;
  /** After stop(), how long retries of keys still in flight may go on, ms. */
  settleMs?: number;
  requestTimeoutMs?: number;
  /** Prefix of the Idempotency-Keys, so several runs against one workspace never share a key. */
  keyPrefix?: string;
}

export interface WebhookStats {
  /** executionId → Idempotency-Key values seen (a Set: duplicates must repeat the same key). */
  keysByExecution: Map<string, Set<string>>;
  /** executionId → webhook deliveries received. */
  countByExecution: Map<string, number>;
  /** Delivery latency: receipt − the run's endedAt, ms (first receipt per execution). */
  latenciesMs: number[];
  /** Deliveries whose body or headers could not be read. */
  malformed: number;
}

export interface MixedLoad {
  stats: Record<Kind, KindStats>;
  sync: Accepted[];
  background: Accepted[];
  webhooks: WebhookStats;
  receiver: WebhookReceiver;
  /** Logs returned by the polling loop (ids), to spot a repeat. */
  polledLogIds: Set<string>;
  polledRepeats: number;
  start(options: LoadOptions): void;
  /** Stops issuing new work; resolves when every loop (and its retries, up to settleMs) is done. */
  stop(): Promise<void>;
  /** Points every loop at another gateway (a replica, or the same one on a new port). */
  setGatewayUrl(url: string): void;
  /** Resolves with the time of the next 2xx of `kind` answered after `since` (performance.now()). */
  nextSuccess(kind: Kind, since: number, timeoutMs: number): Promise<number>;
  /**
   * Sends fresh requests of `kind` (new Idempotency-Keys, no retries), one every `everyMs`, until one
   * is answered 2xx; resolves with that time (performance.now()). Independent of the load's loops,
   * which may be waiting out a key that a killed process still holds. Accepted probes count as load.
   */
  probe(kind: Kind, timeoutMs: number, everyMs?: number): Promise<number>;
}

const newStats = (): KindStats => ({ ok: 0, latenciesMs: [], failures: new Map(), abandoned: [] });

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** The webhook receiver; starts before the load so a subscription can point at it. */
export async function createMixedLoad(): Promise<MixedLoad> {
  const receiver = await startWebhookReceiver();
  const webhooks: WebhookStats = {
    keysByExecution: new Map(),
    countByExecution: new Map(),
    latenciesMs: [],
    malformed: 0,
  };
  receiver.respond = (request) => {
    try {
      const event = JSON.parse(request.rawBody) as {
        type?: string;
        data?: { executionId?: string; endedAt?: string };
      };
      const executionId = event.data?.executionId;
      const key = request.headers["idempotency-key"];
      if (event.type !== "workflow.execution.completed" || !executionId || !key) {
        webhooks.malformed++;
      } else {
        const keys = webhooks.keysByExecution.get(executionId) ?? new Set<string>();
        keys.add(key);
        webhooks.keysByExecution.set(executionId, keys);
        const seen = (webhooks.countByExecution.get(executionId) ?? 0) + 1;
        webhooks.countByExecution.set(executionId, seen);
        const ended = event.data?.endedAt ? Date.parse(event.data.endedAt) : Number.NaN;
        if (seen === 1 && Number.isFinite(ended)) webhooks.latenciesMs.push(request.receivedAt - ended);
      }
    } catch {
      webhooks.malformed++;
    }
    return { status: 200, body: "ok" };
  };

  const stats: Record<Kind, KindStats> = { sync: newStats(), background: newStats(), logs: newStats() };
  const sync: Accepted[] = [];
  const background: Accepted[] = [];
  const polledLogIds = new Set<string>();
  let opts: LoadOptions | undefined;
  let gatewayUrl = "";
  let stopping = false;
  let retryDeadline = Number.POSITIVE_INFINITY;
  let loops: Promise<void>[] = [];
  const waiters: { kind: Kind; since: number; resolve: (at: number) => void }[] = [];

  const succeeded = (kind: Kind, latencyMs: number) => {
    stats[kind].ok++;
    stats[kind].latenciesMs.push(latencyMs);
    const now = performance.now();
    for (let i = waiters.length - 1; i >= 0; i--) {
      const waiter = waiters[i];
      if (waiter && waiter.kind === kind && now - latencyMs >= waiter.since) {
        waiters.splice(i, 1);
        waiter.resolve(now);
      }
    }
  };

  async function request(method: string, route: string, body?: unknown, key?: string): Promise<Answer> {
    if (!opts) throw new Error("load not started");
    const headers: Record<string, string> = { "x-api-key": opts.apiKey };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (key) headers["idempotency-key"] = key;
    const res = await fetch(`${gatewayUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(opts.requestTimeoutMs ?? 30_000),
    });
    const text = await res.text();
    let parsed: Record<string, unknown> = {};
    try {
      parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      parsed = { raw: text };
    }
    return { status: res.status, body: parsed };
  }

  const causeOf = (err: unknown) =>
    err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")
      ? "timeout"
      : "network";

  /** One execute with its key, retried per the options; records the outcome. */
  async function execute(
    kind: "sync" | "background",
    key: string,
    n: number,
    retry = opts?.retry ?? false,
  ): Promise<boolean> {
    if (!opts) return false;
    const route = kind === "sync" ? "/api/executeWorkflow" : "/api/executeWorkflowBackground";
    // The key is the input too, so a run can be traced back to its key in the executor's rows.
    const body = { workflowId: opts.workflowId, version: 1, input: { "First Name": key, Age: n } };
    for (let attempt = 1; ; attempt++) {
      const t0 = performance.now();
      let cause: string;
      let retryable = true;
      try {
        const res = await request("POST", route, body, key);
        if (res.status >= 200 && res.status < 300) {
          succeeded(kind, performance.now() - t0);
          (kind === "sync" ? sync : background).push({
            key,
            executionId: String(res.body.executionId),
            conversationId: String(res.body.conversationId),
            attempts: attempt,
          });
          return true;
        }
        cause = String(res.status);
        retryable = res.status >= 500 || res.status === 429 || res.status === 409;
      } catch (err) {
        cause = causeOf(err);
      }
      count(stats[kind].failures, cause);
      if (!retry || !retryable || performance.now() > retryDeadline) {
        // A probe that fails is just the next probe's cue; a load key given up on is reported.
        if (!key.includes("-probe")) stats[kind].abandoned.push(key);
        return false;
      }
      await sleep(cause === "409" ? 1_000 : 250);
    }
  }

  async function executeLoop(kind: "sync" | "background", worker: number, pauseMs: number): Promise<void> {
    const prefix = opts?.keyPrefix ?? "k";
    for (let n = 0; !stopping; n++) {
      await execute(kind, `${prefix}-${kind === "sync" ? "s" : "b"}${worker}-${n}`, n);
      if (pauseMs > 0) await sleep(pauseMs);
    }
  }

  /** The seed's polling loop: ascending from the start, following nextCursor. */
  async function logsLoop(pollMs: number): Promise<void> {
    if (!opts) return;
    const startDate = new Date(Date.now() - 60_000).toISOString();
    let cursor: string | undefined;
    while (!stopping) {
      const query = new URLSearchParams({
        workspaceId: opts.workspaceId,
        order: "asc",
        startDate,
        limit: "100",
      });
      if (cursor) query.set("cursor", cursor);
      const t0 = performance.now();
      try {
        const res = await request("GET", `/api/v1/logs?${query}`);
        if (res.status === 200) {
          succeeded("logs", performance.now() - t0);
          for (const row of (res.body.data as { id: string }[] | undefined) ?? []) {
            if (polledLogIds.has(row.id)) load.polledRepeats++;
            polledLogIds.add(row.id);
          }
          if (typeof res.body.nextCursor === "string") cursor = res.body.nextCursor;
          // A full page means more is waiting: read it at once.
          if (((res.body.data as unknown[]) ?? []).length === 100) continue;
        } else {
          count(stats.logs.failures, String(res.status));
        }
      } catch (err) {
        count(stats.logs.failures, causeOf(err));
      }
      await sleep(pollMs);
    }
  }

  let probes = 0;
  async function pollOnce(): Promise<boolean> {
    if (!opts) return false;
    const query = new URLSearchParams({ workspaceId: opts.workspaceId, limit: "1" });
    const t0 = performance.now();
    try {
      const res = await request("GET", `/api/v1/logs?${query}`);
      if (res.status === 200) {
        succeeded("logs", performance.now() - t0);
        return true;
      }
      count(stats.logs.failures, String(res.status));
    } catch (err) {
      count(stats.logs.failures, causeOf(err));
    }
    return false;
  }

  const load: MixedLoad = {
    stats,
    sync,
    background,
    webhooks,
    receiver,
    polledLogIds,
    polledRepeats: 0,
    start(options) {
      opts = options;
      gatewayUrl = options.gatewayUrl;
      stopping = false;
      retryDeadline = Number.POSITIVE_INFINITY;
      loops = [
        ...Array.from({ length: options.syncConcurrency }, (_, i) =>
          executeLoop("sync", i, options.syncPauseMs),
        ),
        ...Array.from({ length: options.backgroundConcurrency }, (_, i) =>
          executeLoop("background", i, options.backgroundPauseMs),
        ),
        logsLoop(options.logsPollMs),
      ];
    },
    async stop() {
      stopping = true;
      retryDeadline = performance.now() + (opts?.settleMs ?? 60_000);
      await Promise.all(loops);
    },
    setGatewayUrl(url) {
      gatewayUrl = url;
    },
    async probe(kind, timeoutMs, everyMs = 200) {
      const deadline = performance.now() + timeoutMs;
      const prefix = `${opts?.keyPrefix ?? "k"}-probe`;
      while (performance.now() < deadline) {
        const ok =
          kind === "logs" ? await pollOnce() : await execute(kind, `${prefix}${probes}`, probes++, false);
        if (ok) return performance.now();
        await sleep(everyMs);
      }
      throw new Error(`no successful ${kind} probe within ${timeoutMs} ms`);
    },
    nextSuccess(kind, since, timeoutMs) {
      return new Promise((resolve, reject) => {
        const waiter = { kind, since, resolve };
        waiters.push(waiter);
        setTimeout(() => {
          const i = waiters.indexOf(waiter);
          if (i >= 0) {
            waiters.splice(i, 1);
            reject(new Error(`no successful ${kind} request within ${timeoutMs} ms`));
          }
        }, timeoutMs).unref();
      });
    },
  };
  return load;
}

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return (
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN
  );
}
