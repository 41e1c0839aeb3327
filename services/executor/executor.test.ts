import { fromBinary, type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import { ensureDurableConsumer, natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import {
  demoState,
  demoStateJson,
  invalidDefinitions,
  mutatedDemoState,
  singleFunctionState,
  toState,
} from "./engine/workflow-fixtures.js";
import { priceExecution } from "./executions.js";
import { executorService } from "./service.js";

const FUNCTION_TIMEOUT_MS = 500;
const TENANT = newId("ws");
const OTHER_TENANT = newId("ws");
const READER = "executor-test-reader";

let db: TestDatabase;
let namespace: string;
let running: RunningService;
let workflows: Client<typeof WorkflowService>;
let executions: Client<typeof ExecutionService>;
let nc: NatsConnection;
let js: JetStreamClient;
let sql: pg.Pool;
let demoWorkflowId: string;

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  running = await startService(executorService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    EXECUTOR_PORT: "0",
    EXECUTOR_FUNCTION_TIMEOUT_MS: String(FUNCTION_TIMEOUT_MS),
    EXECUTOR_FUNCTION_WORKERS: "2",
    LOG_LEVEL: "silent",
  });
  const url = `http://127.0.0.1:${running.port}`;
  workflows = createRpcClient(WorkflowService, url);
  executions = createRpcClient(ExecutionService, url);
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
  const names = natsNames(namespace);
  await ensureDurableConsumer(await nc.jetstreamManager(), names.executionsStream, READER, {
    filter_subject: names.executionCompletedAll,
  });
  sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
  // Dropping the test database with force ends these connections; that is no test failure.
  sql.on("error", () => {});
  sql.on("connect", (client) => client.on("error", () => {}));
  const { workflow } = await workflows.createWorkflow({
    tenantId: TENANT,
    name: "Demo",
    description: "Greets a person",
    state: demoState(),
  });
  demoWorkflowId = workflow!.id;
});

