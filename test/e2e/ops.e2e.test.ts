import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import { PROCESS_NAMES, type ProcessName, type Stack, startStack } from "../../gateway/cli/stack.js";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../helpers/infra.js";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.js";

/**
 * What an operator relies on, against the whole stack as separate processes: admin ports with
 * readiness and metrics, logs free of secrets, and SIGTERM'd processes (executor, logs, notifier,
 * gateway) losing no accepted request, log row or delivery.
 */
describe("operating the stack", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let logDir: string;
  let stack: Stack;
  let receiver: WebhookReceiver;
  let adminKey: string;
  let workspaceId: string;
  let workflowId: string;
  let freeKey: string;
  /** Requests the gateway answered 503 while the executor was down (the drain test). */
  let refusedWhileDown = 0;

  async function call(
    method: string,
    route: string,
    key: string | undefined,
    body?: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const headers: Record<string, string> = {};
    if (key !== undefined) headers["x-api-key"] = key;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${stack.gatewayUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  const execute = () =>
    call("POST", "/api/executeWorkflow", adminKey, { workflowId, input: { "First Name": "John", Age: 30 } });

  async function metricsOf(name: ProcessName): Promise<string> {
    const res = await fetch(`${stack.adminUrls[name]}/metrics`);
    expect(res.status).toBe(200);
    return res.text();
  }

  /** The value of one series, e.g. series(text, "flowplane_x_total", { a: "b" }). */
  function series(text: string, metric: string, labels: Record<string, string>): number {
    for (const line of text.split("\n")) {
      if (!line.startsWith(`${metric}{`)) continue;
      const labelText = line.slice(metric.length + 1, line.indexOf("}"));
      if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) {
        return Number(line.slice(line.lastIndexOf(" ") + 1));
      }
    }
    return 0;
  }

  /** One execute with its own Idempotency-Key, so a replay can tell whether it had been accepted. */
  interface Attempt {
    key: string;
    status: number;
    executionId?: string;
    conversationId?: string;
    /** Transport error code when no answer came (ECONNREFUSED, UND_ERR_SOCKET, ...). */
    error?: string;
    startedAt: number;
    endedAt: number;
  }
  const drainBody = { workflowId: "", input: { "First Name": "Drain", Age: 1 } };
  let attemptSeq = 0;
  async function executeOnce(): Promise<Attempt> {
    const key = `drain-${namespace}-${++attemptSeq}`;
    const startedAt = Date.now();
    try {
      const res = await fetch(`${stack.gatewayUrl}/api/executeWorkflow`, {
        method: "POST",
        headers: { "x-api-key": adminKey, "content-type": "application/json", "idempotency-key": key },
        body: JSON.stringify({ ...drainBody, workflowId }),
      });
      const text = await res.text();
      const body = (text.startsWith("{") ? JSON.parse(text) : {}) as Record<string, unknown>;
      return {
        key,
        status: res.status,
        executionId: body.executionId as string | undefined,
        conversationId: body.conversationId as string | undefined,
        startedAt,
        endedAt: Date.now(),
      };
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      return { key, status: 0, error: cause?.code ?? (err as Error).message, startedAt, endedAt: Date.now() };
    }
  }

  /**
   * Executes from `loops` concurrent clients until `stop()` resolves, then keeps going until
   * `after` more are accepted; returns every attempt.
   */
  async function underLoad(
    disrupt: () => Promise<void>,
    opts: { before?: number; after?: number; loops?: number; sideLoad?: () => Promise<void> } = {},
  ): Promise<Attempt[]> {
    const attempts: Attempt[] = [];
    let phase: "before" | "after" | "done" = "before";
    let acceptedAfter = 0;
    const loop = async () => {
      while (phase !== "done") {
        const attempt = await executeOnce();
        attempts.push(attempt);
        if (attempt.status === 200 && phase === "after") acceptedAfter++;
        // A refused connection is instant; do not spin on it.
        if (attempt.status === 0) await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    const side = async () => {
      while (phase !== "done" && opts.sideLoad) await opts.sideLoad();
    };
    const loops = [...Array.from({ length: opts.loops ?? 4 }, loop), side()];
    try {
      await waitFor(
        "executions before the disruption",
        () => (attempts.filter((a) => a.status === 200).length >= (opts.before ?? 15) ? true : undefined),
        60_000,
      );
      await disrupt();
      phase = "after";
      await waitFor(
        "executions after the disruption",
        () => (acceptedAfter >= (opts.after ?? 15) ? true : undefined),
        90_000,
      );
    } finally {
      phase = "done";
      await Promise.all(loops);
    }
    return attempts;
  }

  /** Every answered execution must be readable in its conversation: none was lost. */
  async function expectStored(accepted: Attempt[]): Promise<void> {
    for (const { executionId, conversationId } of accepted) {
      const res = await call("POST", "/api/getConversationById", adminKey, { workflowId, conversationId });
      expect(res.status, `conversation of ${executionId}`).toBe(200);
      const ids = (res.body.executions as { executionId: string }[]).map((e) => e.executionId);
      expect(ids, `execution ${executionId}`).toContain(executionId);
    }
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(tmpdir(), "flowplane-ops-"));
    logDir = path.join(dataDir, "logs");
    receiver = await startWebhookReceiver();
    stack = await startStack({
      databaseUrl: db.url,
      natsUrl: TEST_NATS_URL,
      namespace,
      dataDir,
      logDir,
      logLevel: "debug",
      ports: {
        auth: 0,
        executor: 0,
        logs: 0,
        notifier: 0,
        gateway: 0,
      },
      env: {
        // The drain test sends a steady stream; the free plan is squeezed to prove 429s are counted.
        AUTH_PLAN_PRO_API: "1000000/1000000",
        AUTH_PLAN_PRO_SYNC: "1000000/1000000",
        AUTH_PLAN_PRO_USAGE_LIMIT_USD: "1000000",
        AUTH_PLAN_FREE_API: "1/1",
        NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
      },
    });
    const dev = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    adminKey = dev.apiKey;
    workspaceId = dev.workspaceId;
    workflowId = dev.workflowId;
    const { tenant } = await createRpcClient(TenantService, stack.serviceUrls.auth).createTenant({
      name: "Squeezed workspace",
      plan: Plan.FREE,
    });
    const token = await createRpcClient(AuthService, stack.serviceUrls.auth).createToken({
      tenantId: tenant?.id ?? "",
      kind: TokenKind.ADMIN,
      name: "ops e2e",
      purpose: "rate-limit refusals",
      createdBy: "",
    });
    freeKey = token.secret;
  }, 180_000);

  afterAll(async () => {
    await stack?.stop();
    await receiver?.close();
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 120_000);

  it("serves /healthz and /readyz on every process's admin port", async () => {
    for (const name of PROCESS_NAMES) {
      const health = await fetch(`${stack.adminUrls[name]}/healthz`);
      expect(health.status, `${name} /healthz`).toBe(200);
      const ready = await waitFor(`${name} /readyz to answer 200`, async () => {
        const res = await fetch(`${stack.adminUrls[name]}/readyz`);
        return res.status === 200 ? ((await res.json()) as { checks: Record<string, string> }) : undefined;
      });
      for (const [check, verdict] of Object.entries(ready.checks))
        expect(verdict, `${name} ${check}`).toBe("ok");
    }
    const gateway = (await (await fetch(`${stack.adminUrls.gateway}/readyz`)).json()) as { checks: object };
    expect(gateway.checks).toEqual({ auth: "ok" });
    const executor = (await (await fetch(`${stack.adminUrls.executor}/readyz`)).json()) as { checks: object };
    expect(Object.keys(executor.checks)).toEqual(
      expect.arrayContaining(["database", "nats", "consumer executor-workers"]),
    );
  });

  it("exposes Prometheus metrics that count the traffic", async () => {
    const subscribed = await call("POST", "/api/v1/notifications", adminKey, {
      name: "ops hook",
      webhook: { url: receiver.url },
      allWorkflows: true,
    });
    expect(subscribed.status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await execute()).status).toBe(200);
    // The free workspace's bucket holds one call: the second is refused.
    expect((await call("GET", "/api/v1/logs", freeKey)).status).not.toBe(429);
    expect((await call("GET", "/api/v1/logs", freeKey)).status).toBe(429);
    await waitFor("the webhook deliveries", () => (receiver.received.length >= 3 ? true : undefined), 60_000);

    const gateway = await metricsOf("gateway");
    expect(
      series(gateway, "flowplane_http_requests_total", { route: "/api/executeWorkflow", status: "200" }),
    ).toBeGreaterThanOrEqual(3);
    expect(
      series(gateway, "flowplane_http_request_duration_seconds_count", { route: "/api/executeWorkflow" }),
    ).toBeGreaterThanOrEqual(3);
    expect(
      series(gateway, "flowplane_rate_limit_refusals_total", { route: "/api/v1/logs" }),
    ).toBeGreaterThanOrEqual(1);
    expect(gateway).toContain("nodejs_eventloop_lag_seconds");

    const executor = await metricsOf("executor");
    expect(
      series(executor, "flowplane_executions_total", { status: "success", trigger: "api" }),
    ).toBeGreaterThanOrEqual(3);
    expect(
      series(executor, "flowplane_rpc_server_requests_total", {
        method: "flowplane.executor.v1.ExecutionService/Execute",
        code: "ok",
      }),
    ).toBeGreaterThanOrEqual(3);
    expect(
      series(executor, "flowplane_db_pool_connections", { pool: "executor", state: "total" }),
    ).toBeGreaterThan(0);

    const auth = await metricsOf("auth");
    expect(
      series(auth, "flowplane_rpc_server_requests_total", {
        method: "flowplane.auth.v1.AuthService/Authorize",
        code: "ok",
      }),
    ).toBeGreaterThan(0);
    await waitFor("auth-usage acks", async () =>
      series(await metricsOf("auth"), "flowplane_consumer_messages_total", {
        consumer: "auth-usage",
        outcome: "acked",
      }) >= 3
        ? true
        : undefined,
    );
    await waitFor("logs acks", async () =>
      series(await metricsOf("logs"), "flowplane_consumer_messages_total", {
        consumer: "logs",
        outcome: "acked",
      }) >= 3
        ? true
        : undefined,
    );
    // Queue depth per durable consumer, read from JetStream at scrape time.
    const notifier = await metricsOf("notifier");
    for (const state of ["undelivered", "unacked"]) {
      expect(notifier).toMatch(
        new RegExp(
          `flowplane_consumer_queue_depth\\{[^}]*consumer="notifier"[^}]*state="${state}"[^}]*\\} \\d+`,
        ),
      );
    }
    await waitFor("webhook attempts", async () =>
      series(await metricsOf("notifier"), "flowplane_notification_attempts_total", {
        channel: "webhook",
        outcome: "success",
      }) >= 3
        ? true
        : undefined,
    );
  }, 120_000);

  it("loses no accepted execution when the executor is SIGTERM'd under load and restarted", async () => {
    const accepted: { executionId: string; conversationId: string }[] = [];
    const failures = new Map<number, number>();
    const unexpected: { status: number; body: unknown }[] = [];
    let phase: "before" | "restarted" | "done" = "before";
    let acceptedAfterRestart = 0;
    const afterRestart = new Map<number, number>();
    let lastRefusal: unknown;
    const loop = async () => {
      while (phase !== "done") {
        const res = await execute().catch(() => ({ status: 0, body: {} }) as const);
        if (res.status === 200) {
          accepted.push({
            executionId: String(res.body.executionId),
            conversationId: String(res.body.conversationId),
          });
          if (phase === "restarted") acceptedAfterRestart++;
        } else {
          failures.set(res.status, (failures.get(res.status) ?? 0) + 1);
          if (phase === "restarted") afterRestart.set(res.status, (afterRestart.get(res.status) ?? 0) + 1);
          lastRefusal = res.body;
          if (res.status !== 503) unexpected.push(res);
        }
      }
    };
    const loops = Array.from({ length: 4 }, loop);
    try {
      await waitFor("executions before the stop", () => (accepted.length >= 20 ? true : undefined), 60_000);
      await stack.stopProcess("executor");
      await stack.startProcess("executor");
      phase = "restarted";
      await waitFor(
        "executions after the restart",
        () => (acceptedAfterRestart >= 20 ? true : undefined),
        90_000,
      ).catch((err: Error) => {
        throw new Error(
          `${err.message}; ${acceptedAfterRestart} accepted since, refusals since: ${JSON.stringify(Object.fromEntries(afterRestart))}, last: ${JSON.stringify(lastRefusal)}`,
        );
      });
    } finally {
      phase = "done";
      await Promise.all(loops);
    }

    refusedWhileDown = failures.get(503) ?? 0;
    console.info(
      `drain: ${accepted.length} accepted, ${refusedWhileDown} answered 503 while the executor was down, other failures: ${JSON.stringify(Object.fromEntries([...failures].filter(([status]) => status !== 503)))}`,
    );
    // Only 503 is acceptable for requests arriving during the gap; no 500, 502 or 504, no dropped connection.
    if (unexpected.length > 0) {
      // Say why: the gateway's and executor's lines about those requests.
      const ids = unexpected.map((failure) => String((failure.body as { requestId?: string }).requestId));
      for (const file of ["gateway.log", "executor.log"]) {
        const text = await readFile(path.join(logDir, file), "utf8").catch(() => "");
        const related = text
          .split("\n")
          .filter((line) => ids.some((id) => line.includes(id)) || /"level":50/.test(line));
        console.error(`${file}:\n${related.join("\n")}`);
      }
    }
    expect(unexpected).toEqual([]);
    for (const { executionId, conversationId } of accepted) {
      const res = await call("POST", "/api/getConversationById", adminKey, { workflowId, conversationId });
      expect(res.status, `conversation of ${executionId}`).toBe(200);
      const ids = (res.body.executions as { executionId: string; status: string }[]).map(
        (e) => e.executionId,
      );
      expect(ids, `execution ${executionId}`).toContain(executionId);
    }
  }, 240_000);

  it("loses no log row when the logs service is SIGTERM'd under load and restarted", async () => {
    const queries = new Map<number, number>();
    const attempts = await underLoad(
      async () => {
        await stack.stopProcess("logs");
        await stack.startProcess("logs");
      },
      {
        // Readers keep querying the logs while it drains: 200, or 503 while it is down, nothing else.
        sideLoad: async () => {
          const res = await call("GET", `/api/v1/logs?workspaceId=${workspaceId}&limit=5`, adminKey).catch(
            () => ({ status: 0, body: {} }),
          );
          queries.set(res.status, (queries.get(res.status) ?? 0) + 1);
        },
      },
    );
    const accepted = attempts.filter((a) => a.status === 200);
    console.info(
      `logs drain: ${accepted.length} executions accepted, log queries by status ${JSON.stringify(Object.fromEntries(queries))}`,
    );
    // The executor is untouched: every execute is answered.
    expect(attempts.filter((a) => a.status !== 200)).toEqual([]);
    expect([...queries.keys()].filter((status) => status !== 200 && status !== 503)).toEqual([]);
    // Every completion reaches the log exactly once, including those published while logs was down.
    for (const { executionId } of accepted) {
      const rows = await waitFor(`the log row of ${executionId}`, async () => {
        const res = await call(
          "GET",
          `/api/v1/logs?workspaceId=${workspaceId}&executionId=${executionId}`,
          adminKey,
        );
        const data = res.body.data as unknown[] | undefined;
        return res.status === 200 && data && data.length > 0 ? data : undefined;
      });
      expect(rows, executionId).toHaveLength(1);
    }
  }, 240_000);

  it("loses and repeats no webhook when the notifier is SIGTERM'd under load and restarted", async () => {
    // The "ops hook" subscription (metrics test) sends every completion to the receiver.
    const attempts = await underLoad(async () => {
      await stack.stopProcess("notifier");
      await stack.startProcess("notifier");
    });
    const accepted = attempts.filter((a) => a.status === 200);
    expect(attempts.filter((a) => a.status !== 200)).toEqual([]);
    const byExecution = new Map<string, Set<string>>();
    const posts = new Map<string, number>();
    const countPosts = () => {
      byExecution.clear();
      posts.clear();
      for (const request of receiver.received) {
        const executionId = /"executionId":"(exec_[^"]+)"/.exec(request.rawBody)?.[1];
        const deliveryId = request.headers["sim-delivery-id"] ?? "";
        if (!executionId) continue;
        const ids = byExecution.get(executionId) ?? new Set<string>();
        ids.add(deliveryId);
        byExecution.set(executionId, ids);
        posts.set(deliveryId, (posts.get(deliveryId) ?? 0) + 1);
      }
    };
    await waitFor(
      "a webhook for every accepted execution",
      () => {
        countPosts();
        return accepted.every((a) => byExecution.has(a.executionId ?? "")) ? true : undefined;
      },
      60_000,
    );
    console.info(`notifier drain: ${accepted.length} executions accepted, all delivered`);
    for (const { executionId } of accepted) {
      const deliveries = [...(byExecution.get(executionId ?? "") ?? [])];
      expect(deliveries, `deliveries of ${executionId}`).toHaveLength(1);
      // Sent once: a drain finishes the attempt in flight and acks it rather than leaving it to a retry.
      expect(posts.get(deliveries[0]!), `POSTs of delivery ${deliveries[0]}`).toBe(1);
    }
  }, 240_000);

  it("fails no accepted request when the gateway is SIGTERM'd under load and restarted", async () => {
    let sigtermAt = 0;
    const attempts = await underLoad(async () => {
      sigtermAt = Date.now();
      await stack.stopProcess("gateway");
      await stack.startProcess("gateway");
    });
    const accepted = attempts.filter((a) => a.status === 200);
    // Requests the SIGTERM caught in flight, answered by the draining gateway.
    const inFlight = accepted.filter((a) => a.startedAt < sigtermAt && a.endedAt > sigtermAt).length;
    const unanswered = attempts.filter((a) => a.status !== 200);
    const byOutcome = new Map<string, number>();
    for (const a of unanswered) {
      const label = a.status === 0 ? (a.error ?? "error") : String(a.status);
      byOutcome.set(label, (byOutcome.get(label) ?? 0) + 1);
    }
    console.info(
      `gateway drain: ${accepted.length} accepted (${inFlight} of them in flight at SIGTERM), not accepted by outcome ${JSON.stringify(Object.fromEntries(byOutcome))}`,
    );
    // While draining it answers 503 on open connections; once closed, connections are refused.
    expect(unanswered.filter((a) => a.status !== 0 && a.status !== 503)).toEqual([]);
    // None of those had been accepted: replaying its Idempotency-Key runs it now, it is not a replay
    // of an answer the client never received. A refused connection never reached the gateway at all.
    for (const attempt of unanswered.filter((a) => a.error !== "ECONNREFUSED")) {
      const res = await fetch(`${stack.gatewayUrl}/api/executeWorkflow`, {
        method: "POST",
        headers: {
          "x-api-key": adminKey,
          "content-type": "application/json",
          "idempotency-key": attempt.key,
        },
        body: JSON.stringify({ ...drainBody, workflowId }),
      });
      expect(res.status, `replay of ${attempt.key} (${attempt.error ?? attempt.status})`).toBe(200);
      expect(res.headers.get("idempotent-replayed"), `${attempt.key} had run before`).toBeNull();
      await res.arrayBuffer();
    }
    await expectStored(accepted);
  }, 240_000);

  it("never writes the API key to any process's log, and names request and tenant on gateway error lines", async () => {
    await stack.stop();
    const files = (await readdir(logDir)).filter((file) => file.endsWith(".log"));
    expect(files.sort()).toEqual(PROCESS_NAMES.map((name) => `${name}.log`).sort());
    const secretPart = adminKey.slice(12);
    let lines = 0;
    let gatewayFailures: Record<string, unknown>[] = [];
    for (const file of files) {
      const text = await readFile(path.join(logDir, file), "utf8");
      expect(text, file).not.toContain(secretPart);
      expect(text, file).not.toContain(freeKey.slice(12));
      lines += text.split("\n").length;
      if (file === "gateway.log") {
        gatewayFailures = text
          .split("\n")
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line) as Record<string, unknown>)
          .filter((line) => line.msg === "request failed");
      }
    }
    expect(lines).toBeGreaterThan(50);
    // The executor's restart left the gateway logging the 503s it answered meanwhile.
    if (refusedWhileDown > 0) expect(gatewayFailures.length).toBeGreaterThan(0);
    for (const failure of gatewayFailures) {
      expect(failure).toMatchObject({ service: "gateway", tenantId: workspaceId });
      expect(typeof failure.requestId).toBe("string");
    }
  }, 120_000);
});
