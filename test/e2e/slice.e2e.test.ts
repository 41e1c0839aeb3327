import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import { type Stack, startStack } from "../../gateway/cli/stack.js";
import { createFlowplaneClient, type FlowplaneClient } from "../../gateway/client/index.js";
import { type GrpcJsClient, grpcJsClient, unary } from "../helpers/grpc-js-client.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../helpers/infra.js";

/**
 * The first slice end to end: every service as its own process on the real PostgreSQL and NATS,
 * driven only over plain HTTP the way an external client would: through the typed REST client
 * generated from the gateway's OpenAPI document (gateway/client), so a route whose shape drifts from
 * the document fails to typecheck here.
 */
describe("one workflow run through every service", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let stack: Stack;
  let adminKey: string;
  let workspaceId: string;
  let workflowId: string;

  /** The typed client with `key` (none: no x-api-key header). */
  function client(key?: string): FlowplaneClient {
    return createFlowplaneClient({ baseUrl: stack.gatewayUrl, apiKey: key });
  }

  /** For the bodies the typed client cannot send (malformed JSON, wrong types): raw fetch. */
  async function raw(
    route: string,
    key: string,
    body: string,
  ): Promise<{ status: number; body: { error?: unknown } }> {
    const res = await fetch(`${stack.gatewayUrl}${route}`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": "application/json" },
      body,
    });
    return { status: res.status, body: (await res.json()) as { error?: unknown } };
  }

  /** Any answer of the typed client as {status, body}; body is data or the error. */
  async function answer(
    pending: Promise<{ data?: unknown; error?: unknown; response: Response }>,
  ): Promise<{ status: number; body: { error?: unknown } }> {
    const { data, error, response } = await pending;
    return { status: response.status, body: (data ?? error) as { error?: unknown } };
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
    const created = await client(adminKey).POST("/api/v1/tokens", {
      body: {
        name: "e2e integration",
        purpose: "prove the slice",
        scopes: ["workflows:execute", "workflows:read", "logs:read"],
      },
    });
    expect(created.response.status).toBe(201);
    const token = created.data!.data;
    expect(token.key).toMatch(/^fp_(live|test)_/);
    expect(token.scopes).toEqual(["workflows:execute", "workflows:read", "logs:read"]);
    const app = client(token.key);

    // Seed 001's request, adapted only in host and key.
    const executed = await app.POST("/api/executeWorkflow", {
      body: { workflowId, version: 1, input: { "First Name": "John", Age: 30 } },
    });
    expect(executed.response.status).toBe(200);
    const result = executed.data as Exclude<typeof executed.data, string | undefined>;
    expect(result).toMatchObject({ output: { Greeting: "Hello John", "Next Age": 31 }, creditUsage: 1 });
    const { conversationId, executionId } = result;
    expect(conversationId).toMatch(/^conv_/);
    expect(executionId).toMatch(/^exec_/);

    const conversation = await app.POST("/api/getConversationById", { body: { workflowId, conversationId } });
    expect(conversation.response.status).toBe(200);
    const executions = conversation.data!.executions;
    expect(executions).toHaveLength(1);
    expect(executions[0]).toMatchObject({
      executionId,
      status: "success",
      output: { Greeting: "Hello John", "Next Age": 31 },
      input: { "First Name": "John", Age: 30 },
      creditUsage: 1,
    });

    const listed = await waitFor("the execution in /api/v1/logs", async () => {
      const res = await app.GET("/api/v1/logs", { params: { query: { workspaceId } } });
      expect(res.response.status).toBe(200);
      return res.data!.data.find((log) => log.executionId === executionId);
    });
    expect(listed).toMatchObject({ workflowId, level: "info", trigger: "api", files: null });
    expect(listed).not.toHaveProperty("finalOutput");

    const detail = await app.GET("/api/v1/logs/{id}", { params: { path: { id: listed.id } } });
    expect(detail.response.status).toBe(200);
    expect(detail.data!.data).toMatchObject({
      id: listed.id,
      executionId,
      workflow: { id: workflowId, name: "Demo: greet" },
      executionData: { finalOutput: { Greeting: "Hello John", "Next Age": 31 } },
    });
  });

  it("answers bad input on every route with 4xx and an error message", async () => {
    const anonymous = client();
    const admin = client(adminKey);
    const cases: Array<[string, Promise<{ status: number; body: { error?: unknown } }>, number]> = [
      ["execute without key", answer(anonymous.POST("/api/executeWorkflow", { body: { workflowId } })), 401],
      [
        "execute with unknown key",
        answer(client("fp_live_not-a-real-key").POST("/api/executeWorkflow", { body: { workflowId } })),
        401,
      ],
      [
        "execute unknown workflow",
        answer(admin.POST("/api/executeWorkflow", { body: { workflowId: "wf_unknown", input: {} } })),
        404,
      ],
      ["execute malformed JSON", raw("/api/executeWorkflow", adminKey, '{"workflowId": '), 400],
      [
        "execute wrong type",
        raw("/api/executeWorkflow", adminKey, JSON.stringify({ workflowId, version: "one" })),
        400,
      ],
      [
        "execute invalid input",
        answer(admin.POST("/api/executeWorkflow", { body: { workflowId, input: { Age: "x" } } })),
        400,
      ],
      [
        "conversation without key",
        answer(
          anonymous.POST("/api/getConversationById", { body: { workflowId, conversationId: "conv_x" } }),
        ),
        401,
      ],
      [
        "conversation unknown",
        answer(
          admin.POST("/api/getConversationById", { body: { workflowId, conversationId: "conv_unknown" } }),
        ),
        404,
      ],
      [
        "logs without key",
        answer(anonymous.GET("/api/v1/logs", { params: { query: { workspaceId } } })),
        401,
      ],
      [
        "logs without workspaceId",
        // The document makes workspaceId required; leaving it out is the point here.
        answer(admin.GET("/api/v1/logs", { params: { query: {} as { workspaceId: string } } })),
        400,
      ],
      [
        "logs of another workspace",
        answer(admin.GET("/api/v1/logs", { params: { query: { workspaceId: "ws_other" } } })),
        403,
      ],
      [
        "log unknown",
        answer(admin.GET("/api/v1/logs/{id}", { params: { path: { id: "log_unknown" } } })),
        404,
      ],
    ];
    for (const [name, pending, status] of cases) {
      const res = await pending;
      expect({ name, status: res.status }).toEqual({ name, status });
      expect(typeof res.body.error, name).toBe("string");
    }
  });

  it("refuses a key without the route's scope", async () => {
    const created = await client(adminKey).POST("/api/v1/tokens", {
      body: { name: "logs reader", scopes: ["logs:read"] },
    });
    expect(created.response.status).toBe(201);
    const readerKey = created.data!.data.key!;
    const res = await client(readerKey).POST("/api/executeWorkflow", {
      body: { workflowId, input: { "First Name": "Ana" } },
    });
    expect(res.response.status).toBe(403);
    expect(res.error?.error).toMatch(/workflows:execute/);
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
