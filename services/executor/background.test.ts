import { create, fromBinary, type JsonObject, toBinary } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
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
import { authService } from "../auth/service.js";
import { Plan, TenantService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type LiveEvent,
  LiveEventKind,
  RunRequestedSchema,
} from "../platform/gen/flowplane/events/v1/run_pb.js";
import { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import { ensureDurableConsumer, natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { demoState, toState } from "./engine/workflow-fixtures.js";
import { executorService } from "./service.js";

// The tenant is created in the auth service, which hook and schedule runs ask for execution tokens.
let TENANT: string;
const OTHER_TENANT = newId("ws");
const READER = "background-test-reader";
const WORKERS = 2;

let db: TestDatabase;
let namespace: string;
let running: RunningService;
let auth: RunningService;
let workflows: Client<typeof WorkflowService>;
let executions: Client<typeof ExecutionService>;
let nc: NatsConnection;
let js: JetStreamClient;
let sql: pg.Pool;
let demoWorkflowId: string;

function executorEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    EXECUTOR_PORT: "0",
    EXECUTOR_WORKER_CONCURRENCY: String(WORKERS),
    EXECUTOR_SCHEDULE_POLL_MS: "100",
    EXECUTOR_FUNCTION_WORKERS: "1",
    AUTH_URL: `http://127.0.0.1:${auth.port}`,
    LOG_LEVEL: "silent",
    ...extra,
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  auth = await startService(authService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    AUTH_PORT: "0",
    AUTH_PLAN_PRO_ASYNC: "1000000/1000000",
    LOG_LEVEL: "silent",
  });
  const { tenant } = await createRpcClient(TenantService, `http://127.0.0.1:${auth.port}`).createTenant({
    name: "Background test",
    plan: Plan.PRO,
  });
  TENANT = tenant!.id;
  running = await startService(executorService, executorEnv());
  const url = `http://127.0.0.1:${running.port}`;
  workflows = createRpcClient(WorkflowService, url);
  executions = createRpcClient(ExecutionService, url);
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
  const names = natsNames(namespace);
  await ensureDurableConsumer(await nc.jetstreamManager(), names.executionsStream, READER, {
    filter_subject: names.executionCompletedAll,
  });
  sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
  // Dropping the test database with force ends these connections; that is no test failure.
  sql.on("error", () => {});
  sql.on("connect", (client) => client.on("error", () => {}));
  demoWorkflowId = await createWorkflow(demoState());
});

