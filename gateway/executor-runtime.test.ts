import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../test/helpers/infra.js";
import { type Answer, type SendOptions, type Stack, startStack } from "../test/helpers/stack.js";
import { demoWorkflowJson } from "./cli/demo-workflow.js";

const demoWorkflowStateJson = () => structuredClone(demoWorkflowJson);

import { tsxNodeArgs } from "./cli/stack.js";

let stack: Stack;
let baseUrl: string;
let adminKey: string;
let readKey: string;
let executeKey: string;
let otherTenantKey: string;

/** Every answer: never a 5xx, a JSON body, and a 4xx carries {"error"}. */
const call = (method: string, path: string, opts?: SendOptions): Promise<Answer> =>
  stack.call(method, path, opts);

beforeAll(async () => {
  // Limits out of the way (the stack's default): this file polls and calls far more than a Pro plan's minute allows.
  stack = await startStack({
    services: ["auth", "executor"],
    env: { executor: (urls) => ({ AUTH_URL: urls.auth! }) },
    tenant: "Runtime test",
  });
  baseUrl = stack.baseUrl;
  adminKey = stack.adminKey;
  const tenantId = stack.tenantId;
  readKey = await stack.appKey(tenantId, "reader", ["workflows:read"]);
  executeKey = await stack.appKey(tenantId, "runner", ["workflows:execute"]);
  otherTenantKey = (await stack.newTenant("Other")).adminKey;
});

afterAll(async () => {
  await stack?.stop();
});

