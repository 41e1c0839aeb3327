import { Writable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { domainErrorInterceptor } from "./errors.js";
import { Health, ServingStatus } from "./health.js";
import { createLogger, requestContext } from "./log.js";
import { codeLabel, metricsRegistry, rpcServerInterceptor } from "./metrics.js";
import { createRpcClient, type RpcServer, startRpcServer } from "./rpc.js";

/** A log destination keeping each JSON line. */
function captureLines(): { lines: Record<string, unknown>[]; stream: Writable } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim()) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, stream };
}

describe("log lines", () => {
  it("redact API keys, secrets and the x-api-key header wherever they appear", async () => {
    const { lines, stream } = captureLines();
    const log = createLogger("test", "info", { destination: stream });
    const key = "fp_live_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    log.info({ req: { headers: { "x-api-key": key, authorization: `Bearer ${key}` } } }, "request");
    log.info({ headers: { "x-api-key": key } }, "headers");
    log.info({ apiKey: key, token: { secret: key } }, "fields");
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toHaveLength(3);
    const text = JSON.stringify(lines);
    expect(text).not.toContain(key.slice(12));
    expect(lines[0]).toMatchObject({
      service: "test",
      req: { headers: { "x-api-key": "[redacted]", authorization: "[redacted]" } },
    });
    expect(lines[1]).toMatchObject({ headers: { "x-api-key": "[redacted]" } });
    expect(lines[2]).toMatchObject({ apiKey: "[redacted]", token: { secret: "[redacted]" } });
  });

  it("name the request and tenant being served", async () => {
    const { lines, stream } = captureLines();
    const log = createLogger("test", "info", { destination: stream });
    requestContext.run({ requestId: "req-42", tenantId: "ten_7" }, () => log.error("inside"));
    log.error("outside");
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines[0]).toMatchObject({
      service: "test",
      requestId: "req-42",
      tenantId: "ten_7",
      msg: "inside",
    });
    expect(lines[1]).not.toHaveProperty("requestId");
    expect(lines[1]).not.toHaveProperty("tenantId");
  });
});

describe("RPC server interceptor", () => {
  const { lines, stream } = captureLines();
  const log = createLogger("callee", "info", { destination: stream });
  let server: RpcServer;

  beforeAll(async () => {
    server = await startRpcServer({
      port: 0,
      host: "127.0.0.1",
      routes(router) {
        router.service(Health, {
          check(req) {
            if (req.service === "boom") throw new Error("database exploded");
            if (req.service === "missing") throw new ConnectError("no such service", Code.NotFound);
            return { status: ServingStatus.SERVING };
          },
          async *watch() {},
        });
      },
      interceptors: [rpcServerInterceptor(), domainErrorInterceptor(log)],
    });
  });

  afterAll(async () => {
    await server?.close(1000);
  });

  it("logs an RPC failure with the caller's request id and tenant id, propagated by the client", async () => {
    const client = createRpcClient(Health, `http://127.0.0.1:${server.port}`);
    await requestContext.run({ requestId: "req-rpc-1", tenantId: "ten_rpc" }, async () => {
      await expect(client.check({ service: "boom" })).rejects.toMatchObject({ code: Code.Internal });
    });
    await new Promise((resolve) => setImmediate(resolve));
    const failed = lines.find((line) => line.msg === "rpc failed");
    expect(failed).toMatchObject({ service: "callee", requestId: "req-rpc-1", tenantId: "ten_rpc" });
  });

  it("counts calls by procedure and code and times them", async () => {
    const client = createRpcClient(Health, `http://127.0.0.1:${server.port}`);
    await client.check({ service: "" });
    await expect(client.check({ service: "missing" })).rejects.toMatchObject({ code: Code.NotFound });
    const text = await metricsRegistry.metrics();
    expect(text).toMatch(
      /flowplane_rpc_server_requests_total\{method="grpc\.health\.v1\.Health\/Check",code="ok"\} [1-9]/,
    );
    expect(text).toMatch(
      /flowplane_rpc_server_requests_total\{method="grpc\.health\.v1\.Health\/Check",code="not_found"\} [1-9]/,
    );
    expect(text).toMatch(
      /flowplane_rpc_server_requests_total\{method="grpc\.health\.v1\.Health\/Check",code="internal"\} [1-9]/,
    );
    expect(text).toMatch(
      /flowplane_rpc_server_duration_seconds_count\{method="grpc\.health\.v1\.Health\/Check",code="ok"\} [1-9]/,
    );
  });

  it("spells codes the gRPC way", () => {
    expect(codeLabel(undefined)).toBe("ok");
    expect(codeLabel(Code.InvalidArgument)).toBe("invalid_argument");
    expect(codeLabel(Code.DeadlineExceeded)).toBe("deadline_exceeded");
  });
});
