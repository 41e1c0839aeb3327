import { fileURLToPath } from "node:url";
import { env } from "../platform/config.js";
import type { ServiceDefinition } from "../platform/service.js";
import { startCompletionConsumer } from "./consumer.js";
import type { Database } from "./store.js";

const settings = {
  port: env.int("NOTIFIER_PORT", "port of the notifier RPC server (gRPC, gRPC-Web and Connect over h2c)", {
    default: 50054,
    min: 0,
    max: 65535,
  }),
};

/**
 * Notifications: for now it keeps per-workflow execution stats from completions and serves only
 * grpc.health.v1; subscriptions, alert rules and deliveries arrive with their own issue.
 */
export const notifierService: ServiceDefinition<Database, typeof settings> = {
  name: "notifier",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings,
  async start(ctx) {
    const consumer = await startCompletionConsumer(ctx);
    return {
      services: [],
      routes() {},
      stop: () => consumer.stop(),
    };
  },
};
