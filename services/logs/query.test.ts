import { randomBytes } from "node:crypto";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { CompiledQuery, type Kysely } from "kysely";
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { createDatabase } from "../platform/db.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
  type WorkflowState,
  WorkflowStateSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { LogsService, Order, type QueryLogsRequest } from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { type NatsNames, natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { CursorCodec } from "./cursor.js";
import { executionLogFromEvent, LOGS_CONSUMER, snapshotFromEvent } from "./ingest.js";
import { DEV_CURSOR_SECRET, logsService } from "./service.js";
import {
  type Database,
  insertExecutionLog,
  type LogFilters,
  lateRowsQuery,
  logPageQuery,
  noFilters,
  selectLogPage,
} from "./store.js";
import { loadSyntheticLogs } from "./synthetic-logs.js";

type QueryInit = Partial<Omit<QueryLogsRequest, "$typeName">> & { tenantId: string };

let db: TestDatabase;
let namespace: string;
let names: NatsNames;
let replicas: RunningService[] = [];
let client: ReturnType<typeof createRpcClient<typeof LogsService>>;
let store: Kysely<Database>;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;

const BASE_MS = Date.UTC(2025, 0, 1, 12, 0, 0, 0);
const codec = new CursorCodec(DEV_CURSOR_SECRET);

function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

interface CompletionInit {
  tenantId: string;
  startedAtMs: number;
  durationMs?: number;
  executionId?: string;
  workflowId?: string;
  workflowVersion?: number;
  folderId?: string;
  status?: ExecutionStatus;
  trigger?: Trigger;
  cost?: number;
  models?: string[];
  workflowState?: WorkflowState;
}

function completion(init: CompletionInit): ExecutionCompleted {
  const durationMs = init.durationMs ?? 100;
  const cost = init.cost ?? 0.001;
  const models = Object.fromEntries(
    (init.models ?? []).map((m) => [m, { input: cost / 2, output: cost / 2, total: cost }]),
  );
  return create(ExecutionCompletedSchema, {
    executionId: init.executionId ?? uniqueId("exec"),
    tenantId: init.tenantId,
    workflowId: init.workflowId ?? "wf_demo",
    workflowVersion: init.workflowVersion ?? 1,
    workflowName: "Greeter",
    workflowDescription: "Says hello",
    folderId: init.folderId ?? "",
    conversationId: uniqueId("conv"),
    status: init.status ?? ExecutionStatus.SUCCESS,
    trigger: init.trigger ?? Trigger.API,
    startedAt: timestampFromDate(new Date(init.startedAtMs)),
    endedAt: timestampFromDate(new Date(init.startedAtMs + durationMs)),
    durationMs: BigInt(durationMs),
    cost: { total: cost, models },
    creditUsage: 1n,
    finalOutput: { ok: true },
    workflowState: init.workflowState,
  });
}

async function publish(event: ExecutionCompleted): Promise<number> {
  const ack = await js.publish(
    names.executionCompleted(event.tenantId),
    toBinary(ExecutionCompletedSchema, event),
    {
      msgID: `${event.executionId}:completed`,
    },
  );
  return ack.seq;
}

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

/** Execution ids of every log matching `init`, walking ascending pages of 1000. */
async function ids(init: QueryInit): Promise<string[]> {
  const out: string[] = [];
  let cursor = "";
  for (;;) {
    const res = await client.queryLogs({ limit: 1000, order: Order.ASC, ...init, cursor });
    out.push(...res.data.map((l) => l.executionId));
    if (res.data.length === 0) return out;
    cursor = res.nextCursor;
  }
}

function rejects(promise: Promise<unknown>, code: Code, message: string | RegExp) {
  return expect(promise).rejects.toSatisfy((err: unknown) => {
    if (!(err instanceof ConnectError) || err.code !== code) return false;
    return typeof message === "string" ? err.rawMessage === message : message.test(err.rawMessage);
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  names = natsNames(namespace);
  const common = {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOGS_PORT: "0",
    LOG_LEVEL: "silent",
    LOGS_RETENTION_DAYS_DEFAULT: "36500",
  };
  // Two replicas share the durable consumer, so completions commit concurrently.
  replicas = [await startService(logsService, common), await startService(logsService, common)];
  client = createRpcClient(LogsService, `http://127.0.0.1:${replicas[0]!.port}`);
  store = createDatabase<Database>({ url: db.url, schema: "logs" });
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
});

afterAll(async () => {
  for (const r of replicas) await r.stop();
  await store?.destroy();
  await nc?.close();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

describe("QueryLogs filters", () => {
  const tenantId = uniqueId("ten");
  const e = {
    a: completion({
      tenantId,
      startedAtMs: BASE_MS,
      workflowId: "wf_a",
      folderId: "fld_1",
      durationMs: 100,
      cost: 0.001,
    }),
    b: completion({
      tenantId,
      startedAtMs: BASE_MS + 1000,
      workflowId: "wf_b",
      folderId: "fld_2",
      trigger: Trigger.WEBHOOK,
      durationMs: 200,
      cost: 0.002,
      models: ["gpt-4o"],
    }),
    c: completion({
      tenantId,
      startedAtMs: BASE_MS + 2000,
      workflowId: "wf_c",
      status: ExecutionStatus.ERROR,
      trigger: Trigger.SCHEDULE,
      durationMs: 300,
      cost: 0.003,
      models: ["claude-3", "gpt-4o"],
    }),
    d: completion({
      tenantId,
      startedAtMs: BASE_MS + 3000,
      workflowId: "wf_a",
      folderId: "fld_1",
      status: ExecutionStatus.ERROR,
      trigger: Trigger.CHAT,
      durationMs: 400,
      cost: 0.004,
      models: ["claude-3"],
    }),
  };
  const x = (...keys: (keyof typeof e)[]) => keys.map((k) => e[k].executionId);
  const at = (ms: number) => timestampFromDate(new Date(BASE_MS + ms));

  beforeAll(async () => {
    await publishAll(Object.values(e));
  });

  it("applies each filter alone, lists as IN and bounds inclusively", async () => {
    expect(await ids({ tenantId })).toEqual(x("a", "b", "c", "d"));
    expect(await ids({ tenantId, workflowIds: ["wf_a", "wf_c"] })).toEqual(x("a", "c", "d"));
    expect(await ids({ tenantId, folderIds: ["fld_1"] })).toEqual(x("a", "d"));
    expect(await ids({ tenantId, folderIds: ["fld_2", "fld_9"] })).toEqual(x("b"));
    expect(await ids({ tenantId, triggers: [Trigger.WEBHOOK, Trigger.CHAT] })).toEqual(x("b", "d"));
    expect(await ids({ tenantId, level: "error" })).toEqual(x("c", "d"));
    expect(await ids({ tenantId, level: "info" })).toEqual(x("a", "b"));
    expect(await ids({ tenantId, startDate: at(1000) })).toEqual(x("b", "c", "d"));
    expect(await ids({ tenantId, endDate: at(2000) })).toEqual(x("a", "b", "c"));
    expect(await ids({ tenantId, executionId: e.c.executionId })).toEqual(x("c"));
    expect(await ids({ tenantId, executionId: "exec_missing" })).toEqual([]);
    expect(await ids({ tenantId, minDurationMs: 200n })).toEqual(x("b", "c", "d"));
    expect(await ids({ tenantId, maxDurationMs: 300n })).toEqual(x("a", "b", "c"));
    expect(await ids({ tenantId, minCost: 0.002 })).toEqual(x("b", "c", "d"));
    expect(await ids({ tenantId, maxCost: 0.003 })).toEqual(x("a", "b", "c"));
    expect(await ids({ tenantId, models: ["gpt-4o"] })).toEqual(x("b", "c"));
    expect(await ids({ tenantId, models: ["claude-3", "mistral"] })).toEqual(x("c", "d"));
  });

  it("ANDs filters of every class together", async () => {
    // list × list
    expect(
      await ids({ tenantId, workflowIds: ["wf_a", "wf_b"], triggers: [Trigger.API, Trigger.WEBHOOK] }),
    ).toEqual(x("a", "b"));
    // list × range
    expect(await ids({ tenantId, folderIds: ["fld_1"], minDurationMs: 150n })).toEqual(x("d"));
    // range × range (date window and cost window)
    expect(await ids({ tenantId, startDate: at(1000), endDate: at(3000), maxCost: 0.003 })).toEqual(
      x("b", "c"),
    );
    // same bound on both ends
    expect(await ids({ tenantId, minDurationMs: 300n, maxDurationMs: 300n })).toEqual(x("c"));
    // exact × others (the others can exclude it)
    expect(await ids({ tenantId, executionId: e.c.executionId, level: "info" })).toEqual([]);
    // model × level
    expect(await ids({ tenantId, models: ["claude-3"], level: "error", workflowIds: ["wf_a"] })).toEqual(
      x("d"),
    );
    // everything at once
    expect(
      await ids({
        tenantId,
        workflowIds: ["wf_c"],
        triggers: [Trigger.SCHEDULE],
        level: "error",
        startDate: at(2000),
        endDate: at(2000),
        executionId: e.c.executionId,
        minDurationMs: 300n,
        maxDurationMs: 300n,
        minCost: 0.003,
        maxCost: 0.003,
        models: ["gpt-4o"],
      }),
    ).toEqual(x("c"));
    // another tenant sees none of it, whatever it filters on
    expect(await ids({ tenantId: uniqueId("ten"), workflowIds: ["wf_a"] })).toEqual([]);
  });

  it("walks filtered pages in both orders with cursors bound to the filters and order", async () => {
    const asc1 = await client.queryLogs({ tenantId, level: "error", order: Order.ASC, limit: 1 });
    const asc2 = await client.queryLogs({
      tenantId,
      level: "error",
      order: Order.ASC,
      limit: 1,
      cursor: asc1.nextCursor,
    });
    expect([...asc1.data, ...asc2.data].map((l) => l.executionId)).toEqual(x("c", "d"));
    const desc1 = await client.queryLogs({ tenantId, level: "error", order: Order.DESC, limit: 1 });
    const desc2 = await client.queryLogs({
      tenantId,
      level: "error",
      order: Order.DESC,
      limit: 1,
      cursor: desc1.nextCursor,
    });
    expect([...desc1.data, ...desc2.data].map((l) => l.executionId)).toEqual(x("d", "c"));
    expect(desc2.nextCursor).toBe("");

    const mismatch = "cursor does not match the query";
    await rejects(
      client.queryLogs({ tenantId, level: "info", order: Order.ASC, cursor: asc1.nextCursor }),
      Code.InvalidArgument,
      mismatch,
    );
    await rejects(
      client.queryLogs({ tenantId, order: Order.ASC, cursor: asc1.nextCursor }),
      Code.InvalidArgument,
      mismatch,
    );
    await rejects(
      client.queryLogs({ tenantId, level: "error", order: Order.DESC, cursor: asc1.nextCursor }),
      Code.InvalidArgument,
      mismatch,
    );
    // limit and detail flags are not filters: changing them keeps the cursor valid
    const wider = await client.queryLogs({
      tenantId,
      level: "error",
      order: Order.ASC,
      limit: 5,
      cursor: asc1.nextCursor,
      includeFinalOutput: true,
    });
    expect(wider.data.map((l) => l.executionId)).toEqual(x("d"));

    const [payload, mac] = asc1.nextCursor.split(".") as [string, string];
    const decoded = codec.decode(asc1.nextCursor);
    const forged = Buffer.from(
      JSON.stringify({
        s: new Date(0).toISOString(),
        id: decoded.id,
        w: decoded.seen,
        o: "asc",
        q: decoded.query,
      }),
    ).toString("base64url");
    for (const tampered of [`${forged}.${mac}`, `${payload}.${mac.slice(1)}`, payload]) {
      await rejects(
        client.queryLogs({ tenantId, level: "error", order: Order.ASC, cursor: tampered }),
        Code.InvalidArgument,
        "cursor is invalid",
      );
    }
  });

  it("rejects bad filter values naming the field", async () => {
    await rejects(
      client.queryLogs({ tenantId, triggers: [99 as Trigger] }),
      Code.InvalidArgument,
      /^triggers /,
    );
    await rejects(
      client.queryLogs({ tenantId, triggers: [Trigger.UNSPECIFIED] }),
      Code.InvalidArgument,
      /^triggers /,
    );
    await rejects(client.queryLogs({ tenantId, level: "warn" }), Code.InvalidArgument, /^level /);
    await rejects(
      client.queryLogs({ tenantId, minDurationMs: 5n, maxDurationMs: 4n }),
      Code.InvalidArgument,
      /min_duration_ms/,
    );
    await rejects(client.queryLogs({ tenantId, minDurationMs: -1n }), Code.InvalidArgument, /duration_ms/);
    await rejects(client.queryLogs({ tenantId, minCost: 2, maxCost: 1 }), Code.InvalidArgument, /min_cost/);
    await rejects(client.queryLogs({ tenantId, maxCost: Number.NaN }), Code.InvalidArgument, /max_cost/);
    await rejects(
      client.queryLogs({ tenantId, startDate: at(10), endDate: at(0) }),
      Code.InvalidArgument,
      /start_date/,
    );
    await rejects(client.queryLogs({ tenantId, folderIds: [""] }), Code.InvalidArgument, /^folder_ids /);
    await rejects(client.queryLogs({ tenantId, models: [""] }), Code.InvalidArgument, /^models /);
  });
});

describe("polling (order=asc + startDate + cursor)", () => {
  /** Seed 002's loop: same startDate every time, keep the latest non-empty nextCursor. */
  function poller(tenantId: string, startDate: Date, limit: number) {
    const seen: string[] = [];
    let cursor = "";
    const poll = async () => {
      const res = await client.queryLogs({
        tenantId,
        order: Order.ASC,
        limit,
        cursor,
        startDate: timestampFromDate(startDate),
      });
      for (const log of res.data) seen.push(log.executionId);
      if (res.nextCursor) cursor = res.nextCursor;
      return res.data.length;
    };
    const drain = async () => {
      while ((await poll()) > 0) {}
    };
    return { seen, poll, drain };
  }

  it("serves runs that finish after later-started ones, exactly once", async () => {
    const tenantId = uniqueId("ten");
    const p = poller(tenantId, new Date(BASE_MS), 2);
    // Short runs started at +10s..+14s finish first and are polled.
    const short = [10, 11, 12, 13, 14].map((s) => completion({ tenantId, startedAtMs: BASE_MS + s * 1000 }));
    await publishAll(short);
    await p.drain();
    expect(p.seen).toEqual(short.map((s) => s.executionId));
    // Long runs that started earlier (+1s..+5s) finish now: behind every cursor handed out so far.
    const long = [1, 2, 3, 4, 5].map((s) =>
      completion({ tenantId, startedAtMs: BASE_MS + s * 1000, durationMs: 60_000 }),
    );
    // One that started before the poller's startDate stays out.
    const tooOld = completion({ tenantId, startedAtMs: BASE_MS - 1000 });
    const later = completion({ tenantId, startedAtMs: BASE_MS + 20_000 });
    await publishAll([...long, tooOld, later]);
    await p.drain();
    await p.drain();
    const expected = [...short, ...long, later].map((s) => s.executionId);
    expect([...p.seen].sort()).toEqual([...expected].sort());
    expect(p.seen).toHaveLength(expected.length);
    // The late ones come before the walk goes on (in ingestion order, which two replicas may shuffle).
    expect(new Set(p.seen.slice(5, 10))).toEqual(new Set(long.map((l) => l.executionId)));
  });

  it("never skips or repeats while two replicas and direct writers commit concurrently out of start order", async () => {
    const tenantId = uniqueId("ten");
    const p = poller(tenantId, new Date(BASE_MS), 7);
    const published: string[] = [];
    let writing = true;
    const polling = (async () => {
      while (writing) await p.poll();
    })();
    // Starts are shuffled across an hour, so most rows land behind cursors already issued.
    const startOf = () => BASE_MS + Math.floor(Math.random() * 3_600_000);
    const viaNats = (async () => {
      for (let batch = 0; batch < 6; batch++) {
        const events = Array.from({ length: 15 }, () => completion({ tenantId, startedAtMs: startOf() }));
        published.push(...events.map((ev) => ev.executionId));
        await publishAll(events);
      }
    })();
    const direct = Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let i = 0; i < 25; i++) {
          const ev = completion({ tenantId, startedAtMs: startOf() });
          published.push(ev.executionId);
          await insertExecutionLog(store, executionLogFromEvent(ev), snapshotFromEvent(ev));
        }
      }),
    );
    await Promise.all([viaNats, direct]);
    writing = false;
    await polling;
    await p.drain();
    expect(published).toHaveLength(190);
    expect(new Set(p.seen).size).toBe(p.seen.length);
    expect([...p.seen].sort()).toEqual([...published].sort());
  });

  it("runs seed 002's polling example against the service", async () => {
    const tenantId = uniqueId("ten");
    const processed: string[] = [];
    // The seed's loop, with fetch replaced by the RPC the gateway makes for it.
    let cursor: string | null = null;
    const startDate = new Date(BASE_MS).toISOString();
    async function pollLogs() {
      const params: QueryInit = {
        tenantId,
        startDate: timestampFromDate(new Date(startDate)),
        order: Order.ASC,
        limit: 100,
      };
      if (cursor) params.cursor = cursor;
      const data = await client.queryLogs(params);
      for (const log of data.data) processed.push(log.executionId);
      if (data.nextCursor) cursor = data.nextCursor;
    }
    const first = Array.from({ length: 150 }, (_, i) =>
      completion({ tenantId, startedAtMs: BASE_MS + 1000 + i }),
    );
    await publishAll(first);
    await pollLogs();
    await pollLogs();
    await pollLogs();
    const second = [
      completion({ tenantId, startedAtMs: BASE_MS + 500 }),
      completion({ tenantId, startedAtMs: BASE_MS + 9000 }),
    ];
    await publishAll(second);
    await pollLogs();
    await pollLogs();
    expect(processed).toHaveLength(152);
    expect(new Set(processed)).toEqual(new Set([...first, ...second].map((e) => e.executionId)));
  });
});

