/**
 * The engine inside the executor service: agent conversations against the local OpenAI-compatible
 * server (history from earlier executions, tokens, per-model cost, credits) and workflow blocks
 * loading other workflows of the tenant.
 */
import type { Client } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
} from "../../../test/helpers/infra.js";
import { type LlmServer, startLlmServer } from "../../../test/helpers/llm-server.js";
import { ExecutionStatus } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecutionService, WorkflowService } from "../../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../../platform/ids.js";
import { createRpcClient } from "../../platform/rpc.js";
import { type RunningService, startService } from "../../platform/service.js";
import { priceExecution } from "../executions.js";
import { executorService } from "../service.js";
import { blockJson as b, demoState, graphState } from "./workflow-fixtures.js";

const TENANT = newId("ws");
const BASE_PRICE_USD = 0.0005;
const PRICES = { "gpt-test": { inputPerMTokUsd: 1_000, outputPerMTokUsd: 2_000 } };

let db: TestDatabase;
let namespace: string;
let llm: LlmServer;
let running: RunningService;
let workflows: Client<typeof WorkflowService>;
let executions: Client<typeof ExecutionService>;
let sql: pg.Pool;

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  llm = await startLlmServer({ apiKey: "sk-engine" });
  running = await startService(executorService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    EXECUTOR_PORT: "0",
    EXECUTOR_FUNCTION_WORKERS: "1",
    EXECUTOR_WORKER_CONCURRENCY: "0",
    EXECUTOR_BASE_PRICE_USD: String(BASE_PRICE_USD),
    EXECUTOR_LLM_BASE_URL: llm.baseUrl,
    EXECUTOR_LLM_API_KEY: "sk-engine",
    EXECUTOR_MODEL_PRICES: JSON.stringify(PRICES),
    LOG_LEVEL: "silent",
  });
  const url = `http://127.0.0.1:${running.port}`;
  workflows = createRpcClient(WorkflowService, url);
  executions = createRpcClient(ExecutionService, url);
  sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
});

