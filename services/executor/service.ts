import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { adminPortSetting } from "../platform/admin.js";
import { env } from "../platform/config.js";
import { AuthService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { ensureStream, executionsStreamConfig } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import type { ServiceDefinition } from "../platform/service.js";
import { SyncRunAborts } from "./cancel.js";
import { OutboxSweeper } from "./completion.js";
import { FunctionSandbox } from "./engine/sandbox.js";
import { engineSettingsSpec, readEngineSettings } from "./engine/settings.js";
import { detachedSyncRunsSettled, type ExecutionDeps } from "./executions.js";
import { executionHandlers, workflowHandlers } from "./handlers.js";
import { LiveEvents } from "./live.js";
import { ScheduleTicker } from "./schedules.js";
import type { Database } from "./store.js";
import { CompiledVersions } from "./versions.js";
import { RunWorkers, runsStreamConfig } from "./worker.js";

export const executorSettings = {
  adminPort: adminPortSetting("executor"),
  port: env.int("EXECUTOR_PORT", "executor RPC port (gRPC, gRPC-Web and Connect on h2c)", {
    default: 50052,
    min: 0,
    max: 65535,
  }),
  ...engineSettingsSpec,
  functionTimeoutMs: env.int("EXECUTOR_FUNCTION_TIMEOUT_MS", "CPU-time limit of one function block run, ms", {
    default: 1000,
    min: 1,
    max: 600_000,
  }),
  functionMemoryMb: env.int("EXECUTOR_FUNCTION_MEMORY_MB", "memory limit of one function block run, MB", {
    default: 32,
    min: 4,
    max: 1024,
  }),
  functionWorkers: env.int("EXECUTOR_FUNCTION_WORKERS", "threads running function blocks in parallel", {
    default: Math.max(2, Math.min(4, availableParallelism())),
    defaultText: "cores, between 2 and 4",
    min: 1,
    max: 64,
  }),
  functionInlineBudgetMs: env.int(
    "EXECUTOR_FUNCTION_INLINE_BUDGET_MS",
    "wall-time budget of a function block's first attempt on the executor's main thread, ms, before it is redone on a sandbox thread (0: always a thread)",
    { default: 3, min: 0, max: 50 },
  ),
  basePriceUsd: env.number("EXECUTOR_BASE_PRICE_USD", "price of one execution, USD", {
    default: 0.0005,
    min: 0,
  }),
  outboxIntervalMs: env.int(
    "EXECUTOR_OUTBOX_INTERVAL_MS",
    "how often executions whose completion event was not acknowledged are republished, ms",
    { default: 5000, min: 10 },
  ),
  runTimeoutMs: env.int("EXECUTOR_RUN_TIMEOUT_MS", "a run still going after this long is aborted, ms", {
    default: 300_000,
    min: 10,
    max: 86_400_000,
  }),
  workerConcurrency: env.int(
    "EXECUTOR_WORKER_CONCURRENCY",
    "background runs one executor process works on at once; 0 runs none (API-only replica)",
    { default: 32, min: 0, max: 1024 },
  ),
  runAckWaitMs: env.int(
    "EXECUTOR_RUN_ACK_WAIT_MS",
    "how long a background run may go without a worker heartbeat before another worker takes it over, ms",
    { default: 30_000, min: 300, max: 3_600_000 },
  ),
  authUrl: env.url(
    "AUTH_URL",
    "base URL of the auth service (execution tokens and credits of hook and schedule runs)",
    ["http", "https"],
    "http://127.0.0.1:50051",
  ),
  schedulePollMs: env.int("EXECUTOR_SCHEDULE_POLL_MS", "how often schedules are checked for due ticks, ms", {
    default: 1000,
    min: 50,
    max: 60_000,
  }),
};

export const executorService: ServiceDefinition<Database, typeof executorSettings> = {
  name: "executor",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings: executorSettings,
  async start(ctx) {
    await ensureStream(ctx.jsm, executionsStreamConfig(ctx.names));
    const sandbox = new FunctionSandbox({
      timeoutMs: ctx.config.functionTimeoutMs,
      memoryMb: ctx.config.functionMemoryMb,
      workers: ctx.config.functionWorkers,
      inlineBudgetMs: ctx.config.functionInlineBudgetMs,
    });
    const deps: ExecutionDeps = {
      db: ctx.db,
      js: ctx.js,
      names: ctx.names,
      log: ctx.log,
      sandbox,
      versions: new CompiledVersions(),
      basePriceUsd: ctx.config.basePriceUsd,
      nc: ctx.nc,
      runTimeoutMs: ctx.config.runTimeoutMs,
      live: new LiveEvents(ctx.nc, ctx.names, ctx.log),
      syncRuns: new SyncRunAborts(ctx.nc, ctx.names, ctx.log),
      auth: createRpcClient(AuthService, ctx.config.authUrl, { timeoutMs: 5_000 }),
      engine: readEngineSettings(ctx.config),
    };
    // Declared here too, so ExecuteBackground can queue on an API-only replica.
    await ensureStream(ctx.jsm, runsStreamConfig(ctx.names));
    // A sync run outlives its timeout only by the abort grace; a minute more cannot be a live one.
    const outbox = new OutboxSweeper(deps, ctx.config.outboxIntervalMs, ctx.config.runTimeoutMs + 60_000);
    outbox.start();
    const workers = new RunWorkers(deps, {
      concurrency: ctx.config.workerConcurrency,
      ackWaitMs: ctx.config.runAckWaitMs,
      jsm: ctx.jsm,
    });
    await workers.start();
    const ticker = new ScheduleTicker(deps, ctx.config.schedulePollMs);
    ticker.start();
    return {
      services: [WorkflowService, ExecutionService],
      routes(router) {
        router.service(WorkflowService, workflowHandlers(deps));
        router.service(ExecutionService, executionHandlers(deps));
      },
      async stop() {
        // Sync runs answered early (max_wait_ms) have no caller left to retry them: let them end.
        await detachedSyncRunsSettled(deps);
        await ticker.stop();
        await workers.stop();
        await outbox.stop();
        deps.syncRuns.stop();
        await sandbox.close();
      },
    };
  },
};