describe("GetExecution", () => {
  const secretState = (): WorkflowState =>
    create(WorkflowStateSchema, {
      blocks: {
        start: {
          id: "start",
          type: "input",
          name: "Input",
          config: { fields: [{ name: "q", type: "string" }] },
        },
        call: {
          id: "call",
          type: "api",
          name: "Call",
          config: {
            url: "https://example.com",
            apiKey: "sk-live-123",
            headers: { Authorization: "Bearer abc", Accept: "application/json" },
            headerList: [
              { key: "X-Api-Key", value: "k-1" },
              { key: "Accept", value: "text/plain" },
            ],
            auth: { password: "hunter2", user: "bob", client_secret: "cs", accessToken: "t" },
          },
        },
      },
      edges: [{ id: "e1", source: "start", target: "call" }],
      loops: { l1: { id: "l1", nodes: ["call"], loopType: "for", iterations: 2 } },
    });

  it("answers the snapshot of the version that ran, redacted, stored once per version", async () => {
    const tenantId = uniqueId("ten");
    const v1 = [0, 1, 2].map((i) =>
      completion({
        tenantId,
        startedAtMs: BASE_MS + i,
        workflowId: "wf_s",
        workflowVersion: 1,
        workflowState: secretState(),
        models: ["gpt-4o"],
        cost: 0.5,
      }),
    );
    const v2State = secretState();
    v2State.blocks.start!.name = "Input v2";
    const v2 = completion({
      tenantId,
      startedAtMs: BASE_MS + 9,
      workflowId: "wf_s",
      workflowVersion: 2,
      workflowState: v2State,
    });
    await publishAll([...v1, v2]);

    const res = await client.getExecution({ tenantId, executionId: v1[1]!.executionId });
    expect(res.executionId).toBe(v1[1]!.executionId);
    expect(res.workflowId).toBe("wf_s");
    expect(res.trigger).toBe(Trigger.API);
    expect(timestampDate(res.startedAt!).getTime()).toBe(BASE_MS + 1);
    expect(Number(res.totalDurationMs)).toBe(100);
    expect(res.cost?.total).toBe(0.5);
    expect(Object.keys(res.cost?.models ?? {})).toEqual(["gpt-4o"]);
    const config = res.workflowState!.blocks.call!.config!;
    expect(config).toEqual({
      url: "https://example.com",
      apiKey: "[redacted]",
      headers: { Authorization: "[redacted]", Accept: "application/json" },
      headerList: [
        { key: "X-Api-Key", value: "[redacted]" },
        { key: "Accept", value: "text/plain" },
      ],
      auth: { password: "[redacted]", user: "bob", client_secret: "[redacted]", accessToken: "[redacted]" },
    });
    expect(res.workflowState!.loops.l1?.nodes).toEqual(["call"]);
    expect(res.workflowState!.edges.map((e) => e.target)).toEqual(["call"]);
    expect(
      (await client.getExecution({ tenantId, executionId: v2.executionId })).workflowState!.blocks.start!
        .name,
    ).toBe("Input v2");

    const stored = await store
      .selectFrom("workflow_snapshots")
      .select(["version", "state"])
      .where("tenant_id", "=", tenantId)
      .orderBy("version")
      .execute();
    expect(stored.map((s) => s.version)).toEqual([1, 2]);
    expect(JSON.stringify(stored)).not.toMatch(/sk-live-123|hunter2|Bearer abc/);

    await rejects(
      client.getExecution({ tenantId: uniqueId("ten"), executionId: v2.executionId }),
      Code.NotFound,
      /not found/,
    );
    await rejects(client.getExecution({ tenantId, executionId: "exec_missing" }), Code.NotFound, /not found/);
    await rejects(
      client.getExecution({ tenantId, executionId: "" }),
      Code.InvalidArgument,
      "execution_id is required",
    );
  });
});

