import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ExecutionCompletedSchema,
  ExecutionStatus,
  Trigger,
} from "../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { natsNames } from "../services/platform/nats.js";
import { TEST_NATS_URL, waitFor } from "../test/helpers/infra.js";
import { type Answer, type Stack, startStack } from "../test/helpers/stack.js";
import { startWebhookReceiver, type WebhookReceiver } from "../test/helpers/webhook-receiver.js";

let stack: Stack;
let nc: NatsConnection;
let receiver: WebhookReceiver;
let tenantId: string;
let adminKey: string;
let appWriteKey: string;
let readKey: string;
let logsKey: string;
let otherKey: string;

async function call(method: string, path: string, key: string | undefined, body?: unknown): Promise<Answer> {
  const res = await stack.send(method, path, { key, json: body });
  const parsed = res.text === "" ? undefined : JSON.parse(res.text);
  if (res.status >= 400) expect(typeof parsed?.error, `${method} ${path}: ${res.text}`).toBe("string");
  expect(res.status, `${method} ${path}: ${res.text}`).not.toBe(500);
  return { ...res, body: parsed };
}

beforeAll(async () => {
  stack = await startStack({
    services: ["auth", "notifier"],
    serviceDefaults: false,
    env: {
      auth: { AUTH_PLAN_PRO_API: "100000/100000" },
      notifier: (urls) => ({
        AUTH_URL: urls.auth!,
        NOTIFIER_ALLOW_PRIVATE_TARGETS: "true",
        NOTIFIER_MAX_SUBSCRIPTIONS: "3",
      }),
    },
    gateway: { bodyLimitBytes: 64 * 1024 },
    tenant: "Notifications",
  });
  receiver = await startWebhookReceiver();
  nc = await connect({ servers: TEST_NATS_URL });

  tenantId = stack.tenantId;
  adminKey = stack.adminKey;
  otherKey = (await stack.newTenant("Other")).adminKey;
  const app = (scopes: string[]) => stack.appKey(tenantId, scopes.join("+"), scopes);
  appWriteKey = await app(["notifications:write", "notifications:read"]);
  readKey = await app(["notifications:read"]);
  logsKey = await app(["logs:read"]);
});

afterAll(async () => {
  await stack?.stop();
  await nc?.close();
  await receiver?.close();
});

