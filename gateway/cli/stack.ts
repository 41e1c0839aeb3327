/**
 * The local stack: PostgreSQL and NATS (given by URL, or embedded), then auth, executor, logs and
 * notifier as child processes in parallel, then the gateway. Every child gets an IPC channel, so it
 * stops by itself when the launcher dies; `stop()` stops them in order and waits for each.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { DEFAULT_ADMIN_PORTS } from "../../services/platform/admin.js";
import { type LocalServer, startEmbeddedPostgres, startNatsServer } from "./embedded.js";
import { commandLine, indent, isAlive, OutputTail, waitForPidExit } from "./processes.js";

export const SERVICE_NAMES = ["auth", "executor", "logs", "notifier"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];
export type ProcessName = ServiceName | "gateway";
export const PROCESS_NAMES: readonly ProcessName[] = [...SERVICE_NAMES, "gateway"];

export const DEFAULT_PORTS: Record<ProcessName, number> = {
  auth: 50051,
  executor: 50052,
  logs: 50053,
  notifier: 50054,
  gateway: 8080,
};

const PORT_VARIABLES: Record<ProcessName, string> = {
  auth: "AUTH_PORT",
  executor: "EXECUTOR_PORT",
  logs: "LOGS_PORT",
  notifier: "NOTIFIER_PORT",
  gateway: "GATEWAY_PORT",
};

const ADMIN_PORT_VARIABLES: Record<ProcessName, string> = {
  auth: "AUTH_ADMIN_PORT",
  executor: "EXECUTOR_ADMIN_PORT",
  logs: "LOGS_ADMIN_PORT",
  notifier: "NOTIFIER_ADMIN_PORT",
  gateway: "GATEWAY_ADMIN_PORT",
};

/** Processes that may run as several replicas sharing the database and NATS. */
export const REPLICATED_PROCESSES = ["executor", "notifier", "gateway"] as const;
export type ReplicatedProcess = (typeof REPLICATED_PROCESSES)[number];
export const MAX_REPLICAS = 16;

/** Replica counts per process from a single number (executor, notifier and gateway) or a record. */
export function replicaCounts(
  replicas: number | Partial<Record<ReplicatedProcess, number>> | undefined,
): Record<ProcessName, number> {
  const counts: Record<ProcessName, number> = { auth: 1, executor: 1, logs: 1, notifier: 1, gateway: 1 };
  const asked: Partial<Record<ReplicatedProcess, number>> =
    typeof replicas === "number"
      ? Object.fromEntries(REPLICATED_PROCESSES.map((name) => [name, replicas]))
      : (replicas ?? {});
  for (const [name, count] of Object.entries(asked)) {
    if (!(REPLICATED_PROCESSES as readonly string[]).includes(name)) {
      throw new Error(`replicas: ${name} cannot be replicated; only ${REPLICATED_PROCESSES.join(", ")} can`);
    }
    if (count === undefined) continue;
    if (!Number.isSafeInteger(count) || count < 1 || count > MAX_REPLICAS) {
      throw new Error(`replicas: ${name} must be an integer from 1 to ${MAX_REPLICAS}, got ${count}`);
    }
    counts[name as ReplicatedProcess] = count;
  }
  return counts;
}

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The file a process runs: `services/<name>/main.ts` or `gateway/main.ts`. */
export function entryPoint(name: ProcessName): string {
  return name === "gateway"
    ? path.join(REPO_ROOT, "gateway", "main.ts")
    : path.join(REPO_ROOT, "services", name, "main.ts");
}

/** `node --import <tsx>` arguments resolved from this package, so they work from any cwd. */
export function tsxNodeArgs(): string[] {
  const loader = createRequire(import.meta.url).resolve("tsx");
  return ["--import", pathToFileURL(loader).href];
}