describe("query plans", () => {
  it("walks indexes in keyset order without sorting the tenant's rows", async () => {
    const tenantId = uniqueId("ten");
    await loadSyntheticLogs(store, { tenantId, count: 50_000, from: new Date(BASE_MS), stepMs: 1000 });
    const base = { tenantId, fetch: 101, withWorkflow: false, withFinalOutput: false, withTraceSpans: false };
    const position = { startedAt: new Date(BASE_MS + 25_000_000), id: "log_m" };
    const cases = {
      "desc, no filter": logPageQuery(store, {
        ...base,
        filters: noFilters(),
        ascending: false,
        after: position,
      }),
      "asc, startDate": logPageQuery(store, {
        ...base,
        filters: { ...noFilters(), startDate: new Date(BASE_MS + 1000) },
        ascending: true,
        after: position,
      }),
      "one workflow": logPageQuery(store, {
        ...base,
        filters: { ...noFilters(), workflowIds: ["wf_3"] },
        ascending: false,
        after: position,
      }),
      "one folder": logPageQuery(store, {
        ...base,
        filters: { ...noFilters(), folderIds: ["fld_a"] },
        ascending: false,
        after: position,
      }),
      "errors only": logPageQuery(store, {
        ...base,
        filters: { ...noFilters(), level: "error" },
        ascending: false,
        after: position,
      }),
      "triggers, duration and cost": logPageQuery(store, {
        ...base,
        filters: { ...noFilters(), triggers: ["api", "chat"], minDurationMs: 10, maxCost: 0.05 },
        ascending: false,
        after: undefined,
      }),
      "late arrivals": lateRowsQuery(store, { ...base, filters: noFilters(), position, seen: 49_990 }),
    };
    for (const [name, query] of Object.entries(cases)) {
      const compiled = query.compile();
      const explained = await store.executeQuery(
        CompiledQuery.raw(`explain (format json) ${compiled.sql}`, [...compiled.parameters]),
      );
      const plan = JSON.stringify(explained.rows);
      expect(plan, name).toMatch(/"Node Type":"Index (Only )?Scan"/);
      expect(plan, name).not.toMatch(/"Node Type":"(Sort|Incremental Sort)"/);
      expect(plan, name).not.toMatch(/"Node Type":"Seq Scan"/);
      // The folder filter has its own index (0003), not a walk of the tenant's rows filtered.
      if (name === "one folder")
        expect(plan, name).toMatch(/"Index Name":"logs_by_tenant_folder_started_at_idx"/);
    }
  });
});

