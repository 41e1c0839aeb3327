/**
 * The gateway when a backend misbehaves: one that accepts connections but never answers gets a 504
 * within the RPC deadline (GATEWAY_RPC_TIMEOUT_MS); one that is stopped gets a quick 503; one that
 * comes back on its port is used again by the same gateway, without a restart.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  clientsFor,
  listenGateway,
  type ServiceUrls,
  type Stack,
  sendTo,
  startStack,
} from "../test/helpers/stack.js";

const RPC_TIMEOUT_MS = 400;

let stack: Stack;
let silent: http2.Http2Server;
let silentUrl: string;
const sessions = new Set<http2.ServerHttp2Session>();
let workflowId: string;

interface Answer {
  status: number;
  ms: number;
  // biome-ignore lint/suspicious/noExplicitAny: bodies are asserted field by field
  body: any;
}

async function request(
  baseUrl: string,
  method: string,
  path: string,
  key: string,
  body?: unknown,
): Promise<Answer> {
  const began = Date.now();
  const res = await sendTo(baseUrl, method, path, { key, json: body });
  return { status: res.status, ms: Date.now() - began, body: JSON.parse(res.text) };
}

/** A gateway of its own in front of the stack, with some backends swapped for other URLs. */
async function gatewayWith(
  urls: ServiceUrls,
  settings: { rpcTimeoutMs: number; syncWaitMs?: number },
): Promise<{ url: string; close: () => Promise<void> }> {
  const { gateway, baseUrl } = await listenGateway(
    clientsFor({ ...stack.urls, ...urls }, settings.rpcTimeoutMs),
    {
      config: { bodyLimitBytes: 64 * 1024, ...settings },
    },
  );
  return { url: baseUrl, close: () => gateway.close() };
}

beforeAll(async () => {
  stack = await startStack({ services: ["auth", "executor", "logs"], gateway: { rpcTimeoutMs: 10_000 } });
  // No function block: a restarted executor's sandbox start is not what these tests time.
  workflowId = await stack.createWorkflow("Echo", {
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      out: { id: "out", type: "output", name: "Done", config: { value: "true" } },
    },
    edges: [{ id: "e1", source: "start", target: "out" }],
  });
  // Accepts h2c connections and streams, and never answers any of them.
  silent = http2.createServer();
  silent.on("session", (session) => {
    sessions.add(session);
    session.on("error", () => {});
  });
  // The gateway resets the streams it gave up on.
  silent.on("stream", (stream) => stream.on("error", () => {}));
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
});

afterAll(async () => {
  // The gateways' idle connections would hold close() open.
  const closed = new Promise((resolve) => silent?.close(resolve));
  for (const session of sessions) session.destroy();
  await closed;
  await stack?.stop();
});

describe("a backend that never answers", () => {
  it("answers 504 {error} within the RPC deadline when the auth service hangs", async () => {
    const gateway = await gatewayWith({ auth: silentUrl }, { rpcTimeoutMs: RPC_TIMEOUT_MS });
    try {
      const res = await request(gateway.url, "POST", "/api/executeWorkflow", stack.adminKey, { workflowId });
      expect(res.status).toBe(504);
      expect(res.body).toMatchObject({
        error: "auth service did not answer in time",
        code: "deadline_exceeded",
      });
      expect(res.ms).toBeGreaterThanOrEqual(RPC_TIMEOUT_MS - 50);
      expect(res.ms).toBeLessThan(RPC_TIMEOUT_MS + 2_000);
    } finally {
      await gateway.close();
    }
  });

  it("answers 504 when the executor hangs: reads within the RPC deadline, runs within sync wait + deadline", async () => {
    const gateway = await gatewayWith(
      { executor: silentUrl },
      { rpcTimeoutMs: RPC_TIMEOUT_MS, syncWaitMs: 300 },
    );
    try {
      const read = await request(gateway.url, "GET", `/api/v1/workflows/${workflowId}`, stack.adminKey);
      expect(read.status).toBe(504);
      expect(read.body).toMatchObject({ error: "executor service did not answer in time" });
      expect(read.ms).toBeLessThan(RPC_TIMEOUT_MS + 2_000);

      const run = await request(gateway.url, "POST", "/api/executeWorkflow", stack.adminKey, {
        workflowId,
      });
      expect(run.status).toBe(504);
      expect(run.body.error).toBe("executor service did not answer in time");
      expect(run.ms).toBeGreaterThanOrEqual(300 + RPC_TIMEOUT_MS - 50);
      expect(run.ms).toBeLessThan(300 + RPC_TIMEOUT_MS + 2_000);
    } finally {
      await gateway.close();
    }
  });
});

describe("a stopped service", () => {
  it("answers 503 quickly while the executor is down, and 200 again once it is back", async () => {
    const run = () =>
      request(stack.baseUrl, "POST", "/api/executeWorkflow", stack.adminKey, {
        workflowId,
      });
    const before = await run();
    expect(before.status).toBe(200);

    await stack.stopService("executor");
    const down = await run();
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({ error: "executor service unavailable", code: "unavailable" });
    // Well under the RPC deadline (10 s in this stack): a refused connection is not waited out.
    expect(down.ms).toBeLessThan(1_000);
    const read = await request(stack.baseUrl, "GET", `/api/v1/workflows/${workflowId}`, stack.adminKey);
    expect(read.status).toBe(503);

    await stack.restartService("executor");
    const after = await run();
    expect(after.status).toBe(200);
    expect(after.body).toMatchObject({ status: "success", output: { Done: true } });
  });

  it("answers 503 while the logs service is down, and 200 again once it is back", async () => {
    const list = () =>
      request(stack.baseUrl, "GET", `/api/v1/logs?workspaceId=${stack.tenantId}`, stack.adminKey);
    expect((await list()).status).toBe(200);
    await stack.stopService("logs");
    const down = await list();
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({ error: "logs service unavailable" });
    expect(down.ms).toBeLessThan(1_000);
    await stack.restartService("logs");
    expect((await list()).status).toBe(200);
  });

  it("answers 503 for every request while the auth service is down (fail closed), then recovers", async () => {
    const read = () => request(stack.baseUrl, "GET", `/api/v1/workflows/${workflowId}`, stack.adminKey);
    expect((await read()).status).toBe(200);
    await stack.stopService("auth");
    const down = await read();
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({ error: "auth service unavailable" });
    expect(down.ms).toBeLessThan(1_000);
    await stack.restartService("auth");
    expect((await read()).status).toBe(200);
  });
});
