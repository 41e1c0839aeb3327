import { create } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkflowStateSchema } from "../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { WorkflowService } from "../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { createRpcClient } from "../services/platform/rpc.js";
import { waitFor } from "../test/helpers/infra.js";
import { type Stack, startStack } from "../test/helpers/stack.js";
import { demoWorkflowState } from "./cli/demo-workflow.js";

const demoState = demoWorkflowState();

interface Answer {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
  body: any;
}

let stack: Stack;
let baseUrl: string;

let tenantId: string;
let adminKey: string;
let logsOnlyKey: string;
let workflowId: string;
let failingWorkflowId: string;

const answers: { method: string; path: string; status: number }[] = [];

async function call(
  method: string,
  path: string,
  opts: {
    key?: string;
    json?: unknown;
    raw?: string;
    contentType?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key !== undefined) headers["x-api-key"] = opts.key;
  let body: string | undefined;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers["content-type"] = "application/json";
  }
  if (opts.raw !== undefined) {
    body = opts.raw;
    headers["content-type"] = opts.contentType ?? "application/json";
  }
  const res = await fetch(`${baseUrl}${path}`, { method, headers, body });
  const text = await res.text();
  expect(res.headers.get("content-type"), `${method} ${path} answers JSON`).toMatch(/^application\/json/);
  const parsed = JSON.parse(text);
  answers.push({ method, path, status: res.status });
  if (res.status >= 400) {
    expect(typeof parsed.error, `${method} ${path} ${res.status} has an "error" string: ${text}`).toBe(
      "string",
    );
    expect(parsed.requestId).toBe(res.headers.get("x-request-id"));
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

beforeAll(async () => {
  // The services' own defaults (plans, workers): this file checks the product as configured.
  stack = await startStack({
    services: ["auth", "executor", "logs"],
    serviceDefaults: false,
    gateway: { bodyLimitBytes: 64 * 1024 },
    tenant: "Gateway test",
  });
  baseUrl = stack.baseUrl;
  tenantId = stack.tenantId;
  adminKey = stack.adminKey;
  const executorUrl = stack.urls.executor!;
  logsOnlyKey = await stack.appKey(tenantId, "log poller", ["logs:read"]);
  const { workflow } = await createRpcClient(WorkflowService, executorUrl).createWorkflow({
    tenantId,
    name: "Demo",
    description: "Greets a person",
    state: demoState,
  });
  workflowId = workflow!.id;
  const failing = create(WorkflowStateSchema, demoState);
  failing.blocks.greet!.config = { code: 'throw new Error("boom");' };
  const created = await createRpcClient(WorkflowService, executorUrl).createWorkflow({
    tenantId,
    name: "Failing",
    description: "Its function block throws",
    state: failing,
  });
  failingWorkflowId = created.workflow!.id;
});

afterAll(async () => {
  await stack?.stop();
});

const greetJohn = () => ({ workflowId, version: 1, input: { "First Name": "John", Age: 30 } });

describe("gateway", () => {
  it("answers /healthz without a key and echoes a safe x-request-id", async () => {
    const res = await call("GET", "/healthz", { headers: { "x-request-id": "trace-123.abc" } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: "ok" });
    expect(res.headers.get("x-request-id")).toBe("trace-123.abc");

    const unsafe = await call("GET", "/healthz", { headers: { "x-request-id": "has spaces <script>" } });
    expect(unsafe.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("refuses a missing key with 401", async () => {
    const res = await call("POST", "/api/executeWorkflow", { json: greetJohn() });
    expect(res.status).toBe(401);
    expect(res.body.error).toBe("missing x-api-key header");
  });

  it("authenticates before validating: no key and a bad body is 401, not 400", async () => {
    const body = await call("POST", "/api/executeWorkflow", { json: { workflowId: 7, extra: true } });
    expect(body.status).toBe(401);
    const query = await call("GET", "/api/v1/logs?limit=abc");
    expect(query.status).toBe(401);
    const scope = await call("POST", "/api/executeWorkflow", { key: logsOnlyKey, json: { version: "x" } });
    expect(scope.status).toBe(403);
  });

  it("refuses an unknown key with 401", async () => {
    const res = await call("POST", "/api/executeWorkflow", { key: "fp_live_notarealkey", json: greetJohn() });
    expect(res.status).toBe(401);
    expect(res.body.code).toBe("unauthenticated");
  });

  it("refuses an app token lacking workflows:execute with 403", async () => {
    const res = await call("POST", "/api/executeWorkflow", { key: logsOnlyKey, json: greetJohn() });
    expect(res.status).toBe(403);
    expect(res.body.code).toBe("permission_denied");
  });

  it("answers 404 for an unknown workflow", async () => {
    const res = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { workflowId: "wf_00000000000000000000000000", input: { "First Name": "John" } },
    });
    expect(res.status).toBe(404);
    expect(res.body.code).toBe("not_found");
  });

  it("refuses malformed JSON, wrong types and unknown fields with 400 naming the field", async () => {
    const malformed = await call("POST", "/api/executeWorkflow", { key: adminKey, raw: '{"workflowId": ' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toBe("malformed JSON body");

    const wrongType = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { ...greetJohn(), version: "one" },
    });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.error).toBe("body.version must be integer");

    // Not coerced: "1" is a string, not a version.
    const stringVersion = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { ...greetJohn(), version: "1" },
    });
    expect(stringVersion.status).toBe(400);
    expect(stringVersion.body.error).toBe("body.version must be integer");

    const unknownField = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { ...greetJohn(), foo: 1 },
    });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.error).toBe("unknown field body.foo");

    const missing = await call("POST", "/api/executeWorkflow", { key: adminKey, json: { version: 1 } });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toBe("body.workflowId is required");

    const badInput = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { workflowId, input: { Age: 30 } },
    });
    expect(badInput.status).toBe(400);
    expect(badInput.body.error).toMatch(/First Name/);
  });

  it("refuses other content types with 415 and oversized bodies with 413", async () => {
    const text = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      raw: "workflowId=x",
      contentType: "text/plain",
    });
    expect(text.status).toBe(415);

    const huge = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { ...greetJohn(), input: { "First Name": "x".repeat(100 * 1024) } },
    });
    expect(huge.status).toBe(413);
  });

  it("checks the logs query: workspaceId, limit, order", async () => {
    const missing = await call("GET", "/api/v1/logs", { key: adminKey });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toBe("workspaceId is required");

    const mismatch = await call("GET", "/api/v1/logs?workspaceId=ws_someoneelse", { key: adminKey });
    expect(mismatch.status).toBe(403);
    expect(mismatch.body.error).toBe("workspaceId does not match the API key's workspace");

    for (const limit of ["0", "1001", "abc", "1.5", "-1"]) {
      const res = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&limit=${limit}`, { key: adminKey });
      expect(res.status, `limit=${limit}`).toBe(400);
      expect(res.body.error).toBe("limit must be an integer between 1 and 1000");
    }

    const order = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&order=sideways`, { key: adminKey });
    expect(order.status).toBe(400);
    expect(order.body.error).toBe("order must be one of asc, desc");

    const details = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&details=everything`, {
      key: adminKey,
    });
    expect(details.status).toBe(400);
    expect(details.body.error).toMatch(/^details /);

    const flag = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&includeTraceSpans=yes`, {
      key: adminKey,
    });
    expect(flag.status).toBe(400);
    expect(flag.body.error).toMatch(/^includeTraceSpans /);

    const unknown = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&colour=blue`, { key: adminKey });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe("unknown query parameter colour");

    const cursor = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&cursor=not-a-cursor`, {
      key: adminKey,
    });
    expect(cursor.status).toBe(400);
  });

  it("executes, then finds the conversation, the log list entry and the log detail", async () => {
    const executed = await call("POST", "/api/executeWorkflow", { key: adminKey, json: greetJohn() });
    expect(executed.status).toBe(200);
    expect(executed.body).toMatchObject({
      output: { Greeting: "Hello John", "Next Age": 31 },
      creditUsage: 1,
      status: "success",
    });
    const { conversationId, executionId } = executed.body as { conversationId: string; executionId: string };
    expect(conversationId).toMatch(/^conv_/);
    expect(executionId).toMatch(/^exec_/);

    const conversation = await call("POST", "/api/getConversationById", {
      key: adminKey,
      json: { workflowId, conversationId },
    });
    expect(conversation.status).toBe(200);
    expect(conversation.body).toMatchObject({ conversationId, workflowId });
    expect(conversation.body.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(conversation.body.executions).toHaveLength(1);
    expect(conversation.body.executions[0]).toMatchObject({
      executionId,
      workflowVersion: 1,
      status: "success",
      trigger: "api",
      input: { "First Name": "John", Age: 30 },
      output: { Greeting: "Hello John", "Next Age": 31 },
      creditUsage: 1,
    });

    const notMine = await call("POST", "/api/getConversationById", {
      key: adminKey,
      json: { workflowId, conversationId: "conv_00000000000000000000000000" },
    });
    expect(notMine.status).toBe(404);

    const listed = await waitFor("the execution's log", async () => {
      const res = await call(
        "GET",
        `/api/v1/logs?workspaceId=${tenantId}&details=full&includeFinalOutput=true`,
        {
          key: logsOnlyKey,
        },
      );
      expect(res.status).toBe(200);
      return (res.body.data as { executionId: string }[]).find((log) => log.executionId === executionId);
    });
    expect(listed).toMatchObject({
      workflowId,
      executionId,
      level: "info",
      trigger: "api",
      files: null,
      workflow: { id: workflowId, name: "Demo", description: "Greets a person" },
      finalOutput: { Greeting: "Hello John", "Next Age": 31 },
    });
    expect(listed).not.toHaveProperty("traceSpans");
    const logId = (listed as unknown as { id: string }).id;
    expect(logId).toMatch(/^log_/);

    const page = await call("GET", `/api/v1/logs?workspaceId=${tenantId}&limit=1&order=asc`, {
      key: adminKey,
    });
    expect(page.status).toBe(200);
    expect(page.body.data).toHaveLength(1);
    expect(page.body.data[0]).not.toHaveProperty("workflow");
    expect(page.body.data[0]).not.toHaveProperty("finalOutput");
    expect(page.body).toHaveProperty("nextCursor");

    const detail = await call("GET", `/api/v1/logs/${logId}`, { key: adminKey });
    expect(detail.status).toBe(200);
    expect(detail.body.data).toMatchObject({
      id: logId,
      workflowId,
      executionId,
      level: "info",
      trigger: "api",
      workflow: { id: workflowId, name: "Demo", description: "Greets a person" },
      executionData: { finalOutput: { Greeting: "Hello John", "Next Age": 31 } },
      cost: { tokens: { prompt: 0, completion: 0, total: 0 } },
    });
    expect(detail.body.data.cost.total).toBeGreaterThan(0);
    const spans = detail.body.data.executionData.traceSpans as { blockId: string; status: string }[];
    expect(spans.map((s) => s.blockId)).toContain("greet");
    expect(spans.find((s) => s.blockId === "greet")).toMatchObject({
      type: "function",
      status: "success",
      output: { greeting: "Hello John", nextAge: 31 },
    });

    const missingLog = await call("GET", "/api/v1/logs/log_00000000000000000000000000", { key: adminKey });
    expect(missingLog.status).toBe(404);
  });

  it("answers 200 with status error when a block of the run fails", async () => {
    const res = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { workflowId: failingWorkflowId, input: { "First Name": "John" } },
    });
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("error");
    expect(res.body.error).toMatch(/boom/);
    expect(res.body.executionId).toMatch(/^exec_/);
  });

  it("creates a token over REST whose key then works within its scopes", async () => {
    const created = await call("POST", "/api/v1/tokens", {
      key: adminKey,
      json: {
        name: "CRM sync",
        purpose: "runs the demo from the CRM",
        scopes: ["workflows:execute"],
        workflowIds: [workflowId],
        expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
      },
    });
    expect(created.status).toBe(201);
    const token = created.body.data;
    expect(token).toMatchObject({
      kind: "app",
      name: "CRM sync",
      purpose: "runs the demo from the CRM",
      scopes: ["workflows:execute"],
      workflowIds: [workflowId],
    });
    expect(token.id).toMatch(/^tok_/);
    expect(token.createdBy).toMatch(/^tok_/);
    expect(token.expiresAt).toMatch(/Z$/);
    expect(typeof token.key).toBe("string");
    expect(token.key.startsWith(token.prefix)).toBe(true);

    const executed = await call("POST", "/api/executeWorkflow", { key: token.key, json: greetJohn() });
    expect(executed.status).toBe(200);
    expect(executed.body.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });

    const logs = await call("GET", `/api/v1/logs?workspaceId=${tenantId}`, { key: token.key });
    expect(logs.status).toBe(403);

    // Creating tokens needs tokens:write, which a log poller lacks.
    const escalation = await call("POST", "/api/v1/tokens", {
      key: logsOnlyKey,
      json: { name: "sneaky", scopes: ["logs:read"] },
    });
    expect(escalation.status).toBe(403);

    const badKind = await call("POST", "/api/v1/tokens", {
      key: adminKey,
      json: { name: "x", kind: "root", scopes: ["logs:read"] },
    });
    expect(badKind.status).toBe(400);
    expect(badKind.body.error).toBe("body.kind must be one of app, admin");

    const badScope = await call("POST", "/api/v1/tokens", {
      key: adminKey,
      json: { name: "x", scopes: ["everything"] },
    });
    expect(badScope.status).toBe(400);
  });

  it("answers unknown routes with a JSON 404", async () => {
    const res = await call("GET", "/api/nope");
    expect(res.status).toBe(404);
    expect(res.body.error).toBe("route not found");
  });

  it("answers 503 quickly when the executor is down", async () => {
    await stack.stopService("executor");
    const started = Date.now();
    const res = await call("POST", "/api/executeWorkflow", { key: adminKey, json: greetJohn() });
    expect(res.status).toBe(503);
    expect(res.body.error).toBe("executor service unavailable");
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("never answered 500", () => {
    expect(answers.filter((a) => a.status >= 500 && a.status !== 503)).toEqual([]);
  });
});