async function createDemo(folderId?: string): Promise<string> {
  const res = await call("POST", "/api/v1/workflows", {
    key: adminKey,
    json: {
      name: "Demo",
      description: "Greets",
      state: demoWorkflowStateJson(),
      ...(folderId ? { folderId } : {}),
    },
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

const waitState = (ms: number) => ({
  blocks: {
    start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
    pause: { id: "pause", type: "wait", name: "Pause", config: { durationMs: ms } },
    out: { id: "out", type: "output", name: "Waited", config: { value: "blocks.pause.waitedMs" } },
  },
  edges: [
    { id: "e1", source: "start", target: "pause" },
    { id: "e2", source: "pause", target: "out" },
  ],
});

async function executionStatus(executionId: string): Promise<string> {
  const res = await call("GET", `/api/v1/executions/${executionId}`, { key: adminKey });
  expect(res.status).toBe(200);
  return res.body.status;
}

describe("workflows API", () => {
  it("creates, lists, gets and publishes versions with the right scopes", async () => {
    expect((await call("POST", "/api/v1/workflows", { json: { name: "x" } })).status).toBe(401);
    expect((await call("POST", "/api/v1/workflows", { key: readKey, json: { name: "x" } })).status).toBe(403);
    const noName = await call("POST", "/api/v1/workflows", { key: adminKey, json: {} });
    expect(noName.status).toBe(400);
    expect(noName.body.error).toContain("name");
    const badFolder = await call("POST", "/api/v1/workflows", {
      key: adminKey,
      json: { name: "x", folderId: "a b" },
    });
    expect(badFolder.status).toBe(400);
    expect(badFolder.body.error).toContain("folderId");

    const id = await createDemo("fld_sales");
    const got = await call("GET", `/api/v1/workflows/${id}`, { key: readKey });
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ id, name: "Demo", folderId: "fld_sales", latestVersion: 1 });
    expect(got.body.versions.map((v: { version: number }) => v.version)).toEqual([1]);

    const published = await call("POST", `/api/v1/workflows/${id}/versions`, {
      key: adminKey,
      json: demoWorkflowStateJson(),
    });
    expect(published.status).toBe(201);
    expect(published.body.version).toBe(2);
    expect((await call("POST", `/api/v1/workflows/${id}/versions`, { key: readKey, json: {} })).status).toBe(
      403,
    );

    const dangling = demoWorkflowStateJson() as { edges: unknown[] };
    dangling.edges.push({ id: "e9", source: "greet", target: "ghost" });
    const badState = await call("POST", `/api/v1/workflows/${id}/versions`, {
      key: adminKey,
      json: dangling,
    });
    expect(badState.status).toBe(400);
    expect(badState.body.error).toContain("ghost");
    const wrongShape = await call("POST", `/api/v1/workflows/${id}/versions`, {
      key: adminKey,
      json: { blocks: { a: { id: "a", type: "input", nme: "typo" } } },
    });
    expect(wrongShape.status).toBe(400);

    expect((await call("GET", "/api/v1/workflows/wf_unknown", { key: adminKey })).status).toBe(404);
    expect((await call("GET", `/api/v1/workflows/${id}`, { key: otherTenantKey })).status).toBe(404);
    expect(
      (
        await call("POST", "/api/v1/workflows/wf_unknown/versions", {
          key: adminKey,
          json: demoWorkflowStateJson(),
        })
      ).status,
    ).toBe(404);

    const second = await createDemo("fld_sales");
    const page = await call("GET", "/api/v1/workflows?limit=1&folderId=fld_sales", { key: readKey });
    expect(page.status).toBe(200);
    expect(page.body.workflows.map((w: { id: string }) => w.id)).toEqual([second]);
    const next = await call(
      "GET",
      `/api/v1/workflows?limit=1&folderId=fld_sales&cursor=${encodeURIComponent(page.body.nextCursor)}`,
      { key: readKey },
    );
    expect(next.body.workflows.map((w: { id: string }) => w.id)).toEqual([id]);
    expect((await call("GET", "/api/v1/workflows?limit=0", { key: readKey })).status).toBe(400);
    expect((await call("GET", "/api/v1/workflows?cursor=zzz", { key: readKey })).status).toBe(400);
    expect((await call("GET", "/api/v1/workflows", {})).status).toBe(401);
  });
});

describe("background execution and cancel", () => {
  it("queues a run, answers at once, and getConversationById shows it finish", async () => {
    const id = await createDemo();
    const body = { workflowId: id, version: 1, input: { "First Name": "John", Age: 30 } };
    expect((await call("POST", "/api/executeWorkflowBackground", { json: body })).status).toBe(401);
    expect((await call("POST", "/api/executeWorkflowBackground", { key: readKey, json: body })).status).toBe(
      403,
    );
    const bad = await call("POST", "/api/executeWorkflowBackground", {
      key: executeKey,
      json: { workflowId: id, input: { Age: 1 } },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toContain("First Name");
    expect(
      (
        await call("POST", "/api/executeWorkflowBackground", {
          key: executeKey,
          json: { ...body, workflowId: "wf_x" },
        })
      ).status,
    ).toBe(404);

    const queued = await call("POST", "/api/executeWorkflowBackground", { key: executeKey, json: body });
    expect(queued.status).toBe(200);
    expect(queued.body.creditUsage).toBe(0);
    expect(queued.body.conversationId).toMatch(/^conv_/);
    expect(queued.body.executionId).toMatch(/^exec_/);
    const conversation = await waitFor("the background run to finish", async () => {
      const res = await call("POST", "/api/getConversationById", {
        key: adminKey,
        json: { workflowId: id, conversationId: queued.body.conversationId },
      });
      return res.body.executions[0].status === "success" ? res.body : undefined;
    });
    expect(conversation.executions[0]).toMatchObject({
      executionId: queued.body.executionId,
      status: "success",
      trigger: "api",
      output: { Greeting: "Hello John", "Next Age": 31 },
      creditUsage: 1,
    });
  });

  it("marks admin runs asking for it as manual, and ignores the hint from app keys", async () => {
    const id = await createDemo();
    const body = { workflowId: id, input: { "First Name": "Manual" } };
    const manual = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: body,
      headers: { "x-flowplane-trigger": "manual" },
    });
    expect(manual.status).toBe(200);
    const app = await call("POST", "/api/executeWorkflow", {
      key: executeKey,
      json: body,
      headers: { "x-flowplane-trigger": "manual" },
    });
    const manualExecution = await call("GET", `/api/v1/executions/${manual.body.executionId}`, {
      key: adminKey,
    });
    expect(manualExecution.body.trigger).toBe("manual");
    const appExecution = await call("GET", `/api/v1/executions/${app.body.executionId}`, { key: adminKey });
    expect(appExecution.body.trigger).toBe("api");
  });

  it("cancels a running execution, and answers 400/401/403/404 for the rest", async () => {
    const { body } = await call("POST", "/api/v1/workflows", {
      key: adminKey,
      json: { name: "Slow", state: waitState(60_000) },
    });
    const queued = await call("POST", "/api/executeWorkflowBackground", {
      key: executeKey,
      json: { workflowId: body.id },
    });
    const executionId = queued.body.executionId;
    await waitFor("the run to start", async () =>
      (await executionStatus(executionId)) === "running" ? true : undefined,
    );
    const path = `/api/v1/executions/${executionId}/cancel`;
    expect((await call("POST", path, {})).status).toBe(401);
    expect((await call("POST", path, { key: readKey })).status).toBe(403);
    expect((await call("POST", path, { key: otherTenantKey })).status).toBe(404);
    expect((await call("POST", "/api/v1/executions/nope/cancel", { key: executeKey })).status).toBe(400);

    const cancelled = await call("POST", path, { key: executeKey });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ executionId, status: "error", error: "cancelled" });
    const again = await call("POST", path, { key: executeKey });
    expect(again.status).toBe(400);
    expect(again.body.error).toContain("already finished");
  });
});

