/**
 * Sync runs (Execute) are stored as `running` when they start: WatchExecution sees them move and
 * CancelExecution stops them, the caller getting status error "cancelled".
 */
import type { Client } from "@connectrpc/connect";
import { Kysely, PostgresDialect } from "kysely";
import { connect } from "nats";
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
import { ExecutionStatus, Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { type LiveEvent, LiveEventKind } from "../platform/gen/flowplane/events/v1/run_pb.js";
import { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { toState } from "./engine/workflow-fixtures.js";
import { executorService } from "./service.js";
import { type Database, failAbandonedSyncRuns } from "./store.js";

const TENANT = newId("ws");

let db: TestDatabase;
let namespace: string;
let running: RunningService;
let workflows: Client<typeof WorkflowService>;
let executions: Client<typeof ExecutionService>;
let sql: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  running = await startService(executorService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    EXECUTOR_PORT: "0",
    EXECUTOR_WORKER_CONCURRENCY: "0",
    EXECUTOR_FUNCTION_WORKERS: "1",
    LOG_LEVEL: "silent",
  });
  const url = `http://127.0.0.1:${running.port}`;
  workflows = createRpcClient(WorkflowService, url, { timeoutMs: 120_000 });
  executions = createRpcClient(ExecutionService, url, { timeoutMs: 120_000 });
  sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
  sql.on("error", () => {});
  sql.on("connect", (client) => client.on("error", () => {}));
});

