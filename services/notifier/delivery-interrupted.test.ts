/**
 * Regression (found by `npm run chaos`): an attempt claimed in its row ("delivering", locked) whose
 * process then died, or whose claim committed while PostgreSQL crashed, left the delivery in
 * "delivering" forever: the queue's redelivery found the row locked and acked the message, so the
 * webhook was never sent. Now the message comes back when the lock runs out and the attempt is made.
 */
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { connect, type NatsConnection } from "nats";
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
import { startWebhookReceiver, type WebhookReceiver } from "../../test/helpers/webhook-receiver.js";
import {
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { NotifierService } from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { enqueueDelivery } from "./deliveries.js";
import { notifierService } from "./service.js";

describe("a delivery whose claimed attempt was interrupted", () => {
  let db: TestDatabase;
  let namespace: string;
  let nc: NatsConnection;
  let receiver: WebhookReceiver;
  let running: RunningService;
  let sql: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    receiver = await startWebhookReceiver();
    nc = await connect({ servers: TEST_NATS_URL });
    running = await startService(notifierService, {
      DATABASE_URL: db.url,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: namespace,
      NOTIFIER_PORT: "0",
      LOG_LEVEL: "silent",
      AUTH_URL: "http://127.0.0.1:1",
      NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
    });
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });

  afterAll(async () => {
    await sql?.end();
    await running?.stop();
    await nc?.close();
    await receiver?.close();
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
  });

  it("is attempted again once the dead attempt's lock runs out", async () => {
    const tenantId = `ws_${randomBytes(4).toString("hex")}`;
    const notifier = createRpcClient(NotifierService, `http://127.0.0.1:${running.port}`);
    await notifier.createSubscription({
      tenantId,
      subscription: {
        channel: { case: "webhook", value: { url: receiver.url } },
        allWorkflows: true,
        enabled: true,
      },
    });
    const executionId = `exec_${randomBytes(6).toString("hex")}`;
    const now = new Date();
    const event = create(ExecutionCompletedSchema, {
      executionId,
      tenantId,
      workflowId: "wf_interrupted",
      workflowVersion: 1,
      status: ExecutionStatus.SUCCESS,
      trigger: Trigger.API,
      startedAt: timestampFromDate(new Date(now.getTime() - 5)),
      endedAt: timestampFromDate(now),
      durationMs: 5n,
      cost: { total: 0.001 },
    });
    const names = natsNames(namespace);
    await nc
      .jetstream()
      .publish(names.executionCompleted(tenantId), toBinary(ExecutionCompletedSchema, event), {
        msgID: `${executionId}:completed`,
      });
    const sent = () => receiver.received.filter((r) => r.rawBody.includes(executionId));
    await waitFor("the first delivery", () => (sent().length === 1 ? true : undefined));
    const { rows } = await sql.query<{ id: string; round: number; status: string }>(
      "select id, round, status from notifier.deliveries where execution_id = $1",
      [executionId],
    );
    const delivery = rows[0]!;
    await waitFor("the first attempt recorded", async () => {
      const res = await sql.query("select status from notifier.deliveries where id = $1", [delivery.id]);
      return res.rows[0]?.status === "succeeded" ? true : undefined;
    });

    // A new round claimed by an attempt that died before sending: locked for 1.5 s more.
    const round = delivery.round + 1;
    await sql.query(
      `update notifier.deliveries
          set round = $2, status = 'delivering', locked_until = now() + interval '1500 milliseconds'
        where id = $1`,
      [delivery.id, round],
    );
    const queuedAt = Date.now();
    await enqueueDelivery(nc.jetstream(), names, {
      id: delivery.id,
      tenant_id: tenantId,
      channel: "webhook",
      round,
    });

    await waitFor(
      "the interrupted attempt made again",
      () => (sent().length === 2 ? true : undefined),
      15_000,
    );
    const [first, second] = sent();
    expect(second!.receivedAt - queuedAt).toBeGreaterThanOrEqual(1_000);
    expect(second!.headers["idempotency-key"]).toBe(first!.headers["idempotency-key"]);
    await waitFor("the delivery succeeded", async () => {
      const res = await sql.query("select status from notifier.deliveries where id = $1", [delivery.id]);
      return res.rows[0]?.status === "succeeded" ? true : undefined;
    });
  }, 60_000);
});
