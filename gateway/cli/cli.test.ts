import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { Health, ServingStatus } from "../../services/platform/health.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  freePort,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { bootstrapDemo } from "./bootstrap.js";
import { demoInput, demoOutput } from "./demo-workflow.js";
import { isAlive } from "./processes.js";
import { PROCESS_NAMES, type ProcessName, REPO_ROOT, type Stack, startStack, tsxNodeArgs } from "./stack.js";

const execFileAsync = promisify(execFile);
const MAIN = path.join(REPO_ROOT, "gateway", "cli", "main.ts");

/**
 * Port 0 everywhere: each process binds a port of the system's choosing and reports it when ready.
 * (Picking "free" ports up front races with every other test binding ephemeral ports.)
 */
function anyPorts(): Record<ProcessName, number> {
  return Object.fromEntries(PROCESS_NAMES.map((name) => [name, 0])) as Record<ProcessName, number>;
}

async function execute(gatewayUrl: string, apiKey: string, workflowId: string) {
  const response = await fetch(`${gatewayUrl}/api/executeWorkflow`, {
    method: "POST",
    headers: { "x-api-key": apiKey, "content-type": "application/json" },
    body: JSON.stringify({ workflowId, version: 1, input: demoInput }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Runs the CLI as a user would; resolves with its exit code and output. */
async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [...tsxNodeArgs(), MAIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failed = err as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}

/** Direct children of a process, from /proc. */
function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const statLine = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Fields after the parenthesised command name: state, ppid, …
      const ppid = Number(statLine.slice(statLine.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describe("startStack with the machine's PostgreSQL and NATS", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let stack: Stack;
  const reports: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-stack-"));
    stack = await startStack({
      databaseUrl: db.url,
      natsUrl: TEST_NATS_URL,
      namespace,
      dataDir,
      ports: anyPorts(),
      logDir: path.join(dataDir, "logs"),
      logLevel: "warn",
      report: (line) => reports.push(line),
    });
  });

  afterAll(async () => {
    await stack?.stop();
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("brings all five processes up, each answering its health check", async () => {
    const pids = stack.pids();
    expect(Object.keys(pids).sort()).toEqual([...PROCESS_NAMES].sort());
    for (const pid of Object.values(pids)) expect(isAlive(pid)).toBe(true);
    for (const url of Object.values(stack.serviceUrls)) {
      const { status } = await createRpcClient(Health, url).check({ service: "" });
      expect(status).toBe(ServingStatus.SERVING);
    }
    const health = await fetch(`${stack.gatewayUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(stack.databaseUrl).toBe(db.url);
    expect(stack.natsUrl).toBe(TEST_NATS_URL);
    expect(stack.namespace).toBe(namespace);
  });

  it("bootstraps the demo into dev.json, whose key runs the demo workflow; a second run reuses it", async () => {
    const first = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    expect(first.created).toBe(true);
    const file = path.join(dataDir, "dev.json");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(await readFile(file, "utf8"));
    expect(saved).toEqual({
      gatewayUrl: stack.gatewayUrl,
      apiKey: first.apiKey,
      workspaceId: first.workspaceId,
      workflowId: first.workflowId,
    });

    const executed = await execute(stack.gatewayUrl, saved.apiKey, saved.workflowId);
    expect(executed.status).toBe(200);
    expect(executed.body.output).toEqual(demoOutput);
    expect(executed.body.creditUsage).toBe(1);
    expect(typeof executed.body.conversationId).toBe("string");

    const second = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    expect(second).toMatchObject({ created: false, apiKey: first.apiKey, workflowId: first.workflowId });
  });

  it("stops one process and brings it back on the same port", async () => {
    const { apiKey, workflowId } = JSON.parse(await readFile(path.join(dataDir, "dev.json"), "utf8"));
    const before = stack.pids().executor;
    expect(before).toBeDefined();
    await stack.stopProcess("executor");
    expect(isAlive(before!)).toBe(false);
    expect(stack.pids().executor).toBeUndefined();
    const down = await execute(stack.gatewayUrl, apiKey, workflowId);
    expect(down.status).toBe(503);
    expect(typeof down.body.error).toBe("string");

    await stack.startProcess("executor");
    const after = stack.pids().executor;
    expect(after).toBeDefined();
    expect(after).not.toBe(before);
    const up = await waitFor("the executor to serve again", async () => {
      const answer = await execute(stack.gatewayUrl, apiKey, workflowId);
      return answer.status === 200 ? answer : undefined;
    });
    expect(up.body.output).toEqual(demoOutput);
    expect(reports.filter((line) => line.includes("unexpectedly"))).toEqual([]);
  });

  it("creates a tenant and an app key from the CLI, and reports usage and connection errors", async () => {
    const authUrl = stack.serviceUrls.auth;
    const tenant = await cli([
      "tenant",
      "create",
      "--name",
      "CLI workspace",
      "--plan",
      "team",
      "--auth-url",
      authUrl,
      "--json",
    ]);
    expect(tenant.stderr).toBe("");
    expect(tenant.code).toBe(0);
    const created = JSON.parse(tenant.stdout);
    expect(created).toMatchObject({ name: "CLI workspace", plan: "team" });
    expect(created.workspaceId).toMatch(/^ws_/);

    const token = await cli(
      [
        "token",
        "create",
        "--workspace",
        created.workspaceId,
        "--name",
        "ci",
        "--scope",
        "logs:read",
        "--purpose",
        "reads logs in CI",
        "--auth-url",
        authUrl,
      ],
      { AUTH_URL: "" },
    );
    expect(token.code).toBe(0);
    expect(token.stderr).toMatch(/will not be shown again/);
    const key = token.stdout.trim();
    expect(key).toMatch(/^fp_/);
    const { principal } = await createRpcClient(AuthService, authUrl).authorize({
      apiKey: key,
      action: "logs:read",
    });
    expect(principal?.tenantId).toBe(created.workspaceId);
    expect(principal?.scopes).toEqual(["logs:read"]);

    const missingName = await cli(["tenant", "create", "--auth-url", authUrl]);
    expect(missingName.code).toBe(2);
    expect(missingName.stderr).toMatch(/--name is required/);
    const unknownOption = await cli(["token", "create", "--bogus"]);
    expect(unknownOption.code).toBe(2);
    const help = await cli(["token", "create", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--workspace WS/);

    const refused = await cli([
      "tenant",
      "create",
      "--name",
      "x",
      "--auth-url",
      `http://127.0.0.1:${await freePort()}`,
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^flowplane: auth CreateTenant \(http:\/\/127\.0\.0\.1:\d+\) failed: /);
    expect(refused.stderr).not.toMatch(/\n\s+at /);
  });

  it("runs gateway commands with dev.json's URL and key, with the documented exit codes", async () => {
    const { workflowId } = JSON.parse(await readFile(path.join(dataDir, "dev.json"), "utf8"));
    // Nothing from the machine's environment: the URL and key come from --data-dir's dev.json.
    const noEnv = { FLOWPLANE_URL: "", FLOWPLANE_API_KEY: "", FLOWPLANE_WORKSPACE: "" };
    const fromDev = ["--data-dir", dataDir];
    const ok = await cli(
      ["run", workflowId, "--input", "First Name=John", "--input", "Age=30", "--json", ...fromDev],
      noEnv,
    );
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ output: demoOutput, status: "success" });

    const unauthorized = await cli(["run", workflowId, "--api-key", "fp_test_bogus", ...fromDev], noEnv);
    expect(unauthorized.code).toBe(3);
    expect(unauthorized.stderr).toMatch(/^flowplane: 401: /);
    const notFound = await cli(["run", "wf_unknown", "--input", "First Name=A", ...fromDev], noEnv);
    expect(notFound.code).toBe(4);
    const usage = await cli(["run", ...fromDev], noEnv);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/missing WORKFLOW_ID/);
    const help = await cli(["help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Exit codes:\n\s+0\s+ok/);
    expect(help.stdout).toMatch(/6\s+rate limited/);
  });

  it("logs --follow prints runs as they arrive until Ctrl-C, then exits 0", async () => {
    const { apiKey, workflowId } = JSON.parse(await readFile(path.join(dataDir, "dev.json"), "utf8"));
    const child = spawn(
      process.execPath,
      [...tsxNodeArgs(), MAIN, "logs", "--follow", "--interval", "200", "--data-dir", dataDir],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, FLOWPLANE_URL: "", FLOWPLANE_API_KEY: "" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await waitFor("the follower to start", () => {
        if (child.exitCode !== null)
          throw new Error(`logs --follow exited with ${child.exitCode}: ${stderr}`);
        return stderr.includes("following logs since") ? true : undefined;
      });
      const executed = await execute(stack.gatewayUrl, apiKey, workflowId);
      const executionId = executed.body.executionId as string;
      await waitFor(
        "the new run in the followed logs",
        () => (stdout.includes(executionId) ? true : undefined),
        20_000,
      );
      expect(stdout.split("\n")[0]).toBe("STARTED\tLEVEL\tTRIGGER\tWORKFLOW\tEXECUTION\tDURATION\tCOST");
      child.kill("SIGINT");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("stop() leaves no child process alive", async () => {
    const pids = Object.values(stack.pids());
    expect(pids).toHaveLength(5);
    await stack.stop();
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    expect(stack.pids()).toEqual({});
  });
});

describe("flowplane dev", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let launcher: ChildProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-dev-"));
  });

  afterAll(async () => {
    if (launcher?.exitCode === null) launcher.kill("SIGKILL");
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("prints a curl line that works when pasted, and stops every process on SIGINT with exit 0", async () => {
    const ports = anyPorts();
    const child = spawn(process.execPath, [...tsxNodeArgs(), MAIN, "dev", "--data-dir", dataDir], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        DATABASE_URL: db.url,
        NATS_URL: TEST_NATS_URL,
        FLOWPLANE_NAMESPACE: namespace,
        LOG_LEVEL: "warn",
        AUTH_PORT: String(ports.auth),
        EXECUTOR_PORT: String(ports.executor),
        LOGS_PORT: String(ports.logs),
        NOTIFIER_PORT: String(ports.notifier),
        GATEWAY_PORT: String(ports.gateway),
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
      90_000,
    );
    const devJson = JSON.parse(await readFile(path.join(dataDir, "dev.json"), "utf8"));
    expect(stdout).toMatch(/http:\/\/127\.0\.0\.1:\d+/);
    expect(stdout).toContain(devJson.apiKey);
    expect(stdout).toContain(devJson.workspaceId);

    // The execute curl spans three lines joined by backslash-newline; run it through a shell as pasted.
    const lines = stdout.split("\n");
    const start = lines.findIndex((line) => line.trim().startsWith("curl -sS -X POST"));
    const executeCurl = lines.slice(start, start + 3).join("\n");
    const { stdout: executed } = await execFileAsync("sh", ["-c", executeCurl]);
    expect(JSON.parse(executed)).toMatchObject({ output: demoOutput, creditUsage: 1 });
    const logsCurl = lines.find((line) => line.includes("/api/v1/logs?workspaceId="));
    expect(logsCurl).toBeDefined();
    const logs = await waitFor("the execution to reach the logs", async () => {
      const { stdout: body } = await execFileAsync("sh", ["-c", logsCurl!.trim()]);
      const parsed = JSON.parse(body) as { data?: unknown[] };
      return parsed.data && parsed.data.length > 0 ? parsed : undefined;
    });
    expect(logs.data).toHaveLength(1);

    const children = childPids(child.pid!);
    expect(children.length).toBeGreaterThanOrEqual(5);
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    for (const pid of children) expect(isAlive(pid)).toBe(false);
  }, 180_000);
});

describe("startStack with neither DATABASE_URL nor NATS_URL", () => {
  let dataDir: string;
  let stack: Stack | undefined;
  const saved = { DATABASE_URL: process.env.DATABASE_URL, NATS_URL: process.env.NATS_URL };

  beforeAll(async () => {
    delete process.env.DATABASE_URL;
    delete process.env.NATS_URL;
    dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-embedded-stack-"));
  });

  afterAll(async () => {
    await stack?.stop();
    Object.assign(process.env, saved);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("runs on an embedded PostgreSQL and its own nats-server, and stops both", async () => {
    stack = await startStack({
      dataDir,
      namespace: "flowplane",
      ports: anyPorts(),
      logDir: path.join(dataDir, "logs"),
      logLevel: "warn",
      report: () => {},
    });
    expect(stack.databaseUrl).toMatch(/^postgres:\/\/.*@127\.0\.0\.1:\d+\/flowplane$/);
    expect(stack.natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    expect(stack.natsUrl).not.toBe(TEST_NATS_URL);
    const postgresPid = Number(
      readFileSync(path.join(dataDir, "postgres", "postmaster.pid"), "utf8").split("\n")[0],
    );
    const natsPid = Number(readFileSync(path.join(dataDir, "nats.pid"), "utf8").trim());
    expect(isAlive(postgresPid)).toBe(true);
    expect(isAlive(natsPid)).toBe(true);

    const demo = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    const executed = await execute(stack.gatewayUrl, demo.apiKey, demo.workflowId);
    expect(executed.status).toBe(200);
    expect(executed.body.output).toEqual(demoOutput);

    const children = Object.values(stack.pids());
    await stack.stop();
    for (const pid of [...children, postgresPid, natsPid]) expect(isAlive(pid)).toBe(false);
  }, 180_000);
});
