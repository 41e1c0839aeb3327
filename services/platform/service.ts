import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import type { JetStreamClient, JetStreamManager, NatsConnection } from "nats";
import {
  type AdminServer,
  adminPortFor,
  adminPortSetting,
  probe,
  type ReadinessProblems,
  type ReadinessReport,
  readinessReport,
  startAdminServer,
} from "./admin.js";
import { ConfigError, type ConfigOf, type ConfigSpec, commonSettings, loadConfig } from "./config.js";
import { consumersOf } from "./consumer.js";
import { createDatabase, migrateToLatest, pingDatabase, poolOf } from "./db.js";
import { domainErrorInterceptor } from "./errors.js";
import { Health, HealthState } from "./health.js";
import { createLogger, type Logger } from "./log.js";
import { rpcServerInterceptor, trackPool } from "./metrics.js";
import { connectNats, type NatsNames, natsNames, tracedJetStream } from "./nats.js";
import { type RpcServer, rpcServerTracing, startRpcServer } from "./rpc.js";
import { flushTelemetry, setupTelemetry } from "./telemetry.js";

type CommonConfig = ConfigOf<typeof commonSettings>;

const PROBE_TIMEOUT_MS = 2_000;
const READINESS_INTERVAL_MS = 1_000;
const STARTUP_READY_TIMEOUT_MS = 5_000;

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
  /**
   * Checks of its own beyond the database, NATS and the durable consumers it started (which every
   * service gets): check name → why it is not ready, undefined when it is.
   */
  readiness?(): ReadinessProblems | Promise<ReadinessProblems>;
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
  /** The admin HTTP port: /healthz, /readyz, /metrics. */
  readonly adminPort: number;
  /** What /readyz answers now. */
  readiness(): Promise<ReadinessReport>;
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
  const config = loadConfig(
    { ...commonSettings, adminPort: adminPortSetting(def.name), ...def.settings },
    source,
  ) as ConfigOf<S> & CommonConfig & { adminPort: number };
  setupTelemetry({ serviceName: config.otelServiceName || def.name, otlpEndpoint: config.otlpEndpoint });
  const log = createLogger(def.name, config.logLevel);
  const db = createDatabase<DB>({ url: config.databaseUrl, schema: def.name });
  const pool = poolOf(db);
  const untrackPool = pool ? trackPool(def.name, pool) : () => {};
  const applied = await migrateToLatest(db as Kysely<unknown>, def.name, def.migrationsFolder);
  if (applied.length > 0) log.info({ migrations: applied }, "migrations applied");
  const nc = await connectNats(config.natsUrl, def.name);
  const jsm = await nc.jetstreamManager();
  // Publishes carry the active trace to whoever consumes them.
  const js = tracedJetStream(nc.jetstream(), def.name);
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
    // Outermost first: metrics and the log context see the code the domain errors map to.
    // The trace comes first so the log context's lines carry its id.
    interceptors: [rpcServerTracing(def.name), rpcServerInterceptor(), domainErrorInterceptor(log)],
  });

  let stopping: Promise<void> | undefined;
  const readiness = async (): Promise<ReadinessReport> => {
    if (stopping) return readinessReport({ process: "stopping" });
    const [database, nats, own] = await Promise.all([
      probe(() => pingDatabase(db as Kysely<unknown>), PROBE_TIMEOUT_MS),
      nc.isClosed() ? "connection closed" : probe(() => nc.rtt(), PROBE_TIMEOUT_MS),
      Promise.resolve(parts.readiness?.() ?? {}),
    ]);
    const problems: ReadinessProblems = { database, nats };
    const loops = new Map<string, { total: number; idle: number }>();
    for (const consumer of consumersOf(js)) {
      const entry = loops.get(consumer.durable) ?? { total: 0, idle: 0 };
      entry.total++;
      if (!consumer.active) entry.idle++;
      loops.set(consumer.durable, entry);
    }
    for (const [durable, { total, idle }] of loops) {
      problems[`consumer ${durable}`] = idle === 0 ? undefined : `${idle} of ${total} loop(s) not consuming`;
    }
    return readinessReport({ ...problems, ...own });
  };
  // The gRPC health status follows readiness, so grpc_health_probe and load balancers agree with /readyz.
  let evaluating = false;
  const refreshHealth = async () => {
    if (evaluating || stopping) return;
    evaluating = true;
    try {
      const report = await readiness();
      if (!stopping && report.ready !== health.serving) {
        health.set(report.ready);
        if (report.ready) log.info("ready");
        else log.warn({ checks: report.checks }, "not ready");
      }
    } finally {
      evaluating = false;
    }
  };
  // Consumers subscribe asynchronously: give them a moment before the first verdict.
  const startupDeadline = Date.now() + STARTUP_READY_TIMEOUT_MS;
  while (!health.serving && Date.now() < startupDeadline) {
    await refreshHealth();
    if (!health.serving) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const healthTimer = setInterval(() => void refreshHealth(), READINESS_INTERVAL_MS);
  healthTimer.unref();
  const admin: AdminServer = await startAdminServer({
    port: adminPortFor(def.name, config.adminPort, config.port as number, source),
    log,
    readiness,
  });
  log.info({ port: server.port, adminPort: admin.port, ready: health.serving }, "serving");

  return {
    port: server.port,
    adminPort: admin.port,
    log,
    readiness,
    stop() {
      stopping ??= (async () => {
        clearInterval(healthTimer);
        health.set(false);
        await server.close(config.shutdownTimeoutMs);
        await parts.stop?.();
        await admin.close();
        await nc.drain().catch(() => nc.close());
        untrackPool();
        await flushTelemetry();
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
    process.send?.({ ready: true, port: running.port, adminPort: running.adminPort });
  }, fail);
}
