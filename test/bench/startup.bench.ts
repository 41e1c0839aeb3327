/**
 * Startup bench (DESIGN §10): `npm start` on a data folder that is already initialised (embedded
 * PostgreSQL cluster, NATS store, demo workspace and key) → the first successful execute of the demo
 * workflow, measured from the spawn of `npm start` until that 200 arrives. A first start initialises
 * the folder (reported as `firstStartToFirstExecuteMs`); then STARTUP_RUNS (default 3) warm starts,
 * each stopped with Ctrl-C (SIGINT to the process group) before the next; the median is the figure.
 * The processes get fixed ports, as with `npm start`'s defaults, but free ones, so the bench never
 * meets another stack on this machine.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { pickPort } from "../../gateway/cli/ports.js";
import { REPO_ROOT } from "../../gateway/cli/stack.js";

export const description =
  "startup: `npm start` with data already initialised → first successful executeWorkflow (median of warm starts)";
export const targets: Record<string, string> = { startupToFirstExecuteMs: "< 5000" };

const RUNS = Number(process.env.STARTUP_RUNS ?? 3);
const START_TIMEOUT_MS = 120_000;

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Ctrl-C to the whole group, as a terminal sends it; SIGKILL if it is not gone in 30 s. */
async function stopGroup(child: ChildProcess): Promise<void> {
  const pgid = child.pid;
  if (pgid === undefined) return;
  if (groupAlive(pgid)) process.kill(-pgid, "SIGINT");
  const deadline = performance.now() + 30_000;
  while (groupAlive(pgid) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (groupAlive(pgid)) process.kill(-pgid, "SIGKILL");
}

/** Spawns `npm start`, waits for its gateway URL, executes the demo until it answers 200; ms. */
async function startOnce(dataDir: string): Promise<{ ms: number; child: ChildProcess }> {
  // Fixed ports as `npm start` uses (its defaults may be taken by another stack here): free ones.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const variable of ["AUTH_PORT", "EXECUTOR_PORT", "LOGS_PORT", "NOTIFIER_PORT", "GATEWAY_PORT"]) {
    env[variable] = String(await pickPort(0));
  }
  delete env.DATABASE_URL;
  delete env.NATS_URL;
  const t0 = performance.now();
  const child = spawn("npm", ["start", "--", "--data-dir", dataDir], {
    cwd: REPO_ROOT,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  let exited: string | undefined;
  child.once("exit", (code, signal) => {
    exited = `exited (${signal ?? code})`;
  });
  try {
    const deadline = t0 + START_TIMEOUT_MS;
    let gatewayUrl: string | undefined;
    while (!gatewayUrl) {
      if (exited || performance.now() > deadline)
        throw new Error(`npm start ${exited ?? "timed out"}:\n${output}`);
      gatewayUrl = /Gateway\s+(http:\/\/\S+)/.exec(output)?.[1];
      if (!gatewayUrl) await new Promise((r) => setTimeout(r, 10));
    }
    const dev = JSON.parse(await readFile(path.join(dataDir, "dev.json"), "utf8")) as {
      apiKey: string;
      workflowId: string;
    };
    for (;;) {
      if (exited || performance.now() > deadline)
        throw new Error(`npm start ${exited ?? "timed out"}:\n${output}`);
      const res = await fetch(`${gatewayUrl}/api/executeWorkflow`, {
        method: "POST",
        headers: { "x-api-key": dev.apiKey, "content-type": "application/json" },
        body: JSON.stringify({
          workflowId: dev.workflowId,
          version: 1,
          input: { "First Name": "Bench", Age: 1 },
        }),
      }).catch(() => undefined);
      if (res?.status === 200) {
        const ms = performance.now() - t0;
        await res.text();
        return { ms, child };
      }
      await res?.text();
      await new Promise((r) => setTimeout(r, 10));
    }
  } catch (err) {
    await stopGroup(child);
    throw err;
  }
}

export default async function run(): Promise<Record<string, number>> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-startup-"));
  try {
    const first = await startOnce(dataDir);
    await stopGroup(first.child);
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const warm = await startOnce(dataDir);
      times.push(warm.ms);
      await stopGroup(warm.child);
    }
    times.sort((a, b) => a - b);
    const median =
      times.length % 2 === 1
        ? times[(times.length - 1) / 2]!
        : (times[times.length / 2 - 1]! + times[times.length / 2]!) / 2;
    return {
      startupToFirstExecuteMs: Math.round(median),
      startupMinMs: Math.round(times[0]!),
      startupMaxMs: Math.round(times.at(-1)!),
      startupRuns: times.length,
      firstStartToFirstExecuteMs: Math.round(first.ms),
    };
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
