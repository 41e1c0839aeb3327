import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { isAlive } from "./processes.js";
import { REPO_ROOT, replicaCounts, tsxNodeArgs } from "./stack.js";

const execFileAsync = promisify(execFile);
const MAIN = path.join(REPO_ROOT, "gateway", "cli", "main.ts");

function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const statLine = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(statLine.slice(statLine.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe("replicaCounts", () => {
  it("applies a single number to executor, notifier and gateway only", () => {
    expect(replicaCounts(3)).toEqual({ auth: 1, executor: 3, logs: 1, notifier: 3, gateway: 3 });
    expect(replicaCounts(undefined)).toEqual({ auth: 1, executor: 1, logs: 1, notifier: 1, gateway: 1 });
    expect(replicaCounts({ executor: 2 })).toEqual({
      auth: 1,
      executor: 2,
      logs: 1,
      notifier: 1,
      gateway: 1,
    });
  });

  it("refuses counts out of range and processes that cannot be replicated", () => {
    expect(() => replicaCounts(0)).toThrow(/executor must be an integer from 1 to 16/);
    expect(() => replicaCounts({ gateway: 1.5 })).toThrow(/gateway must be an integer/);
    expect(() => replicaCounts({ gateway: 17 })).toThrow(/from 1 to 16/);
    expect(() => replicaCounts({ auth: 2 } as never)).toThrow(/auth cannot be replicated/);
  });
});

describe("flowplane dev --replicas", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let launcher: ChildProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-dev-replicas-"));
  });

  afterAll(async () => {
    if (launcher?.exitCode === null) launcher.kill("SIGKILL");
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("refuses a bad count with the usage and exit code 2", async () => {
    for (const args of [
      ["--replicas", "0"],
      ["--replicas", "two"],
    ]) {
      const run = await execFileAsync(process.execPath, [...tsxNodeArgs(), MAIN, "dev", ...args], {
        cwd: REPO_ROOT,
      }).then(
        () => ({ code: 0, stderr: "" }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code, stderr: err.stderr ?? "" }),
      );
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("--replicas must be an integer from 1 to 16");
    }
  });

  it("starts two executors, notifiers and gateways from FLOWPLANE_REPLICAS and stops them all", async () => {
    const child = spawn(process.execPath, [...tsxNodeArgs(), MAIN, "dev", "--data-dir", dataDir], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        NATS_URL: TEST_NATS_URL,
        FLOWPLANE_NAMESPACE: namespace,
        FLOWPLANE_REPLICAS: "2",
        LOG_LEVEL: "warn",
        AUTH_PORT: "0",
        EXECUTOR_PORT: "0",
        LOGS_PORT: "0",
        NOTIFIER_PORT: "0",
        GATEWAY_PORT: "0",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    launcher = child;
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await waitFor(
      "flowplane dev to print its summary",
      () => {
        if (child.exitCode !== null) throw new Error(`dev exited with ${child.exitCode}: ${stderr}`);
        return stdout.includes("Press Ctrl-C to stop.") ? true : undefined;
      },
      120_000,
    );
    const gatewayLine = stdout.split("\n").findIndex((line) => line.trim().startsWith("Gateway"));
    const first = stdout.split("\n")[gatewayLine]?.match(/http:\/\/127\.0\.0\.1:\d+/)?.[0];
    const second = stdout.split("\n")[gatewayLine + 1]?.match(/(http:\/\/127\.0\.0\.1:\d+) \(replica\)/)?.[1];
    expect(first).toBeDefined();
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    // The printed curl line uses the first gateway.
    expect(stdout).toContain(`curl -sS -X POST ${first}/api/executeWorkflow`);
    for (const url of [first, second]) expect((await fetch(`${url}/openapi.json`)).status).toBe(200);

    const children = childPids(child.pid!);
    expect(children).toHaveLength(8);
    expect((await readdir(path.join(dataDir, "logs"))).sort()).toEqual(
      [
        "auth.log",
        "executor-0.log",
        "executor-1.log",
        "gateway-0.log",
        "gateway-1.log",
        "logs.log",
        "notifier-0.log",
        "notifier-1.log",
      ].sort(),
    );
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    for (const pid of children) expect(isAlive(pid)).toBe(false);
  }, 180_000);
});
