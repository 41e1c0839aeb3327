import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import { type Stack, startStack } from "../../gateway/cli/stack.js";
import { type GrpcJsClient, grpcJsClient, unary } from "../helpers/grpc-js-client.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  freePort,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../helpers/infra.js";

/**
 * The first slice end to end: every service as its own process on the real PostgreSQL and NATS,
 * driven only over plain HTTP the way an external client would.
 */
describe("one workflow run through every service", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let stack: Stack;
  let adminKey: string;
  let workspaceId: string;
  let workflowId: string;

  async function call(
    method: string,
    route: string,
    opts: { key?: string; body?: unknown; rawBody?: string } = {},
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const headers: Record<string, string> = {};
    if (opts.key !== undefined) headers["x-api-key"] = opts.key;
    let body: string | undefined;
    if (opts.rawBody !== undefined || opts.body !== undefined) {
      headers["content-type"] = "application/json";
      body = opts.rawBody ?? JSON.stringify(opts.body);
    }
    const res = await fetch(`${stack.gatewayUrl}${route}`, { method, headers, body });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(tmpdir(), "flowplane-e2e-"));
    stack = await startStack({
      databaseUrl: db.url,
      natsUrl: TEST_NATS_URL,
      namespace,
      dataDir,
      logDir: path.join(dataDir, "logs"),
      logLevel: "info",
      ports: {
        auth: 0,
        executor: 0,
        logs: 0,
        notifier: 0,
        gateway: 0,
      },
    });
    const dev = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    adminKey = dev.apiKey;
    workspaceId = dev.workspaceId;
    workflowId = dev.workflowId;
  });

  afterAll(async () => {
    await stack?.stop();
    await db?.drop();
    await deleteNamespaceStreams(namespace);
    await rm(dataDir, { recursive: true, force: true });
  });

  it("creates an app token, runs the workflow, reads it back and finds it in the logs", async () => {
    const created = await call("POST", "/api/v1/tokens", {
      key: adminKey,
      body: {
        name: "e2e integration",
        purpose: "prove the slice",
        scopes: ["workflows:execute", "workflows:read", "logs:read"],
      },
    });
    expect(created.status).toBe(201);
    const token = created.body.data as { key: string; id: string; scopes: string[] };
    expect(token.key).toMatch(/^fp_(live|test)_/);
    expect(token.scopes).toEqual(["workflows:execute", "workflows:read", "logs:read"]);
    const appKey = token.key;

    // Seed 001's request, adapted only in host and key.
    const executed = await call("POST", "/api/executeWorkflow", {
      key: appKey,
      body: { workflowId, version: 1, input: { "First Name": "John", Age: 30 } },
    });
    expect(executed.status).toBe(200);
    expect(executed.body.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expect(executed.body.creditUsage).toBe(1);
    const conversationId = executed.body.conversationId as string;
    const executionId = executed.body.executionId as string;
    expect(conversationId).toMatch(/^conv_/);
    expect(executionId).toMatch(/^exec_/);

    const conversation = await call("POST", "/api/getConversationById", {
      key: appKey,
      body: { workflowId, conversationId },
    });
    expect(conversation.status).toBe(200);
    const executions = conversation.body.executions as Array<Record<string, unknown>>;
    expect(executions).toHaveLength(1);
    expect(executions[0]).toMatchObject({
      executionId,
      status: "success",
      output: { Greeting: "Hello John", "Next Age": 31 },
      input: { "First Name": "John", Age: 30 },
      creditUsage: 1,
    });

    const listed = await waitFor("the execution in /api/v1/logs", async () => {
      const res = await call("GET", `/api/v1/logs?workspaceId=${workspaceId}`, { key: appKey });
      expect(res.status).toBe(200);
      const data = res.body.data as Array<Record<string, unknown>>;
      return data.find((log) => log.executionId === executionId);
    });
    expect(listed).toMatchObject({ workflowId, level: "info", trigger: "api", files: null });
    expect(listed).not.toHaveProperty("finalOutput");

    const detail = await call("GET", `/api/v1/logs/${listed.id as string}`, { key: appKey });
    expect(detail.status).toBe(200);
    expect(detail.body.data).toMatchObject({
      id: listed.id,
      executionId,
      workflow: { id: workflowId, name: "Demo: greet" },
      executionData: { finalOutput: { Greeting: "Hello John", "Next Age": 31 } },
    });
  });

  it("answers bad input on every route with 4xx and an error message", async () => {
    const cases: Array<[string, Promise<{ status: number; body: Record<string, unknown> }>, number]> = [
      ["execute without key", call("POST", "/api/executeWorkflow", { body: { workflowId } }), 401],
      [
        "execute with unknown key",
        call("POST", "/api/executeWorkflow", { key: "fp_live_not-a-real-key", body: { workflowId } }),
        401,
      ],
      [
        "execute unknown workflow",
        call("POST", "/api/executeWorkflow", {
          key: adminKey,
          body: { workflowId: "wf_unknown", input: {} },
        }),
        404,
      ],
      [
        "execute malformed JSON",
        call("POST", "/api/executeWorkflow", { key: adminKey, rawBody: '{"workflowId": ' }),
        400,
      ],
      [
        "execute wrong type",
        call("POST", "/api/executeWorkflow", { key: adminKey, body: { workflowId, version: "one" } }),
        400,
      ],
      [
        "execute invalid input",
        call("POST", "/api/executeWorkflow", { key: adminKey, body: { workflowId, input: { Age: "x" } } }),
        400,
      ],
      ["conversation without key", call("POST", "/api/getConversationById", { body: {} }), 401],
      [
        "conversation unknown",
        call("POST", "/api/getConversationById", {
          key: adminKey,
          body: { workflowId, conversationId: "conv_unknown" },
        }),
        404,
      ],
      ["logs without key", call("GET", `/api/v1/logs?workspaceId=${workspaceId}`), 401],
      ["logs without workspaceId", call("GET", "/api/v1/logs", { key: adminKey }), 400],
      ["logs of another workspace", call("GET", "/api/v1/logs?workspaceId=ws_other", { key: adminKey }), 403],
      ["log unknown", call("GET", "/api/v1/logs/log_unknown", { key: adminKey }), 404],
    ];
    for (const [name, pending, status] of cases) {
      const res = await pending;
      expect({ name, status: res.status }).toEqual({ name, status });
      expect(typeof res.body.error, name).toBe("string");
    }
  });

  it("refuses a key without the route's scope", async () => {
    const created = await call("POST", "/api/v1/tokens", {
      key: adminKey,
      body: { name: "logs reader", scopes: ["logs:read"] },
    });
    expect(created.status).toBe(201);
    const readerKey = (created.body.data as { key: string }).key;
    const res = await call("POST", "/api/executeWorkflow", {
      key: readerKey,
      body: { workflowId, input: { "First Name": "Ana" } },
    });
    expect(res.status).toBe(403);
    expect(res.body.error).toMatch(/workflows:execute/);
  });

  it("serves the typed gRPC API to a plain grpc-js client on every service", async () => {
    const address = (url: string) => new URL(url).host;
    const clients: GrpcJsClient[] = [];
    const client = (service: string, url: string) => {
      const c = grpcJsClient(service, address(url));
      clients.push(c);
      return c;
    };
    try {
      const auth = client("flowplane.auth.v1.AuthService", stack.serviceUrls.auth);
      const authorized = await unary(auth, "Authorize", { apiKey: adminKey, action: "workflows:execute" });
      expect(authorized.principal).toMatchObject({ tenantId: workspaceId, kind: "TOKEN_KIND_ADMIN" });

      const workflows = client("flowplane.executor.v1.WorkflowService", stack.serviceUrls.executor);
      const created = await unary(workflows, "CreateWorkflow", {
        tenantId: workspaceId,
        name: "from grpc-js",
      });
      expect(created.workflow).toMatchObject({
        tenantId: workspaceId,
        name: "from grpc-js",
        latestVersion: 0,
      });

      const logs = client("flowplane.logs.v1.LogsService", stack.serviceUrls.logs);
      const page = await unary(logs, "QueryLogs", { tenantId: workspaceId, limit: 5 });
      expect(Array.isArray(page.data)).toBe(true);

      const health = client("grpc.health.v1.Health", stack.serviceUrls.notifier);
      expect(await unary(health, "Check", { service: "" })).toEqual({ status: "SERVING" });

      // A refusal travels as a gRPC status code, not as a transport failure.
      await expect(
        unary(auth, "Authorize", { apiKey: "fp_live_bogus", action: "logs:read" }),
      ).rejects.toMatchObject({
        code: 16, // UNAUTHENTICATED
      });
    } finally {
      for (const c of clients) c.close();
    }
  });
});
