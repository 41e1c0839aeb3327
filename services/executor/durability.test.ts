/**
 * Kill -9 of the executor process running a background execution: another executor takes the run
 * over after the ack wait, and the execution completes exactly once.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { connect, type NatsConnection } from "nats";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import {
  ExecutionCompletedSchema,
  ExecutionStatus,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import { ensureDurableConsumer, natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { toState } from "./engine/workflow-fixtures.js";
import { executorService } from "./service.js";

const TENANT = newId("ws");
const READER = "durability-test-reader";
const ACK_WAIT_MS = 1_500;
const WAIT_MS = 2_500;

let db: TestDatabase;
let namespace: string;
let nc: NatsConnection;
let sql: pg.Pool;
let child: ChildProcess | undefined;
let replacement: RunningService | undefined;

function env(): Record<string, string> {
  return {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    EXECUTOR_PORT: "0",
    EXECUTOR_RUN_ACK_WAIT_MS: String(ACK_WAIT_MS),
    EXECUTOR_WORKER_CONCURRENCY: "2",
    EXECUTOR_FUNCTION_WORKERS: "1",
    LOG_LEVEL: "silent",
  };
}

/** The executor as its own process, as `npm start` runs it; resolves with its RPC port. */
function startExecutorProcess(): Promise<{ process: ChildProcess; port: number }> {
  const loader = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  const main = fileURLToPath(new URL("./main.ts", import.meta.url));
  const proc = spawn(process.execPath, ["--import", loader, main], {
    env: { ...process.env, ...env() },
    stdio: ["ignore", "ignore", "pipe", "ipc"],
  });
  let stderr = "";
  proc.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    proc.once("message", (msg: { ready?: boolean; port?: number }) => {
      if (msg.ready && msg.port) resolve({ process: proc, port: msg.port });
    });
    proc.once("exit", (code) => reject(new Error(`executor exited with ${code} before ready: ${stderr}`)));
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  nc = await connect({ servers: TEST_NATS_URL });
  sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
  // Dropping the test database with force ends these connections; that is no test failure.
  sql.on("error", () => {});
  sql.on("connect", (client) => client.on("error", () => {}));
});

afterAll(async () => {
  child?.kill("SIGKILL");
  await replacement?.stop();
  await nc?.close();
  await sql?.end();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

async function rowOf(executionId: string): Promise<{ status: string; attempts: number } | undefined> {
  const { rows } = await sql.query("select status, attempts from executions where id = $1", [executionId]);
  return rows[0];
}

it("completes a background run exactly once when its executor is killed mid-run", async () => {
  const first = await startExecutorProcess();
  child = first.process;
  const url = `http://127.0.0.1:${first.port}`;
  const names = natsNames(namespace);
  await ensureDurableConsumer(await nc.jetstreamManager(), names.executionsStream, READER, {
    filter_subject: names.executionCompletedAll,
  });
  const { workflow } = await createRpcClient(WorkflowService, url).createWorkflow({
    tenantId: TENANT,
    name: "Long",
    state: toState({
      blocks: {
        start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
        pause: { id: "pause", type: "wait", name: "Pause", config: { durationMs: WAIT_MS } },
        out: { id: "out", type: "output", name: "Waited", config: { value: "blocks.pause.waitedMs" } },
      },
      edges: [
        { id: "e1", source: "start", target: "pause" },
        { id: "e2", source: "pause", target: "out" },
      ],
    }),
  });
  const queued = await createRpcClient(ExecutionService, url).executeBackground({
    tenantId: TENANT,
    workflowId: workflow!.id,
  });
  await waitFor("the run to start", async () =>
    (await rowOf(queued.executionId))?.status === "running" ? true : undefined,
  );

  const exited = new Promise((resolve) => child!.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
  child = undefined;
  expect((await rowOf(queued.executionId))?.status).toBe("running");

  replacement = await startService(executorService, env());
  const done = await waitFor(
    "the run to complete on the replacement executor",
    async () => {
      const row = await rowOf(queued.executionId);
      return row?.status === "success" ? row : undefined;
    },
    60_000,
  );
  expect(done.attempts).toBe(2);
  const { execution } = await createRpcClient(
    ExecutionService,
    `http://127.0.0.1:${replacement.port}`,
  ).getExecution({
    tenantId: TENANT,
    executionId: queued.executionId,
  });
  expect(execution!.status).toBe(ExecutionStatus.SUCCESS);
  expect(execution!.output).toEqual({ Waited: WAIT_MS });

  // Exactly one completion: read the whole stream, past another ack wait for any straggler.
  const consumer = await nc.jetstream().consumers.get(names.executionsStream, READER);
  let completions = 0;
  const quietUntil = Date.now() + ACK_WAIT_MS * 2;
  while (Date.now() < quietUntil) {
    const m = await consumer.next({ expires: 1000 });
    if (!m) continue;
    if (fromBinary(ExecutionCompletedSchema, m.data).executionId === queued.executionId) completions++;
    m.ack();
  }
  expect(completions).toBe(1);
  const runs = await nc.jetstreamManager().then((jsm) => jsm.streams.info(names.runsStream));
  // The work queue is empty: the request was acked once the completion was out.
  expect(runs.state.messages).toBe(0);
}, 120_000);