describe("schedules and hooks", () => {
  it("creates, lists and deletes schedules", async () => {
    const id = await createDemo();
    const path = `/api/v1/workflows/${id}/schedules`;
    const json = { cron: "0 9 * * 1-5", timezone: "Europe/Madrid", input: { "First Name": "Cron" } };
    expect((await call("POST", path, { json })).status).toBe(401);
    expect((await call("POST", path, { key: readKey, json })).status).toBe(403);
    const badCron = await call("POST", path, { key: adminKey, json: { ...json, cron: "sometimes" } });
    expect(badCron.status).toBe(400);
    expect(badCron.body.error).toContain("cron");
    expect(
      (await call("POST", "/api/v1/workflows/wf_unknown/schedules", { key: adminKey, json })).status,
    ).toBe(404);

    const created = await call("POST", path, { key: adminKey, json });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ workflowId: id, cron: "0 9 * * 1-5", timezone: "Europe/Madrid" });
    expect(created.body.nextRunAt).toMatch(/Z$/);
    const listed = await call("GET", path, { key: readKey });
    expect(listed.body.schedules.map((s: { id: string }) => s.id)).toEqual([created.body.id]);
    expect((await call("DELETE", `${path}/${created.body.id}`, { key: readKey })).status).toBe(403);
    expect((await call("DELETE", `${path}/${created.body.id}`, { key: adminKey })).status).toBe(200);
    expect((await call("DELETE", `${path}/${created.body.id}`, { key: adminKey })).status).toBe(404);
  });

  it("runs a workflow from an inbound webhook authenticated by the hook's secret", async () => {
    const id = await createDemo();
    expect((await call("POST", `/api/v1/workflows/${id}/hooks`, { key: readKey, json: {} })).status).toBe(
      403,
    );
    const created = await call("POST", `/api/v1/workflows/${id}/hooks`, { key: adminKey, json: {} });
    expect(created.status).toBe(201);
    const { url, secret } = created.body;
    expect(url).toBe(`/api/v1/hooks/${created.body.id}`);

    const input = { "First Name": "Webhook", Age: 41 };
    expect((await call("POST", url, { json: input })).status).toBe(401);
    expect(
      (await call("POST", url, { json: input, headers: { "x-hook-secret": "whsec_wrong" } })).status,
    ).toBe(401);
    expect(
      (
        await call("POST", "/api/v1/hooks/hook_unknown", {
          json: input,
          headers: { "x-hook-secret": secret },
        })
      ).status,
    ).toBe(404);
    const bad = await call("POST", url, { json: { Age: 1 }, headers: { "x-hook-secret": secret } });
    expect(bad.status).toBe(400);

    const started = await call("POST", url, { json: input, headers: { "x-hook-secret": secret } });
    expect(started.status).toBe(202);
    const execution = await waitFor("the hook's run", async () => {
      const res = await call("GET", `/api/v1/executions/${started.body.executionId}`, { key: adminKey });
      return res.body.status === "success" ? res.body : undefined;
    });
    expect(execution.trigger).toBe("webhook");
    expect(execution.output).toEqual({ Greeting: "Hello Webhook", "Next Age": 42 });
  });
});

