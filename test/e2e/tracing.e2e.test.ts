import { SpanKind } from "@opentelemetry/api";
import type { InMemorySpanExporter, ReadableSpan } from "@opentelemetry/sdk-trace";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoWorkflowState } from "../../gateway/cli/demo-workflow.js";
import { WorkflowService } from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { createLogger } from "../../services/platform/log.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { installInMemoryTracing } from "../../services/platform/telemetry.js";
import { waitFor } from "../helpers/infra.js";
import { type Stack, startStack } from "../helpers/stack.js";
import { startWebhookReceiver, type WebhookReceiver } from "../helpers/webhook-receiver.js";

/**
 * Issue 8's trace: one REST call → gateway → executor (RPC) → completion on NATS → notifier →
 * delivery queue → the customer's webhook, all under one trace id. The services run in this process
 * so one in-memory exporter sees every span; the hops between them are real h2c RPC, JetStream and HTTP.
 */
let exporter: InMemorySpanExporter;
let stack: Stack;
let namespace: string;
let baseUrl: string;
let receiver: WebhookReceiver;
let apiKey: string;
let workflowId: string;

beforeAll(async () => {
  exporter = installInMemoryTracing();
  stack = await startStack({
    serviceDefaults: false,
    env: {
      executor: { EXECUTOR_FUNCTION_WORKERS: "1", EXECUTOR_OUTBOX_INTERVAL_MS: "100" },
      notifier: (urls) => ({ AUTH_URL: urls.auth!, NOTIFIER_ALLOW_PRIVATE_TARGETS: "true" }),
    },
    gatewayLog: createLogger("gateway", "silent", { requestIdFromContext: false }),
    instrument: true,
    tenant: "Traced",
  });
  namespace = stack.namespace;
  baseUrl = stack.baseUrl;
  apiKey = stack.adminKey;
  receiver = await startWebhookReceiver();

  const workflows = createRpcClient(WorkflowService, stack.urls.executor!);
  const { workflow } = await workflows.createWorkflow({
    tenantId: stack.tenantId,
    name: "traced",
    description: "",
    state: demoWorkflowState(),
  });
  workflowId = workflow!.id;
});

afterAll(async () => {
  await stack?.stop();
  await receiver?.close();
});

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": apiKey, ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/;

function spansOf(traceId: string): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
}

