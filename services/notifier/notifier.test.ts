import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import { connect, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { createDatabase } from "../platform/db.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { Health, ServingStatus } from "../platform/health.js";
import { type NatsNames, natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { NOTIFIER_CONSUMER } from "./consumer.js";
import { notifierService } from "./service.js";
import type { Database } from "./store.js";

let db: TestDatabase;
let stats: Kysely<Database>;
let namespace: string;
let names: NatsNames;
let running: RunningService;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;

const BASE_MS = Date.UTC(2025, 0, 1, 12, 0, 0, 0);

function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

function completion(
  tenantId: string,
  workflowId: string,
  status: ExecutionStatus,
  atMs: number,
): ExecutionCompleted {
  return create(ExecutionCompletedSchema, {
    executionId: uniqueId("exec"),
    tenantId,
    workflowId,
    workflowVersion: 1,
    status,
    trigger: Trigger.API,
    startedAt: timestampFromDate(new Date(atMs)),
    endedAt: timestampFromDate(new Date(atMs + 100)),
    durationMs: 100n,
    error: status === ExecutionStatus.ERROR ? "boom" : undefined,
  });
}

async function publish(event: ExecutionCompleted, msgID = `${event.executionId}:completed`): Promise<number> {
  const ack = await js.publish(
    names.executionCompleted(event.tenantId),
    toBinary(ExecutionCompletedSchema, event),
    {
      msgID,
    },
  );
  return ack.seq;
}

/** Waits until the notifier consumer has finished (acked or terminated) everything up to `seq`. */
async function waitConsumed(seq: number): Promise<void> {
  await waitFor(`notifier consumer past stream seq ${seq}`, async () => {
    const info = await jsm.consumers.info(names.executionsStream, NOTIFIER_CONSUMER);
    return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0 ? true : undefined;
  });
}

async function statsOf(tenantId: string, workflowId: string) {
  return stats
    .selectFrom("execution_stats")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("workflow_id", "=", workflowId)
    .executeTakeFirst();
}

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  names = natsNames(namespace);
  running = await startService(notifierService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    NOTIFIER_PORT: "0",
    LOG_LEVEL: "silent",
  });
  stats = createDatabase<Database>({ url: db.url, schema: "notifier", maxConnections: 2 });
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
});

afterAll(async () => {
  await running?.stop();
  await stats?.destroy();
  await nc?.close();
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

describe("notifier service", () => {
  it("answers the gRPC health check with SERVING", async () => {
    const health = createRpcClient(Health, `http://127.0.0.1:${running.port}`);
    const res = await health.check({ service: "" });
    expect(res.status).toBe(ServingStatus.SERVING);
  });

  it("counts each execution once into its workflow's stats", async () => {
    const tenantId = uniqueId("ten");
    const workflowId = uniqueId("wf");
    const success = completion(tenantId, workflowId, ExecutionStatus.SUCCESS, BASE_MS);
    const failure = completion(tenantId, workflowId, ExecutionStatus.ERROR, BASE_MS + 1000);
    await publish(success);
    await publish(failure);
    // The same execution again under another msgID: JetStream does not dedupe it, the notifier must.
    const duplicateSeq = await publish(failure, `${failure.executionId}:completed:republished`);

    const row = await waitFor("stats of both executions", async () => {
      const current = await statsOf(tenantId, workflowId);
      return current && current.runs >= 2 ? current : undefined;
    });
    await waitConsumed(duplicateSeq);
    expect(await statsOf(tenantId, workflowId)).toEqual(row);
    expect(row).toMatchObject({ runs: 2, failures: 1, consecutive_failures: 1, last_status: "error" });
    expect(row.last_execution_at.toISOString()).toBe(new Date(BASE_MS + 1100).toISOString());

    // A success ends the failure streak.
    const recovery = completion(tenantId, workflowId, ExecutionStatus.SUCCESS, BASE_MS + 2000);
    await waitConsumed(await publish(recovery));
    expect(await statsOf(tenantId, workflowId)).toMatchObject({
      runs: 3,
      failures: 1,
      consecutive_failures: 0,
      last_status: "success",
    });
  });

  it("terminates an undecodable message and keeps consuming", async () => {
    const tenantId = uniqueId("ten");
    const workflowId = uniqueId("wf");
    await js.publish(names.executionCompleted(tenantId), new Uint8Array([0xff, 0xff, 0xff]), {
      msgID: uniqueId("junk"),
    });
    await waitConsumed(await publish(completion(tenantId, workflowId, ExecutionStatus.ERROR, BASE_MS)));
    expect(await statsOf(tenantId, workflowId)).toMatchObject({
      runs: 1,
      failures: 1,
      consecutive_failures: 1,
    });
  });
});
