import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
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
import { UnusableMessageError } from "../platform/consumer.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import {
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { AlertRuleType, SubscriptionSchema } from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { createLogger } from "../platform/log.js";
import { ensureStream, type NatsNames, natsNames } from "../platform/nats.js";
import { completionOf, deliveriesStreamConfig, outcomeFromEvent } from "./consumer.js";
import { handleCompletions, type MatchingDeps } from "./matching.js";
import { devEncryptionKey, SecretBox } from "./secrets.js";
import {
  type Database,
  type ExecutionOutcome,
  recordExecutionOutcome,
  recordOutcomesAndWatchers,
} from "./store.js";
import { createSubscription } from "./subscriptions.js";

// Completions handled together (one pull's worth) must leave exactly what handling them one by one
// leaves: the batch path is an optimisation, not a second set of rules.

const NOW = new Date(Date.UTC(2026, 0, 10, 12, 0, 0));

let testDb: TestDatabase;
let db: Kysely<Database>;
let namespace: string;
let names: NatsNames;
let nc: NatsConnection;

const uniqueId = (prefix: string) => `${prefix}_${randomBytes(6).toString("hex")}`;

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = createDatabase<Database>({ url: testDb.url, schema: "notifier", maxConnections: 4 });
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

async function statsOf(tenantId: string) {
  const rows = await db
    .selectFrom("execution_stats")
    .select([
      "workflow_id",
      "runs",
      "failures",
      "consecutive_failures",
      "last_status",
      "last_execution_at",
      "first_execution_at",
    ])
    .where("tenant_id", "=", tenantId)
    .orderBy("workflow_id")
    .execute();
  return rows;
}

async function windowOf(tenantId: string) {
  return db
    .selectFrom("execution_window")
    .select(["workflow_id", "status", "finished_at", "duration_ms", "cost"])
    .where("tenant_id", "=", tenantId)
    .orderBy("finished_at")
    .orderBy("status")
    .execute();
}

function subscribe(
  tenantId: string,
  init: { workflowIds?: string[]; alertRule?: { type: AlertRuleType; threshold: number } },
) {
  return createSubscription(
    { db, box: new SecretBox(devEncryptionKey()), maxPerTenant: 1000 },
    tenantId,
    create(SubscriptionSchema, {
      channel: { case: "email", value: { to: ["ops@example.com"] } },
      allWorkflows: !init.workflowIds,
      workflowIds: init.workflowIds ?? [],
      enabled: true,
      ...(init.alertRule ? { alertRule: { ...init.alertRule, windowHours: 0 } } : {}),
    }),
    new Date(NOW.getTime() - 60_000),
  );
}