afterAll(async () => {
  await running?.stop();
  await sql?.end();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

/** input → wait(ms) → function → output "Done". */
async function waitWorkflow(waitMs: number): Promise<string> {
  const state = toState({
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
  const { workflow } = await workflows.createWorkflow({ tenantId: TENANT, name: "Sync wait", state });
  return workflow!.id;
}

/** The id of the workflow's execution once its row says running (the sync caller has no id yet). */
async function runningExecutionOf(workflowId: string): Promise<string> {
  return waitFor("the sync run's running row", async () => {
    const { rows } = await sql.query(
      "select id from executions where workflow_id = $1 and status = 'running'",
      [workflowId],
    );
    return rows[0]?.id as string | undefined;
  });
}

describe("sync runs", () => {
  it("are watched moving from block to block", async () => {
    const workflowId = await waitWorkflow(3_000);
    const answer = executions.execute({ tenantId: TENANT, workflowId, input: {}, trigger: Trigger.API });
    const executionId = await runningExecutionOf(workflowId);
    const seen: LiveEvent[] = [];
    for await (const res of executions.watchExecution({ tenantId: TENANT, executionId })) {
      seen.push(res.event!);
    }
    const done = await answer;
    expect(done.executionId).toBe(executionId);
    expect(done.status).toBe(ExecutionStatus.SUCCESS);
    expect(seen[0]!.kind).toBe(LiveEventKind.EXECUTION_STARTED);
    const finishedBlocks = seen.filter((e) => e.kind === LiveEventKind.BLOCK_FINISHED).map((e) => e.blockId);
    // The watch began while the wait was waiting: everything from there on was seen, in order.
    expect(finishedBlocks).toEqual(expect.arrayContaining(["pause", "fn", "out"]));
    expect(finishedBlocks.indexOf("pause")).toBeLessThan(finishedBlocks.indexOf("fn"));
    expect(finishedBlocks.indexOf("fn")).toBeLessThan(finishedBlocks.indexOf("out"));
    const startedBlocks = seen.filter((e) => e.kind === LiveEventKind.BLOCK_STARTED).map((e) => e.blockId);
    expect(startedBlocks).toEqual(expect.arrayContaining(["fn", "out"]));
    const last = seen[seen.length - 1]!;
    expect(last.kind).toBe(LiveEventKind.EXECUTION_FINISHED);
    expect(last.status).toBe(ExecutionStatus.SUCCESS);
    expect(last.output).toEqual({ Done: true });
    // Read-your-writes: the answer came after the row was final.
    const { execution } = await executions.getExecution({ tenantId: TENANT, executionId });
    expect(execution!.status).toBe(ExecutionStatus.SUCCESS);
    expect(execution!.path).toEqual(["start", "pause", "fn", "out"]);
  });

  it("publish live events only while somebody watches them", async () => {
    const quick = await waitWorkflow(1);
    const slow = await waitWorkflow(2_000);
    // Listens to every live subject without being a watcher (sync runs do not probe for one).
    const nc = await connect({ servers: TEST_NATS_URL });
    try {
      const subjects: string[] = [];
      nc.subscribe(`${namespace}.live.>`, { callback: (_err, msg) => subjects.push(msg.subject) });
      await nc.flush();
      const unwatched = await executions.execute({ tenantId: TENANT, workflowId: quick, input: {} });
      expect(unwatched.status).toBe(ExecutionStatus.SUCCESS);
      // A watched run afterwards: the executor's events reach us in the order it sent them, so once
      // the watched run's arrive, any of the unwatched run's would have arrived before.
      const answer = executions.execute({ tenantId: TENANT, workflowId: slow, input: {} });
      const watchedId = await runningExecutionOf(slow);
      const seen: LiveEvent[] = [];
      for await (const res of executions.watchExecution({ tenantId: TENANT, executionId: watchedId })) {
        seen.push(res.event!);
      }
      expect((await answer).status).toBe(ExecutionStatus.SUCCESS);
      expect(seen.filter((e) => e.kind === LiveEventKind.BLOCK_FINISHED).map((e) => e.blockId)).toEqual(
        expect.arrayContaining(["pause", "fn", "out"]),
      );
      await waitFor("the watched run's events", async () =>
        subjects.some((s) => s === `${namespace}.live.${watchedId}`) ? true : undefined,
      );
      expect(subjects.filter((s) => s.includes(unwatched.executionId))).toEqual([]);
    } finally {
      await nc.close();
    }
  });

  it("are cancelled while running: the caller gets status error 'cancelled'", async () => {
    const workflowId = await waitWorkflow(60_000);
    const answer = executions.execute({ tenantId: TENANT, workflowId, input: {}, trigger: Trigger.API });
    const executionId = await runningExecutionOf(workflowId);
    const cancelled = await executions.cancelExecution({ tenantId: TENANT, executionId });
    expect(cancelled.execution!.status).toBe(ExecutionStatus.ERROR);
    expect(cancelled.execution!.error).toBe("cancelled");
    const done = await answer;
    expect(done.executionId).toBe(executionId);
    expect(done.status).toBe(ExecutionStatus.ERROR);
    expect(done.error).toBe("cancelled");
    // Cancelling it again: it already finished.
    await expect(executions.cancelExecution({ tenantId: TENANT, executionId })).rejects.toThrow(
      /already finished/,
    );
  });
});

describe("abandoned sync runs", () => {
  it("are ended with an error once older than the run timeout; background runs are left alone", async () => {
    const workflowId = await waitWorkflow(1);
    const sync = await executions.execute({ tenantId: TENANT, workflowId, input: {}, trigger: Trigger.API });
    const background = await executions.execute({
      tenantId: TENANT,
      workflowId,
      input: {},
      trigger: Trigger.API,
    });
    // As a stopped process leaves them: a sync row (no attempts) and a claimed background row.
    await sql.query(
      "update executions set status = 'running', ended_at = null, published_at = null, attempts = 0, started_at = now() - interval '1 hour' where id = $1",
      [sync.executionId],
    );
    await sql.query(
      "update executions set status = 'running', ended_at = null, attempts = 1, started_at = now() - interval '1 hour' where id = $1",
      [background.executionId],
    );
    const kysely = new Kysely<Database>({ dialect: new PostgresDialect({ pool: sql }) });
    expect(await failAbandonedSyncRuns(kysely, new Date(Date.now() - 60_000))).toBe(1);
    const ended = await executions.getExecution({ tenantId: TENANT, executionId: sync.executionId });
    expect(ended.execution!.status).toBe(ExecutionStatus.ERROR);
    expect(ended.execution!.error).toBe("run abandoned: the executor running it stopped");
    const left = await executions.getExecution({ tenantId: TENANT, executionId: background.executionId });
    expect(left.execution!.status).toBe(ExecutionStatus.RUNNING);
  });
});
