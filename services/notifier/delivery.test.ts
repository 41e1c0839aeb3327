import { execFileSync } from "node:child_process";
import crypto, { randomBytes } from "node:crypto";
import { create, fromBinary, type JsonObject, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { startSmtpServer, type TestSmtpServer } from "../../test/helpers/smtp-server.js";
import { startWebhookReceiver, type WebhookReceiver } from "../../test/helpers/webhook-receiver.js";
import { AuthService, type GetLimitsRequest } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { NotificationDisabledSchema } from "../platform/gen/flowplane/events/v1/notification_pb.js";
import {
  AlertRuleType,
  type Delivery,
  NotifierService,
  type Subscription,
  type SubscriptionSchema,
} from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { type NatsNames, natsNames } from "../platform/nats.js";
import { createRpcClient, type RpcServer, startRpcServer } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { sendWebhook } from "./channels/webhook.js";
import { NOTIFIER_CONSUMER } from "./consumer.js";
import { notifierService } from "./service.js";

const SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdGluZy0xMjM0NTY3OA==";
const PLAIN_SECRET = "my-webhook-secret";
const ENCRYPTION_KEY = randomBytes(32).toString("hex");

let db: TestDatabase;
let namespace: string;
let names: NatsNames;
let running: RunningService;
let nc: NatsConnection;
let js: JetStreamClient;
let notifier: Client<typeof NotifierService>;
let receiver: WebhookReceiver;
let slack: WebhookReceiver;
let smtp: TestSmtpServer;
let fakeAuth: RpcServer;
const limitsCalls: GetLimitsRequest[] = [];

const serviceEnv = () => ({
  DATABASE_URL: db.url,
  NATS_URL: TEST_NATS_URL,
  FLOWPLANE_NAMESPACE: namespace,
  NOTIFIER_PORT: "0",
  LOG_LEVEL: "silent",
  AUTH_URL: `http://127.0.0.1:${fakeAuth.port}`,
  NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
  // Short delays; the last one is also the cap for Retry-After.
  NOTIFIER_RETRY_DELAYS_MS: "100,150,200,250,4000",
  NOTIFIER_DELIVERY_TIMEOUT_MS: "1500",
  NOTIFIER_SMTP_URL: smtp.url,
  NOTIFIER_EMAIL_FROM: "Flowplane <alerts@flowplane.test>",
  FLOWPLANE_ENCRYPTION_KEY: ENCRYPTION_KEY,
});

function uniqueId(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString("hex")}`;
}

function completion(
  tenantId: string,
  workflowId: string,
  init: { status?: ExecutionStatus; trigger?: Trigger; laterMs?: number } = {},
): ExecutionCompleted {
  const started = Date.UTC(2025, 0, 1, 12, 34, 56, 789) + (init.laterMs ?? 0);
  return create(ExecutionCompletedSchema, {
    executionId: uniqueId("exec"),
    tenantId,
    workflowId,
    workflowVersion: 1,
    startedAt: timestampFromDate(new Date(started)),
    endedAt: timestampFromDate(new Date(started + 334)),
    durationMs: 334n,
    cost: {
      total: 0.00234,
      tokens: { prompt: 123n, completion: 456n, total: 579n },
      models: {
        "gpt-4o": {
          input: 0.001,
          output: 0.00134,
          total: 0.00234,
          tokens: { prompt: 123n, completion: 456n, total: 579n },
        },
      },
    },
    finalOutput: { Greeting: "Hello John", "Next Age": 31 },
    traceSpans: [
      {
        id: "span_1",
        blockId: "greet",
        name: "Greet",
        type: "function",
        status: "success",
        startTime: timestampFromDate(new Date(started)),
        endTime: timestampFromDate(new Date(started + 10)),
        duration: 10n,
        output: create(ValueSchema, { kind: { case: "stringValue", value: "hi" } }),
      },
    ],
    status: init.status ?? ExecutionStatus.SUCCESS,
    trigger: init.trigger ?? Trigger.API,
  });
}

async function publish(event: ExecutionCompleted): Promise<number> {
  const ack = await js.publish(
    names.executionCompleted(event.tenantId),
    toBinary(ExecutionCompletedSchema, event),
    { msgID: `${event.executionId}:completed` },
  );
  return ack.seq;
}

/** Waits until the notifier has handled every completion up to stream sequence `seq`. */
async function waitConsumed(seq: number): Promise<void> {
  const jsm = await nc.jetstreamManager();
  await waitFor(`completions handled up to ${seq}`, async () => {
    const info = await jsm.consumers.info(names.executionsStream, NOTIFIER_CONSUMER);
    return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0 ? true : undefined;
  });
}

async function webhookSubscription(
  tenantId: string,
  init: MessageInitShape<typeof SubscriptionSchema> & {
    url?: string;
    secret?: string;
    standardWebhooks?: boolean;
  } = {},
): Promise<Subscription> {
  const { url, secret, standardWebhooks, ...rest } = init;
  const { subscription } = await notifier.createSubscription({
    tenantId,
    subscription: {
      channel: {
        case: "webhook",
        value: {
          url: url ?? receiver.url,
          secret: secret ?? PLAIN_SECRET,
          standardWebhooks: standardWebhooks ?? false,
        },
      },
      allWorkflows: true,
      enabled: true,
      ...rest,
    },
  });
  return subscription!;
}

function receivedFor(executionId: string) {
  return receiver.received.filter((r) => r.rawBody.includes(executionId));
}

async function deliveriesOf(tenantId: string, subscriptionId: string): Promise<Delivery[]> {
  return (await notifier.listDeliveries({ tenantId, subscriptionId })).deliveries;
}

async function finishedDelivery(tenantId: string, subscriptionId: string): Promise<Delivery> {
  return waitFor(
    "a finished delivery",
    async () => {
      const [delivery] = await deliveriesOf(tenantId, subscriptionId);
      return delivery && (delivery.status === "succeeded" || delivery.status === "failed")
        ? delivery
        : undefined;
    },
    30_000,
  );
}

// The seed's receiver code, verbatim (seed 002 "Verificación de firma", Node.js).
function verifyWebhookSignature(body: string, signature: string, secret: string) {
  const [timestampPart, signaturePart] = signature.split(",");
  const timestamp = timestampPart!.replace("t=", "");
  const expectedSignature = signaturePart!.replace("v1=", "");
  const signatureBase = `${timestamp}.${body}`;
  const hmac = crypto.createHmac("sha256", secret);
  hmac.update(signatureBase);
  const computedSignature = hmac.digest("hex");
  return computedSignature === expectedSignature;
}

// The raw-body way for Python receivers (README): sign-check the bytes as received, then parse.
const PYTHON_VERIFIER = `
import hmac, hashlib, json, sys
body = sys.stdin.buffer.read()
signature, secret = sys.argv[1], sys.argv[2]
timestamp_part, signature_part = signature.split(',')
timestamp = timestamp_part.replace('t=', '')
expected = signature_part.replace('v1=', '')
computed = hmac.new(secret.encode(), timestamp.encode() + b'.' + body, hashlib.sha256).hexdigest()
event = json.loads(body)
print('ok' if hmac.compare_digest(computed, expected) else 'bad', event['type'])
`;

beforeAll(async () => {
  db = await createTestDatabase();
  namespace = testNamespace();
  names = natsNames(namespace);
  receiver = await startWebhookReceiver();
  slack = await startWebhookReceiver("/services/T000/B000/XXXX");
  smtp = await startSmtpServer();
  // Stands in for the auth service's GetLimits.
  fakeAuth = await startRpcServer({
    port: 0,
    host: "127.0.0.1",
    routes(router) {
      router.service(AuthService, {
        async getLimits(req) {
          limitsCalls.push(req);
          const resetAt = timestampFromDate(new Date(Date.UTC(2025, 0, 1, 12, 35, 56, 789)));
          return {
            limits: {
              workflowExecutionRateLimit: {
                sync: { requestsPerMinute: 60, maxBurst: 120, remaining: 118, resetAt },
                async: { requestsPerMinute: 200, maxBurst: 400, remaining: 398, resetAt },
              },
              usage: { currentPeriodCost: 1.234, limit: 10, plan: "pro", isExceeded: false },
            },
          };
        },
      });
    },
  });
  running = await startService(notifierService, serviceEnv());
  notifier = createRpcClient(NotifierService, `http://127.0.0.1:${running.port}`);
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
});

