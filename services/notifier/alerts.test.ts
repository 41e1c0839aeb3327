import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { create, fromBinary } from "@bufbuild/protobuf";
import type { Kysely } from "kysely";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
} from "../../test/helpers/infra.js";
import { startWebhookReceiver } from "../../test/helpers/webhook-receiver.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import {
  DeliveryTaskSchema,
  NotificationDisabledSchema,
} from "../platform/gen/flowplane/events/v1/notification_pb.js";
import { AlertRuleType, SubscriptionSchema } from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { createLogger } from "../platform/log.js";
import { ensureStream, type NatsNames, natsNames } from "../platform/nats.js";
import { claimCooldown, evaluateRule, inactiveWorkflows } from "./alerts.js";
import { deliveriesStreamConfig } from "./consumer.js";
import { insertDelivery, processDeliveryTask } from "./deliveries.js";
import { checkNoActivity } from "./matching.js";
import { devEncryptionKey, SecretBox } from "./secrets.js";
import {
  type Database,
  type ExecutionOutcome,
  recordExecutionOutcome,
  type StoredAlertRule,
} from "./store.js";
import { createSubscription } from "./subscriptions.js";

const HOUR = 60 * 60 * 1000;
const NOW = new Date(Date.UTC(2026, 0, 10, 12, 0, 0));

let testDb: TestDatabase;
let db: Kysely<Database>;
let namespace: string;
let names: NatsNames;
let nc: NatsConnection;

function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

/** Records one run of `workflowId` finishing `agoMs` before NOW; returns what the rules see. */
async function run(
  workflowId: string,
  agoMs: number,
  init: { status?: "success" | "error"; durationMs?: number; cost?: number } = {},
): Promise<ExecutionOutcome> {
  const outcome: ExecutionOutcome = {
    executionId: uniqueId("exec"),
    tenantId: "ws_alerts",
    workflowId,
    status: init.status ?? "success",
    finishedAt: new Date(NOW.getTime() - agoMs),
    durationMs: init.durationMs ?? 100,
    cost: init.cost ?? 0.001,
  };
  await recordExecutionOutcome(db, outcome);
  return outcome;
}

const fires = async (rule: StoredAlertRule, outcome: ExecutionOutcome) =>
  (await evaluateRule(db, rule, outcome, NOW)) !== undefined;

async function subscription(
  rule: { type: AlertRuleType; threshold: number; windowHours?: number },
  init: { workflowIds?: string[] } = {},
) {
  return createSubscription(
    { db, box: new SecretBox(devEncryptionKey()), maxPerTenant: 1000 },
    "ws_alerts",
    create(SubscriptionSchema, {
      channel: { case: "email", value: { to: ["ops@example.com"] } },
      allWorkflows: !init.workflowIds,
      workflowIds: init.workflowIds ?? [],
      enabled: true,
      alertRule: { type: rule.type, threshold: rule.threshold, windowHours: rule.windowHours ?? 0 },
    }),
    new Date(NOW.getTime() - 10 * HOUR),
  );
}

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = createDatabase<Database>({ url: testDb.url, schema: "notifier", maxConnections: 8 });
  await migrateToLatest(
    db as Kysely<unknown>,
    "notifier",
    fileURLToPath(new URL("./migrations", import.meta.url)),
  );
  namespace = testNamespace();
  names = natsNames(namespace);
  nc = await connect({ servers: TEST_NATS_URL });
  await ensureStream(await nc.jetstreamManager(), deliveriesStreamConfig(names));
});