afterAll(async () => {
  await running?.stop();
  await sql?.end();
  await llm?.close();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

async function storedExecution(id: string) {
  const { rows } = await sql.query<{
    cost: number;
    credit_usage: number;
    cost_detail: {
      total: number;
      tokens?: { prompt: string; completion: string; total: string };
      models?: Record<
        string,
        { input: number; output: number; total: number; tokens: Record<string, string> }
      >;
    };
    trace_spans: Array<Record<string, unknown>>;
  }>("select cost, credit_usage, cost_detail, trace_spans from executions where id = $1", [id]);
  return rows[0]!;
}

describe("agent block in a conversation", () => {
  let workflowId: string;

  beforeAll(async () => {
    const { workflow } = await workflows.createWorkflow({
      tenantId: TENANT,
      name: "Chat",
      state: graphState(
        [
          b.input([{ name: "message", type: "string", required: true }]),
          b.of("chat", "agent", { model: "gpt-test", userPrompt: "{{ input.message }}" }),
          b.output("out", "Reply", "blocks.chat.content"),
        ],
        [
          ["start", "chat"],
          ["chat", "out"],
        ],
      ),
    });
    workflowId = workflow!.id;
  });

  it("passes the conversation's earlier turns as history and prices the tokens per model", async () => {
    const first = await executions.execute({
      tenantId: TENANT,
      workflowId,
      input: { message: "hello there" },
    });
    expect(first.status).toBe(ExecutionStatus.SUCCESS);
    expect(first.output).toEqual({ Reply: "echo: hello there (history: 0)" });
    expect(llm.requests.at(-1)!.messages).toEqual([{ role: "user", content: "hello there" }]);

    const second = await executions.execute({
      tenantId: TENANT,
      workflowId,
      conversationId: first.conversationId,
      input: { message: "and again" },
    });
    expect(second.output).toEqual({ Reply: "echo: and again (history: 2)" });
    expect(llm.requests.at(-1)!.messages).toEqual([
      { role: "user", content: "hello there" },
      { role: "assistant", content: "echo: hello there (history: 0)" },
      { role: "user", content: "and again" },
    ]);

    // Second request: 2 + 5 + 2 prompt words, 5 completion words.
    const stored = await storedExecution(second.executionId);
    const modelCost = { input: (9 * 1_000) / 1e6, output: (5 * 2_000) / 1e6 };
    const usage = stored.cost_detail.models!["gpt-test"]!;
    expect(usage.tokens).toEqual({ prompt: "9", completion: "5", total: "14" });
    expect(usage.input).toBeCloseTo(modelCost.input, 9);
    expect(usage.output).toBeCloseTo(modelCost.output, 9);
    expect(usage.total).toBeCloseTo(modelCost.input + modelCost.output, 9);
    expect(stored.cost_detail.tokens).toEqual({ prompt: "9", completion: "5", total: "14" });
    const expected = priceExecution(BASE_PRICE_USD + modelCost.input + modelCost.output);
    expect(stored.cost_detail.total).toBe(expected.costUsd);
    expect(stored.cost).toBe(expected.costUsd);
    expect(expected.credits).toBe(20);
    expect(second.creditUsage).toBe(BigInt(expected.credits));
    expect(stored.credit_usage).toBe(expected.credits);

    const span = stored.trace_spans.find((s) => s.blockId === "chat")!;
    expect(span).toMatchObject({
      type: "agent",
      model: "gpt-test",
      tokens: { prompt: "9", completion: "5", total: "14" },
      input: { historyTurns: 1, userPrompt: "and again" },
    });

    // A new conversation starts without history.
    const other = await executions.execute({ tenantId: TENANT, workflowId, input: { message: "fresh" } });
    expect(other.output).toEqual({ Reply: "echo: fresh (history: 0)" });
  });

  it("ends in error, charging only the base price, when the model call fails", async () => {
    const { workflow } = await workflows.createWorkflow({
      tenantId: TENANT,
      name: "Broken chat",
      state: graphState(
        [
          b.input(),
          b.of("chat", "agent", { model: "fail-500", userPrompt: "hi" }),
          b.output("out", "Reply", "blocks.chat.content"),
        ],
        [
          ["start", "chat"],
          ["chat", "out"],
        ],
      ),
    });
    const result = await executions.execute({ tenantId: TENANT, workflowId: workflow!.id, input: {} });
    expect(result.status).toBe(ExecutionStatus.ERROR);
    expect(result.error).toMatch(/^block chat: the LLM endpoint answered 500/);
    expect(result.creditUsage).toBe(1n);
  });
});

describe("workflow block in the service", () => {
  it("runs another workflow of the tenant, latest version by default", async () => {
    const { workflow: demo } = await workflows.createWorkflow({
      tenantId: TENANT,
      name: "Demo",
      state: demoState(),
    });
    const { workflow: caller } = await workflows.createWorkflow({
      tenantId: TENANT,
      name: "Caller",
      state: graphState(
        [
          b.input([{ name: "name", type: "string", required: true }]),
          b.of("sub", "workflow", {
            workflowId: demo!.id,
            inputs: { "First Name": "input.name", Age: "41" },
          }),
          b.output("out", "Greeting", "blocks.sub.Greeting"),
          b.output("age", "Age", "blocks.sub['Next Age']"),
        ],
        [
          ["start", "sub"],
          ["sub", "out"],
          ["sub", "age"],
        ],
      ),
    });
    const result = await executions.execute({
      tenantId: TENANT,
      workflowId: caller!.id,
      input: { name: "Ada" },
    });
    expect(result.status).toBe(ExecutionStatus.SUCCESS);
    expect(result.output).toEqual({ Greeting: "Hello Ada", Age: 42 });
    const stored = await storedExecution(result.executionId);
    const span = stored.trace_spans.find((s) => s.blockId === "sub") as {
      children: Array<{ blockId: string }>;
    };
    expect(span.children.map((c) => c.blockId)).toEqual(["start", "greet", "out_greeting", "out_age"]);

    // Another tenant's workflow id is simply not found.
    const { workflow: foreign } = await workflows.createWorkflow({
      tenantId: newId("ws"),
      name: "Foreign",
      state: demoState(),
    });
    const { workflow: thief } = await workflows.createWorkflow({
      tenantId: TENANT,
      name: "Thief",
      state: graphState(
        [
          b.input(),
          b.of("sub", "workflow", { workflowId: foreign!.id }),
          b.output("out", "Out", "blocks.sub"),
        ],
        [
          ["start", "sub"],
          ["sub", "out"],
        ],
      ),
    });
    const refused = await executions.execute({ tenantId: TENANT, workflowId: thief!.id, input: {} });
    expect(refused.status).toBe(ExecutionStatus.ERROR);
    expect(refused.error).toBe(`block sub: workflow ${foreign!.id} not found`);
  });

  it("stops a workflow that calls itself at the depth limit", async () => {
    const { workflow } = await workflows.createWorkflow({ tenantId: TENANT, name: "Recursive" });
    await workflows.publishVersion({
      tenantId: TENANT,
      workflowId: workflow!.id,
      state: graphState(
        [
          b.input(),
          b.of("self", "workflow", { workflowId: workflow!.id }),
          b.output("out", "Out", "blocks.self"),
        ],
        [
          ["start", "self"],
          ["self", "out"],
        ],
      ),
    });
    const result = await executions.execute({ tenantId: TENANT, workflowId: workflow!.id, input: {} });
    expect(result.status).toBe(ExecutionStatus.ERROR);
    expect(result.error).toMatch(/block self: workflow blocks nest deeper than 5 levels$/);
  });
});