afterAll(async () => {
  await running?.stop();
  await nc?.close();
  await sql?.end();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

async function rpcError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

const received = new Map<string, { event: ExecutionCompleted; msgId: string | undefined; subject: string }>();

/** The completion event of an execution, read from the stream with a durable test consumer. */
async function completionOf(executionId: string) {
  return waitFor(`completion event of ${executionId}`, async () => {
    const consumer = await js.consumers.get(natsNames(namespace).executionsStream, READER);
    while (!received.has(executionId)) {
      const m = await consumer.next({ expires: 1000 });
      if (!m) return undefined;
      const event = fromBinary(ExecutionCompletedSchema, m.data);
      received.set(event.executionId, { event, msgId: m.headers?.get("Nats-Msg-Id"), subject: m.subject });
      m.ack();
    }
    return received.get(executionId);
  });
}

async function createWorkflow(state = demoState(), tenantId = TENANT): Promise<string> {
  const { workflow } = await workflows.createWorkflow({ tenantId, name: "Test workflow", state });
  return workflow!.id;
}

const johnInput = { "First Name": "John", Age: 30 };

describe("pricing", () => {
  it("rounds credits up in integer micro-dollars", () => {
    expect(priceExecution(0.0005)).toEqual({ costUsd: 0.0005, credits: 1 });
    expect(priceExecution(0.001)).toEqual({ costUsd: 0.001, credits: 1 });
    expect(priceExecution(0.0011)).toEqual({ costUsd: 0.0011, credits: 2 });
    expect(priceExecution(0.1 + 0.2)).toEqual({ costUsd: 0.3, credits: 300 });
    expect(priceExecution(0)).toEqual({ costUsd: 0, credits: 0 });
  });
});

describe("WorkflowService", () => {
  it("creates a workflow with version 1 when given a state", async () => {
    const { workflow, version } = await workflows.createWorkflow({
      tenantId: TENANT,
      name: "  Greeter  ",
      description: "says hello",
      state: demoState(),
    });
    expect(workflow).toMatchObject({
      tenantId: TENANT,
      name: "Greeter",
      description: "says hello",
      latestVersion: 1,
    });
    expect(workflow!.id).toMatch(/^wf_/);
    expect(version?.version).toBe(1);
    expect(version!.state!.blocks.out_age!.name).toBe("Next Age");
    expect(version!.state!.blocks.greet!.config).toEqual(demoState().blocks.greet!.config);
  });

  it("creates a workflow without a state at version 0, which cannot run yet", async () => {
    const { workflow, version } = await workflows.createWorkflow({ tenantId: TENANT, name: "Empty" });
    expect(workflow?.latestVersion).toBe(0);
    expect(version).toBeUndefined();
    const err = await rpcError(executions.execute({ tenantId: TENANT, workflowId: workflow!.id, input: {} }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toBe(`workflow ${workflow!.id} has no published version`);
  });

  it.each([
    ["", "name is required"],
    ["   ", "name is required"],
    ["x".repeat(201), "name must be at most 200 characters"],
  ])("refuses the name %j", async (name, message) => {
    const err = await rpcError(workflows.createWorkflow({ tenantId: TENANT, name }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe(message);
  });

  it("refuses a missing or malformed tenant id", async () => {
    for (const tenantId of ["", "a.b", "*"]) {
      const err = await rpcError(workflows.createWorkflow({ tenantId, name: "x" }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.rawMessage).toMatch(/^tenant_id/);
    }
  });

  it.each(invalidDefinitions)("refuses a definition with %s", async (_what, mutate, message) => {
    const state = mutatedDemoState(mutate);
    const created = await rpcError(workflows.createWorkflow({ tenantId: TENANT, name: "Bad", state }));
    expect(created.code).toBe(Code.InvalidArgument);
    expect(created.rawMessage).toContain(message);
    const published = await rpcError(
      workflows.publishVersion({ tenantId: TENANT, workflowId: demoWorkflowId, state }),
    );
    expect(published.code).toBe(Code.InvalidArgument);
    expect(published.rawMessage).toContain(message);
  });

  it("publishes increasing versions, distinct under concurrency", async () => {
    const workflowId = await createWorkflow();
    const published = await Promise.all(
      Array.from({ length: 8 }, () =>
        workflows.publishVersion({ tenantId: TENANT, workflowId, state: demoState() }),
      ),
    );
    const numbers = published.map((p) => p.version!.version).sort((a, b) => a - b);
    expect(numbers).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    const { rows } = await sql.query("select latest_version from workflows where id = $1", [workflowId]);
    expect(rows[0].latest_version).toBe(9);
  });

  it("answers NOT_FOUND when publishing to an unknown or another tenant's workflow", async () => {
    for (const [tenantId, workflowId] of [
      [TENANT, "wf_00000000000000000000000000"],
      [OTHER_TENANT, demoWorkflowId],
    ] as const) {
      const err = await rpcError(workflows.publishVersion({ tenantId, workflowId, state: demoState() }));
      expect(err.code).toBe(Code.NotFound);
      expect(err.rawMessage).toBe(`workflow ${workflowId} not found`);
    }
    const missingState = await rpcError(
      workflows.publishVersion({ tenantId: TENANT, workflowId: demoWorkflowId }),
    );
    expect(missingState.code).toBe(Code.InvalidArgument);
  });
});

describe("ExecutionService.Execute", () => {
  it("runs the demo workflow, stores it and publishes its completion", async () => {
    const res = await executions.execute({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      version: 1,
      input: johnInput,
    });
    expect(res.status).toBe(ExecutionStatus.SUCCESS);
    expect(res.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expect(res.creditUsage).toBe(1n);
    expect(res.error).toBeUndefined();
    expect(res.conversationId).toMatch(/^conv_/);
    expect(res.executionId).toMatch(/^exec_/);

    const { event, msgId, subject } = await completionOf(res.executionId);
    expect(msgId).toBe(`${res.executionId}:completed`);
    expect(subject).toBe(natsNames(namespace).executionCompleted(TENANT));
    expect(event).toMatchObject({
      executionId: res.executionId,
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      workflowVersion: 1,
      workflowName: "Demo",
      workflowDescription: "Greets a person",
      conversationId: res.conversationId,
      status: ExecutionStatus.SUCCESS,
      trigger: Trigger.API,
      creditUsage: 1n,
      input: johnInput,
      finalOutput: { Greeting: "Hello John", "Next Age": 31 },
      path: ["start", "greet", "out_greeting", "out_age"],
    });
    expect(event.error).toBeUndefined();
    expect(event.cost?.total).toBe(0.0005);
    const started = timestampDate(event.startedAt!).getTime();
    const ended = timestampDate(event.endedAt!).getTime();
    expect(ended - started).toBe(Number(event.durationMs));

    const spans = event.traceSpans;
    expect(spans.map((s) => [s.blockId, s.name, s.type, s.status])).toEqual([
      ["start", "Input", "input", "success"],
      ["greet", "Greet", "function", "success"],
      ["out_greeting", "Greeting", "output", "success"],
      ["out_age", "Next Age", "output", "success"],
    ]);
    const greet = spans[1]!;
    expect(toJson(ValueSchema, greet.output!)).toEqual({ greeting: "Hello John", nextAge: 31 });
    expect(toJson(ValueSchema, greet.input!)).toEqual({ start: johnInput });
    expect(greet.id).not.toBe("");
    for (const span of spans) {
      expect(timestampDate(span.endTime!).getTime()).toBeGreaterThanOrEqual(
        timestampDate(span.startTime!).getTime(),
      );
    }

    const row = await waitFor("published_at to be set", async () => {
      const { rows } = await sql.query("select * from executions where id = $1", [res.executionId]);
      return rows[0]?.published_at ? rows[0] : undefined;
    });
    expect(row).toMatchObject({
      tenant_id: TENANT,
      status: "success",
      trigger: "api",
      credit_usage: 1,
      cost: 0.0005,
      path: ["start", "greet", "out_greeting", "out_age"],
      error: null,
    });
  });

  it("runs the latest version for version 0, and the trigger given", async () => {
    const workflowId = await createWorkflow();
    const v2 = mutatedDemoState((s) => {
      s.blocks.greet!.config = { code: 'return { greeting: "Hi " + input["First Name"], nextAge: 0 };' };
    });
    await workflows.publishVersion({ tenantId: TENANT, workflowId, state: v2 });
    const latest = await executions.execute({
      tenantId: TENANT,
      workflowId,
      input: johnInput,
      trigger: Trigger.WEBHOOK,
    });
    expect(latest.output).toEqual({ Greeting: "Hi John", "Next Age": 0 });
    const first = await executions.execute({ tenantId: TENANT, workflowId, version: 1, input: johnInput });
    expect(first.output?.Greeting).toBe("Hello John");
    const { event } = await completionOf(latest.executionId);
    expect(event.workflowVersion).toBe(2);
    expect(event.trigger).toBe(Trigger.WEBHOOK);
  });

  it("answers NOT_FOUND for unknown workflows, versions, and other tenants' workflows", async () => {
    const unknown = "wf_00000000000000000000000000";
    const cases: Array<[tenantId: string, workflowId: string, version: number, message: string]> = [
      [TENANT, unknown, 0, `workflow ${unknown} not found`],
      [TENANT, "not-an-id", 0, "workflow not-an-id not found"],
      [TENANT, demoWorkflowId, 3, `version 3 of workflow ${demoWorkflowId} not found`],
      [OTHER_TENANT, demoWorkflowId, 1, `workflow ${demoWorkflowId} not found`],
    ];
    for (const [tenantId, workflowId, version, message] of cases) {
      const err = await rpcError(executions.execute({ tenantId, workflowId, version, input: johnInput }));
      expect(err.code).toBe(Code.NotFound);
      expect(err.rawMessage).toBe(message);
    }
  });

  it.each([
    [{ Age: 30 }, 'input field "First Name" is required'],
    [{ "First Name": "John", Age: "thirty" }, 'input field "Age" must be a number'],
    [{ "First Name": "John", Nickname: "Jo" }, 'input field "Nickname" is not defined by the workflow'],
  ])("refuses the input %j naming the field, storing nothing", async (input, message) => {
    const before = await sql.query("select count(*)::int as n from executions");
    const err = await rpcError(executions.execute({ tenantId: TENANT, workflowId: demoWorkflowId, input }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe(message);
    const after = await sql.query("select count(*)::int as n from executions");
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it("records and publishes a function that throws as status ERROR", async () => {
    const workflowId = await createWorkflow(singleFunctionState('throw new Error("boom");', "Explode"));
    const res = await executions.execute({ tenantId: TENANT, workflowId, input: {} });
    expect(res.status).toBe(ExecutionStatus.ERROR);
    expect(res.error).toBe("block Explode: boom");
    expect(res.output).toEqual({});
    expect(res.creditUsage).toBe(1n);

    const { event } = await completionOf(res.executionId);
    expect(event.status).toBe(ExecutionStatus.ERROR);
    expect(event.error).toBe("block Explode: boom");
    expect(event.path).toEqual(["start", "fn"]);
    expect(event.traceSpans[1]).toMatchObject({ blockId: "fn", status: "error", error: "boom" });

    const { conversation } = await executions.getConversation({
      tenantId: TENANT,
      workflowId,
      conversationId: res.conversationId,
    });
    expect(conversation?.executions[0]).toMatchObject({
      id: res.executionId,
      status: ExecutionStatus.ERROR,
      error: "block Explode: boom",
    });
  });

  it("stops an endless loop at the time limit and keeps serving", async () => {
    const workflowId = await createWorkflow(singleFunctionState("while (true) {}", "Spin"));
    const started = Date.now();
    const res = await executions.execute({ tenantId: TENANT, workflowId, input: {} });
    expect(Date.now() - started).toBeLessThan(FUNCTION_TIMEOUT_MS + 5_000);
    expect(res.status).toBe(ExecutionStatus.ERROR);
    expect(res.error).toBe(`block Spin: timed out after ${FUNCTION_TIMEOUT_MS} ms`);

    const next = await executions.execute({ tenantId: TENANT, workflowId: demoWorkflowId, input: johnInput });
    expect(next.status).toBe(ExecutionStatus.SUCCESS);
    expect(next.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });
  });

  it("stops a memory bomb and keeps serving", async () => {
    const bomb = 'const hoard = []; while (true) hoard.push("x".repeat(1e6) + hoard.length);';
    const workflowId = await createWorkflow(singleFunctionState(bomb, "Hoard"));
    const res = await executions.execute({ tenantId: TENANT, workflowId, input: {} });
    expect(res.status).toBe(ExecutionStatus.ERROR);
    expect(res.error).toBe("block Hoard: memory limit of 32 MB exceeded");
    const next = await executions.execute({ tenantId: TENANT, workflowId: demoWorkflowId, input: johnInput });
    expect(next.status).toBe(ExecutionStatus.SUCCESS);
  });

  it("gives functions no process, require or network", async () => {
    const probe = "return { process: typeof process, require: typeof require, fetch: typeof fetch };";
    const workflowId = await createWorkflow(singleFunctionState(probe));
    const res = await executions.execute({ tenantId: TENANT, workflowId, input: {} });
    expect(res.output).toEqual({
      Result: { process: "undefined", require: "undefined", fetch: "undefined" },
    });
  });

  it("runs independent branches concurrently", async () => {
    // Each branch busy-waits on the wall clock and reports when it ran, as seen inside the sandbox.
    const busy = "const s = Date.now(); while (Date.now() < s + 300) {} return { s: s, e: Date.now() };";
    const workflowId = await createWorkflow(
      toState({
        blocks: {
          start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
          a: { id: "a", type: "function", name: "A", config: { code: busy } },
          b: { id: "b", type: "function", name: "B", config: { code: busy } },
          out_a: { id: "out_a", type: "output", name: "A", config: { value: "blocks.a" } },
          out_b: { id: "out_b", type: "output", name: "B", config: { value: "blocks.b" } },
        },
        edges: [
          { id: "e1", source: "start", target: "a" },
          { id: "e2", source: "start", target: "b" },
          { id: "e3", source: "a", target: "out_a" },
          { id: "e4", source: "b", target: "out_b" },
        ],
      }),
    );
    // A first run brings both sandbox threads up, so thread start-up cannot serialise the branches.
    await executions.execute({ tenantId: TENANT, workflowId, input: {} });
    const res = await executions.execute({ tenantId: TENANT, workflowId, input: {} });
    expect(res.status).toBe(ExecutionStatus.SUCCESS);
    const a = res.output!.A as { s: number; e: number };
    const b = res.output!.B as { s: number; e: number };
    expect(a.s).toBeLessThan(b.e);
    expect(b.s).toBeLessThan(a.e);
    const { event } = await completionOf(res.executionId);
    const spanA = event.traceSpans.find((s) => s.blockId === "a")!;
    const spanB = event.traceSpans.find((s) => s.blockId === "b")!;
    expect(timestampDate(spanA.startTime!).getTime()).toBeLessThan(timestampDate(spanB.endTime!).getTime());
    expect(timestampDate(spanB.startTime!).getTime()).toBeLessThan(timestampDate(spanA.endTime!).getTime());
  });

  it("skips disabled blocks", async () => {
    const json = demoStateJson() as { blocks: Record<string, JsonObject> };
    json.blocks.out_age!.enabled = false;
    const workflowId = await createWorkflow(toState(json as unknown as JsonObject));
    const res = await executions.execute({ tenantId: TENANT, workflowId, input: johnInput });
    expect(res.output).toEqual({ Greeting: "Hello John" });
    expect((await completionOf(res.executionId)).event.path).toEqual(["start", "greet", "out_greeting"]);
  });
});

describe("conversations", () => {
  it("continues a conversation and returns its executions oldest first", async () => {
    const first = await executions.execute({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      input: johnInput,
    });
    const second = await executions.execute({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      input: { "First Name": "Ann" },
      conversationId: first.conversationId,
    });
    expect(second.conversationId).toBe(first.conversationId);

    const { conversation } = await executions.getConversation({
      tenantId: TENANT,
      workflowId: demoWorkflowId,
      conversationId: first.conversationId,
    });
    expect(conversation?.id).toBe(first.conversationId);
    expect(conversation?.workflowId).toBe(demoWorkflowId);
    expect(conversation?.executions.map((e) => e.id)).toEqual([first.executionId, second.executionId]);
    expect(conversation?.executions[1]).toMatchObject({
      workflowVersion: 1,
      status: ExecutionStatus.SUCCESS,
      trigger: Trigger.API,
      input: { "First Name": "Ann" },
      output: { Greeting: "Hello Ann", "Next Age": 1 },
      path: ["start", "greet", "out_greeting", "out_age"],
      creditUsage: 1n,
      cost: 0.0005,
    });
    expect(conversation?.executions[1]?.endedAt).toBeDefined();
  });

  it("answers NOT_FOUND for unknown, foreign or mismatched conversations", async () => {
    const mine = await executions.execute({ tenantId: TENANT, workflowId: demoWorkflowId, input: johnInput });
    const otherWorkflowId = await createWorkflow();
    const foreignWorkflowId = await createWorkflow(demoState(), OTHER_TENANT);
    const foreign = await executions.execute({
      tenantId: OTHER_TENANT,
      workflowId: foreignWorkflowId,
      input: johnInput,
    });

    const attempts: Array<[string, string, string]> = [
      [TENANT, demoWorkflowId, "conv_00000000000000000000000000"],
      [TENANT, demoWorkflowId, foreign.conversationId],
      [TENANT, otherWorkflowId, mine.conversationId],
      [OTHER_TENANT, foreignWorkflowId, mine.conversationId],
    ];
    for (const [tenantId, workflowId, conversationId] of attempts) {
      const read = await rpcError(executions.getConversation({ tenantId, workflowId, conversationId }));
      expect(read.code).toBe(Code.NotFound);
      expect(read.rawMessage).toBe(`conversation ${conversationId} not found`);
      const run = await rpcError(
        executions.execute({ tenantId, workflowId, conversationId, input: johnInput }),
      );
      expect(run.code).toBe(Code.NotFound);
      expect(run.rawMessage).toBe(`conversation ${conversationId} not found`);
    }
  });
});