export interface StackOptions {
  /** PostgreSQL URL; defaults to DATABASE_URL, else an embedded PostgreSQL under `dataDir`. */
  databaseUrl?: string;
  /** NATS URL (JetStream enabled); defaults to NATS_URL, else a nats-server spawned from PATH. */
  natsUrl?: string;
  /** FLOWPLANE_NAMESPACE; defaults to the variable, else "flowplane". */
  namespace?: string;
  /** Where embedded servers keep their data and the launcher its lock; default ".flowplane" in cwd. */
  dataDir?: string;
  /**
   * Ports of the embedded PostgreSQL and nats-server when the stack starts them; default: 54329 and
   * 42229 when free, else any free port.
   */
  infrastructurePorts?: Partial<Record<InfrastructureName, number>>;
  /** Ports of the processes; 0 lets the process pick one. Defaults: 50051..50054 and 8080. */
  ports?: Partial<Record<ProcessName, number>>;
  /**
   * Admin ports (/healthz, /readyz, /metrics); 0 lets the process pick one. Defaults: <NAME>_ADMIN_PORT,
   * else 9450 (gateway) and 9451..9454 for a process on its default API port, else 0 (so side-by-side
   * stacks on other ports never collide).
   */
  adminPorts?: Partial<Record<ProcessName, number>>;
  /**
   * Processes of executor, notifier and gateway (a number sets all three); default 1 each. Replica 0
   * keeps the configured ports; the others take port 0 for both the API and the admin port. Gateway
   * replica i talks to executor and notifier replica i (modulo their counts).
   */
  replicas?: number | Partial<Record<ReplicatedProcess, number>>;
  /**
   * When set, each child's stdout and stderr go to `<logDir>/<name>.log` (`<name>-<i>.log` when the
   * process has several replicas) instead of the terminal.
   */
  logDir?: string;
  /** Extra environment for every child. */
  env?: Record<string, string>;
  /** LOG_LEVEL of every child. */
  logLevel?: string;
  /** How long each process may take to report ready; default 60 s. */
  readyTimeoutMs?: number;
  /** How long each process may take to stop after SIGTERM before it is killed; default 15 s. */
  stopTimeoutMs?: number;
  /** Progress and warnings meant for a human; default stderr. */
  report?: (line: string) => void;
}

export interface Stack {
  /** The first gateway. */
  gatewayUrl: string;
  /** Every gateway replica, replica 0 first. */
  gatewayUrls: string[];
  /** API base URLs of every replica of each process, replica 0 first. */
  replicaUrls: Record<ProcessName, string[]>;
  /** Admin base URLs of every replica of each process, replica 0 first. */
  replicaAdminUrls: Record<ProcessName, string[]>;
  /** Replica 0 of each service. */
  serviceUrls: Record<ServiceName, string>;
  /** Base URLs of each process's admin port (`${url}/readyz`, `${url}/metrics`); replica 0. */
  adminUrls: Record<ProcessName, string>;
  databaseUrl: string;
  natsUrl: string;
  namespace: string;
  dataDir: string;
  /** Process ids of the running children, replica 0 of each (for tests and diagnostics). */
  pids(): Partial<Record<ProcessName, number>>;
  /** Stops one process, replica 0 unless told (SIGTERM, then SIGKILL after the deadline). */
  stopProcess(name: ProcessName, replica?: number): Promise<void>;
  /**
   * Kills one process (replica 0 unless told) with SIGKILL, no drain, and resolves once it is gone;
   * `startProcess` brings it back. For fault-injection runs.
   */
  killProcess(name: ProcessName, replica?: number): Promise<void>;
  /**
   * Crashes the PostgreSQL or nats-server the stack started itself (PostgreSQL: immediate shutdown,
   * SIGQUIT, so the next start runs crash recovery; nats-server: SIGKILL) and starts it again on the
   * same port and data folder; resolves once it accepts connections. Throws when the stack was given
   * that server's URL instead.
   */
  restartInfrastructure(which: InfrastructureName): Promise<void>;
  /**
   * Process ids of every child (all replicas) and of the servers the stack started itself (the
   * PostgreSQL postmaster; its backends are its children).
   */
  allPids(): { name: string; pid: number }[];
  /**
   * Starts a stopped process (replica 0 unless told) again with the same environment and port;
   * resolves when it is ready.
   */
  startProcess(name: ProcessName, replica?: number): Promise<void>;
  /** Stops every child, then the nats-server and PostgreSQL it started itself. */
  stop(): Promise<void>;
}

export type InfrastructureName = "postgres" | "nats";

