/**
 * Drain bench (DESIGN §10): queue background runs of a trivial 3-block workflow (input → function
 * → output) with no worker listening, then start one executor with workers and time how fast it
 * empties the queue: every run claimed, run, stored, its completion published, its request acked.
 */
import { readFile, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
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

/**
 * utime + stime of each PostgreSQL backend serving the executors (not the bench's own polls), ms;
 * empty when the database runs where /proc cannot see it.
 */
async function backendCpuMs(sql: pg.Pool): Promise<Map<number, number>> {
  const { rows } = await sql.query<{ pid: number }>(
    "select pid from pg_stat_activity where datname = current_database() and application_name <> 'drain-bench'",
  );
  const cpu = new Map<number, number>();
  for (const { pid } of rows) {
    try {
      // Fields after the ")" of the command name: utime and stime are the 12th and 13th, in ticks (100 Hz).
      const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
      cpu.set(pid, ((Number(fields[11]) + Number(fields[12])) * 1000) / 100);
    } catch {
      // Not on this machine, or gone.
    }
  }
  return cpu;
}

async function committedTransactions(sql: pg.Pool): Promise<number> {
  const { rows } = await sql.query<{ n: string }>(
    "select xact_commit + xact_rollback as n from pg_stat_database where datname = current_database()",
  );
  return Number(rows[0]!.n);
}

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
  const sql = new pg.Pool({
    connectionString: db.url,
    options: "-c search_path=executor",
    application_name: "drain-bench",
    max: 2,
  });
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

    // DRAIN_BENCH_CPU_PROFILE=file.cpuprofile records the main thread while it drains.
    const profilePath = process.env.DRAIN_BENCH_CPU_PROFILE;
    const profiler = profilePath ? new Session() : undefined;
    if (profiler) {
      profiler.connect();
      await profiler.post("Profiler.enable");
      await profiler.post("Profiler.start");
    }
    const pgCpuBefore = await backendCpuMs(sql);
    // Statistics are sent at each transaction's end; the view is a snapshot taken per transaction.
    const xactsBefore = await committedTransactions(sql);
    const drainStarted = Date.now();
    // CPU of this process (the draining executor) per run: comparable on a busy machine.
    const drainCpu = process.cpuUsage();
    const mainThreadCpu = process.threadCpuUsage();
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
    const mainCpu = process.threadCpuUsage(mainThreadCpu);
    // The database's share of each run: its backends' CPU (new backends count from zero).
    let pgCpuMs = 0;
    for (const [pid, ms] of await backendCpuMs(sql)) pgCpuMs += ms - (pgCpuBefore.get(pid) ?? 0);
    await sql.query("select pg_stat_clear_snapshot()");
    const xacts = (await committedTransactions(sql)) - xactsBefore;
    if (profiler && profilePath) {
      const { profile } = await profiler.post("Profiler.stop");
      await writeFile(profilePath, JSON.stringify(profile));
      profiler.disconnect();
    }
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
      // The rest of the process's CPU is mostly the function sandbox's threads.
      executorMainThreadCpuMsPerRun:
        Math.round(((mainCpu.user + mainCpu.system) / 1000 / Math.max(1, finished)) * 1000) / 1000,
      postgresCpuMsPerRun: Math.round((pgCpuMs / Math.max(1, finished)) * 1000) / 1000,
      // Includes the bench's own progress polls (about 10 a second).
      transactionsPerRun: Math.round((xacts / Math.max(1, finished)) * 100) / 100,
    };
  } finally {
    await workers?.stop();
    await api.stop();
    await sql.end();
    await db.drop();
    await deleteNamespaceStreams(namespace);
  }
}
