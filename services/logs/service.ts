import { fileURLToPath } from "node:url";
import { env } from "../platform/config.js";
import { LogsService } from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import type { ServiceDefinition } from "../platform/service.js";
import { logsHandlers } from "./handlers.js";
import { startIngest } from "./ingest.js";
import type { Database } from "./store.js";

const settings = {
  port: env.int("LOGS_PORT", "port of the logs RPC server (gRPC, gRPC-Web and Connect over h2c)", {
    default: 50053,
    min: 0,
    max: 65535,
  }),
};

/** The execution log read model: ingests completions, serves LogsService. */
export const logsService: ServiceDefinition<Database, typeof settings> = {
  name: "logs",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings,
  async start(ctx) {
    const ingest = await startIngest(ctx);
    return {
      services: [LogsService],
      routes(router) {
        router.service(LogsService, logsHandlers(ctx.db));
      },
      stop: () => ingest.stop(),
    };
  },
};