interface ChildState {
  name: ProcessName;
  replica: number;
  /** `<name>` for a single process, `<name>-<i>` for one of several replicas: messages and log file. */
  label: string;
  env: Record<string, string>;
  child?: ChildProcess;
  /** Resolves once the child has exited and its output is flushed. */
  closed?: Promise<void>;
  tail: OutputTail;
  log?: WriteStream;
  /** Set by stopProcess/stop so the exit is not reported as a crash. */
  stopping: boolean;
  port?: number;
  adminPort?: number;
}

const nonEmpty = (value: string | undefined) => (value?.trim() ? value.trim() : undefined);

/** One launcher per data directory: a second one would fight over ports and the embedded servers. */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockFile = path.join(dataDir, "launcher.pid");
  const holder = Number.parseInt(await readFile(lockFile, "utf8").catch(() => ""), 10);
  if (Number.isSafeInteger(holder) && holder !== process.pid && isAlive(holder)) {
    const cmdline = commandLine(holder) ?? "";
    if (cmdline === "" || cmdline.includes("node")) {
      throw new Error(
        `another flowplane stack is running from ${dataDir} (pid ${holder}); stop it first or use another data directory`,
      );
    }
  }
  await writeFile(lockFile, `${process.pid}\n`);
  return async () => {
    const current = await readFile(lockFile, "utf8").catch(() => "");
    if (Number.parseInt(current, 10) === process.pid) await unlink(lockFile).catch(() => {});
  };
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const report = options.report ?? ((line: string) => process.stderr.write(`${line}\n`));
  const dataDir = path.resolve(options.dataDir ?? ".flowplane");
  const namespace = nonEmpty(options.namespace) ?? nonEmpty(process.env.FLOWPLANE_NAMESPACE) ?? "flowplane";
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 15_000;
  const ports = { ...DEFAULT_PORTS, ...options.ports };
  const counts = replicaCounts(options.replicas);
  const adminPortOf = (name: ProcessName): number => {
    const fromEnv = Number.parseInt(process.env[ADMIN_PORT_VARIABLES[name]] ?? "", 10);
    if (options.adminPorts?.[name] !== undefined) return options.adminPorts[name];
    if (Number.isSafeInteger(fromEnv) && fromEnv >= 0 && fromEnv <= 65535) return fromEnv;
    return ports[name] === DEFAULT_PORTS[name] ? (DEFAULT_ADMIN_PORTS[name] ?? 0) : 0;
  };
  const adminPorts = Object.fromEntries(PROCESS_NAMES.map((name) => [name, adminPortOf(name)])) as Record<
    ProcessName,
    number
  >;
  await mkdir(dataDir, { recursive: true });
  if (options.logDir) await mkdir(options.logDir, { recursive: true });

  const unlock = await lockDataDir(dataDir);
  const ownedServers: LocalServer[] = [];
  const ownedByName: Partial<Record<InfrastructureName, LocalServer>> = {};
  const children = new Map<string, ChildState>();
  const keyOf = (name: ProcessName, replica: number) => `${name}/${replica}`;
  const nodeArgs = tsxNodeArgs();

  // Last resort when the launcher exits without stop(): IPC closing already stops the children,
  // SIGTERM makes sure of it.
  const killChildrenOnExit = () => {
    for (const state of children.values()) state.child?.kill("SIGTERM");
  };
  process.on("exit", killChildrenOnExit);

  const stopInfrastructure = async () => {
    for (const server of ownedServers.reverse()) await server.stop().catch(() => {});
    ownedServers.length = 0;
  };

  const spawnChild = (state: ChildState): Promise<void> => {
    const child = spawn(process.execPath, [...nodeArgs, entryPoint(state.name)], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...state.env },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    state.child = child;
    state.stopping = false;
    if (options.logDir && !state.log) {
      state.log = createWriteStream(path.join(options.logDir, `${state.label}.log`), { flags: "a" });
    }
    const forward = (terminal: NodeJS.WriteStream) => (chunk: Buffer) => {
      state.tail.push(chunk);
      if (state.log) state.log.write(chunk);
      else terminal.write(chunk);
    };
    child.stdout?.on("data", forward(process.stdout));
    child.stderr?.on("data", forward(process.stderr));

    let exitReason: string | undefined;
    state.closed = new Promise<void>((resolve) => {
      child.once("close", (code, signal) => {
        exitReason = describeExit(code, signal);
        if (state.child === child) state.child = undefined;
        resolve();
      });
      child.once("error", (err) => {
        exitReason = `could not be started: ${err.message}`;
        if (state.child === child) state.child = undefined;
        resolve();
      });
    });

    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const failed = (why: string) => {
        const tail = state.tail.text();
        const where = options.logDir ? path.join(options.logDir, `${state.label}.log`) : "its output";
        reject(new Error(`${state.label} ${why}${tail ? `; last lines of ${where}:\n${indent(tail)}` : ""}`));
      };
      const timer = setTimeout(() => {
        if (ready) return;
        failed(`did not report ready within ${readyTimeoutMs} ms`);
        terminate(state).catch(() => {});
      }, readyTimeoutMs);
      child.on("message", (message: unknown) => {
        if (ready || typeof message !== "object" || message === null) return;
        const {
          ready: isReady,
          port,
          adminPort,
        } = message as {
          ready?: unknown;
          port?: unknown;
          adminPort?: unknown;
        };
        if (isReady !== true || typeof port !== "number") return;
        ready = true;
        clearTimeout(timer);
        // A restart must come back on the same port: the gateway already points there.
        state.port = port;
        state.env[PORT_VARIABLES[state.name]] = String(port);
        if (typeof adminPort === "number") {
          state.adminPort = adminPort;
          state.env[ADMIN_PORT_VARIABLES[state.name]] = String(adminPort);
        }
        resolve();
      });
      state.closed?.then(() => {
        clearTimeout(timer);
        if (!ready) {
          failed(`${exitReason ?? "exited"} before it was ready`);
          return;
        }
        if (!state.stopping) {
          const tail = state.tail.text();
          report(
            `flowplane: ${state.label} ${exitReason ?? "exited"} unexpectedly${tail ? `; last lines:\n${indent(tail)}` : ""}`,
          );
        }
      });
    });
  };

  const terminate = async (state: ChildState): Promise<void> => {
    const child = state.child;
    if (!child) return;
    state.stopping = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), stopTimeoutMs);
      await state.closed;
      clearTimeout(timer);
    } else {
      await state.closed;
    }
    state.child = undefined;
  };

  const stopChildren = async () => {
    // The gateways first, so no request reaches a service that is already going away.
    await Promise.all(
      [...children.values()].filter((state) => state.name === "gateway").map((state) => terminate(state)),
    );
    await Promise.all([...children.values()].map((state) => terminate(state)));
    await Promise.all(
      [...children.values()].map(
        (state) => new Promise<void>((resolve) => (state.log ? state.log.end(resolve) : resolve())),
      ),
    );
  };

  let databaseUrl = nonEmpty(options.databaseUrl) ?? nonEmpty(process.env.DATABASE_URL);
  let natsUrl = nonEmpty(options.natsUrl) ?? nonEmpty(process.env.NATS_URL);
  try {
    const [postgres, nats] = await Promise.allSettled([
      databaseUrl
        ? undefined
        : startEmbeddedPostgres({
            dataDir,
            replaceOrphan: true,
            port: options.infrastructurePorts?.postgres,
          }),
      natsUrl
        ? undefined
        : startNatsServer({ dataDir, replaceOrphan: true, port: options.infrastructurePorts?.nats }),
    ]);
    // Keep whichever started so a failure of the other still stops it.
    for (const result of [postgres, nats]) {
      if (result?.status === "fulfilled" && result.value) ownedServers.push(result.value);
    }
    if (postgres?.status === "rejected") throw postgres.reason;
    if (nats?.status === "rejected") throw nats.reason;
    if (postgres?.status === "fulfilled" && postgres.value) ownedByName.postgres = postgres.value;
    if (nats?.status === "fulfilled" && nats.value) ownedByName.nats = nats.value;
    if (postgres?.value) {
      databaseUrl = postgres.value.url;
      report(`postgres: embedded, data in ${path.join(dataDir, "postgres")}, port ${postgres.value.port}`);
    }
    if (nats?.value) {
      natsUrl = nats.value.url;
      report(`nats: nats-server -js, data in ${path.join(dataDir, "nats")}, port ${nats.value.port}`);
    }
  } catch (err) {
    await stopInfrastructure();
    process.removeListener("exit", killChildrenOnExit);
    await unlock();
    throw err;
  }
  if (!databaseUrl || !natsUrl) throw new Error("unreachable: database and NATS URLs are set above");

  const commonEnv: Record<string, string> = {
    ...options.env,
    DATABASE_URL: databaseUrl,
    NATS_URL: natsUrl,
    FLOWPLANE_NAMESPACE: namespace,
    ...(options.logLevel ? { LOG_LEVEL: options.logLevel } : {}),
  };
  const newState = (name: ProcessName, replica: number, env: Record<string, string>): ChildState => {
    const label = counts[name] > 1 ? `${name}-${replica}` : name;
    const state: ChildState = { name, replica, label, env, tail: new OutputTail(), stopping: false };
    children.set(keyOf(name, replica), state);
    return state;
  };
  const replicaIndexes = (name: ProcessName) => Array.from({ length: counts[name] }, (_, i) => i);
  const urlOf = (name: ProcessName, replica = 0) =>
    `http://127.0.0.1:${children.get(keyOf(name, replica))?.port}`;
  const adminUrlOf = (name: ProcessName, replica = 0) =>
    `http://127.0.0.1:${children.get(keyOf(name, replica))?.adminPort}`;

  // Replicas after the first take port 0: they would collide on the configured one.
  const serviceEnv = (name: ProcessName, replica: number, extra: Record<string, string> = {}) => ({
    ...commonEnv,
    [PORT_VARIABLES[name]]: String(replica === 0 ? ports[name] : 0),
    [ADMIN_PORT_VARIABLES[name]]: String(replica === 0 ? adminPorts[name] : 0),
    ...extra,
  });
  try {
    // Logs (plans for retention), the notifier (limits in payloads), the executor (execution tokens
    // of hook and schedule runs) and the gateway need auth's address, the gateway every service's. A
    // fixed port (replica 0, as `npm start` runs) is known before the process starts, so gateways
    // whose upstreams all have fixed ports boot alongside the services; a port 0 is known only once
    // its process reports ready, so then the gateways wait for the services.
    const fixedUrl = (name: ProcessName, replica = 0) =>
      replica === 0 && ports[name] !== 0 ? `http://127.0.0.1:${ports[name]}` : undefined;
    const addressOf = (name: ProcessName, replica = 0) => fixedUrl(name, replica) ?? urlOf(name, replica);
    const spawnAll = async (starts: (() => Promise<void>)[]) => {
      const results = await Promise.allSettled(starts.map((start) => start()));
      const failures = results.flatMap((result) => (result.status === "rejected" ? [result.reason] : []));
      if (failures.length > 0) {
        throw new Error(failures.map((err) => (err instanceof Error ? err.message : String(err))).join("\n"));
      }
    };
    const auth = () => spawnChild(newState("auth", 0, serviceEnv("auth", 0)));
    const services = () =>
      SERVICE_NAMES.filter((name) => name !== "auth").flatMap((name) =>
        replicaIndexes(name).map(
          (replica) => () =>
            spawnChild(newState(name, replica, serviceEnv(name, replica, { AUTH_URL: addressOf("auth") }))),
        ),
      );
    // Gateway replica i talks to executor and notifier replica i, so every replica takes traffic.
    const upstreams = (replica: number): [ProcessName, number][] => [
      ["auth", 0],
      ["executor", replica % counts.executor],
      ["logs", 0],
      ["notifier", replica % counts.notifier],
    ];
    const gatewaysKnown = replicaIndexes("gateway").every((replica) =>
      upstreams(replica).every(([name, i]) => fixedUrl(name, i) !== undefined),
    );
    const gateways = () =>
      replicaIndexes("gateway").map(
        (replica) => () =>
          spawnChild(
            newState(
              "gateway",
              replica,
              serviceEnv("gateway", replica, {
                AUTH_URL: addressOf("auth"),
                EXECUTOR_URL: addressOf("executor", replica % counts.executor),
                LOGS_URL: addressOf("logs"),
                NOTIFIER_URL: addressOf("notifier", replica % counts.notifier),
              }),
            ),
          ),
      );
    // Auth is ready before the services start even when its port is fixed: an executor's first
    // schedule tick would otherwise be refused (fail closed) by an auth service still booting.
    await spawnAll([auth]);
    await spawnAll([...services(), ...(gatewaysKnown ? gateways() : [])]);
    if (!gatewaysKnown) await spawnAll(gateways());
  } catch (err) {
    await stopChildren();
    await stopInfrastructure();
    process.removeListener("exit", killChildrenOnExit);
    await unlock();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  const stateOf = (name: ProcessName, replica: number): ChildState => {
    if (!PROCESS_NAMES.includes(name)) {
      throw new Error(`unknown process ${name}; expected one of ${PROCESS_NAMES.join(", ")}`);
    }
    const state = children.get(keyOf(name, replica));
    if (!state) throw new Error(`${name} has no replica ${replica}; it runs ${counts[name]}`);
    return state;
  };
  const perProcess = (of: (name: ProcessName, replica: number) => string) =>
    Object.fromEntries(
      PROCESS_NAMES.map((name) => [name, replicaIndexes(name).map((replica) => of(name, replica))]),
    ) as Record<ProcessName, string[]>;
  const replicaUrls = perProcess(urlOf);
  return {
    gatewayUrl: urlOf("gateway"),
    gatewayUrls: replicaUrls.gateway,
    replicaUrls,
    replicaAdminUrls: perProcess(adminUrlOf),
    serviceUrls: {
      auth: urlOf("auth"),
      executor: urlOf("executor"),
      logs: urlOf("logs"),
      notifier: urlOf("notifier"),
    },
    adminUrls: {
      auth: adminUrlOf("auth"),
      executor: adminUrlOf("executor"),
      logs: adminUrlOf("logs"),
      notifier: adminUrlOf("notifier"),
      gateway: adminUrlOf("gateway"),
    },
    databaseUrl,
    natsUrl,
    namespace,
    dataDir,
    pids() {
      const out: Partial<Record<ProcessName, number>> = {};
      for (const state of children.values()) {
        if (state.replica === 0 && state.child?.pid !== undefined) out[state.name] = state.child.pid;
      }
      return out;
    },
    async stopProcess(name, replica = 0) {
      await terminate(stateOf(name, replica));
    },
    async killProcess(name, replica = 0) {
      const state = stateOf(name, replica);
      const child = state.child;
      if (!child) return;
      state.stopping = true;
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await state.closed;
      state.child = undefined;
    },
    async restartInfrastructure(which) {
      const server = ownedByName[which];
      if (!server) throw new Error(`${which} was not started by this stack; it cannot restart it`);
      if (stopping) throw new Error("the stack is stopping");
      process.kill(server.pid, which === "postgres" ? "SIGQUIT" : "SIGKILL");
      if (!(await waitForPidExit(server.pid, 30_000)))
        throw new Error(`${which} (pid ${server.pid}) did not exit`);
      // Releases what the launcher holds for it (log stream, pid and ports files); the process is gone.
      await server.stop();
      const started =
        which === "postgres"
          ? await startEmbeddedPostgres({ dataDir, port: server.port, replaceOrphan: true })
          : await startNatsServer({ dataDir, port: server.port, replaceOrphan: true });
      ownedServers[ownedServers.indexOf(server)] = started;
      ownedByName[which] = started;
    },
    allPids() {
      const out: { name: string; pid: number }[] = [];
      for (const state of children.values()) {
        if (state.child?.pid !== undefined) out.push({ name: state.label, pid: state.child.pid });
      }
      for (const which of ["postgres", "nats"] as const) {
        const server = ownedByName[which];
        if (server && server.pid > 0) out.push({ name: which, pid: server.pid });
      }
      return out;
    },
    async startProcess(name, replica = 0) {
      const state = stateOf(name, replica);
      if (stopping) throw new Error("the stack is stopping");
      if (state.child) throw new Error(`${state.label} is already running (pid ${state.child.pid})`);
      await spawnChild(state);
    },
    stop() {
      stopping ??= (async () => {
        await stopChildren();
        await stopInfrastructure();
        process.removeListener("exit", killChildrenOnExit);
        await unlock();
      })();
      return stopping;
    },
  };
}
