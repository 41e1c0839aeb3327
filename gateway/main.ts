import { ConfigError, loadConfig } from "../services/platform/config.js";
import { createLogger } from "../services/platform/log.js";
import { buildGateway } from "./app.js";
import { createGatewayClients } from "./clients.js";
import { type GatewayConfig, gatewaySettings } from "./config.js";

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
  const log = createLogger("gateway", config.logLevel);
  const app = buildGateway({ config, log, clients: createGatewayClients(config) });
  await app.listen({ port: config.port, host: config.host });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  log.info({ port }, "serving");

  let stopping = false;
  const shutdown = (reason: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, "shutting down");
    app.close().then(
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
  process.send?.({ ready: true, port });
}

main().catch((err: unknown) => {
  process.stderr.write(`gateway: failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