describe("one trace from the REST call to the webhook it causes", () => {
  it("carries the gateway's trace id through the executor, NATS and the notifier to the receiver", async () => {
    const subscribed = await post("/api/v1/notifications", {
      name: "traced hook",
      webhook: { url: receiver.url },
      allWorkflows: true,
    });
    expect(subscribed.status).toBe(201);
    exporter.reset();

    const executed = await post("/api/executeWorkflow", {
      workflowId,
      version: 1,
      input: { "First Name": "Ada", Age: 36 },
    });
    expect(executed.status).toBe(200);
    const executionId = executed.body.executionId as string;

    const delivered = await waitFor("the webhook for the execution", () =>
      receiver.received.find((r) => r.rawBody.includes(executionId)),
    );
    const match = TRACEPARENT.exec(delivered.headers.traceparent ?? "");
    expect(match, `traceparent header: ${delivered.headers.traceparent}`).not.toBeNull();
    const traceId = match![1]!;

    // The gateway's server span for the REST call started this trace.
    const serverSpan = await waitFor("the gateway's server span", () =>
      exporter
        .getFinishedSpans()
        .find((s) => s.kind === SpanKind.SERVER && s.name === "POST /api/executeWorkflow"),
    );
    expect(serverSpan.spanContext().traceId).toBe(traceId);
    expect(serverSpan.parentSpanContext).toBeUndefined();
    expect(serverSpan.attributes["http.response.status_code"]).toBe(200);

    // The delivery's consumer span ends last: after the receiver answered and the attempt was stored.
    await waitFor("the delivery consumer span", () =>
      spansOf(traceId).find((s) => s.name === "notifier-delivery process"),
    );
    const webhookSpan = spansOf(traceId).find((s) => s.name === "webhook POST");
    if (!webhookSpan) throw new Error("no webhook span in the trace");
    // The receiver's traceparent names the webhook call's own span.
    expect(webhookSpan.spanContext().spanId).toBe(match![2]);
    expect(webhookSpan.kind).toBe(SpanKind.CLIENT);

    const spans = spansOf(traceId);
    const named = (scope: string, kind: SpanKind, name?: string) =>
      spans.filter(
        (s) =>
          s.instrumentationScope.name === `flowplane.${scope}` &&
          s.kind === kind &&
          (name === undefined || s.name === name),
      );
    // The executor served Execute in this trace and published the completion in it.
    const execute = named("executor", SpanKind.SERVER, "flowplane.executor.v1.ExecutionService/Execute");
    expect(execute).toHaveLength(1);
    const completionPublish = named("executor", SpanKind.PRODUCER).find((s) =>
      s.name.startsWith(`publish ${namespace}.execution.completed.`),
    );
    expect(completionPublish, spans.map((s) => s.name).join(", ")).toBeDefined();
    // The notifier consumed it and queued the delivery, then its delivery consumer made the call.
    expect(named("notifier", SpanKind.CONSUMER, "notifier process")).toHaveLength(1);
    expect(named("notifier", SpanKind.PRODUCER).some((s) => s.name.includes(".delivery."))).toBe(true);
    expect(named("notifier", SpanKind.CONSUMER, "notifier-delivery process")).toHaveLength(1);
    // Authorization went to auth in the same trace.
    expect(named("auth", SpanKind.SERVER).length).toBeGreaterThan(0);

    // Every span of the trace hangs off another span of it (no broken link), rooted at the gateway.
    const ids = new Set(spans.map((s) => s.spanContext().spanId));
    for (const span of spans) {
      if (span === serverSpan) continue;
      expect(ids.has(span.parentSpanContext?.spanId ?? ""), `parent of ${span.name}`).toBe(true);
    }
  });

  it("stores the trace with the execution, so an outbox republish continues it", async () => {
    // The caller names the trace, so its spans are easy to pick out.
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const executed = await post(
      "/api/executeWorkflow",
      { workflowId, input: { "First Name": "Outbox", Age: 5 } },
      { traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    );
    expect(executed.status).toBe(200);
    const executionId = executed.body.executionId as string;
    const execute = await waitFor("the Execute server span", () =>
      spansOf(traceId).find((s) => s.name === "flowplane.executor.v1.ExecutionService/Execute"),
    );
    const client = new pg.Client({ connectionString: stack.databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ traceparent: string | null }>(
        "select traceparent from executor.executions where id = $1",
        [executionId],
      );
      expect(rows[0]?.traceparent).toMatch(new RegExp(`^00-${traceId}-${execute.spanContext().spanId}-01$`));
      // As if the first publish had not been acknowledged: the sweeper republishes it later.
      await client.query(
        "update executor.executions set published_at = null, started_at = now() - interval '1 hour' where id = $1",
        [executionId],
      );
    } finally {
      await client.end();
    }
    const republished = await waitFor("the outbox's publish in the request's trace", () => {
      const publishes = spansOf(traceId).filter(
        (s) => s.kind === SpanKind.PRODUCER && s.name.startsWith(`publish ${namespace}.execution.completed.`),
      );
      return publishes.length >= 2 ? publishes : undefined;
    });
    // The sweeper's publish hangs off the stored span: the Execute call that ran the workflow.
    expect(republished.every((s) => s.parentSpanContext?.spanId === execute.spanContext().spanId)).toBe(true);
  });

  it("continues a caller's traceparent and starts a new trace for a malformed one", async () => {
    const callerTrace = "0af7651916cd43dd8448eb211c80319c";
    const continued = await post(
      "/api/executeWorkflow",
      { workflowId, input: { "First Name": "Lin", Age: 1 } },
      { traceparent: `00-${callerTrace}-b7ad6b7169203331-01` },
    );
    expect(continued.status).toBe(200);
    const server = await waitFor("the continued server span", () =>
      spansOf(callerTrace).find((s) => s.kind === SpanKind.SERVER && s.name === "POST /api/executeWorkflow"),
    );
    expect(server.parentSpanContext?.spanId).toBe("b7ad6b7169203331");

    const before = exporter.getFinishedSpans().length;
    const malformed = await post(
      "/api/executeWorkflow",
      { workflowId, input: { "First Name": "Bo", Age: 2 } },
      { traceparent: "not-a-traceparent" },
    );
    expect(malformed.status).toBe(200);
    const fresh = await waitFor("a new root server span", () =>
      exporter
        .getFinishedSpans()
        .slice(before)
        .find((s) => s.kind === SpanKind.SERVER && s.name === "POST /api/executeWorkflow"),
    );
    expect(fresh.parentSpanContext).toBeUndefined();
  });
});