describe("pages compiled once per shape", () => {
  it("binds each request's own values into its shape's compiled page", async () => {
    const tenants = [uniqueId("ten"), uniqueId("ten")];
    for (const tenantId of tenants) {
      await loadSyntheticLogs(store, { tenantId, count: 2_000, from: new Date(BASE_MS), stepMs: 1000 });
    }
    const page = (tenantId: string, filters: LogFilters, after?: { startedAt: Date; id: string }) => ({
      tenantId,
      filters,
      ascending: after === undefined,
      after,
      fetch: 7,
      withWorkflow: after !== undefined,
      withFinalOutput: false,
      withTraceSpans: false,
    });
    // Each shape twice (or more) with other values: every run must match the query built for it.
    const requests = tenants.flatMap((tenantId, t) => [
      page(tenantId, noFilters()),
      page(tenantId, { ...noFilters(), workflowIds: [`wf_${t + 3}`] }),
      page(tenantId, {
        ...noFilters(),
        workflowIds: [`wf_${t}`, `wf_${t + 5}`],
        level: t ? "error" : "info",
      }),
      page(tenantId, { ...noFilters(), triggers: t ? ["api"] : ["chat"], models: ["gpt-4o"] }),
      page(
        tenantId,
        {
          ...noFilters(),
          startDate: new Date(BASE_MS + (100 + t) * 1000),
          endDate: new Date(BASE_MS + (900 - t) * 1000),
          minDurationMs: t * 10,
          maxDurationMs: 9000 - t,
          minCost: t / 10_000,
          maxCost: 0.09 - t / 10_000,
          folderIds: ["fld_a"],
        },
        { startedAt: new Date(BASE_MS + (700 + t * 50) * 1000), id: "log_m" },
      ),
      page(tenantId, { ...noFilters(), executionId: `exec_missing_${t}` }),
    ]);
    let nonEmpty = 0;
    for (const request of requests) {
      const expected = await logPageQuery(store, request).execute();
      const got = await selectLogPage(store, request);
      expect(got, JSON.stringify(request)).toEqual(expected);
      if (got.length > 0) nonEmpty++;
    }
    expect(nonEmpty).toBeGreaterThanOrEqual(6);
  });
});

