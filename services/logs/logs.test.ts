import { randomBytes } from "node:crypto";
import { create, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
  WorkflowStateSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  Details,
  type LogEntry,
  LogsService,
  Order,
  type QueryLogsRequest,
} from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { type NatsNames, natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { CursorCodec } from "./cursor.js";
import { LOGS_CONSUMER } from "./ingest.js";
import { DEV_CURSOR_SECRET, logsService } from "./service.js";

const codec = new CursorCodec(DEV_CURSOR_SECRET);

type MessageInit = Partial<Omit<QueryLogsRequest, "$typeName">>;

let db: TestDatabase;
let namespace: string;
let names: NatsNames;
let running: RunningService;
let client: ReturnType<typeof createRpcClient<typeof LogsService>>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;

const BASE_MS = Date.UTC(2025, 0, 1, 12, 0, 0, 0);

function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

function completion(init: {
  tenantId: string;
  startedAtMs: number;
  executionId?: string;
  workflowId?: string;
  status?: ExecutionStatus;
  trigger?: Trigger;
}): ExecutionCompleted {
  const status = init.status ?? ExecutionStatus.SUCCESS;
  return create(ExecutionCompletedSchema, {
    executionId: init.executionId ?? uniqueId("exec"),
    tenantId: init.tenantId,
    workflowId: init.workflowId ?? "wf_demo",
    workflowVersion: 1,
    workflowName: "Greeter",
    workflowDescription: "Says hello",
    conversationId: uniqueId("conv"),
    status,
    trigger: init.trigger ?? Trigger.API,
    startedAt: timestampFromDate(new Date(init.startedAtMs)),
    endedAt: timestampFromDate(new Date(init.startedAtMs + 334)),
    durationMs: 334n,
    cost: {
      total: 0.00234,
      tokens: { prompt: 123n, completion: 456n, total: 579n },
      models: {
        "gpt-4o": {
          input: 0.001,
          output: 0.00134,
          total: 0.00234,
          tokens: { prompt: 123n, completion: 456n, total: 579n },
        },
      },
    },
    creditUsage: 3n,
    finalOutput: { Greeting: "Hello John", "Next Age": 31 },
    traceSpans: [
      {
        id: "span_1",
        blockId: "greet",
        name: "Greet",
        type: "function",
        status: status === ExecutionStatus.ERROR ? "error" : "success",
        startTime: timestampFromDate(new Date(init.startedAtMs)),
        endTime: timestampFromDate(new Date(init.startedAtMs + 10)),
        duration: 10n,
        output: fromJson(ValueSchema, { greeting: "Hello John" }),
      },
    ],
    error: status === ExecutionStatus.ERROR ? "boom" : undefined,
    path: ["start", "greet", "out_greeting"],
    input: { "First Name": "John", Age: 30 },
  });
}

/** Publishes like the executor does; returns the stream sequence. */
async function publish(event: ExecutionCompleted, msgID = `${event.executionId}:completed`): Promise<number> {
  const ack = await js.publish(
    names.executionCompleted(event.tenantId),
    toBinary(ExecutionCompletedSchema, event),
    {
      msgID,
    },
  );
  return ack.seq;
}

/** Waits until the logs consumer has finished (acked or terminated) everything up to `seq`. */
async function waitConsumed(seq: number): Promise<void> {
  await waitFor(`logs consumer past stream seq ${seq}`, async () => {
    const info = await jsm.consumers.info(names.executionsStream, LOGS_CONSUMER);
    return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0 ? true : undefined;
  });
}

async function publishAll(events: ExecutionCompleted[]): Promise<void> {
  let last = 0;
  for (const event of events) last = await publish(event);
  await waitConsumed(last);
}

async function query(init: MessageInit & { tenantId: string }) {
  return client.queryLogs(init);
}

/** Every log of a tenant, walking pages of `limit` in `order`. */
async function walk(
  tenantId: string,
  order: Order,
  limit: number,
): Promise<{ logs: LogEntry[]; pages: number }> {
  const logs: LogEntry[] = [];
  let cursor = "";
  let pages = 0;
  for (;;) {
    const res = await query({ tenantId, order, limit, cursor });
    pages++;
    logs.push(...res.data);
    if (res.nextCursor === "" || res.data.length === 0) return { logs, pages };
    cursor = res.nextCursor;
    if (pages > 100) throw new Error("pagination does not terminate");
  }
}

function expectConnectError(promise: Promise<unknown>, code: Code, message?: string) {
  return expect(promise).rejects.toSatisfy((err: unknown) => {
    if (!(err instanceof ConnectError)) return false;
    return err.code === code && (message === undefined || err.rawMessage === message);
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  names = natsNames(namespace);
  running = await startService(logsService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOGS_PORT: "0",
    LOG_LEVEL: "silent",
    // The fixtures start in 2025: keep them from the retention job.
    LOGS_RETENTION_DAYS_DEFAULT: "36500",
  });
  client = createRpcClient(LogsService, `http://127.0.0.1:${running.port}`);
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
});

afterAll(async () => {
  await running?.stop();
  await nc?.close();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

describe("logs service", () => {
  it("ingests a completion and serves it as a basic list item and as a full log", async () => {
    const tenantId = uniqueId("ten");
    const event = completion({ tenantId, startedAtMs: BASE_MS + 789, trigger: Trigger.WEBHOOK });
    await publish(event);
    const listed = await waitFor("the log to be listed", async () => {
      const res = await query({ tenantId });
      return res.data.length === 1 ? res.data[0] : undefined;
    });
    expect(listed?.id).toMatch(/^log_[0-9a-z]{26}$/);
    expect(listed).toMatchObject({
      workflowId: "wf_demo",
      executionId: event.executionId,
      conversationId: event.conversationId,
      level: "info",
      trigger: Trigger.WEBHOOK,
      totalDurationMs: 334n,
      traceSpans: [],
    });
    expect(timestampDate(listed!.startedAt!).toISOString()).toBe("2025-01-01T12:00:00.789Z");
    expect(timestampDate(listed!.endedAt!).toISOString()).toBe("2025-01-01T12:00:01.123Z");
    // Lists carry only the cost total.
    expect(listed?.cost?.total).toBe(0.00234);
    expect(listed?.cost?.tokens).toBeUndefined();
    expect(listed?.cost?.models).toEqual({});
    expect(listed?.workflow).toBeUndefined();
    expect(listed?.finalOutput).toBeUndefined();

    const { log } = await client.getLog({ tenantId, id: listed!.id });
    expect(log?.workflow).toMatchObject({ id: "wf_demo", name: "Greeter", description: "Says hello" });
    expect(log?.finalOutput).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expect(log?.traceSpans).toHaveLength(1);
    expect(log?.traceSpans[0]).toMatchObject({
      id: "span_1",
      blockId: "greet",
      duration: 10n,
    });
    expect(toJson(ValueSchema, log!.traceSpans[0]!.output!)).toEqual({ greeting: "Hello John" });
    expect(log?.cost?.total).toBe(0.00234);
    expect(log?.cost?.tokens).toMatchObject({ prompt: 123n, completion: 456n, total: 579n });
    expect(log?.cost?.models["gpt-4o"]).toMatchObject({ input: 0.001, output: 0.00134, total: 0.00234 });
  });

  it("marks failed executions with level error", async () => {
    const tenantId = uniqueId("ten");
    await publishAll([completion({ tenantId, startedAtMs: BASE_MS, status: ExecutionStatus.ERROR })]);
    const res = await query({ tenantId });
    expect(res.data.map((l) => l.level)).toEqual(["error"]);
  });

  it("stores one row when the same execution is published twice under different msgIDs", async () => {
    const tenantId = uniqueId("ten");
    const event = completion({ tenantId, startedAtMs: BASE_MS });
    await publish(event, `${event.executionId}:completed`);
    const seq = await publish(event, `${event.executionId}:completed:again`);
    await waitConsumed(seq);
    const res = await query({ tenantId });
    expect(res.data.map((l) => l.executionId)).toEqual([event.executionId]);
  });

  it("stores a version's snapshot with its first completion only, not with every completion", async () => {
    const tenantId = uniqueId("ten");
    const ofVersion = (version: number) => {
      const event = completion({ tenantId, startedAtMs: BASE_MS, workflowId: "wf_snap" });
      event.workflowVersion = version;
      event.workflowState = create(WorkflowStateSchema, {
        blocks: { start: { id: "start", type: "input", name: `Start v${version}` } },
      });
      return event;
    };
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      const versions = async () =>
        (
          await admin.query<{ version: number }>(
            "select version from logs.workflow_snapshots where tenant_id = $1 order by version",
            [tenantId],
          )
        ).rows.map((r) => r.version);
      await publishAll([ofVersion(1)]);
      expect(await versions()).toEqual([1]);
      // Versions are immutable: once v1's snapshot is stored, later v1 runs do not convert and send it
      // again. Removing the row makes a resend visible.
      await admin.query("delete from logs.workflow_snapshots where tenant_id = $1", [tenantId]);
      await publishAll([ofVersion(1), ofVersion(2), ofVersion(1)]);
      expect(await versions()).toEqual([2]);
    } finally {
      await admin.end();
    }
  });

  it("terminates an undecodable message and keeps consuming", async () => {
    const tenantId = uniqueId("ten");
    await js.publish(names.executionCompleted(tenantId), new Uint8Array([0xff, 0xff, 0xff]), {
      msgID: uniqueId("junk"),
    });
    // Decodable but empty: no execution id to key the row on.
    await js.publish(names.executionCompleted(tenantId), new Uint8Array(), { msgID: uniqueId("empty") });
    const good = completion({ tenantId, startedAtMs: BASE_MS });
    await publishAll([good]);
    const res = await query({ tenantId });
    expect(res.data.map((l) => l.executionId)).toEqual([good.executionId]);
  });

  it("redelivers a completion whose insert failed once the database accepts it again", async () => {
    const tenantId = uniqueId("ten");
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      await admin.query("alter table logs.execution_logs rename to execution_logs_away");
      const event = completion({ tenantId, startedAtMs: BASE_MS });
      await publish(event);
      // The insert fails and the message is nak'ed: it stays pending, not acked.
      await waitFor("a failed delivery", async () => {
        const info = await jsm.consumers.info(names.executionsStream, LOGS_CONSUMER);
        return info.num_redelivered > 0 ? true : undefined;
      });
      await admin.query("alter table logs.execution_logs_away rename to execution_logs");
      const listed = await waitFor("the redelivered log", async () => {
        const res = await query({ tenantId });
        return res.data.length > 0 ? res.data : undefined;
      });
      expect(listed.map((l) => l.executionId)).toEqual([event.executionId]);
    } finally {
      await admin.query("alter table if exists logs.execution_logs_away rename to execution_logs");
      await admin.end();
    }
  });

  it("paginates both orders over rows that tie on started_at without repeating or skipping", async () => {
    const tenantId = uniqueId("ten");
    const events = [
      completion({ tenantId, startedAtMs: BASE_MS - 1000 }),
      ...Array.from({ length: 7 }, () => completion({ tenantId, startedAtMs: BASE_MS })),
      completion({ tenantId, startedAtMs: BASE_MS + 1 }),
      completion({ tenantId, startedAtMs: BASE_MS + 1 }),
      completion({ tenantId, startedAtMs: BASE_MS + 5000 }),
    ];
    await publishAll(events);
    const all = (await query({ tenantId, limit: 1000 })).data;
    expect(all).toHaveLength(events.length);
    const positions = all.map((l) => ({ s: timestampDate(l.startedAt!).getTime(), id: l.id }));
    const expectedDesc = [...positions]
      .sort((a, b) => b.s - a.s || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
      .map((p) => p.id);
    expect(all.map((l) => l.id)).toEqual(expectedDesc);

    for (const limit of [1, 3, 4, 11]) {
      const desc = await walk(tenantId, Order.DESC, limit);
      expect(desc.logs.map((l) => l.id)).toEqual(expectedDesc);
      const asc = await walk(tenantId, Order.ASC, limit);
      expect(asc.logs.map((l) => l.id)).toEqual([...expectedDesc].reverse());
    }
    // The default order is newest first.
    const unspecified = await walk(tenantId, Order.UNSPECIFIED, 4);
    expect(unspecified.logs.map((l) => l.id)).toEqual(expectedDesc);
  });

  it("returns next_cursor only while more rows exist, except on ascending walks (polling)", async () => {
    const tenantId = uniqueId("ten");
    await publishAll([0, 1, 2].map((i) => completion({ tenantId, startedAtMs: BASE_MS + i })));
    const descFirst = await query({ tenantId, order: Order.DESC, limit: 2 });
    expect(descFirst.data).toHaveLength(2);
    expect(codec.decode(descFirst.nextCursor)).toMatchObject({
      startedAt: timestampDate(descFirst.data[1]!.startedAt!),
      id: descFirst.data[1]!.id,
      order: "desc",
    });
    const descLast = await query({ tenantId, order: Order.DESC, limit: 2, cursor: descFirst.nextCursor });
    expect(descLast.data).toHaveLength(1);
    expect(descLast.nextCursor).toBe("");
    // Exactly a page's worth: no further page, so no cursor.
    expect((await query({ tenantId, order: Order.DESC, limit: 3 })).nextCursor).toBe("");

    const ascAll = await query({ tenantId, order: Order.ASC, limit: 3 });
    expect(ascAll.data).toHaveLength(3);
    expect(codec.decode(ascAll.nextCursor)).toMatchObject({ id: ascAll.data[2]!.id, order: "asc" });
    const ascAfter = await query({ tenantId, order: Order.ASC, limit: 3, cursor: ascAll.nextCursor });
    expect(ascAfter.data).toEqual([]);
    // An ascending cursor stays usable after an empty page: the next poll resumes from it.
    expect(codec.decode(ascAfter.nextCursor)).toMatchObject({ id: ascAll.data[2]!.id, order: "asc" });
  });

  it("rejects a malformed cursor", async () => {
    const tenantId = uniqueId("ten");
    for (const cursor of [
      "not a cursor",
      Buffer.from('{"s":"soon","id":"log_x"}').toString("base64url"),
      "e30",
    ]) {
      await expectConnectError(query({ tenantId, cursor }), Code.InvalidArgument, "cursor is invalid");
    }
  });

  it("refuses seed 002's unsigned example cursor: cursors are signed by this deployment", async () => {
    const tenantId = uniqueId("ten");
    const cursor = "eyJzIjoiMjAyNS0wMS0wMVQxMjozNDo1Ni43ODlaIiwiaWQiOiJsb2dfYWJjMTIzIn0";
    await expectConnectError(query({ tenantId, cursor }), Code.InvalidArgument, "cursor is invalid");
  });

  it("enforces limit bounds and defaults to 100", async () => {
    const tenantId = uniqueId("ten");
    for (const limit of [-1, 1001]) {
      await expectConnectError(
        query({ tenantId, limit }),
        Code.InvalidArgument,
        "limit must be between 1 and 1000",
      );
    }
    await publishAll(
      Array.from({ length: 101 }, (_, i) => completion({ tenantId, startedAtMs: BASE_MS + i })),
    );
    const byDefault = await query({ tenantId });
    expect(byDefault.data).toHaveLength(100);
    expect(byDefault.nextCursor).not.toBe("");
    expect((await query({ tenantId, limit: 1000 })).data).toHaveLength(101);
    expect((await query({ tenantId, limit: 1 })).data).toHaveLength(1);
  });

  it("keeps tenants apart in QueryLogs and GetLog", async () => {
    const tenantA = uniqueId("ten");
    const tenantB = uniqueId("ten");
    await publishAll([completion({ tenantId: tenantA, startedAtMs: BASE_MS })]);
    const [logA] = (await query({ tenantId: tenantA })).data;
    expect(logA).toBeDefined();
    expect((await query({ tenantId: tenantB })).data).toEqual([]);
    await expectConnectError(client.getLog({ tenantId: tenantB, id: logA!.id }), Code.NotFound);
    await expectConnectError(client.getLog({ tenantId: tenantA, id: "log_missing" }), Code.NotFound);
    expect((await client.getLog({ tenantId: tenantA, id: logA!.id })).log?.id).toBe(logA!.id);
    await expectConnectError(query({ tenantId: "" }), Code.InvalidArgument, "tenant_id is required");
    await expectConnectError(
      client.getLog({ tenantId: "", id: logA!.id }),
      Code.InvalidArgument,
      "tenant_id is required",
    );
    await expectConnectError(
      client.getLog({ tenantId: tenantA, id: "" }),
      Code.InvalidArgument,
      "id is required",
    );
  });

  it("fills workflow, final output and trace spans only when asked", async () => {
    const tenantId = uniqueId("ten");
    await publishAll([completion({ tenantId, startedAtMs: BASE_MS })]);
    const basic = (await query({ tenantId, details: Details.BASIC })).data[0]!;
    expect(basic.workflow).toBeUndefined();
    expect(basic.finalOutput).toBeUndefined();
    expect(basic.traceSpans).toEqual([]);

    const full = (await query({ tenantId, details: Details.FULL })).data[0]!;
    expect(full.workflow).toMatchObject({ id: "wf_demo", name: "Greeter", description: "Says hello" });
    expect(full.finalOutput).toBeUndefined();
    expect(full.traceSpans).toEqual([]);

    const withOutput = (await query({ tenantId, includeFinalOutput: true })).data[0]!;
    expect(withOutput.finalOutput).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expect(withOutput.traceSpans).toEqual([]);
    expect(withOutput.workflow).toBeUndefined();

    const withSpans = (await query({ tenantId, includeTraceSpans: true })).data[0]!;
    expect(withSpans.traceSpans.map((s) => s.blockId)).toEqual(["greet"]);
    expect(withSpans.finalOutput).toBeUndefined();
  });

  it("filters by workflow ids", async () => {
    const tenantId = uniqueId("ten");
    await publishAll([
      completion({ tenantId, startedAtMs: BASE_MS, workflowId: "wf_a" }),
      completion({ tenantId, startedAtMs: BASE_MS + 1, workflowId: "wf_b" }),
      completion({ tenantId, startedAtMs: BASE_MS + 2, workflowId: "wf_c" }),
    ]);
    const res = await query({ tenantId, workflowIds: ["wf_a", "wf_c"], order: Order.ASC });
    expect(res.data.map((l) => l.workflowId)).toEqual(["wf_a", "wf_c"]);
    await expectConnectError(query({ tenantId, workflowIds: [""] }), Code.InvalidArgument);
  });

  it("lets a poller following the seed's pattern see every log exactly once", async () => {
    const tenantId = uniqueId("ten");
    const seen: string[] = [];
    let cursor = "";
    // One poll as in seed 002's example: order asc, keep the latest non-empty nextCursor.
    const poll = async () => {
      const res = await query({ tenantId, order: Order.ASC, limit: 2, cursor });
      for (const log of res.data) seen.push(log.executionId);
      if (res.nextCursor) cursor = res.nextCursor;
      return res.data.length;
    };
    const pollUntil = async (count: number) => {
      await waitFor(`poller to see ${count} logs`, async () => {
        await poll();
        return seen.length >= count ? true : undefined;
      });
    };

    expect(await poll()).toBe(0);
    const first = [0, 1, 2].map((i) => completion({ tenantId, startedAtMs: BASE_MS + i * 1000 }));
    await publishAll(first);
    await pollUntil(3);
    expect(await poll()).toBe(0);
    expect(await poll()).toBe(0);

    const second = [3, 4, 5, 6, 7].map((i) => completion({ tenantId, startedAtMs: BASE_MS + i * 1000 }));
    await publishAll(second.slice(0, 2));
    await pollUntil(5);
    await publishAll(second.slice(2));
    await pollUntil(8);
    expect(await poll()).toBe(0);

    expect(seen).toEqual([...first, ...second].map((e) => e.executionId));
    expect(new Set(seen).size).toBe(8);
  });
});