const CLI = new URL("./cli/main.ts", import.meta.url).pathname;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [...tsxNodeArgs(), CLI, ...args], {
      env: { ...process.env, FLOWPLANE_API_KEY: "", FLOWPLANE_URL: "" },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failed = err as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? 1, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}

describe("flowplane run", () => {
  it("runs a workflow with trigger manual, in the foreground or the background", async () => {
    const id = await createDemo();
    const base = ["--url", baseUrl, "--api-key", adminKey];
    const sync = await cli(["run", id, "--input", "First Name=Cli", "--input", "Age=9", ...base]);
    expect(sync.code, sync.stderr).toBe(0);
    expect(JSON.parse(sync.stdout)).toEqual({ Greeting: "Hello Cli", "Next Age": 10 });
    expect(sync.stderr).toContain("success");

    const background = await cli([
      "run",
      id,
      "--input-json",
      '{"First Name":"Bg"}',
      "--background",
      "--json",
      ...base,
    ]);
    expect(background.code, background.stderr).toBe(0);
    const queued = JSON.parse(background.stdout);
    expect(queued.creditUsage).toBe(0);
    const execution = await waitFor("the CLI's background run", async () => {
      const res = await call("GET", `/api/v1/executions/${queued.executionId}`, { key: adminKey });
      return res.body.status === "success" ? res.body : undefined;
    });
    expect(execution.trigger).toBe("manual");

    // Without flags, the key and URL come from the dev.json `flowplane dev` saved.
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-run-"));
    await writeFile(
      path.join(dataDir, "dev.json"),
      JSON.stringify({ gatewayUrl: baseUrl, apiKey: adminKey }),
    );
    const fromDevJson = await cli(["run", id, "--input", "First Name=Dev", "--data-dir", dataDir, "--json"]);
    await rm(dataDir, { recursive: true, force: true });
    expect(fromDevJson.code, fromDevJson.stderr).toBe(0);
    expect(JSON.parse(fromDevJson.stdout).output).toEqual({ Greeting: "Hello Dev", "Next Age": 1 });

    // workflow push: a new workflow from a file, then its next version.
    const pushDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-push-"));
    const file = path.join(pushDir, "greeter.json");
    await writeFile(file, JSON.stringify(demoWorkflowStateJson()));
    const pushed = await cli(["workflow", "push", file, "--folder", "fld_cli", ...base]);
    expect(pushed.code, pushed.stderr).toBe(0);
    const pushedId = pushed.stdout.trim();
    const again = await cli(["workflow", "push", file, "--workflow", pushedId, ...base]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain("version 2");
    await writeFile(file, JSON.stringify({ blocks: { x: { id: "x", type: "teleport", name: "X" } } }));
    const invalid = await cli(["workflow", "push", file, "--workflow", pushedId, ...base]);
    await rm(pushDir, { recursive: true, force: true });
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain("teleport");
    const pushedWorkflow = await call("GET", `/api/v1/workflows/${pushedId}`, { key: readKey });
    expect(pushedWorkflow.body).toMatchObject({ name: "greeter", folderId: "fld_cli", latestVersion: 2 });

    const refused = await cli(["run", id, "--input", "Age=1", ...base]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("First Name");
    const usage = await cli(["run", ...base]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("missing WORKFLOW_ID");
  }, 120_000);
});
