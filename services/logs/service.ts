import { fileURLToPath } from "node:url";
import { adminPortSetting } from "../platform/admin.js";
import { env } from "../platform/config.js";
import { AuthService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { LogsService } from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { createRpcClient } from "../platform/rpc.js";
import type { ServiceDefinition } from "../platform/service.js";
import { CursorCodec } from "./cursor.js";
import { logsHandlers } from "./handlers.js";
import { startIngest } from "./ingest.js";
import { authPlanDirectory, RetentionJob } from "./retention.js";
import type { Database } from "./store.js";

/** Development value of LOGS_CURSOR_SECRET; deployments must set their own (a warning says so). */
export const DEV_CURSOR_SECRET = "flowplane-dev-logs-cursor-secret";

const settings = {
  adminPort: adminPortSetting("logs"),
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
  authUrl: env.url(
    "AUTH_URL",
    "base URL of the auth service (workspace plans, for retention)",
    ["http", "https"],
    "http://127.0.0.1:50051",
  ),
  retentionDays: env.int(
    "LOGS_RETENTION_DAYS_DEFAULT",
    "days a log is kept when auth does not know its workspace; while auth is unreachable, the longest of this and the plan retentions",
    { default: 30, min: 1, max: 36_500 },
  ),
  retentionDaysFree: env.int("LOGS_RETENTION_DAYS_FREE", "days a log of a free-plan workspace is kept", {
    default: 7,
    min: 1,
    max: 36_500,
  }),
  retentionDaysPro: env.int("LOGS_RETENTION_DAYS_PRO", "days a log of a pro-plan workspace is kept", {
    default: 30,
    min: 1,
    max: 36_500,
  }),
  retentionDaysTeam: env.int("LOGS_RETENTION_DAYS_TEAM", "days a log of a team-plan workspace is kept", {
    default: 90,
    min: 1,
    max: 36_500,
  }),
  retentionDaysEnterprise: env.int(
    "LOGS_RETENTION_DAYS_ENTERPRISE",
    "days a log of an enterprise-plan workspace is kept",
    { default: 365, min: 1, max: 36_500 },
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
      policy: {
        planDays: {
          free: config.retentionDaysFree,
          pro: config.retentionDaysPro,
          team: config.retentionDaysTeam,
          enterprise: config.retentionDaysEnterprise,
        },
        defaultDays: config.retentionDays,
      },
      plans: authPlanDirectory(createRpcClient(AuthService, config.authUrl, { timeoutMs: 5_000 })),
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
