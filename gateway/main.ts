import { adminPortFor, probe, readinessReport, startAdminServer } from "../services/platform/admin.js";
import { ConfigError, loadConfig } from "../services/platform/config.js";
import { Health, ServingStatus } from "../services/platform/health.js";
import { createLogger } from "../services/platform/log.js";
import { natsNames } from "../services/platform/nats.js";
import { createRpcClient } from "../services/platform/rpc.js";
import { flushTelemetry, setupTelemetry } from "../services/platform/telemetry.js";
import { buildGateway } from "./app.js";
import { AuthCache, type RevocationFeed, startRevocationFeed } from "./auth-cache.js";
import { createGatewayClients } from "./clients.js";
import { type GatewayConfig, gatewaySettings } from "./config.js";
import { instrumentGateway } from "./observability.js";

const PROBE_TIMEOUT_MS = 2_000;

/** Process entry of the REST gateway; stops gracefully on SIGTERM/SIGINT or when its parent exits. */
async function main(): Promise<void> {
  let config: GatewayConfig;
  try {
    config = loadConfig(gatewaySettings);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`gateway: ${err.message}\n`);
    process.exit(2);
  }
  setupTelemetry({ serviceName: config.otelServiceName || "gateway", otlpEndpoint: config.otlpEndpoint });
  // The request logger already carries requestId; the context adds the tenant.
  const log = createLogger("gateway", config.logLevel, { requestIdFromContext: false });
  // Authorizations are reused for up to GATEWAY_AUTH_CACHE_TTL_MS; revocation events over NATS drop
  // them at once. NATS is not needed to serve: while it is unreachable the TTL bounds staleness.
  const authCache =
    config.authCacheTtlMs > 0 ? new AuthCache({ ttlMs: config.authCacheTtlMs, log }) : undefined;
  let revocations: RevocationFeed | undefined;
  if (authCache) {
    revocations = startRevocationFeed({
      cache: authCache,
      natsUrl: config.natsUrl,
      names: natsNames(config.namespace),
      log,
    });
  }
  const app = buildGateway({ config, log, clients: createGatewayClients(config), authCache });
  instrumentGateway(app);
  await app.listen({ port: config.port, host: config.host });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;

  let stopping = false;
  const authHealth = createRpcClient(Health, config.authUrl, { timeoutMs: PROBE_TIMEOUT_MS });
  const admin = await startAdminServer({
    port: adminPortFor("gateway", config.adminPort, config.port, process.env),
    log,
    async readiness() {
      if (stopping) return readinessReport({ process: "stopping" });
      // Every request is authorized by the auth service: without it the gateway can answer nothing.
      const auth = await probe(async () => {
        const { status } = await authHealth.check({ service: "" });
        if (status !== ServingStatus.SERVING) throw new Error(`auth service is ${ServingStatus[status]}`);
      }, PROBE_TIMEOUT_MS);
      return readinessReport({ auth });
    },
  });
  log.info({ port, adminPort: admin.port }, "serving");

  const shutdown = (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, "shutting down");
    // In-flight requests get until the deadline (a stream or a hung backend call must not keep the
    // process alive); then every connection is cut and the process exits non-zero.
    setTimeout(() => {
      log.warn({ timeoutMs: config.shutdownTimeoutMs }, "drain deadline passed, closing connections");
      app.server.closeAllConnections();
      process.exit(1);
    }, config.shutdownTimeoutMs).unref();
    app
      .close()
      .then(() => revocations?.close())
      .then(() => admin.close())
      .then(() => flushTelemetry())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, "unclean shutdown");
          process.exit(1);
        },
      );
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
  if (process.send) process.once("disconnect", () => shutdown("parent exited"));
  process.send?.({ ready: true, port, adminPort: admin.port });
}

main().catch((err: unknown) => {
  process.stderr.write(`gateway: failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
