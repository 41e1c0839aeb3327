/**
 * Drain bench (DESIGN §10): queue background runs of a trivial 3-block workflow (input → function
 * → output) with no worker listening, then start one executor with workers and time how fast it
 * empties the queue: every run claimed, run, stored, its completion published, its request acked.
 */
import { fromJson } from "@bufbuild/protobuf";
import pg from "pg";
import { executorService } from "../../services/executor/service.js";
import { WorkflowStateSchema } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import {
  ExecutionService,
  WorkflowService,
} from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { startService } from "../../services/platform/service.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  testNamespace,
} from "../helpers/infra.js";
import { trivialWorkflow } from "./execute.bench.js";

export const description =
  "drain: background runs of a 3-block workflow drained per second by one executor (10,000 queued runs)";

export const targets: Record<string, string> = { backgroundDrainPerSec: "≥ 1000" };

const RUNS = Number(process.env.DRAIN_BENCH_RUNS ?? 10_000);
// Queueing is bounded too, so the bench ends in minutes on a slow machine: fewer runs are drained then.
const MAX_ENQUEUE_MS = Number(process.env.DRAIN_BENCH_MAX_ENQUEUE_MS ?? 120_000);
const MAX_DRAIN_MS = 300_000;
const ENQUEUE_CONCURRENCY = 32;
const TENANT = "ws_drainbench";
const WORKER_ENV: Record<string, string> = process.env.DRAIN_BENCH_CONCURRENCY
  ? { EXECUTOR_WORKER_CONCURRENCY: process.env.DRAIN_BENCH_CONCURRENCY }
  : {};

export default async function run(): Promise<Record<string, number>> {
  const db = await createTestDatabase();
  const namespace = testNamespace();
  const common = {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOG_LEVEL: "warn",
  };
  const api = await startService(executorService, {
    ...common,
    EXECUTOR_PORT: "0",
    EXECUTOR_WORKER_CONCURRENCY: "0",
  });
  const sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
  // An idle client cut when the database is dropped must not crash the bench after it measured.
  sql.on("error", () => {});
  let workers: Awaited<ReturnType<typeof startService>> | undefined;
  try {
    const url = `http://127.0.0.1:${api.port}`;
    const { workflow } = await createRpcClient(WorkflowService, url).createWorkflow({
      tenantId: TENANT,
      name: "Trivial",
      state: fromJson(WorkflowStateSchema, trivialWorkflow),
    });
    const executions = createRpcClient(ExecutionService, url);
    let queued = 0;
    const enqueueStarted = Date.now();
    await Promise.all(
      Array.from({ length: ENQUEUE_CONCURRENCY }, async () => {
        while (queued < RUNS && Date.now() - enqueueStarted < MAX_ENQUEUE_MS) {
          queued++;
          await executions.executeBackground({
            tenantId: TENANT,
            workflowId: workflow!.id,
            input: { name: `run ${queued}` },
          });
        }
      }),
    );
    const enqueueMs = Date.now() - enqueueStarted;

    const drainStarted = Date.now();
    // CPU of this process (the draining executor) per run: comparable on a busy machine.
    const drainCpu = process.cpuUsage();
    workers = await startService(executorService, { ...common, EXECUTOR_PORT: "0", ...WORKER_ENV });
    let finished = 0;
    while (Date.now() - drainStarted < MAX_DRAIN_MS) {
      const { rows } = await sql.query(
        "select count(*)::int as n from executions where status in ('success', 'error') and published_at is not null",
      );
      finished = rows[0].n;
      if (finished >= queued) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const drainMs = Date.now() - drainStarted;
    const cpu = process.cpuUsage(drainCpu);
    const { rows: failures } = await sql.query(
      "select count(*)::int as n from executions where status = 'error'",
    );
    return {
      backgroundDrainPerSec: Math.round((finished / drainMs) * 1000),
      drainedRuns: finished,
      queuedRuns: queued,
      failedRuns: failures[0].n,
      drainSeconds: Math.round(drainMs / 100) / 10,
      enqueuePerSec: Math.round((queued / enqueueMs) * 1000),
      executorCpuMsPerRun: Math.round(((cpu.user + cpu.system) / 1000 / Math.max(1, finished)) * 1000) / 1000,
    };
  } finally {
    await workers?.stop();
    await api.stop();
    await sql.end();
    await db.drop();
    await deleteNamespaceStreams(namespace);
  }
}
