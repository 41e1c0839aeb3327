/**
 * The admin port of a process (DESIGN §7): GET /healthz (alive), GET /readyz (its dependencies
 * answer) and GET /metrics (Prometheus), on plain HTTP apart from the API port.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { env } from "./config.js";
import type { Logger } from "./log.js";
import { metricsRegistry } from "./metrics.js";

export const DEFAULT_ADMIN_PORTS: Record<string, number> = {
  gateway: 9450,
  auth: 9451,
  executor: 9452,
  logs: 9453,
  notifier: 9454,
};

/** `<NAME>_ADMIN_PORT`, e.g. EXECUTOR_ADMIN_PORT (default 9452); 0 picks a free port. */
export function adminPortSetting(processName: string) {
  return env.int(
    `${processName.toUpperCase()}_ADMIN_PORT`,
    `admin HTTP port of the ${processName === "gateway" ? "gateway" : `${processName} service`} (/healthz, /readyz, /metrics); 0 picks a free port, as does leaving it unset when the API port is 0`,
    { default: DEFAULT_ADMIN_PORTS[processName] ?? 0, min: 0, max: 65535 },
  );
}

/**
 * The admin port to listen on: an ephemeral API port (0, tests and side-by-side stacks) makes the
 * default admin port ephemeral too, so two such processes never fight over the default.
 */
export function adminPortFor(
  processName: string,
  configured: number,
  apiPort: number,
  source: Record<string, string | undefined>,
): number {
  const given = source[`${processName.toUpperCase()}_ADMIN_PORT`];
  return apiPort === 0 && (given === undefined || given.trim() === "") ? 0 : configured;
}

/** Check name → why it is not ready, or undefined when it is. */
export type ReadinessProblems = Record<string, string | undefined>;

export interface ReadinessReport {
  ready: boolean;
  /** Check name → "ok" or the problem. */
  checks: Record<string, string>;
}

export function readinessReport(problems: ReadinessProblems): ReadinessReport {
  const checks: Record<string, string> = {};
  let ready = true;
  for (const [name, problem] of Object.entries(problems)) {
    checks[name] = problem ?? "ok";
    if (problem !== undefined) ready = false;
  }
  return { ready, checks };
}

/** Runs a probe with a deadline; its failure (or lateness) becomes the problem text. */
export async function probe(what: () => Promise<unknown>, timeoutMs: number): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      what(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    clearTimeout(timer);
  }
}

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startAdminServer(opts: {
  port: number;
  host?: string;
  log: Logger;
  readiness(): Promise<ReadinessReport>;
}): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: string, type = "application/json") => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, JSON.stringify({ error: "method not allowed" }));
      return;
    }
    if (path === "/healthz") {
      send(200, JSON.stringify({ status: "ok" }));
    } else if (path === "/readyz") {
      opts.readiness().then(
        (report) =>
          send(
            report.ready ? 200 : 503,
            JSON.stringify({ status: report.ready ? "ready" : "not ready", checks: report.checks }),
          ),
        (err: unknown) => send(503, JSON.stringify({ status: "not ready", error: String(err) })),
      );
    } else if (path === "/metrics") {
      metricsRegistry.metrics().then(
        (text) => send(200, text, metricsRegistry.contentType),
        (err: unknown) => {
          opts.log.error({ err }, "metrics collection failed");
          send(500, JSON.stringify({ error: "metrics collection failed" }));
        },
      );
    } else {
      send(404, JSON.stringify({ error: "not found; try /healthz, /readyz or /metrics" }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