afterAll(async () => {
  await db?.destroy();
  await nc?.close();
  await testDb?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

describe("alert rules", () => {
  it("consecutive failures: fires at X in a row, a success resets the streak", async () => {
    const wf = uniqueId("wf");
    const rule: StoredAlertRule = { type: "consecutiveFailures", threshold: 3, windowHours: 0 };
    expect(await fires(rule, await run(wf, 50_000, { status: "error" }))).toBe(false);
    expect(await fires(rule, await run(wf, 40_000, { status: "error" }))).toBe(false);
    expect(await fires(rule, await run(wf, 30_000, { status: "error" }))).toBe(true);
    expect(await fires(rule, await run(wf, 20_000, { status: "success" }))).toBe(false);
    expect(await fires(rule, await run(wf, 10_000, { status: "error" }))).toBe(false);
  });

  it("failure rate: over X % with at least 5 runs, only once the whole window has been seen", async () => {
    const rule: StoredAlertRule = { type: "failureRate", threshold: 50, windowHours: 1 };
    // Watched for only 30 minutes: never fires, however bad.
    const young = uniqueId("wf");
    let last: ExecutionOutcome | undefined;
    for (let i = 0; i < 6; i++) last = await run(young, 30 * 60_000 - i * 1000, { status: "error" });
    expect(await fires(rule, last!)).toBe(false);

    const seasoned = async () => {
      const wf = uniqueId("wf");
      await run(wf, 2 * HOUR); // first seen before the window
      return wf;
    };
    // 3 of 5 failed (60 %) fires;
    const a = await seasoned();
    for (const status of ["error", "error", "success", "success"] as const)
      await run(a, 10 * 60_000, { status });
    expect(await fires(rule, await run(a, 5 * 60_000, { status: "error" }))).toBe(true);
    // exactly 50 % (not over) does not.
    const b = await seasoned();
    for (const status of ["error", "error", "error", "success", "success"] as const)
      await run(b, 10 * 60_000, { status });
    expect(await fires(rule, await run(b, 5 * 60_000, { status: "success" }))).toBe(false);
    // 4 runs, all failed: too few.
    const c = await seasoned();
    for (let i = 0; i < 3; i++) await run(c, 10 * 60_000, { status: "error" });
    expect(await fires(rule, await run(c, 5 * 60_000, { status: "error" }))).toBe(false);
  });

  it("latency threshold: a run slower than X seconds", async () => {
    const rule: StoredAlertRule = { type: "latencyThreshold", threshold: 2, windowHours: 0 };
    const wf = uniqueId("wf");
    expect(await fires(rule, await run(wf, 1000, { durationMs: 2000 }))).toBe(false);
    expect(await fires(rule, await run(wf, 1000, { durationMs: 2001 }))).toBe(true);
  });

  it("latency spike: X % slower than the window average, with at least 5 runs of baseline", async () => {
    const rule: StoredAlertRule = { type: "latencySpike", threshold: 100, windowHours: 1 };
    const wf = uniqueId("wf");
    for (let i = 0; i < 4; i++) await run(wf, 20 * 60_000, { durationMs: 100 });
    // Baseline of 4: no alert even for a huge spike.
    expect(await fires(rule, await run(wf, 1000, { durationMs: 10_000 }))).toBe(false);
    const wf2 = uniqueId("wf");
    for (let i = 0; i < 5; i++) await run(wf2, 20 * 60_000, { durationMs: 100 });
    await run(wf2, 3 * HOUR, { durationMs: 1 }); // outside the window, not in the average
    expect(await fires(rule, await run(wf2, 1000, { durationMs: 200 }))).toBe(false);
    const wf3 = uniqueId("wf");
    for (let i = 0; i < 5; i++) await run(wf3, 20 * 60_000, { durationMs: 100 });
    expect(await fires(rule, await run(wf3, 1000, { durationMs: 201 }))).toBe(true);
  });

  it("cost threshold: a run costing more than $X", async () => {
    const rule: StoredAlertRule = { type: "costThreshold", threshold: 0.5, windowHours: 0 };
    const wf = uniqueId("wf");
    expect(await fires(rule, await run(wf, 1000, { cost: 0.5 }))).toBe(false);
    expect(await fires(rule, await run(wf, 1000, { cost: 0.51 }))).toBe(true);
  });

  it("error count: more than X errors within the window, counted on an error", async () => {
    const rule: StoredAlertRule = { type: "errorCount", threshold: 2, windowHours: 1 };
    const wf = uniqueId("wf");
    await run(wf, 2 * HOUR, { status: "error" }); // outside the window
    expect(await fires(rule, await run(wf, 30 * 60_000, { status: "error" }))).toBe(false);
    expect(await fires(rule, await run(wf, 20 * 60_000, { status: "error" }))).toBe(false);
    expect(await fires(rule, await run(wf, 10 * 60_000, { status: "error" }))).toBe(true);
    expect(await fires(rule, await run(wf, 5 * 60_000, { status: "success" }))).toBe(false);
  });

  it("no activity: workflows without a run in X hours, never-run ones counted from the subscription", async () => {
    const rule: StoredAlertRule = { type: "noActivity", threshold: 0, windowHours: 2 };
    const quiet = uniqueId("wf");
    const busy = uniqueId("wf");
    const never = uniqueId("wf");
    await run(quiet, 3 * HOUR);
    await run(busy, 1 * HOUR);
    const sub = { tenant_id: "ws_alerts", all_workflows: false, workflow_ids: [quiet, busy, never] };
    const old = await inactiveWorkflows(
      db,
      { ...sub, created_at: new Date(NOW.getTime() - 5 * HOUR) },
      rule,
      NOW,
    );
    expect(old.map((w) => w.workflowId).sort()).toEqual([never, quiet].sort());
    const fresh = await inactiveWorkflows(
      db,
      { ...sub, created_at: new Date(NOW.getTime() - HOUR) },
      rule,
      NOW,
    );
    expect(fresh.map((w) => w.workflowId)).toEqual([quiet]);
  });
});

describe("cooldown", () => {
  it("lets one claim per hour through, atomically", async () => {
    const sub = await subscription({ type: AlertRuleType.COST_THRESHOLD, threshold: 1 });
    const wf = uniqueId("wf");
    const attempts = await Promise.all(
      Array.from({ length: 8 }, () => claimCooldown(db, sub.id, "costThreshold", wf, NOW)),
    );
    expect(attempts.filter(Boolean)).toHaveLength(1);
    expect(await claimCooldown(db, sub.id, "costThreshold", wf, new Date(NOW.getTime() + 59 * 60_000))).toBe(
      false,
    );
    // Other rules and workflows have their own cooldowns.
    expect(await claimCooldown(db, sub.id, "costThreshold", uniqueId("wf"), NOW)).toBe(true);
    expect(await claimCooldown(db, sub.id, "latencyThreshold", wf, NOW)).toBe(true);
    expect(await claimCooldown(db, sub.id, "costThreshold", wf, new Date(NOW.getTime() + HOUR))).toBe(true);
  });

  it("fires a no-activity alert once across concurrent checkers, and again only after the cooldown", async () => {
    const wf = uniqueId("wf");
    await run(wf, 5 * HOUR);
    const sub = await subscription(
      { type: AlertRuleType.NO_ACTIVITY, threshold: 0, windowHours: 2 },
      { workflowIds: [wf] },
    );
    const deps = (at: Date) => ({
      db,
      js: nc.jetstream(),
      names,
      log: createLogger("notifier", "silent"),
      auth: { getLimits: async () => ({}) as never },
      now: () => at.getTime(),
    });
    const fired = await Promise.all([checkNoActivity(deps(NOW)), checkNoActivity(deps(NOW))]);
    const deliveries = () =>
      db
        .selectFrom("deliveries")
        .select(["event_type", "payload"])
        .where("subscription_id", "=", sub.id)
        .execute();
    expect(await deliveries()).toHaveLength(1);
    expect(fired.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
    const [delivery] = await deliveries();
    expect(delivery!.event_type).toBe("workflow.alert.no_activity");
    expect(JSON.parse(delivery!.payload)).toMatchObject({
      type: "workflow.alert.no_activity",
      data: { workflowId: wf, inactivityHours: 2 },
      alert: { rule: "noActivity", windowHours: 2 },
    });
    await checkNoActivity(deps(new Date(NOW.getTime() + 30 * 60_000)));
    expect(await deliveries()).toHaveLength(1);
    await checkNoActivity(deps(new Date(NOW.getTime() + HOUR)));
    expect(await deliveries()).toHaveLength(2);
  });
});

describe("failing subscriptions", () => {
  it("disables a subscription whose deliveries have all failed for 24 hours, and announces it", async () => {
    const receiver = await startWebhookReceiver();
    receiver.respond = () => ({ status: 400, body: "no" });
    const box = new SecretBox(devEncryptionKey());
    const make = () =>
      createSubscription(
        { db, box, maxPerTenant: 1000 },
        "ws_failing",
        create(SubscriptionSchema, {
          channel: { case: "webhook", value: { url: receiver.url } },
          allWorkflows: true,
          enabled: true,
        }),
        new Date(NOW.getTime() - 30 * HOUR),
      );
    const announcements = nc.subscribe(names.notificationDisabled, { max: 1 });
    try {
      const deps = {
        db,
        js: nc.jetstream(),
        nc,
        names,
        log: createLogger("notifier", "silent"),
        box,
        email: {
          send: async () => ({ verdict: "fail" as const, statusCode: 0, responseSnippet: "", error: "" }),
          close() {},
        },
        retryDelaysMs: [1, 1, 1, 1, 1],
        attemptTimeoutMs: 5_000,
        allowPrivateTargets: true,
        now: () => NOW.getTime(),
        random: () => 0,
      };
      const attempt = async (subscriptionId: string, createdAgoMs: number) => {
        const id = await insertDelivery(
          db,
          {
            tenantId: "ws_failing",
            subscriptionId,
            channel: "webhook",
            dedupeKey: uniqueId("k"),
            eventId: uniqueId("evt"),
            eventType: "notification.test",
            executionId: "",
            workflowId: "",
            payload: "{}",
          },
          new Date(NOW.getTime() - createdAgoMs),
        );
        await processDeliveryTask(
          deps,
          create(DeliveryTaskSchema, { deliveryId: id, tenantId: "ws_failing", round: 0 }),
        );
      };
      const recent = await make();
      await attempt(recent.id, HOUR);
      const stale = await make();
      await attempt(stale.id, 25 * HOUR);
      const state = (id: string) =>
        db
          .selectFrom("subscriptions")
          .select(["enabled", "disabled_reason"])
          .where("id", "=", id)
          .executeTakeFirstOrThrow();
      expect(await state(recent.id)).toEqual({ enabled: true, disabled_reason: "" });
      expect(await state(stale.id)).toEqual({
        enabled: false,
        disabled_reason: "every delivery failed for 24 hours",
      });
      for await (const m of announcements) {
        expect(fromBinary(NotificationDisabledSchema, m.data)).toMatchObject({ subscriptionId: stale.id });
      }
    } finally {
      await receiver.close();
    }
  });
});