afterAll(async () => {
  await running?.stop();
  await nc?.close();
  await receiver?.close();
  await slack?.close();
  await smtp?.close();
  await fakeAuth?.close(0);
  await db?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

describe("webhook deliveries", () => {
  it("posts the seed's payload, signed so that the seed's own verifier accepts it", async () => {
    const tenantId = uniqueId("ws");
    const sub = await webhookSubscription(tenantId);
    expect(sub.channel.case === "webhook" && sub.channel.value).toMatchObject({
      hasSecret: true,
      secret: "",
    });
    const event = completion(tenantId, "wf_xyz789");
    await publish(event);
    const [request] = await waitFor("the webhook", () => {
      const got = receivedFor(event.executionId);
      return got.length > 0 ? got : undefined;
    });
    const body = JSON.parse(request!.rawBody) as JsonObject;
    expect(Object.keys(body)).toEqual(["id", "type", "timestamp", "data", "links"]);
    expect(body).toEqual({
      id: expect.stringMatching(/^evt_[0-9a-z]{26}$/),
      type: "workflow.execution.completed",
      timestamp: expect.any(Number),
      data: {
        workflowId: "wf_xyz789",
        executionId: event.executionId,
        status: "success",
        level: "info",
        trigger: "api",
        startedAt: "2025-01-01T12:34:56.789Z",
        endedAt: "2025-01-01T12:34:57.123Z",
        totalDurationMs: 334,
        cost: {
          total: 0.00234,
          tokens: { prompt: 123, completion: 456, total: 579 },
          models: {
            "gpt-4o": {
              input: 0.001,
              output: 0.00134,
              total: 0.00234,
              tokens: { prompt: 123, completion: 456, total: 579 },
            },
          },
        },
        files: null,
      },
      links: {
        log: `/v1/logs?executionId=${event.executionId}`,
        execution: `/v1/logs/executions/${event.executionId}`,
      },
    });
    // Compact JSON: what the seed's receiver re-serialises is byte for byte what was sent.
    expect(JSON.stringify(body)).toBe(request!.rawBody);
    const headers = request!.headers;
    expect(headers["content-type"]).toBe("application/json");
    expect(headers["sim-event"]).toBe("workflow.execution.completed");
    expect(headers["sim-timestamp"]).toMatch(/^\d{13}$/);
    expect(headers["sim-signature"]).toBe(
      `t=${headers["sim-timestamp"]},v1=${crypto.createHmac("sha256", PLAIN_SECRET).update(`${headers["sim-timestamp"]}.${request!.rawBody}`).digest("hex")}`,
    );
    expect(
      verifyWebhookSignature(
        JSON.stringify(JSON.parse(request!.rawBody)),
        headers["sim-signature"]!,
        PLAIN_SECRET,
      ),
    ).toBe(true);
    expect(
      verifyWebhookSignature(
        JSON.stringify(JSON.parse(request!.rawBody)),
        headers["sim-signature"]!,
        "wrong",
      ),
    ).toBe(false);
    const python = execFileSync("python3", ["-c", PYTHON_VERIFIER, headers["sim-signature"]!, PLAIN_SECRET], {
      input: request!.rawBody,
    }).toString();
    expect(python.trim()).toBe("ok workflow.execution.completed");

    const delivery = await finishedDelivery(tenantId, sub.id);
    expect(delivery).toMatchObject({
      status: "succeeded",
      eventId: body.id,
      executionId: event.executionId,
      channel: "webhook",
    });
    expect(headers["sim-delivery-id"]).toBe(delivery.id);
    expect(headers["idempotency-key"]).toBe(delivery.id);
    expect(delivery.attempts).toHaveLength(1);
    expect(delivery.attempts[0]).toMatchObject({
      number: 1,
      statusCode: 200,
      responseSnippet: "ok",
      error: "",
    });
    // The optional parts were all off, so rate limits were never asked for.
    expect(limitsCalls.filter((c) => c.tenantId === tenantId)).toHaveLength(0);
  });

  it("adds finalOutput, traceSpans, rateLimits and usage only when asked", async () => {
    const tenantId = uniqueId("ws");
    await webhookSubscription(tenantId, {
      includeFinalOutput: true,
      includeTraceSpans: true,
      includeRateLimits: true,
      includeUsageData: true,
    });
    const event = completion(tenantId, uniqueId("wf"));
    await publish(event);
    const [request] = await waitFor("the webhook", () => {
      const got = receivedFor(event.executionId);
      return got.length > 0 ? got : undefined;
    });
    const data = (JSON.parse(request!.rawBody) as { data: JsonObject }).data;
    expect(data.finalOutput).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expect(data.traceSpans).toEqual([
      {
        id: "span_1",
        blockId: "greet",
        name: "Greet",
        type: "function",
        status: "success",
        startTime: "2025-01-01T12:34:56.789Z",
        endTime: "2025-01-01T12:34:56.799Z",
        duration: 10,
        output: "hi",
      },
    ]);
    expect(data.rateLimits).toEqual({
      sync: { requestsPerMinute: 60, maxBurst: 120, remaining: 118, resetAt: "2025-01-01T12:35:56.789Z" },
      async: { requestsPerMinute: 200, maxBurst: 400, remaining: 398, resetAt: "2025-01-01T12:35:56.789Z" },
    });
    expect(data.usage).toEqual({ currentPeriodCost: 1.234, limit: 10, plan: "pro", isExceeded: false });
    expect(limitsCalls.filter((c) => c.tenantId === tenantId)).toHaveLength(1);
  });

  it("sends only what the workflow selection and the level and trigger filters let through", async () => {
    const tenantId = uniqueId("ws");
    const watched = uniqueId("wf");
    const sub = await webhookSubscription(tenantId, {
      allWorkflows: false,
      workflowIds: [watched],
      levelFilter: ["error"],
      triggerFilter: ["api", "schedule"],
    });
    const otherWorkflow = completion(tenantId, uniqueId("wf"), { status: ExecutionStatus.ERROR });
    const success = completion(tenantId, watched);
    const manual = completion(tenantId, watched, { status: ExecutionStatus.ERROR, trigger: Trigger.MANUAL });
    const otherTenant = completion(uniqueId("ws"), watched, { status: ExecutionStatus.ERROR });
    const match = completion(tenantId, watched, { status: ExecutionStatus.ERROR, trigger: Trigger.SCHEDULE });
    let lastSeq = 0;
    for (const e of [otherWorkflow, success, manual, otherTenant, match]) lastSeq = await publish(e);
    await waitFor("the matching webhook", () =>
      receivedFor(match.executionId).length > 0 ? true : undefined,
    );
    const body = JSON.parse(receivedFor(match.executionId)[0]!.rawBody) as { data: JsonObject };
    expect(body.data).toMatchObject({ status: "error", level: "error", trigger: "schedule" });
    await waitConsumed(lastSeq);
    expect((await deliveriesOf(tenantId, sub.id)).map((d) => d.executionId)).toEqual([match.executionId]);
    for (const e of [otherWorkflow, success, manual, otherTenant])
      expect(receivedFor(e.executionId)).toHaveLength(0);
  });

  it("retries 5xx and 429 on the schedule with the same ids and body, honouring Retry-After", async () => {
    const tenantId = uniqueId("ws");
    const sub = await webhookSubscription(tenantId);
    const event = completion(tenantId, uniqueId("wf"));
    receiver.respond = (req) => {
      if (!req.rawBody.includes(event.executionId)) return { status: 200 };
      const n = receivedFor(event.executionId).length;
      if (n === 1) return { status: 500, body: "boom" };
      if (n === 2) return { status: 429, headers: { "retry-after": "1" }, body: "slow down" };
      return { status: 200, body: "ok" };
    };
    try {
      await publish(event);
      const delivery = await waitFor(
        "a delivered retry",
        async () => {
          const [d] = await deliveriesOf(tenantId, sub.id);
          return d?.status === "succeeded" ? d : undefined;
        },
        30_000,
      );
      const requests = receivedFor(event.executionId);
      expect(requests).toHaveLength(3);
      expect(new Set(requests.map((r) => r.rawBody)).size).toBe(1);
      expect(new Set(requests.map((r) => r.headers["sim-delivery-id"]))).toEqual(new Set([delivery.id]));
      expect(new Set(requests.map((r) => r.headers["idempotency-key"]))).toEqual(new Set([delivery.id]));
      for (const r of requests) {
        expect(
          verifyWebhookSignature(
            JSON.stringify(JSON.parse(r.rawBody)),
            r.headers["sim-signature"]!,
            PLAIN_SECRET,
          ),
        ).toBe(true);
      }
      // First retry after ≥ 100 ms; the 429's Retry-After (1 s) stretches the second beyond its 150 ms.
      expect(requests[1]!.receivedAt - requests[0]!.receivedAt).toBeGreaterThanOrEqual(100);
      expect(requests[2]!.receivedAt - requests[1]!.receivedAt).toBeGreaterThanOrEqual(950);
      expect(delivery.attempts.map((a) => [a.number, a.statusCode, a.responseSnippet])).toEqual([
        [1, 500, "boom"],
        [2, 429, "slow down"],
        [3, 200, "ok"],
      ]);
    } finally {
      receiver.respond = () => ({ status: 200, body: "ok" });
    }
  });

  it("stops after 5 attempts, and does not retry 4xx or redirects", async () => {
    const tenantId = uniqueId("ws");
    const always500 = await webhookSubscription(tenantId, {
      url: `http://127.0.0.1:${receiver.port}/always500`,
    });
    const badRequest = await webhookSubscription(tenantId, { url: `http://127.0.0.1:${receiver.port}/400` });
    const redirect = await webhookSubscription(tenantId, {
      url: `http://127.0.0.1:${receiver.port}/redirect`,
    });
    receiver.respond = (req) =>
      req.path === "/always500"
        ? { status: 503 }
        : req.path === "/400"
          ? { status: 400, body: "bad" }
          : req.path === "/redirect"
            ? { status: 301, headers: { location: `${receiver.url}` } }
            : { status: 200 };
    try {
      const event = completion(tenantId, uniqueId("wf"));
      await publish(event);
      const exhausted = await finishedDelivery(tenantId, always500.id);
      expect(exhausted.status).toBe("failed");
      expect(exhausted.attempts.map((a) => a.statusCode)).toEqual([503, 503, 503, 503, 503]);
      const refused = await finishedDelivery(tenantId, badRequest.id);
      expect(refused).toMatchObject({ status: "failed" });
      expect(refused.attempts.map((a) => a.statusCode)).toEqual([400]);
      const redirected = await finishedDelivery(tenantId, redirect.id);
      expect(redirected.attempts.map((a) => [a.statusCode, a.error])).toEqual([
        [301, "redirect (301) not followed"],
      ]);
      // The redirect target never saw this execution's event.
      expect(
        receiver.received.filter((r) => r.path === "/hook" && r.rawBody.includes(event.executionId)),
      ).toHaveLength(0);
    } finally {
      receiver.respond = () => ({ status: 200, body: "ok" });
    }
  });

  it("retries a timed-out attempt", async () => {
    const tenantId = uniqueId("ws");
    const sub = await webhookSubscription(tenantId, { url: `http://127.0.0.1:${receiver.port}/slow` });
    let calls = 0;
    receiver.respond = async (req) => {
      if (req.path !== "/slow") return { status: 200 };
      calls += 1;
      if (calls === 1) await new Promise((resolve) => setTimeout(resolve, 3_000));
      return { status: 200, body: "ok" };
    };
    try {
      await publish(completion(tenantId, uniqueId("wf")));
      const delivery = await finishedDelivery(tenantId, sub.id);
      expect(delivery.status).toBe("succeeded");
      expect(delivery.attempts).toHaveLength(2);
      expect(delivery.attempts[0]).toMatchObject({ statusCode: 0, error: "request timed out after 1500 ms" });
    } finally {
      receiver.respond = () => ({ status: 200, body: "ok" });
    }
  });

  it("disables the subscription on 410 Gone and announces it", async () => {
    const tenantId = uniqueId("ws");
    const sub = await webhookSubscription(tenantId, { url: `http://127.0.0.1:${receiver.port}/gone` });
    receiver.respond = (req) => (req.path === "/gone" ? { status: 410 } : { status: 200 });
    const announcements = nc.subscribe(names.notificationDisabled, { max: 1 });
    try {
      await publish(completion(tenantId, uniqueId("wf")));
      const delivery = await finishedDelivery(tenantId, sub.id);
      expect(delivery.attempts.map((a) => a.statusCode)).toEqual([410]);
      const { subscription } = await notifier.getSubscription({ tenantId, id: sub.id });
      expect(subscription).toMatchObject({ enabled: false, disabledReason: "endpoint answered 410 Gone" });
      for await (const m of announcements) {
        expect(fromBinary(NotificationDisabledSchema, m.data)).toMatchObject({
          tenantId,
          subscriptionId: sub.id,
        });
      }
      // Re-enabling clears the reason.
      const { subscription: again } = await notifier.updateSubscription({
        tenantId,
        id: sub.id,
        subscription: { enabled: true },
        updateMask: { paths: ["enabled"] },
      });
      expect(again).toMatchObject({ enabled: true, disabledReason: "" });
    } finally {
      receiver.respond = () => ({ status: 200, body: "ok" });
    }
  });

  it("redelivers with the same delivery id and event, and test-sends", async () => {
    const tenantId = uniqueId("ws");
    const sub = await webhookSubscription(tenantId);
    const event = completion(tenantId, uniqueId("wf"));
    await publish(event);
    const first = await finishedDelivery(tenantId, sub.id);
    const { delivery } = await notifier.redeliver({ tenantId, subscriptionId: sub.id, deliveryId: first.id });
    expect(delivery?.id).toBe(first.id);
    await waitFor("the redelivery", () => (receivedFor(event.executionId).length === 2 ? true : undefined));
    const [a, b] = receivedFor(event.executionId);
    expect(b!.rawBody).toBe(a!.rawBody);
    expect(b!.headers["sim-delivery-id"]).toBe(first.id);
    const after = await waitFor("two attempts", async () => {
      const [d] = await deliveriesOf(tenantId, sub.id);
      return d?.attempts.length === 2 && d.status === "succeeded" ? d : undefined;
    });
    expect(after.attempts.map((x) => x.number)).toEqual([1, 2]);

    const test = await notifier.testSubscription({ tenantId, id: sub.id });
    expect(test.delivery?.eventType).toBe("notification.test");
    const testRequest = await waitFor("the test event", () =>
      receiver.received.find((r) => r.headers["sim-delivery-id"] === test.delivery?.id),
    );
    expect(JSON.parse(testRequest.rawBody)).toMatchObject({
      type: "notification.test",
      data: { subscriptionId: sub.id },
    });
    expect(testRequest.headers["sim-event"]).toBe("notification.test");
    // Another tenant sees nothing of it.
    await expect(
      notifier.redeliver({ tenantId: uniqueId("ws"), subscriptionId: sub.id, deliveryId: first.id }),
    ).rejects.toThrow(/not found/);
  });

  it("adds Standard Webhooks headers that the standardwebhooks package verifies", async () => {
    const tenantId = uniqueId("ws");
    await webhookSubscription(tenantId, { secret: SECRET, standardWebhooks: true });
    const event = completion(tenantId, uniqueId("wf"));
    await publish(event);
    const request = await waitFor("the webhook", () => receivedFor(event.executionId)[0]);
    const verified = new Webhook(SECRET).verify(request.rawBody, {
      "webhook-id": request.headers["webhook-id"]!,
      "webhook-timestamp": request.headers["webhook-timestamp"]!,
      "webhook-signature": request.headers["webhook-signature"]!,
    });
    expect(verified).toMatchObject({ type: "workflow.execution.completed" });
    expect(request.headers["webhook-id"]).toBe(request.headers["sim-delivery-id"]);
    expect(verifyWebhookSignature(request.rawBody, request.headers["sim-signature"]!, SECRET)).toBe(true);
  });

  it("notifies an alert-rule subscription only when its rule fires, then cools down", async () => {
    const tenantId = uniqueId("ws");
    const workflowId = uniqueId("wf");
    const sub = await webhookSubscription(tenantId, {
      url: `http://127.0.0.1:${receiver.port}/alerts`,
      alertRule: { type: AlertRuleType.CONSECUTIVE_FAILURES, threshold: 2 },
    });
    const failures = [1, 2, 3].map((i) =>
      completion(tenantId, workflowId, { status: ExecutionStatus.ERROR, laterMs: i * 1000 }),
    );
    // fail, success, fail: never two in a row yet.
    await waitConsumed(await publish(completion(tenantId, workflowId, { status: ExecutionStatus.ERROR })));
    await waitConsumed(await publish(completion(tenantId, workflowId, { laterMs: 500 })));
    await waitConsumed(await publish(failures[0]!));
    expect(await deliveriesOf(tenantId, sub.id)).toEqual([]);
    await publish(failures[1]!);
    const alert = await waitFor("the alert", () => receiver.received.find((r) => r.path === "/alerts"));
    const body = JSON.parse(alert.rawBody) as JsonObject;
    expect(body).toMatchObject({
      type: "workflow.execution.completed",
      data: { executionId: failures[1]!.executionId, status: "error" },
      alert: { rule: "consecutiveFailures", threshold: 2, observed: 2 },
    });
    // A third failure within the hour is inside the cooldown.
    const third = failures[2]!;
    await waitConsumed(await publish(third));
    expect(receiver.received.filter((r) => r.path === "/alerts")).toHaveLength(1);
    expect((await deliveriesOf(tenantId, sub.id)).map((d) => d.executionId)).toEqual([
      failures[1]!.executionId,
    ]);
  });

  it("refuses private targets unless allowed", async () => {
    const outcome = await sendWebhook(
      { url: receiver.url, secret: undefined, standardWebhooks: false },
      { deliveryId: "dlv_x", eventType: "notification.test", body: "{}" },
      { timeoutMs: 1000, allowPrivate: false, nowMs: Date.now() },
    );
    expect(outcome).toMatchObject({ verdict: "fail", statusCode: 0 });
    expect(outcome.error).toMatch(/^refused: .*loopback/);
    const metadata = await sendWebhook(
      { url: "http://169.254.169.254/latest/meta-data/", secret: undefined, standardWebhooks: false },
      { deliveryId: "dlv_x", eventType: "notification.test", body: "{}" },
      { timeoutMs: 1000, allowPrivate: false, nowMs: Date.now() },
    );
    expect(metadata.error).toMatch(/link-local/);
  });
});

describe("email and Slack", () => {
  it("emails a readable text and HTML message through SMTP", async () => {
    const tenantId = uniqueId("ws");
    const { subscription } = await notifier.createSubscription({
      tenantId,
      subscription: {
        channel: { case: "email", value: { to: ["ops@example.com", "dev@example.com"] } },
        allWorkflows: true,
        enabled: true,
      },
    });
    const event = completion(tenantId, "wf_mail", { status: ExecutionStatus.ERROR });
    await publish(event);
    const mail = await waitFor("the email", () => smtp.mails.find((m) => m.raw.includes(event.executionId)));
    expect(mail.to.sort()).toEqual(["dev@example.com", "ops@example.com"]);
    expect(mail.from).toBe("alerts@flowplane.test");
    expect(mail.raw).toMatch(/Subject: Workflow wf_mail failed/);
    expect(mail.raw).toMatch(/Content-Type: text\/plain/);
    expect(mail.raw).toMatch(/Content-Type: text\/html/);
    expect(mail.raw).toContain("Status: error");
    const delivery = await finishedDelivery(tenantId, subscription!.id);
    expect(delivery).toMatchObject({ status: "succeeded", channel: "email" });
    expect(delivery.attempts[0]?.statusCode).toBe(250);
  });

  it("posts a formatted message to a Slack incoming webhook, whose URL is never returned", async () => {
    const tenantId = uniqueId("ws");
    const { subscription } = await notifier.createSubscription({
      tenantId,
      subscription: {
        channel: { case: "slack", value: { webhookUrl: slack.url } },
        allWorkflows: true,
        enabled: true,
      },
    });
    expect(subscription?.channel).toMatchObject({
      case: "slack",
      value: { webhookUrl: "", hasWebhookUrl: true },
    });
    const event = completion(tenantId, "wf_slack");
    await publish(event);
    const request = await waitFor("the Slack message", () =>
      slack.received.find((r) => r.rawBody.includes(event.executionId)),
    );
    expect(request.path).toBe("/services/T000/B000/XXXX");
    const message = JSON.parse(request.rawBody) as { text: string; blocks: Array<{ type: string }> };
    expect(message.text).toBe("Workflow wf_slack succeeded");
    expect(message.blocks.map((b) => b.type)).toEqual(["header", "section"]);
    expect(await finishedDelivery(tenantId, subscription!.id)).toMatchObject({
      status: "succeeded",
      channel: "slack",
    });
  });
});

describe("restart", () => {
  it("keeps a pending retry across a notifier restart", async () => {
    const tenantId = uniqueId("ws");
    const sub = await webhookSubscription(tenantId, { url: `http://127.0.0.1:${receiver.port}/restart` });
    receiver.respond = (req) =>
      req.path !== "/restart"
        ? { status: 200 }
        : receiver.received.filter((r) => r.path === "/restart").length === 1
          ? { status: 503, headers: { "retry-after": "3" } }
          : { status: 200, body: "back" };
    try {
      await publish(completion(tenantId, uniqueId("wf")));
      await waitFor("the first attempt", async () => {
        const [d] = await deliveriesOf(tenantId, sub.id);
        return d?.status === "retrying" ? d : undefined;
      });
      await running.stop();
      running = await startService(notifierService, serviceEnv());
      notifier = createRpcClient(NotifierService, `http://127.0.0.1:${running.port}`);
      const delivery = await finishedDelivery(tenantId, sub.id);
      expect(delivery.status).toBe("succeeded");
      expect(delivery.attempts.map((a) => a.statusCode)).toEqual([503, 200]);
      const [first, second] = receiver.received.filter((r) => r.path === "/restart");
      expect(second!.headers["idempotency-key"]).toBe(first!.headers["idempotency-key"]);
      expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(2900);
    } finally {
      receiver.respond = () => ({ status: 200, body: "ok" });
    }
  });
});
