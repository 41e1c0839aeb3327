import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import { type Stack, startStack } from "../../gateway/cli/stack.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../helpers/infra.js";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.js";

/** Executions of each kind (sync and background); the gateways take turns. */
const RUNS = 10;

/**
 * Two executors, two notifiers and two gateways on one PostgreSQL and one NATS: work is shared, never
 * done twice, and a revoked key stops working on every gateway.
 */
describe("replicated stack", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let logDir: string;
  let stack: Stack;
  let receiver: WebhookReceiver;
  let adminKey: string;
  let workflowId: string;

  async function call(
    gatewayUrl: string,
    method: string,
    route: string,
    key: string,
    body?: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const headers: Record<string, string> = { "x-api-key": key };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${gatewayUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  /** The sum of every series of `metric` whose labels include `labels`. */
  async function metricSum(
    adminUrl: string,
    metric: string,
    labels: Record<string, string>,
  ): Promise<number> {
    const text = await (await fetch(`${adminUrl}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (!line.startsWith(`${metric}{`)) continue;
      const labelText = line.slice(metric.length + 1, line.indexOf("}"));
      if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) {
        sum += Number(line.slice(line.lastIndexOf(" ") + 1));
      }
    }
    return sum;
  }

  /** Finished runs counted by each executor replica. */
  const finishedRunsPerExecutor = () =>
    Promise.all(
      stack.replicaAdminUrls.executor.map(
        async (url) =>
          (await metricSum(url, "flowplane_executions_total", { status: "success" })) +
          (await metricSum(url, "flowplane_executions_total", { status: "error" })),
      ),
    );

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(tmpdir(), "flowplane-replicas-"));
    logDir = path.join(dataDir, "logs");
    receiver = await startWebhookReceiver();
    stack = await startStack({
      databaseUrl: db.url,
      natsUrl: TEST_NATS_URL,
      namespace,
      dataDir,
      logDir,
      logLevel: "info",
      ports: { auth: 0, executor: 0, logs: 0, notifier: 0, gateway: 0 },
      replicas: { executor: 2, notifier: 2, gateway: 2 },
      env: {
        AUTH_PLAN_PRO_API: "1000000/1000000",
        AUTH_PLAN_PRO_SYNC: "1000000/1000000",
        AUTH_PLAN_PRO_ASYNC: "1000000/1000000",
        AUTH_PLAN_PRO_USAGE_LIMIT_USD: "1000000",
        NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
      },
    });
    const dev = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    adminKey = dev.apiKey;
    workflowId = dev.workflowId;
  }, 240_000);

  afterAll(async () => {
    await stack?.stop();
    await receiver?.close();
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 120_000);

  it("starts two processes of executor, notifier and gateway, each with its own ports and log file", async () => {
    expect(stack.gatewayUrls).toHaveLength(2);
    expect(stack.gatewayUrls[0]).toBe(stack.gatewayUrl);
    for (const name of ["executor", "notifier", "gateway"] as const) {
      expect(new Set(stack.replicaUrls[name]).size, `${name} API ports`).toBe(2);
      expect(new Set(stack.replicaAdminUrls[name]).size, `${name} admin ports`).toBe(2);
      for (const adminUrl of stack.replicaAdminUrls[name]) {
        await waitFor(`${adminUrl} /readyz`, async () =>
          (await fetch(`${adminUrl}/readyz`)).status === 200 ? true : undefined,
        );
      }
    }
    expect(stack.replicaUrls.auth).toHaveLength(1);
    expect((await readdir(logDir)).sort()).toEqual(
      [
        "auth.log",
        "executor-0.log",
        "executor-1.log",
        "gateway-0.log",
        "gateway-1.log",
        "logs.log",
        "notifier-0.log",
        "notifier-1.log",
      ].sort(),
    );
  });

  it("runs every execution exactly once and delivers each completion exactly once", async () => {
    const subscribed = await call(stack.gatewayUrls[0]!, "POST", "/api/v1/notifications", adminKey, {
      name: "replicas hook",
      webhook: { url: receiver.url },
      allWorkflows: true,
    });
    expect(subscribed.status, JSON.stringify(subscribed.body)).toBe(201);

    const input = { "First Name": "John", Age: 30 };
    const sync = await Promise.all(
      Array.from({ length: RUNS }, (_, i) =>
        call(stack.gatewayUrls[i % 2]!, "POST", "/api/executeWorkflow", adminKey, { workflowId, input }),
      ),
    );
    const background = await Promise.all(
      Array.from({ length: RUNS }, (_, i) =>
        call(stack.gatewayUrls[i % 2]!, "POST", "/api/executeWorkflowBackground", adminKey, {
          workflowId,
          input,
        }),
      ),
    );
    for (const res of [...sync, ...background]) expect(res.status, JSON.stringify(res.body)).toBe(200);
    const runs = [...sync, ...background].map((res) => ({
      executionId: String(res.body.executionId),
      conversationId: String(res.body.conversationId),
    }));
    expect(new Set(runs.map((run) => run.executionId)).size).toBe(2 * RUNS);

    // One terminal row per execution, read through either gateway.
    for (const [i, run] of runs.entries()) {
      const conversation = await waitFor(
        `execution ${run.executionId} to finish`,
        async () => {
          const res = await call(stack.gatewayUrls[i % 2]!, "POST", "/api/getConversationById", adminKey, {
            workflowId,
            conversationId: run.conversationId,
          });
          const executions = res.body.executions as { status: string }[] | undefined;
          return executions?.every((e) => e.status === "success" || e.status === "error")
            ? executions
            : undefined;
        },
        60_000,
      );
      expect(conversation).toHaveLength(1);
      expect(conversation[0], JSON.stringify(conversation[0])).toMatchObject({
        executionId: run.executionId,
        status: "success",
      });
    }

    // Each executor finished some runs (each gateway talks to its own), and together exactly one per
    // execution: a run done twice would be counted twice.
    const finished = await waitFor("both executors' counts", async () => {
      const counts = await finishedRunsPerExecutor();
      return counts.reduce((a, b) => a + b, 0) >= 2 * RUNS ? counts : undefined;
    });
    expect(
      finished.every((count) => count > 0),
      `finished per executor: ${finished}`,
    ).toBe(true);
    expect(finished.reduce((a, b) => a + b, 0)).toBe(2 * RUNS);

    const deliveredIds = () =>
      new Set(
        receiver.received.map(
          (r) => (JSON.parse(r.rawBody) as { data?: { executionId?: string } }).data?.executionId,
        ),
      );
    await waitFor(
      "a webhook for every execution",
      () => (runs.every((run) => deliveredIds().has(run.executionId)) ? true : undefined),
      60_000,
    );
    // Both notifiers are done attempting what they took: no delivery is still in flight.
    const attempts = await waitFor("the notifiers' attempt counts", async () => {
      const counts = await Promise.all(
        stack.replicaAdminUrls.notifier.map((url) =>
          metricSum(url, "flowplane_notification_attempts_total", { channel: "webhook" }),
        ),
      );
      return counts.reduce((a, b) => a + b, 0) >= 2 * RUNS ? counts : undefined;
    });
    expect(attempts.reduce((a, b) => a + b, 0)).toBe(2 * RUNS);
    const deliveryIds = receiver.received.map((r) => r.headers["sim-delivery-id"]);
    expect(deliveryIds.every((id) => typeof id === "string" && id.length > 0)).toBe(true);
    expect(new Set(deliveryIds).size).toBe(deliveryIds.length);
    expect(receiver.received).toHaveLength(2 * RUNS);
    const perExecution = new Map<string, number>();
    for (const r of receiver.received) {
      const id = (JSON.parse(r.rawBody) as { data: { executionId: string } }).data.executionId;
      perExecution.set(id, (perExecution.get(id) ?? 0) + 1);
    }
    expect([...perExecution.values()].every((count) => count === 1)).toBe(true);
  }, 240_000);

  it("refuses a revoked key on both gateways within a second", async () => {
    const created = await call(stack.gatewayUrls[0]!, "POST", "/api/v1/tokens", adminKey, {
      name: "short-lived",
      kind: "admin",
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const token = created.body.data as { id: string; key: string };
    for (const gatewayUrl of stack.gatewayUrls) {
      expect((await call(gatewayUrl, "GET", "/api/v1/tokens", token.key)).status).toBe(200);
    }
    const revoked = await call(stack.gatewayUrls[1]!, "DELETE", `/api/v1/tokens/${token.id}`, adminKey);
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    await Promise.all(
      stack.gatewayUrls.map((gatewayUrl) =>
        waitFor(
          `${gatewayUrl} to refuse the revoked key`,
          async () =>
            (await call(gatewayUrl, "GET", "/api/v1/tokens", token.key)).status === 401 ? true : undefined,
          1_000,
        ),
      ),
    );
  }, 60_000);
});