describe("completions handled as a batch", () => {
  it("leave the same stats and window as one by one, in order, duplicates counted once", async () => {
    // [workflow, status, seconds before NOW]: out-of-order times, a tie, streaks, a non-final status.
    const script: Array<[string, string, number]> = [
      ["a", "success", 50],
      ["a", "error", 40],
      ["b", "error", 30],
      ["a", "error", 10],
      ["b", "error", 35],
      ["a", "error", 20],
      ["b", "unspecified", 5],
      ["c", "success", 15],
      ["c", "error", 15],
      ["a", "success", 60],
    ];
    const one = uniqueId("ten");
    const batched = uniqueId("ten");
    const outcomes = (tenantId: string) => {
      const list: ExecutionOutcome[] = script.map(([wf, status, ago], i) => ({
        executionId: `${tenantId}_exec_${i}`,
        tenantId,
        workflowId: wf,
        status,
        finishedAt: new Date(NOW.getTime() - ago * 1000),
        durationMs: 100 + i,
        cost: i / 1000,
      }));
      // Counted before the batch (a redelivery; streaks of 1 for a and b going in), and one
      // execution twice within it.
      return { earlier: list.slice(0, 3), batch: [...list, list[3]!] };
    };
    for (const tenant of [one, batched]) {
      for (const o of outcomes(tenant).earlier) await recordExecutionOutcome(db, o);
    }
    for (const o of outcomes(one).batch) await recordExecutionOutcome(db, o);
    const found = await recordOutcomesAndWatchers(db, outcomes(batched).batch);
    expect(found).toHaveLength(script.length + 1);
    expect(found.every((f) => !f.deferred && f.watchers.length === 0)).toBe(true);

    const expected = await statsOf(one);
    expect(expected.map((r) => [r.workflow_id, r.runs, r.consecutive_failures, r.last_status])).toEqual([
      ["a", 5, 0, "error"],
      ["b", 3, 2, "unspecified"],
      ["c", 2, 1, "error"],
    ]);
    expect(await statsOf(batched)).toEqual(expected);
    expect(await windowOf(batched)).toEqual(await windowOf(one));
  });

  it("finds each completion's watchers, and leaves workflows an alert rule watches to one-by-one handling", async () => {
    const tenantId = uniqueId("ten");
    const everything = await subscribe(tenantId, {});
    const onlyB = await subscribe(tenantId, { workflowIds: ["b"] });
    await subscribe(tenantId, {
      workflowIds: ["alerting"],
      alertRule: { type: AlertRuleType.CONSECUTIVE_FAILURES, threshold: 2 },
    });
    const outcome = (workflowId: string, i: number, t = tenantId): ExecutionOutcome => ({
      executionId: uniqueId("exec"),
      tenantId: t,
      workflowId,
      status: "error",
      finishedAt: new Date(NOW.getTime() + i),
      durationMs: 1,
      cost: 0,
    });
    const found = await recordOutcomesAndWatchers(db, [
      outcome("a", 1),
      outcome("b", 2),
      outcome("alerting", 3),
      outcome("a", 4, uniqueId("ten")),
    ]);
    expect(found.map((f) => [f.deferred, f.watchers.map((w) => w.id)])).toEqual([
      [false, [everything.id]],
      [false, [everything.id, onlyB.id].sort()],
      [true, []],
      [false, []],
    ]);
    // The deferred one is not counted yet: handleCompletion will count it and then evaluate the rule.
    expect((await statsOf(tenantId)).map((r) => r.workflow_id)).toEqual(["a", "b"]);
  });

  it("raise per-run deliveries and alerts exactly as one by one would", async () => {
    const tenantId = uniqueId("ten");
    const perRun = await subscribe(tenantId, { workflowIds: ["wf"] });
    const alert = await subscribe(tenantId, {
      workflowIds: ["wf"],
      alertRule: { type: AlertRuleType.CONSECUTIVE_FAILURES, threshold: 2 },
    });
    const events = [0, 1, 2].map((i) =>
      create(ExecutionCompletedSchema, {
        executionId: `${tenantId}_exec_${i}`,
        tenantId,
        workflowId: "wf",
        workflowVersion: 1,
        status: ExecutionStatus.ERROR,
        trigger: Trigger.API,
        startedAt: timestampFromDate(new Date(NOW.getTime() + i * 1000)),
        endedAt: timestampFromDate(new Date(NOW.getTime() + i * 1000 + 10)),
        durationMs: 10n,
        error: "boom",
      }),
    );
    const deps: MatchingDeps = {
      db,
      js: nc.jetstream(),
      names,
      log: createLogger("notifier", "silent"),
      auth: { getLimits: async () => ({}) as never },
      now: () => NOW.getTime() + 5_000,
    };
    await handleCompletions(
      deps,
      events.map((event) => completionOf(toBinary(ExecutionCompletedSchema, event))),
    );
    const deliveries = await db
      .selectFrom("deliveries")
      .select(["subscription_id", "execution_id"])
      .where("tenant_id", "=", tenantId)
      .orderBy("subscription_id")
      .orderBy("execution_id")
      .execute();
    // The rule saw its own run's window: the second failure in a row raised it, and the cooldown held
    // the third.
    expect(deliveries).toEqual(
      [
        ...events.map((e) => ({ subscription_id: perRun.id, execution_id: e.executionId })),
        { subscription_id: alert.id, execution_id: events[1]!.executionId },
      ].sort((x, y) =>
        x.subscription_id === y.subscription_id
          ? x.execution_id.localeCompare(y.execution_id)
          : x.subscription_id.localeCompare(y.subscription_id),
      ),
    );
    expect(await statsOf(tenantId)).toMatchObject([{ workflow_id: "wf", runs: 3, consecutive_failures: 3 }]);
  });
});

describe("the head of a completion", () => {
  it("reads what the full decode reads, skipping output, spans, input and definition", () => {
    const at = new Date(NOW.getTime() - 1234);
    const event = create(ExecutionCompletedSchema, {
      executionId: "exec_head",
      tenantId: "ten_head",
      workflowId: "wf_head",
      workflowVersion: 7,
      workflowName: "Head",
      status: ExecutionStatus.ERROR,
      trigger: Trigger.SCHEDULE,
      startedAt: timestampFromDate(at),
      endedAt: timestampFromDate(new Date(at.getTime() + 250)),
      durationMs: 250n,
      cost: {
        total: 0.0425,
        tokens: { prompt: 3n, completion: 4n, total: 7n },
        models: { m: { total: 0.0425 } },
      },
      creditUsage: 9n,
      finalOutput: { fields: { out: { kind: { case: "stringValue", value: "ünïcode ✓" } } } },
      traceSpans: [
        { id: "s1", blockId: "b", name: "B", status: "error", duration: 250n, children: [{ id: "s2" }] },
      ],
      error: "boom",
      path: ["a", "b"],
      folderId: "fld_1",
    });
    const data = toBinary(ExecutionCompletedSchema, event);
    const completion = completionOf(data);
    expect(completion.head).toEqual({
      executionId: "exec_head",
      tenantId: "ten_head",
      workflowId: "wf_head",
      status: ExecutionStatus.ERROR,
      trigger: Trigger.SCHEDULE,
      startedAt: event.startedAt,
      endedAt: event.endedAt,
      durationMs: 250n,
      cost: { total: 0.0425 },
    });
    expect(completion.outcome).toEqual(outcomeFromEvent(event));
    expect(completion.event()).toEqual(event);
  });

  it("refuses bytes that are not a completion, as the full decode does", () => {
    expect(() => completionOf(new Uint8Array([0xff, 0xff, 0xff]))).toThrow(UnusableMessageError);
    // Field 1 (execution_id) sent as a varint.
    expect(() => completionOf(new Uint8Array([0x08, 0x01]))).toThrow(UnusableMessageError);
  });
});
