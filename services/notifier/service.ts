import { fileURLToPath } from "node:url";
import { adminPortSetting } from "../platform/admin.js";
import { env } from "../platform/config.js";
import type { DurableConsumer } from "../platform/consumer.js";
import { AuthService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { NotifierService } from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { createRpcClient } from "../platform/rpc.js";
import type { ServiceDefinition } from "../platform/service.js";
import { createEmailSender } from "./channels/email.js";
import { startCompletionConsumers, startDeliveryConsumers } from "./consumer.js";
import { DEFAULT_RETRY_DELAYS_MS, type DeliveryDeps } from "./deliveries.js";
import { notifierHandlers } from "./handlers.js";
import { checkNoActivity } from "./matching.js";
import { devEncryptionKey, parseEncryptionKey, SecretBox } from "./secrets.js";
import type { Database } from "./store.js";

const settings = {
  adminPort: adminPortSetting("notifier"),
  port: env.int("NOTIFIER_PORT", "port of the notifier RPC server (gRPC, gRPC-Web and Connect over h2c)", {
    default: 50054,
    min: 0,
    max: 65535,
  }),
  authUrl: env.url(
    "AUTH_URL",
    "base URL of the auth service (rate limits and usage in payloads)",
    ["http", "https"],
    "http://127.0.0.1:50051",
  ),
  encryptionKey: env.string(
    "FLOWPLANE_ENCRYPTION_KEY",
    "32-byte key (64 hex digits or base64) encrypting notification secrets at rest; unset uses a development key",
    "",
  ),
  maxSubscriptions: env.int("NOTIFIER_MAX_SUBSCRIPTIONS", "notifications per workspace", {
    default: 50,
    min: 1,
  }),
  attemptTimeoutMs: env.int("NOTIFIER_DELIVERY_TIMEOUT_MS", "timeout of one delivery attempt, in ms", {
    default: 30_000,
    min: 100,
  }),
  retryDelaysMs: env.pattern(
    "NOTIFIER_RETRY_DELAYS_MS",
    "delays before attempts 2..5 and the cap for Retry-After, comma-separated ms",
    /^\d+(,\d+){4}$/,
    DEFAULT_RETRY_DELAYS_MS.join(","),
  ),
  allowPrivateTargets: env.oneOf(
    "NOTIFIER_ALLOW_PRIVATE_TARGETS",
    "let webhook and Slack URLs reach loopback, private and link-local addresses (development and tests only)",
    ["true", "false"] as const,
    "false",
  ),
  smtpUrl: env.string(
    "NOTIFIER_SMTP_URL",
    "SMTP server for email notifications, e.g. smtp://user:pass@host:587",
    "",
  ),
  emailFrom: env.string(
    "NOTIFIER_EMAIL_FROM",
    "From address of notification emails",
    "Flowplane <notifications@flowplane.local>",
  ),
  deliveryConcurrency: env.int("NOTIFIER_DELIVERY_CONCURRENCY", "deliveries in flight per notifier process", {
    default: 16,
    min: 1,
    max: 256,
  }),
  completionConcurrency: env.int(
    "NOTIFIER_COMPLETION_CONCURRENCY",
    "execution completions handled at once per notifier process",
    { default: 4, min: 1, max: 64 },
  ),
  alertCheckIntervalMs: env.int(
    "NOTIFIER_ALERT_CHECK_INTERVAL_MS",
    "period of the no-activity alert check, in ms",
    {
      default: 60_000,
      min: 100,
    },
  ),
};

/**
 * Notifications (seed 002): subscriptions over webhook, email and Slack, alert rules, and signed,
 * retried deliveries through the <NAMESPACE>_DELIVERIES work queue.
 */
export const notifierService: ServiceDefinition<Database, typeof settings> = {
  name: "notifier",
  migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)),
  settings,
  async start(ctx) {
    const { config, log } = ctx;
    let key: Buffer;
    if (config.encryptionKey === "") {
      log.warn(
        "FLOWPLANE_ENCRYPTION_KEY is not set: notification secrets use the development key; set it in production",
      );
      key = devEncryptionKey();
    } else {
      key = parseEncryptionKey(config.encryptionKey);
    }
    const box = new SecretBox(key);
    const email = createEmailSender(config.smtpUrl, config.emailFrom, config.attemptTimeoutMs);
    const auth = createRpcClient(AuthService, config.authUrl, { timeoutMs: 5_000 });
    const now = () => Date.now();
    const deliveryDeps: DeliveryDeps = {
      db: ctx.db,
      js: ctx.js,
      nc: ctx.nc,
      names: ctx.names,
      log,
      box,
      email,
      retryDelaysMs: config.retryDelaysMs.split(",").map(Number),
      attemptTimeoutMs: config.attemptTimeoutMs,
      allowPrivateTargets: config.allowPrivateTargets === "true",
      now,
      random: Math.random,
    };
    const matchingDeps = { db: ctx.db, js: ctx.js, jsm: ctx.jsm, names: ctx.names, log, auth, now };
    const consumers: DurableConsumer[] = [
      ...(await startDeliveryConsumers({ ...deliveryDeps, jsm: ctx.jsm }, config.deliveryConcurrency)),
      ...(await startCompletionConsumers(matchingDeps, config.completionConcurrency)),
    ];
    let checking: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      checking = checkNoActivity(matchingDeps).catch((err: unknown) =>
        log.error({ err }, "no-activity check failed"),
      );
    }, config.alertCheckIntervalMs);
    timer.unref();
    return {
      services: [NotifierService],
      routes(router) {
        router.service(
          NotifierService,
          notifierHandlers({
            db: ctx.db,
            js: ctx.js,
            names: ctx.names,
            box,
            maxPerTenant: config.maxSubscriptions,
            now,
          }),
        );
      },
      async stop() {
        clearInterval(timer);
        await checking;
        await Promise.all(consumers.map((c) => c.stop()));
        email.close();
      },
    };
  },
};
