import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { connect } from "nats";
import { notifierService } from "../../services/notifier/service.js";
import {
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { NotifierService } from "../../services/platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { natsNames } from "../../services/platform/nats.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { startService } from "../../services/platform/service.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  testNamespace,
  waitFor,
} from "../helpers/infra.js";
import { startWebhookReceiver } from "../helpers/webhook-receiver.js";

export const description =
  "10,000 execution completions with a signed webhook subscription: completion → webhook receipt latency";
export const targets: Record<string, string> = {
  deliveryP95Ms: "< 100",
  received: "= sent",
  duplicates: "0",
};

const COUNT = Number(process.env.BENCH_WEBHOOKS_COUNT ?? 10_000);
/** Completions per second offered; the notifier must keep up for latency to mean anything. */
const RATE = Number(process.env.BENCH_WEBHOOKS_RATE ?? 150);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export default async function run(): Promise<Record<string, number>> {
  const db = await createTestDatabase();
  const namespace = testNamespace();
  const names = natsNames(namespace);
  const receiver = await startWebhookReceiver();
  const nc = await connect({ servers: TEST_NATS_URL });
  const service = await startService(notifierService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    NOTIFIER_PORT: "0",
    LOG_LEVEL: "silent",
    NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
    AUTH_URL: "http://127.0.0.1:1",
  });
  try {
    const tenantId = "ws_bench";
    await createRpcClient(NotifierService, `http://127.0.0.1:${service.port}`).createSubscription({
      tenantId,
      subscription: {
        channel: { case: "webhook", value: { url: receiver.url, secret: "bench-secret" } },
        allWorkflows: true,
        enabled: true,
      },
    });
    const publishedAt = new Map<string, number>();
    const latencies: number[] = [];
    const deliveryIds = new Map<string, number>();
    receiver.respond = (request) => {
      const id = request.headers["sim-delivery-id"] ?? "";
      deliveryIds.set(id, (deliveryIds.get(id) ?? 0) + 1);
      if (deliveryIds.get(id) === 1) {
        const executionId = (JSON.parse(request.rawBody) as { data: { executionId: string } }).data
          .executionId;
        const sent = publishedAt.get(executionId);
        if (sent !== undefined) latencies.push(request.receivedAt - sent);
      }
      return { status: 200, body: "ok" };
    };

    const js = nc.jetstream();
    const started = Date.now();
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < COUNT; i++) {
      const due = started + (i * 1000) / RATE;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const executionId = `exec_bench_${i.toString().padStart(6, "0")}`;
      const now = new Date();
      const event = create(ExecutionCompletedSchema, {
        executionId,
        tenantId,
        workflowId: `wf_bench_${i % 20}`,
        workflowVersion: 1,
        status: i % 10 === 0 ? ExecutionStatus.ERROR : ExecutionStatus.SUCCESS,
        trigger: Trigger.API,
        startedAt: timestampFromDate(new Date(now.getTime() - 5)),
        endedAt: timestampFromDate(now),
        durationMs: 5n,
        cost: { total: 0.001 },
      });
      publishedAt.set(executionId, Date.now());
      pending.push(
        js.publish(names.executionCompleted(tenantId), toBinary(ExecutionCompletedSchema, event), {
          msgID: `${executionId}:completed`,
        }),
      );
      if (pending.length >= 256) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    const publishSeconds = (Date.now() - started) / 1000;
    await waitFor("every webhook", () => (deliveryIds.size >= COUNT ? true : undefined), 300_000, 200);
    const drainedSeconds = (Date.now() - started) / 1000;
    // Late duplicates would show up here.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    latencies.sort((a, b) => a - b);
    const received = [...deliveryIds.values()].reduce((a, b) => a + b, 0);
    return {
      sent: COUNT,
      received: deliveryIds.size,
      duplicates: received - deliveryIds.size,
      offeredPerSec: Math.round(COUNT / publishSeconds),
      deliveredPerSec: Math.round(COUNT / drainedSeconds),
      deliveryP50Ms: percentile(latencies, 50),
      deliveryP95Ms: percentile(latencies, 95),
      deliveryP99Ms: percentile(latencies, 99),
    };
  } finally {
    await service.stop();
    await nc.close();
    await receiver.close();
    await db.drop();
    await deleteNamespaceStreams(namespace);
  }
}