afterAll(async () => {
  await running?.stop();
  await auth?.stop();
  await nc?.close();
  await sql?.end();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

async function createWorkflow(state = demoState(), tenantId = TENANT, folderId = ""): Promise<string> {
  const { workflow } = await workflows.createWorkflow({ tenantId, name: "Test workflow", state, folderId });
  return workflow!.id;
}

/** input → wait(ms) → function → output "Done". */
function waitState(waitMs: number) {
  return toState({
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      pause: { id: "pause", type: "wait", name: "Pause", config: { durationMs: waitMs } },
      fn: { id: "fn", type: "function", name: "Fn", config: { code: "return { ok: true };" } },
      out: { id: "out", type: "output", name: "Done", config: { value: "blocks.fn.ok" } },
    },
    edges: [
      { id: "e1", source: "start", target: "pause" },
      { id: "e2", source: "pause", target: "fn" },
      { id: "e3", source: "fn", target: "out" },
    ],
  });
}

/** Every completion event read so far, by execution id. */
const completions = new Map<string, ExecutionCompleted[]>();

/** Reads the completion stream until it has nothing more for a moment. */
async function readCompletions(): Promise<void> {
  const consumer = await js.consumers.get(natsNames(namespace).executionsStream, READER);
  for (;;) {
    const m = await consumer.next({ expires: 1000 });
    if (!m) return;
    const event = fromBinary(ExecutionCompletedSchema, m.data);
    completions.set(event.executionId, [...(completions.get(event.executionId) ?? []), event]);
    m.ack();
  }
}

async function completionOf(executionId: string): Promise<ExecutionCompleted> {
  return waitFor(`completion of ${executionId}`, async () => {
    await readCompletions();
    return completions.get(executionId)?.[0];
  });
}

async function executionOf(executionId: string, tenantId = TENANT) {
  const { execution } = await executions.getExecution({ tenantId, executionId });
  return execution!;
}

async function statusOf(executionId: string): Promise<ExecutionStatus> {
  return (await executionOf(executionId)).status;
}

function waitForStatus(executionId: string, status: ExecutionStatus, timeoutMs = 20_000) {
  return waitFor(
    `execution ${executionId} to be ${ExecutionStatus[status]}`,
    async () => ((await statusOf(executionId)) === status ? true : undefined),
    timeoutMs,
  );
}

async function background(workflowId: string, input: JsonObject = {}) {
  return executions.executeBackground({ tenantId: TENANT, workflowId, input, trigger: Trigger.API });
}

describe("ExecutionService.ExecuteBackground", () => {
  it("answers at once with a queued execution that a worker runs, stores and publishes once", async () => {
    const res = await background(demoWorkflowId, { "First Name": "John", Age: 30 });
    expect(res.conversationId).toMatch(/^conv_/);
    expect(res.executionId).toMatch(/^exec_/);
    expect(res.creditUsage).toBe(0n);
    expect(res.status).toBe(ExecutionStatus.QUEUED);

    await waitForStatus(res.executionId, ExecutionStatus.SUCCESS);
    const { conversation } = await executions.getConversation({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      conversationId: res.conversationId,
    });
    const [execution] = conversation!.executions;
    expect(execution!.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expect(execution!.creditUsage).toBe(1n);
    expect(execution!.path).toEqual(["start", "greet", "out_greeting", "out_age"]);

    const event = await completionOf(res.executionId);
    expect(event.status).toBe(ExecutionStatus.SUCCESS);
    expect(event.trigger).toBe(Trigger.API);
    expect(event.finalOutput).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    await readCompletions();
    expect(completions.get(res.executionId)).toHaveLength(1);
  });

  it("continues a conversation", async () => {
    const first = await background(demoWorkflowId, { "First Name": "Ann" });
    await waitForStatus(first.executionId, ExecutionStatus.SUCCESS);
    const second = await executions.executeBackground({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      input: { "First Name": "Bob" },
      conversationId: first.conversationId,
    });
    expect(second.conversationId).toBe(first.conversationId);
    await waitForStatus(second.executionId, ExecutionStatus.SUCCESS);
    const { conversation } = await executions.getConversation({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      conversationId: first.conversationId,
    });
    expect(conversation!.executions.map((e) => e.id)).toEqual([first.executionId, second.executionId]);
  });

  it("refuses bad input, unknown workflows and foreign conversations before queueing anything", async () => {
    const before = await sql.query("select count(*)::int as n from executions");
    const bad = await rpcError(background(demoWorkflowId, { Age: 3 }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toContain("First Name");
    expect((await rpcError(background("wf_nope", {}))).code).toBe(Code.NotFound);
    const foreign = await rpcError(
      executions.executeBackground({
        tenantId: OTHER_TENANT,
        workflowId: demoWorkflowId,
        input: { "First Name": "X" },
      }),
    );
    expect(foreign.code).toBe(Code.NotFound);
    const after = await sql.query("select count(*)::int as n from executions");
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it("shows queued, running and success while a run moves", async () => {
    // Occupy every worker so the next run has to wait in the queue.
    const blockers = await Promise.all(
      Array.from(
        { length: WORKERS },
        async () => (await background(await createWorkflow(waitState(60_000)))).executionId,
      ),
    );
    for (const id of blockers) await waitForStatus(id, ExecutionStatus.RUNNING);
    const workflowId = await createWorkflow(waitState(500));
    const queued = await background(workflowId);
    const { conversation } = await executions.getConversation({
      tenantId: TENANT,
      workflowId,
      conversationId: queued.conversationId,
    });
    expect(conversation!.executions[0]!.status).toBe(ExecutionStatus.QUEUED);

    // Free one worker: the queued run starts.
    const cancelled = await executions.cancelExecution({ tenantId: TENANT, executionId: blockers[0]! });
    expect(cancelled.execution!.status).toBe(ExecutionStatus.ERROR);
    expect(cancelled.execution!.error).toBe("cancelled");
    await waitForStatus(queued.executionId, ExecutionStatus.RUNNING);
    await waitForStatus(queued.executionId, ExecutionStatus.SUCCESS);
    await executions.cancelExecution({ tenantId: TENANT, executionId: blockers[1]! });
    await waitForStatus(blockers[1]!, ExecutionStatus.ERROR);
  });
});

describe("ExecutionService.CancelExecution", () => {
  it("cancels a queued execution without running it and a running one by aborting it", async () => {
    const blockers = await Promise.all(
      Array.from(
        { length: WORKERS },
        async () => (await background(await createWorkflow(waitState(60_000)))).executionId,
      ),
    );
    for (const id of blockers) await waitForStatus(id, ExecutionStatus.RUNNING);
    const queued = await background(demoWorkflowId, { "First Name": "Q" });
    expect(await statusOf(queued.executionId)).toBe(ExecutionStatus.QUEUED);

    const { execution } = await executions.cancelExecution({
      tenantId: TENANT,
      executionId: queued.executionId,
    });
    expect(execution!.status).toBe(ExecutionStatus.ERROR);
    expect(execution!.error).toBe("cancelled");
    expect(execution!.path).toEqual([]);
    const queuedEvent = await completionOf(queued.executionId);
    expect(queuedEvent.status).toBe(ExecutionStatus.ERROR);
    expect(queuedEvent.error).toBe("cancelled");

    const started = Date.now();
    const aborted = await executions.cancelExecution({ tenantId: TENANT, executionId: blockers[0]! });
    expect(aborted.execution!.status).toBe(ExecutionStatus.ERROR);
    expect(aborted.execution!.error).toBe("cancelled");
    // The 60 s wait was cut short.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(aborted.execution!.path).toContain("pause");
    expect((await completionOf(blockers[0]!)).error).toBe("cancelled");
    await executions.cancelExecution({ tenantId: TENANT, executionId: blockers[1]! });
    await waitForStatus(blockers[1]!, ExecutionStatus.ERROR);

    // The worker freed by the cancel takes the next run; the cancelled one never ran.
    const row = await sql.query("select attempts from executions where id = $1", [queued.executionId]);
    expect(row.rows[0].attempts).toBe(0);
  });

  it("refuses finished, unknown, foreign and malformed executions", async () => {
    const done = await background(demoWorkflowId, { "First Name": "Done" });
    await waitForStatus(done.executionId, ExecutionStatus.SUCCESS);
    const finished = await rpcError(
      executions.cancelExecution({ tenantId: TENANT, executionId: done.executionId }),
    );
    expect(finished.code).toBe(Code.FailedPrecondition);
    const foreign = await rpcError(
      executions.cancelExecution({ tenantId: OTHER_TENANT, executionId: done.executionId }),
    );
    expect(foreign.code).toBe(Code.NotFound);
    const unknown = await rpcError(
      executions.cancelExecution({ tenantId: TENANT, executionId: newId("exec") }),
    );
    expect(unknown.code).toBe(Code.NotFound);
    const malformed = await rpcError(executions.cancelExecution({ tenantId: TENANT, executionId: "exec.>" }));
    expect(malformed.code).toBe(Code.InvalidArgument);
  });

  it("aborts runs that exceed EXECUTOR_RUN_TIMEOUT_MS", async () => {
    const otherDb = await createTestDatabase();
    const otherNamespace = testNamespace();
    const short = await startService(executorService, {
      ...executorEnv({ EXECUTOR_RUN_TIMEOUT_MS: "300" }),
      DATABASE_URL: otherDb.url,
      FLOWPLANE_NAMESPACE: otherNamespace,
    });
    try {
      const url = `http://127.0.0.1:${short.port}`;
      const { workflow } = await createRpcClient(WorkflowService, url).createWorkflow({
        tenantId: TENANT,
        name: "Slow",
        state: waitState(30_000),
      });
      const res = await createRpcClient(ExecutionService, url).execute({
        tenantId: TENANT,
        workflowId: workflow!.id,
      });
      expect(res.status).toBe(ExecutionStatus.ERROR);
      expect(res.error).toBe("run timed out after 300 ms");
    } finally {
      await short.stop();
      await otherDb.drop();
      await deleteNamespaceStreams(otherNamespace);
    }
  });
});

describe("ExecutionService.WatchExecution", () => {
  it("streams a multi-block run's block events and ends with its final state", async () => {
    const workflowId = await createWorkflow(waitState(1_000));
    const queued = await background(workflowId);
    const seen: LiveEvent[] = [];
    for await (const res of executions.watchExecution({
      tenantId: TENANT,
      executionId: queued.executionId,
    })) {
      seen.push(res.event!);
    }
    const finishedBlocks = seen.filter((e) => e.kind === LiveEventKind.BLOCK_FINISHED).map((e) => e.blockId);
    // The watch started while the wait was still waiting, so everything from there on was seen.
    expect(finishedBlocks).toEqual(expect.arrayContaining(["pause", "fn", "out"]));
    const started = seen.filter((e) => e.kind === LiveEventKind.BLOCK_STARTED).map((e) => e.blockId);
    expect(started).toEqual(expect.arrayContaining(["fn", "out"]));
    expect(finishedBlocks.indexOf("pause")).toBeLessThan(finishedBlocks.indexOf("fn"));
    const last = seen[seen.length - 1]!;
    expect(last.kind).toBe(LiveEventKind.EXECUTION_FINISHED);
    expect(last.status).toBe(ExecutionStatus.SUCCESS);
    expect(last.output).toEqual({ Done: true });
  });

  it("streams every block of a run that was still queued when the watch began", async () => {
    // Runs publish live events only to watchers they know of: this one learns of it from the
    // watcher's mark in its row when a worker claims it. Queued by hand, so it surely waits.
    const workflowId = await createWorkflow(waitState(200));
    const executionId = newId("exec");
    const conversationId = newId("conv");
    await sql.query("insert into conversations (id, tenant_id, workflow_id) values ($1, $2, $3)", [
      conversationId,
      TENANT,
      workflowId,
    ]);
    await sql.query(
      `insert into executions (id, tenant_id, workflow_id, workflow_version, conversation_id, status, trigger,
         input, output, path, trace_spans, cost, cost_detail, credit_usage, started_at, duration_ms)
       values ($1, $2, $3, 1, $4, 'queued', 'api', '{}', '{}', '{}', '[]', 0, '{}', 0, now(), 0)`,
      [executionId, TENANT, workflowId, conversationId],
    );
    const seen: LiveEvent[] = [];
    const watching = (async () => {
      for await (const res of executions.watchExecution({ tenantId: TENANT, executionId }))
        seen.push(res.event!);
    })();
    await waitFor("the watcher's mark", async () => {
      const { rows } = await sql.query("select watched from executions where id = $1", [executionId]);
      return rows[0]?.watched === true ? true : undefined;
    });
    const request = create(RunRequestedSchema, { executionId, tenantId: TENANT, newConversation: true });
    await js.publish(natsNames(namespace).runRequest, toBinary(RunRequestedSchema, request), {
      msgID: executionId,
    });
    await watching;
    const started = seen.filter((e) => e.kind === LiveEventKind.BLOCK_STARTED).map((e) => e.blockId);
    expect(started).toEqual(["start", "pause", "fn", "out"]);
    const last = seen[seen.length - 1]!;
    expect(last.kind).toBe(LiveEventKind.EXECUTION_FINISHED);
    expect(last.status).toBe(ExecutionStatus.SUCCESS);
  });

  it("answers a finished execution with its final state, and refuses unknown ones", async () => {
    const done = await background(demoWorkflowId, { "First Name": "W" });
    await waitForStatus(done.executionId, ExecutionStatus.SUCCESS);
    const seen: LiveEvent[] = [];
    for await (const res of executions.watchExecution({ tenantId: TENANT, executionId: done.executionId })) {
      seen.push(res.event!);
    }
    expect(seen).toHaveLength(1);
    expect(seen[0]!.kind).toBe(LiveEventKind.EXECUTION_FINISHED);
    const unknown = await rpcError(
      (async () => {
        for await (const _ of executions.watchExecution({
          tenantId: OTHER_TENANT,
          executionId: done.executionId,
        })) {
          // nothing
        }
      })(),
    );
    expect(unknown.code).toBe(Code.NotFound);
  });
});

describe("WorkflowService workflows, folders and versions", () => {
  it("creates workflows in folders, gets them with their versions and lists them by keyset pages", async () => {
    const tenantId = newId("ws");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(await createWorkflow(demoState(), tenantId, i % 2 === 0 ? "fld_a" : ""));
    await workflows.publishVersion({ tenantId, workflowId: ids[0]!, state: demoState() });
    const got = await workflows.getWorkflow({ tenantId, workflowId: ids[0]! });
    expect(got.workflow!.folderId).toBe("fld_a");
    expect(got.workflow!.latestVersion).toBe(2);
    expect(got.versions.map((v) => v.version)).toEqual([1, 2]);

    const page1 = await workflows.listWorkflows({ tenantId, limit: 2 });
    expect(page1.workflows.map((w) => w.id)).toEqual([ids[4], ids[3]]);
    const page2 = await workflows.listWorkflows({ tenantId, limit: 2, cursor: page1.nextCursor });
    expect(page2.workflows.map((w) => w.id)).toEqual([ids[2], ids[1]]);
    const page3 = await workflows.listWorkflows({ tenantId, limit: 2, cursor: page2.nextCursor });
    expect(page3.workflows.map((w) => w.id)).toEqual([ids[0]]);
    expect(page3.nextCursor).toBe("");
    const inFolder = await workflows.listWorkflows({ tenantId, folderId: "fld_a" });
    expect(inFolder.workflows.map((w) => w.id)).toEqual([ids[4], ids[2], ids[0]]);

    expect((await rpcError(workflows.getWorkflow({ tenantId: TENANT, workflowId: ids[0]! }))).code).toBe(
      Code.NotFound,
    );
    expect((await rpcError(workflows.listWorkflows({ tenantId, cursor: "garbage" }))).code).toBe(
      Code.InvalidArgument,
    );
    expect((await rpcError(workflows.createWorkflow({ tenantId, name: "x", folderId: "a b" }))).code).toBe(
      Code.InvalidArgument,
    );
  });
});

describe("schedules", () => {
  it("fires each tick of an every-second schedule exactly once across two replicas", async () => {
    const second = await startService(executorService, executorEnv());
    try {
      const { schedule } = await workflows.createSchedule({
        tenantId: TENANT,
        workflowId: demoWorkflowId,
        cron: "* * * * * *",
        input: { "First Name": "Cron" },
      });
      expect(schedule!.id).toMatch(/^sched_/);
      expect(schedule!.timezone).toBe("UTC");
      await waitFor("three ticks", async () => {
        const { rows } = await sql.query(
          "select count(*)::int as n from schedule_ticks where schedule_id = $1",
          [schedule!.id],
        );
        return rows[0].n >= 3 ? true : undefined;
      });
      const ticks = await sql.query(
        "select tick_at, execution_id from schedule_ticks where schedule_id = $1 order by tick_at",
        [schedule!.id],
      );
      await workflows.deleteSchedule({
        tenantId: TENANT,
        workflowId: demoWorkflowId,
        scheduleId: schedule!.id,
      });
      const listed = await workflows.listSchedules({ tenantId: TENANT, workflowId: demoWorkflowId });
      expect(listed.schedules).toHaveLength(0);

      const { rows } = await sql.query(
        "select id, status, trigger from executions where trigger = 'schedule' and workflow_id = $1",
        [demoWorkflowId],
      );
      // One execution per tick, ticks one second apart: no tick fired twice, none was skipped.
      const tickTimes = ticks.rows.map((t: { tick_at: Date }) => t.tick_at.getTime());
      for (let i = 1; i < tickTimes.length; i++) expect(tickTimes[i]! - tickTimes[i - 1]!).toBe(1000);
      const tickExecutions = ticks.rows.map((t: { execution_id: string }) => t.execution_id);
      const scheduled = rows.filter((r: { id: string }) => tickExecutions.includes(r.id));
      expect(scheduled).toHaveLength(tickExecutions.length);
      // At most the tick fired between reading the ticks and deleting the schedule is extra.
      expect(rows.length - tickExecutions.length).toBeLessThanOrEqual(1);
      expect(rows.length).toBeGreaterThanOrEqual(3);
      for (const row of rows) {
        await waitForStatus(row.id, ExecutionStatus.SUCCESS);
        const event = await completionOf(row.id);
        expect(event.trigger).toBe(Trigger.SCHEDULE);
      }
      await readCompletions();
      for (const row of rows) expect(completions.get(row.id)).toHaveLength(1);
    } finally {
      await second.stop();
    }
  });

  it("refuses bad cron expressions, time zones and inputs", async () => {
    const badCron = await rpcError(
      workflows.createSchedule({
        tenantId: TENANT,
        workflowId: demoWorkflowId,
        cron: "every day",
        input: {},
      }),
    );
    expect(badCron.code).toBe(Code.InvalidArgument);
    expect(badCron.rawMessage).toContain("cron");
    const badZone = await rpcError(
      workflows.createSchedule({
        tenantId: TENANT,
        workflowId: demoWorkflowId,
        cron: "0 * * * *",
        timezone: "Mars/Olympus",
        input: { "First Name": "x" },
      }),
    );
    expect(badZone.rawMessage).toContain("time zone");
    const badInput = await rpcError(
      workflows.createSchedule({
        tenantId: TENANT,
        workflowId: demoWorkflowId,
        cron: "0 * * * *",
        input: {},
      }),
    );
    expect(badInput.code).toBe(Code.InvalidArgument);
    expect(badInput.rawMessage).toContain("First Name");
    const foreign = await rpcError(
      workflows.createSchedule({ tenantId: OTHER_TENANT, workflowId: demoWorkflowId, cron: "0 * * * *" }),
    );
    expect(foreign.code).toBe(Code.NotFound);
  });
});

describe("hooks", () => {
  it("starts a background run with the hook's secret, and refuses a wrong one", async () => {
    const { hook, secret } = await workflows.createHook({ tenantId: TENANT, workflowId: demoWorkflowId });
    expect(hook!.id).toMatch(/^hook_/);
    expect(secret).toMatch(/^whsec_/);
    const wrong = await rpcError(
      executions.triggerHook({ hookId: hook!.id, secret: "whsec_wrong", input: {} }),
    );
    expect(wrong.code).toBe(Code.Unauthenticated);
    const unknown = await rpcError(executions.triggerHook({ hookId: newId("hook"), secret, input: {} }));
    expect(unknown.code).toBe(Code.NotFound);
    const badInput = await rpcError(executions.triggerHook({ hookId: hook!.id, secret, input: { Age: 1 } }));
    expect(badInput.code).toBe(Code.InvalidArgument);

    const res = await executions.triggerHook({ hookId: hook!.id, secret, input: { "First Name": "Hook" } });
    expect(res.workflowId).toBe(demoWorkflowId);
    await waitForStatus(res.executionId, ExecutionStatus.SUCCESS);
    const execution = await executionOf(res.executionId);
    expect(execution.trigger).toBe(Trigger.WEBHOOK);
    expect(execution.output).toEqual({ Greeting: "Hello Hook", "Next Age": 1 });
  });
});
