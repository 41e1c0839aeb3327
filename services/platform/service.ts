import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import type { JetStreamClient, JetStreamManager, NatsConnection } from "nats";
import { ConfigError, type ConfigOf, type ConfigSpec, commonSettings, loadConfig } from "./config.js";
import { createDatabase, migrateToLatest } from "./db.js";
import { domainErrorInterceptor } from "./errors.js";
import { Health, HealthState } from "./health.js";
import { createLogger, type Logger } from "./log.js";
import { connectNats, type NatsNames, natsNames } from "./nats.js";
import { type RpcServer, startRpcServer } from "./rpc.js";

type CommonConfig = ConfigOf<typeof commonSettings>;

export interface ServiceContext<DB, C> {
  config: C & CommonConfig;
  log: Logger;
  db: Kysely<DB>;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: NatsNames;
}

export interface ServiceParts {
  /** The RPC services this process serves, registered on the router. */
  services: DescService[];
  routes(router: ConnectRouter): void;
  /** Stops background work (consumers, timers); called after the RPC port stops accepting. */
  stop?(): Promise<void>;
}

export interface ServiceDefinition<DB, S extends ConfigSpec> {
  /** Process name, also the PostgreSQL schema it owns. */
  name: string;
  /** Absolute path of its migration folder. */
  migrationsFolder: string;
  /** Its own settings; must include `port`. */
  settings: S;
  start(ctx: ServiceContext<DB, ConfigOf<S>>): Promise<ServiceParts>;
}

export interface RunningService {
  readonly port: number;
  readonly log: Logger;
  stop(): Promise<void>;
}

/**
 * Brings a service up: config, logger, database + migrations, NATS, its parts, then the RPC port
 * with grpc.health.v1. `stop()` drains in the order DESIGN §7 asks: stop accepting, finish in-flight
 * calls, stop consumers, drain NATS, close the pool.
 */
export async function startService<DB, S extends ConfigSpec & { port: ConfigSpec[string] }>(
  def: ServiceDefinition<DB, S>,
  source: Record<string, string | undefined> = process.env,
): Promise<RunningService> {
  const config = loadConfig({ ...commonSettings, ...def.settings }, source) as ConfigOf<S> & CommonConfig;
  const log = createLogger(def.name, config.logLevel);
  const db = createDatabase<DB>({ url: config.databaseUrl, schema: def.name });
  const applied = await migrateToLatest(db as Kysely<unknown>, def.name, def.migrationsFolder);
  if (applied.length > 0) log.info({ migrations: applied }, "migrations applied");
  const nc = await connectNats(config.natsUrl, def.name);
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  const ctx: ServiceContext<DB, ConfigOf<S>> = {
    config,
    log,
    db,
    nc,
    js,
    jsm,
    names: natsNames(config.namespace),
  };
  const parts = await def.start(ctx);
  const health = new HealthState(parts.services.map((s) => s.typeName));
  const server: RpcServer = await startRpcServer({
    port: config.port as number,
    routes(router) {
      router.service(Health, health.impl());
      parts.routes(router);
    },
    interceptors: [domainErrorInterceptor(log)],
  });
  health.set(true);
  log.info({ port: server.port }, "serving");

  let stopping: Promise<void> | undefined;
  return {
    port: server.port,
    log,
    stop() {
      stopping ??= (async () => {
        health.set(false);
        await server.close(config.shutdownTimeoutMs);
        await parts.stop?.();
        await nc.drain().catch(() => nc.close());
        await db.destroy();
        log.info("stopped");
      })();
      return stopping;
    },
  };
}

/** Only migrations, for `flowplane migrate` and deploy jobs. */
export async function migrateService<S extends ConfigSpec>(
  def: ServiceDefinition<unknown, S>,
  source: Record<string, string | undefined> = process.env,
): Promise<string[]> {
  const { databaseUrl } = loadConfig({ databaseUrl: commonSettings.databaseUrl }, source);
  const db = createDatabase<unknown>({ url: databaseUrl, schema: def.name, maxConnections: 1 });
  try {
    return await migrateToLatest(db, def.name, def.migrationsFolder);
  } finally {
    await db.destroy();
  }
}

/**
 * Process entry: `main.ts` serves, `main.ts migrate` migrates and exits. SIGTERM/SIGINT, or the
 * parent's IPC channel closing (the dev launcher died), trigger a graceful stop.
 */
export function runMain<DB, S extends ConfigSpec & { port: ConfigSpec[string] }>(
  def: ServiceDefinition<DB, S>,
): void {
  const fail = (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`${def.name}: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`${def.name}: failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  };
  if (process.argv[2] === "migrate") {
    migrateService(def as ServiceDefinition<unknown, S>).then((applied) => {
      process.stdout.write(`${def.name}: ${applied.length} migration(s) applied\n`);
      process.exit(0);
    }, fail);
    return;
  }
  startService(def).then((running) => {
    const shutdown = (reason: string) => {
      running.log.info({ reason }, "shutting down");
      running.stop().then(
        () => process.exit(0),
        (err) => {
          running.log.error({ err }, "unclean shutdown");
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", () => shutdown("SIGTERM"));
    process.once("SIGINT", () => shutdown("SIGINT"));
    if (process.send) process.once("disconnect", () => shutdown("parent exited"));
    process.send?.({ ready: true, port: running.port });
  }, fail);
}
