import { fileURLToPath } from "node:url";
import { env } from "../platform/config.js";
import { LogsService } from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import type { ServiceDefinition } from "../platform/service.js";
import { CursorCodec } from "./cursor.js";
import { logsHandlers } from "./handlers.js";
import { startIngest } from "./ingest.js";
import { RetentionJob } from "./retention.js";
import type { Database } from "./store.js";

/** Development value of LOGS_CURSOR_SECRET; deployments must set their own (a warning says so). */
export const DEV_CURSOR_SECRET = "flowplane-dev-logs-cursor-secret";

const settings = {
  port: env.int("LOGS_PORT", "port of the logs RPC server (gRPC, gRPC-Web and Connect over h2c)", {
    default: 50053,
    min: 0,
    max: 65535,
  }),
  cursorSecret: env.string(
    "LOGS_CURSOR_SECRET",
    "HMAC key signing log cursors; every logs replica of a deployment must share the same value",
    DEV_CURSOR_SECRET,
  ),
  retentionDays: env.int(
    "LOGS_RETENTION_DAYS_DEFAULT",
    "days a log is kept before the retention job deletes it",
    {
      default: 30,
      min: 1,
      max: 36_500,
    },
  ),
  retentionIntervalMs: env.int("LOGS_RETENTION_INTERVAL_MS", "how often the retention job runs", {
    default: 3_600_000,
    min: 1_000,
  }),
  retentionBatchSize: env.int("LOGS_RETENTION_BATCH_SIZE", "logs deleted per retention batch", {
    default: 5_000,
    min: 1,
    max: 100_000,
  }),
  retentionPauseMs: env.int("LOGS_RETENTION_PAUSE_MS", "pause between retention batches", {
    default: 200,
    min: 0,
  }),
};

/** The execution log read model: ingests completions, serves LogsService, expires old logs. */
export const logsService: ServiceDefinition<Database, typeof settings> = {
  name: "logs",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings,
  async start(ctx) {
    const { config } = ctx;
    if (config.cursorSecret === DEV_CURSOR_SECRET) {
      ctx.log.warn("LOGS_CURSOR_SECRET is not set: log cursors are signed with the public development key");
    }
    const ingest = await startIngest(ctx);
    const retention = new RetentionJob(ctx.db, ctx.log, {
      retentionDays: config.retentionDays,
      intervalMs: config.retentionIntervalMs,
      batchSize: config.retentionBatchSize,
      pauseMs: config.retentionPauseMs,
    });
    retention.start();
    return {
      services: [LogsService],
      routes(router) {
        router.service(LogsService, logsHandlers(ctx.db, new CursorCodec(config.cursorSecret)));
      },
      stop: async () => {
        await retention.stop();
        await ingest.stop();
      },
    };
  },
};