describe("infrastructure faults", () => {
  it("answers Unavailable, not Internal or Unauthenticated, when its database goes away", async () => {
    // A replica whose database connections go through a proxy we then cut.
    const sockets = new Set<net.Socket>();
    const dbUrl = new URL(db.url);
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(dbUrl.port || 5432), dbUrl.hostname);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const proxyUrl = new URL(db.url);
    proxyUrl.hostname = "127.0.0.1";
    proxyUrl.port = String((proxy.address() as net.AddressInfo).port);
    const replica = await startService(logsService, {
      DATABASE_URL: proxyUrl.toString(),
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: namespace,
      LOGS_PORT: "0",
      LOG_LEVEL: "silent",
      LOGS_RETENTION_DAYS_DEFAULT: "36500",
    });
    try {
      const cut = createRpcClient(LogsService, `http://127.0.0.1:${replica.port}`);
      const tenantId = uniqueId("ten");
      expect((await cut.queryLogs({ tenantId })).data).toEqual([]);
      // Refuse new connections and cut the open ones (close() alone waits for them to end).
      proxy.close();
      for (const s of sockets) s.destroy();
      await rejects(cut.queryLogs({ tenantId }), Code.Unavailable, /unavailable/);
      await rejects(cut.queryLogs({ tenantId, order: Order.ASC }), Code.Unavailable, /unavailable/);
      await rejects(cut.getLog({ tenantId, id: "log_x" }), Code.Unavailable, /unavailable/);
      await rejects(cut.getExecution({ tenantId, executionId: "exec_x" }), Code.Unavailable, /unavailable/);
    } finally {
      await replica.stop().catch(() => {});
      if (proxy.listening) proxy.close();
    }
  });
});
