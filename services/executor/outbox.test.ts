import { fromBinary } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { connect, type JetStreamManager, type NatsConnection } from "nats";
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
  ExecutionCompletedSchema,
  ExecutionStatus,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import {
  ensureDurableConsumer,
  ensureStream,
  executionsStreamConfig,
  type NatsNames,
  natsNames,
} from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { demoState } from "./engine/workflow-fixtures.js";
import { executorService } from "./service.js";

const TENANT = newId("ws");
const READER = "outbox-test-reader";

let db: TestDatabase;
let namespace: string;
let names: NatsNames;
let running: RunningService;
let executions: Client<typeof ExecutionService>;
let nc: NatsConnection;
let jsm: JetStreamManager;
let sql: pg.Pool;
let workflowId: string;

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  names = natsNames(namespace);
  running = await startService(executorService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    EXECUTOR_PORT: "0",
    EXECUTOR_OUTBOX_INTERVAL_MS: "100",
    LOG_LEVEL: "silent",
  });
  const url = `http://127.0.0.1:${running.port}`;
  executions = createRpcClient(ExecutionService, url);
  const { workflow } = await createRpcClient(WorkflowService, url).createWorkflow({
    tenantId: TENANT,
    name: "Outbox demo",
    description: "for the sweeper",
    state: demoState(),
  });
  workflowId = workflow!.id;
  nc = await connect({ servers: TEST_NATS_URL });
  jsm = await nc.jetstreamManager();
  sql = new pg.Pool({ connectionString: db.url, options: "-c search_path=executor", max: 2 });
  // Dropping the test database with force ends these connections; that is no test failure.
  sql.on("error", () => {});
  sql.on("connect", (client) => client.on("error", () => {}));
});

afterAll(async () => {
  await running?.stop();
  await nc?.close();
  await sql?.end();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

/** Reads the stream from the start until the completion of `executionId` shows up. */
async function completionOf(executionId: string) {
  await ensureDurableConsumer(jsm, names.executionsStream, READER, {
    filter_subject: names.executionCompletedAll,
  });
  const consumer = await nc.jetstream().consumers.get(names.executionsStream, READER);
  return waitFor(`completion event of ${executionId}`, async () => {
    for (;;) {
      const m = await consumer.next({ expires: 1000 });
      if (!m) return undefined;
      m.ack();
      const event = fromBinary(ExecutionCompletedSchema, m.data);
      if (event.executionId === executionId) return event;
    }
  });
}

async function publishedAt(executionId: string): Promise<Date | null> {
  const { rows } = await sql.query("select published_at from executions where id = $1", [executionId]);
  return rows[0]?.published_at ?? null;
}

describe("completion outbox", () => {
  it("publishes a stored execution whose completion was never acknowledged", async () => {
    const seed = await executions.execute({ tenantId: TENANT, workflowId, input: { "First Name": "Seed" } });
    const orphanId = newId("exec");
    // A row as a process that died between its insert and its publish would leave it.
    await sql.query(
      `insert into executions
         (id, tenant_id, workflow_id, workflow_version, conversation_id, status, trigger, input, output, path,
          error, warnings, trace_spans, cost, cost_detail, credit_usage, started_at, ended_at, duration_ms, published_at)
       select $1, tenant_id, workflow_id, workflow_version, conversation_id, status, trigger, input, output, path,
          error, warnings, trace_spans, cost, cost_detail, credit_usage,
          now() - interval '10 seconds', now() - interval '9 seconds', 1000, null
       from executions where id = $2`,
      [orphanId, seed.executionId],
    );
    const event = await completionOf(orphanId);
    expect(event).toMatchObject({
      executionId: orphanId,
      tenantId: TENANT,
      workflowId,
      workflowName: "Outbox demo",
      workflowDescription: "for the sweeper",
      conversationId: seed.conversationId,
      status: ExecutionStatus.SUCCESS,
      finalOutput: { Greeting: "Hello Seed", "Next Age": 1 },
      input: { "First Name": "Seed" },
      durationMs: 1000n,
      creditUsage: 1n,
    });
    expect(event.traceSpans.map((s) => s.blockId)).toEqual(["start", "greet", "out_greeting", "out_age"]);
    await waitFor("the orphan to be marked published", async () =>
      (await publishedAt(orphanId)) ? true : undefined,
    );
  });

  it("answers an execution whose publish fails, and publishes it once the stream is back", async () => {
    await jsm.streams.delete(names.executionsStream);
    let res: Awaited<ReturnType<typeof executions.execute>>;
    try {
      res = await executions.execute({ tenantId: TENANT, workflowId, input: { "First Name": "Lost" } });
    } finally {
      await ensureStream(jsm, executionsStreamConfig(names));
    }
    expect(res.status).toBe(ExecutionStatus.SUCCESS);
    expect(res.output).toEqual({ Greeting: "Hello Lost", "Next Age": 1 });
    expect(await publishedAt(res.executionId)).toBeNull();

    const event = await completionOf(res.executionId);
    expect(event.finalOutput).toEqual({ Greeting: "Hello Lost", "Next Age": 1 });
    await waitFor("the execution to be marked published", async () =>
      (await publishedAt(res.executionId)) ? true : undefined,
    );
    const { conversation } = await executions.getConversation({
      tenantId: TENANT,
      workflowId,
      conversationId: res.conversationId,
    });
    expect(conversation?.executions.map((e) => e.id)).toEqual([res.executionId]);
  });
});
