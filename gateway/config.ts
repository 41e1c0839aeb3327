import { adminPortSetting } from "../services/platform/admin.js";
import { type ConfigOf, commonSettings, env } from "../services/platform/config.js";

/** The gateway's settings; it owns no database and talks to the services by RPC only. */
export const gatewaySettings = {
  port: env.int("GATEWAY_PORT", "HTTP port of the REST gateway", { default: 8080, min: 0, max: 65535 }),
  host: env.string("GATEWAY_HOST", "interface the REST gateway listens on", "0.0.0.0"),
  authUrl: env.url("AUTH_URL", "base URL of the auth service", ["http", "https"], "http://127.0.0.1:50051"),
  executorUrl: env.url(
    "EXECUTOR_URL",
    "base URL of the executor service",
    ["http", "https"],
    "http://127.0.0.1:50052",
  ),
  logsUrl: env.url("LOGS_URL", "base URL of the logs service", ["http", "https"], "http://127.0.0.1:50053"),
  notifierUrl: env.url(
    "NOTIFIER_URL",
    "base URL of the notifier service",
    ["http", "https"],
    "http://127.0.0.1:50054",
  ),
  bodyLimitBytes: env.int("GATEWAY_BODY_LIMIT_BYTES", "largest request body accepted, in bytes", {
    default: 1_048_576,
    min: 1,
  }),
  rpcTimeoutMs: env.int("GATEWAY_RPC_TIMEOUT_MS", "deadline of each call to a backend service, in ms", {
    default: 30_000,
    min: 1,
  }),
  syncWaitMs: env.int(
    "GATEWAY_SYNC_WAIT_MS",
    "how long POST /api/executeWorkflow waits for a run; one still going then answers 202 with a Location to poll, ms",
    { default: 30_000, min: 0, max: 3_600_000 },
  ),
  corsOrigins: env.pattern(
    "GATEWAY_CORS_ORIGINS",
    "browser origins allowed to call the API (CORS), comma-separated, or *; empty: no CORS headers",
    /^(\*|https?:\/\/[^\s,]+(\s*,\s*https?:\/\/[^\s,]+)*)$/,
    "",
  ),
  authCacheTtlMs: env.int(
    "GATEWAY_AUTH_CACHE_TTL_MS",
    "how long the gateway reuses an authorization and its leased rate-limit tokens, ms (0: one Authorize RPC per request); revocations drop it at once over NATS",
    { default: 1000, min: 0, max: 1000 },
  ),
  natsUrl: commonSettings.natsUrl,
  namespace: commonSettings.namespace,
  adminPort: adminPortSetting("gateway"),
  logLevel: commonSettings.logLevel,
  otlpEndpoint: commonSettings.otlpEndpoint,
  otelServiceName: commonSettings.otelServiceName,
  shutdownTimeoutMs: commonSettings.shutdownTimeoutMs,
};

export type GatewayConfig = ConfigOf<typeof gatewaySettings>;
