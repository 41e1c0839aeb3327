import http from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import type { Interceptor } from "@connectrpc/connect";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteNamespaceStreams, TEST_NATS_URL, testNamespace, waitFor } from "../../test/helpers/infra.js";
import { Health, ServingStatus } from "./health.js";
import { createLogger, requestContext } from "./log.js";
import { tracedJetStream } from "./nats.js";
import { createRpcClient, rpcServerTracing, startRpcServer } from "./rpc.js";
import {
  flushTelemetry,
  inSpan,
  SpanKind,
  setupTelemetry,
  tracingEnabled,
  withStoredTraceparent,
} from "./telemetry.js";

/**
 * Tracing is set up once per process, so this file runs in order: first everything with tracing off
 * (the default), then with an OTLP endpoint — a local HTTP server standing in for the collector.
 */
let collector: http.Server;
let collectorUrl: string;
const exports: { path: string; bytes: number }[] = [];
let nc: NatsConnection;
const namespace = testNamespace();
const seenHeaders: Record<string, string | null>[] = [];
let rpcUrl: string;
let closeRpc: () => Promise<void>;

// Records what the client sends, as the callee sees it.
const recordHeaders: Interceptor = (next) => async (req) => {
  seenHeaders.push({ traceparent: req.header.get("traceparent") });
  return next(req);
};

beforeAll(async () => {
  collector = http.createServer((req, res) => {
    let bytes = 0;
    req.on("data", (c: Buffer) => {
      bytes += c.length;
    });
    req.on("end", () => {
      exports.push({ path: req.url ?? "", bytes });
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  collectorUrl = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
  nc = await connect({ servers: TEST_NATS_URL });
  const server = await startRpcServer({
    port: 0,
    host: "127.0.0.1",
    routes(router) {
      router.service(Health, { check: () => ({ status: ServingStatus.SERVING }), async *watch() {} });
    },
    interceptors: [rpcServerTracing("unit"), recordHeaders],
  });
  rpcUrl = `http://127.0.0.1:${server.port}`;
  closeRpc = () => server.close(1000);
});

afterAll(async () => {
  await closeRpc?.();
  await nc?.close();
  await deleteNamespaceStreams(namespace);
  collector?.closeAllConnections();
  await new Promise<void>((resolve) => collector?.close(() => resolve()));
});

async function publishOne(subject: string): Promise<string | undefined> {
  const jsm = await nc.jetstreamManager();
  const stream = `${namespace.toUpperCase()}_UNIT`;
  await jsm.streams.add({ name: stream, subjects: [`${namespace}.unit.>`] }).catch(() => {});
  const js = tracedJetStream(nc.jetstream(), "unit");
  const ack = await js.publish(subject, new TextEncoder().encode("x"));
  const stored = await jsm.streams.getMessage(stream, { seq: ack.seq });
  return stored.header?.get("traceparent") || undefined;
}

describe("tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)", () => {
  it("sets nothing up, sends no traceparent and needs none", async () => {
    setupTelemetry({ serviceName: "unit", otlpEndpoint: "" });
    expect(tracingEnabled()).toBe(false);
    const js = nc.jetstream();
    expect(tracedJetStream(js, "unit")).toBe(js);

    const client = createRpcClient(Health, rpcUrl, { timeoutMs: 5_000 });
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    // A caller's traceparent (even a broken one) is not needed and does no harm either.
    const res = await client.check({ service: "" }, { headers: { traceparent: "garbage" } });
    expect(res.status).toBe(ServingStatus.SERVING);
    expect(seenHeaders[0]).toEqual({ traceparent: null });

    expect(await publishOne(`${namespace}.unit.off`)).toBeUndefined();
    await inSpan("unit", "nothing", { kind: SpanKind.INTERNAL }, async (span) => {
      expect(span).toBeUndefined();
    });
    // A stored traceparent of an execution written while tracing was on is harmless.
    expect(withStoredTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", () => 7)).toBe(7);

    const lines: Record<string, unknown>[] = [];
    const log = createLogger("unit", "info", { destination: sink(lines) });
    requestContext.run({ requestId: "req-1", tenantId: "ten_1" }, () => log.info("hello"));
    expect(lines[0]).toMatchObject({ service: "unit", requestId: "req-1", tenantId: "ten_1" });
    expect(lines[0]).not.toHaveProperty("traceId");

    await flushTelemetry();
    expect(exports).toEqual([]);
  });
});

function sink(lines: Record<string, unknown>[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
}

describe("tracing on (OTEL_EXPORTER_OTLP_ENDPOINT set)", () => {
  it("propagates traceparent over RPC and NATS, names the trace in logs and exports over OTLP/HTTP", async () => {
    setupTelemetry({ serviceName: "unit", otlpEndpoint: `${collectorUrl}/` });
    expect(tracingEnabled()).toBe(true);
    seenHeaders.length = 0;
    const lines: Record<string, unknown>[] = [];
    const log = createLogger("unit", "info", { destination: sink(lines) });

    let traceId = "";
    await inSpan("unit", "root", { kind: SpanKind.INTERNAL }, async (span) => {
      traceId = span!.spanContext().traceId;
      requestContext.run({ requestId: "req-2", tenantId: "ten_2" }, () => log.info("inside"));
      const client = createRpcClient(Health, rpcUrl, { timeoutMs: 5_000 });
      await client.check({ service: "" });
      const published = await publishOne(`${namespace}.unit.on`);
      expect(published).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    });
    expect(seenHeaders[0]?.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
    expect(lines[0]).toMatchObject({ service: "unit", requestId: "req-2", tenantId: "ten_2", traceId });

    // An outbox republish (no active span) continues the stored trace.
    const stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const republished = await withStoredTraceparent(stored, () => publishOne(`${namespace}.unit.outbox`));
    expect(republished).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);

    // Without a caller's traceparent the server starts its own trace: the header is never required.
    const bare = createRpcClient(Health, rpcUrl, { timeoutMs: 5_000 });
    expect((await bare.check({ service: "" })).status).toBe(ServingStatus.SERVING);

    await flushTelemetry();
    await waitFor("an OTLP export", () => (exports.length > 0 ? exports : undefined));
    expect(exports.every((e) => e.path === "/v1/traces" && e.bytes > 0)).toBe(true);
  });
});