describe("notifications REST API", () => {
  it("creates, reads, updates and deletes a webhook subscription with an app token", async () => {
    const created = await call("POST", "/api/v1/notifications", appWriteKey, {
      name: "ops hook",
      webhook: { url: receiver.url, secret: "s3cret" },
      allWorkflows: true,
      levelFilter: ["error"],
      includeFinalOutput: true,
    });
    expect(created.status).toBe(201);
    const sub = created.body.data;
    expect(sub).toMatchObject({
      id: expect.stringMatching(/^sub_/),
      name: "ops hook",
      channel: "webhook",
      webhook: { url: receiver.url, hasSecret: true, standardWebhooks: false },
      allWorkflows: true,
      workflowIds: [],
      levelFilter: ["error"],
      triggerFilter: [],
      includeFinalOutput: true,
      includeTraceSpans: false,
      enabled: true,
      alertRule: null,
      disabledReason: null,
    });
    expect(JSON.stringify(created.body)).not.toContain("s3cret");

    const fetched = await call("GET", `/api/v1/notifications/${sub.id}`, readKey);
    expect(fetched.status).toBe(200);
    expect(fetched.body.data).toEqual(sub);
    const listed = await call("GET", "/api/v1/notifications", readKey);
    expect(listed.body.data.map((s: { id: string }) => s.id)).toContain(sub.id);

    const patched = await call("PATCH", `/api/v1/notifications/${sub.id}`, appWriteKey, {
      enabled: false,
      alertRule: { type: "consecutiveFailures", threshold: 3 },
    });
    expect(patched.status).toBe(200);
    expect(patched.body.data).toMatchObject({
      enabled: false,
      alertRule: { type: "consecutiveFailures", threshold: 3 },
      webhook: { hasSecret: true },
      levelFilter: ["error"],
    });

    expect((await call("DELETE", `/api/v1/notifications/${sub.id}`, appWriteKey)).status).toBe(204);
    expect((await call("GET", `/api/v1/notifications/${sub.id}`, readKey)).status).toBe(404);
  });

  it("answers 401 without a key and 403 without the scope", async () => {
    expect((await call("GET", "/api/v1/notifications", undefined)).status).toBe(401);
    expect((await call("GET", "/api/v1/notifications", "fp_live_nope")).status).toBe(401);
    expect((await call("GET", "/api/v1/notifications", logsKey)).status).toBe(403);
    const write = await call("POST", "/api/v1/notifications", readKey, {
      email: { to: ["a@b.co"] },
      allWorkflows: true,
    });
    expect(write.status).toBe(403);
  });

  it("answers 400 naming the field for bad input", async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ allWorkflows: true }, /exactly one of webhook, email or slack/],
      [{ webhook: { url: "ftp://x" }, allWorkflows: true }, /webhook\.url/],
      [
        { email: { to: Array.from({ length: 11 }, (_, i) => `u${i}@example.com`) }, allWorkflows: true },
        /email\.to/,
      ],
      [{ email: { to: ["not-an-address"] }, allWorkflows: true }, /email\.to/],
      [{ slack: { webhookUrl: receiver.url } }, /workflowIds/],
      [{ slack: { webhookUrl: receiver.url }, allWorkflows: true, levelFilter: ["warn"] }, /levelFilter/],
      [
        {
          slack: { webhookUrl: receiver.url },
          allWorkflows: true,
          alertRule: { type: "failureRate", threshold: 50 },
        },
        /windowHours/,
      ],
      [{ slack: { webhookUrl: receiver.url }, allWorkflows: true, bogus: 1 }, /bogus/],
      [
        { webhook: { url: receiver.url, secret: "plain", standardWebhooks: true }, allWorkflows: true },
        /whsec_/,
      ],
    ];
    for (const [body, message] of cases) {
      const answer = await call("POST", "/api/v1/notifications", adminKey, body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.body.error).toMatch(message);
    }
    expect((await call("GET", "/api/v1/notifications/sub_x/deliveries?limit=500", adminKey)).status).toBe(
      400,
    );
    expect((await call("PATCH", "/api/v1/notifications/sub_x", adminKey, {})).status).toBe(400);
  });

  it("keeps workspaces apart and enforces the per-workspace cap", async () => {
    const mine = await call("POST", "/api/v1/notifications", adminKey, {
      email: { to: ["ops@example.com"] },
      allWorkflows: true,
    });
    expect(mine.status).toBe(201);
    const id = mine.body.data.id;
    expect((await call("GET", `/api/v1/notifications/${id}`, otherKey)).status).toBe(404);
    expect((await call("PATCH", `/api/v1/notifications/${id}`, otherKey, { enabled: false })).status).toBe(
      404,
    );
    expect((await call("DELETE", `/api/v1/notifications/${id}`, otherKey)).status).toBe(404);
    expect((await call("GET", `/api/v1/notifications/${id}/deliveries`, otherKey)).status).toBe(404);
    expect((await call("GET", "/api/v1/notifications", otherKey)).body.data).toEqual([]);

    const existing = (await call("GET", "/api/v1/notifications", adminKey)).body.data.length;
    for (let i = existing; i < 3; i++) {
      expect(
        (
          await call("POST", "/api/v1/notifications", adminKey, {
            email: { to: ["x@example.com"] },
            allWorkflows: true,
          })
        ).status,
      ).toBe(201);
    }
    const over = await call("POST", "/api/v1/notifications", adminKey, {
      email: { to: ["x@example.com"] },
      allWorkflows: true,
    });
    expect(over.status).toBe(429);
    expect(over.body.error).toMatch(/at most 3 notifications/);
    for (const s of (await call("GET", "/api/v1/notifications", adminKey)).body.data) {
      await call("DELETE", `/api/v1/notifications/${s.id}`, adminKey);
    }
  });

  it("lists deliveries with their attempts, redelivers and test-sends", async () => {
    const created = await call("POST", "/api/v1/notifications", appWriteKey, {
      webhook: { url: receiver.url },
      workflowIds: ["wf_rest"],
    });
    const id = created.body.data.id;
    expect(created.body.data.webhook.hasSecret).toBe(false);
    const executionId = `exec_${randomBytes(6).toString("hex")}`;
    const event = create(ExecutionCompletedSchema, {
      executionId,
      tenantId,
      workflowId: "wf_rest",
      status: ExecutionStatus.SUCCESS,
      trigger: Trigger.API,
      startedAt: timestampFromDate(new Date()),
      endedAt: timestampFromDate(new Date()),
    });
    await nc
      .jetstream()
      .publish(
        natsNames(stack.namespace).executionCompleted(tenantId),
        toBinary(ExecutionCompletedSchema, event),
        {
          msgID: `${executionId}:completed`,
        },
      );
    const listed = await waitFor("a succeeded delivery", async () => {
      const answer = await call("GET", `/api/v1/notifications/${id}/deliveries`, readKey);
      return answer.body.data[0]?.status === "succeeded" ? answer.body : undefined;
    });
    const delivery = listed.data[0];
    expect(delivery).toMatchObject({
      id: expect.stringMatching(/^dlv_/),
      eventId: expect.stringMatching(/^evt_/),
      eventType: "workflow.execution.completed",
      executionId,
      workflowId: "wf_rest",
      channel: "webhook",
      nextAttemptAt: null,
      attempts: [{ number: 1, statusCode: 200, responseSnippet: "ok", error: null }],
    });
    expect(listed.nextCursor).toBeNull();
    const request = receiver.received.find((r) => r.headers["sim-delivery-id"] === delivery.id);
    expect(request?.headers["sim-signature"]).toBeUndefined();

    const again = await call(
      "POST",
      `/api/v1/notifications/${id}/deliveries/${delivery.id}/redeliver`,
      appWriteKey,
    );
    expect(again.status).toBe(202);
    expect(again.body.data.id).toBe(delivery.id);
    await waitFor("the redelivery", () =>
      receiver.received.filter((r) => r.headers["sim-delivery-id"] === delivery.id).length === 2
        ? true
        : undefined,
    );
    expect(
      (await call("POST", `/api/v1/notifications/${id}/deliveries/dlv_unknown/redeliver`, appWriteKey))
        .status,
    ).toBe(404);
    expect(
      (await call("POST", `/api/v1/notifications/${id}/deliveries/${delivery.id}/redeliver`, readKey)).status,
    ).toBe(403);

    const test = await call("POST", `/api/v1/notifications/${id}/test`, appWriteKey);
    expect(test.status).toBe(202);
    expect(test.body.data.eventType).toBe("notification.test");
    await waitFor("the test event", () =>
      receiver.received.find((r) => r.headers["sim-delivery-id"] === test.body.data.id),
    );
    expect((await call("POST", "/api/v1/notifications/sub_unknown/test", appWriteKey)).status).toBe(404);
  });
});
