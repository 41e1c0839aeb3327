/**
 * POST /api/executeWorkflow beyond a plain wait: the sync ceiling (202 + Location, the run finishing
 * in the background, billed and logged once), Server-Sent Events fed by WatchExecution, and CORS.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../services/platform/log.js";
import { waitFor } from "../test/helpers/infra.js";
import { type Answer, clientsFor, type Stack, startStack } from "../test/helpers/stack.js";
import { buildGateway } from "./app.js";

// Small enough that a 4 s wait block outlives it, large enough for a run of no function block.
const SYNC_WAIT_MS = 2_000;

let stack: Stack;
let waitWorkflowId: string;
let chainWorkflowId: string;
let failingWorkflowId: string;
let echoWorkflowId: string;

/** As the workspace's admin; a body is sent as JSON and the answer parsed as JSON. */
async function call(
  method: string,
  path: string,
  opts: { body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await stack.send(method, path, { headers: opts.headers, key: stack.adminKey, json: opts.body });
  return { ...res, body: res.text === "" ? undefined : JSON.parse(res.text) };
}

interface SseEvent {
  id: number;
  event: string;
  data: Record<string, unknown>;
}

/** Parses a whole text/event-stream body (comment lines are keep-alives). */
function parseSse(text: string): SseEvent[] {
  return text
    .split("\n\n")
    .filter((chunk) => chunk.trim() !== "" && !chunk.startsWith(":"))
    .map((chunk) => {
      const fields = new Map<string, string>();
      for (const line of chunk.split("\n")) {
        const colon = line.indexOf(": ");
        fields.set(line.slice(0, colon), line.slice(colon + 2));
      }
      return {
        id: Number(fields.get("id")),
        event: fields.get("event") ?? "",
        data: JSON.parse(fields.get("data") ?? "null") as Record<string, unknown>,
      };
    });
}

async function stream(
  body: JsonObject,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; events: SseEvent[] }> {
  const res = await fetch(`${stack.baseUrl}/api/executeWorkflow`, {
    method: "POST",
    headers: { "x-api-key": stack.adminKey, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, events: parseSse(await res.text()) };
}

/** The workflow's log rows for one execution (seed 002's list, filtered). */
async function logRowsOf(workflowId: string, executionId: string): Promise<unknown[]> {
  const res = await call(
    "GET",
    `/api/v1/logs?workspaceId=${stack.tenantId}&workflowIds=${workflowId}&executionId=${executionId}`,
  );
  expect(res.status).toBe(200);
  return res.body.data as unknown[];
}

beforeAll(async () => {
  stack = await startStack({
    services: ["auth", "executor", "logs"],
    gateway: { syncWaitMs: SYNC_WAIT_MS, rpcTimeoutMs: 10_000 },
  });
  waitWorkflowId = await stack.createWorkflow("Slow", {
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      pause: { id: "pause", type: "wait", name: "Pause", config: { durationMs: 4_000 } },
      out: { id: "out", type: "output", name: "Done", config: { value: "true" } },
    },
    edges: [
      { id: "e1", source: "start", target: "pause" },
      { id: "e2", source: "pause", target: "out" },
    ],
  });
  chainWorkflowId = await stack.createWorkflow("Chain", {
    blocks: {
      start: {
        id: "start",
        type: "input",
        name: "Input",
        config: { fields: [{ name: "n", type: "number", required: true }] },
      },
      double: { id: "double", type: "function", name: "Double", config: { code: "return input.n * 2;" } },
      inc: { id: "inc", type: "function", name: "Inc", config: { code: "return blocks.double + 1;" } },
      out: { id: "out", type: "output", name: "Result", config: { value: "blocks.inc" } },
    },
    edges: [
      { id: "e1", source: "start", target: "double" },
      { id: "e2", source: "double", target: "inc" },
      { id: "e3", source: "inc", target: "out" },
    ],
  });
  // The first function block of a process starts the sandbox's worker; not within a test's timing.
  const warm = await call("POST", "/api/executeWorkflow", {
    body: { workflowId: chainWorkflowId, input: { n: 0 } },
  });
  expect([200, 202]).toContain(warm.status);
  echoWorkflowId = await stack.createWorkflow("Echo", {
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      out: { id: "out", type: "output", name: "Done", config: { value: "true" } },
    },
    edges: [{ id: "e1", source: "start", target: "out" }],
  });
  failingWorkflowId = await stack.createWorkflow("Failing", {
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      boom: { id: "boom", type: "function", name: "Boom", config: { code: 'throw new Error("boom");' } },
      out: { id: "out", type: "output", name: "Never", config: { value: "blocks.boom" } },
    },
    edges: [
      { id: "e1", source: "start", target: "boom" },
      { id: "e2", source: "boom", target: "out" },
    ],
  });
});

afterAll(async () => {
  await stack?.stop();
});

describe("sync ceiling (GATEWAY_SYNC_WAIT_MS)", () => {
  it("answers 202 with a Location for a run still going; the run finishes and is logged once", async () => {
    const began = Date.now();
    const res = await call("POST", "/api/executeWorkflow", { body: { workflowId: waitWorkflowId } });
    const waited = Date.now() - began;
    expect(res.status).toBe(202);
    expect(waited).toBeGreaterThanOrEqual(SYNC_WAIT_MS - 50);
    expect(waited).toBeLessThan(4_000);
    const { executionId, conversationId } = res.body;
    expect(res.body).toEqual({ conversationId, executionId, status: "running", creditUsage: 0 });
    expect(executionId).toMatch(/^exec_/);
    expect(conversationId).toMatch(/^conv_/);
    expect(res.headers.get("location")).toBe(`/api/v1/executions/${executionId}`);

    const done = await waitFor("the execution to finish", async () => {
      const polled = await call("GET", res.headers.get("location")!);
      expect(polled.status).toBe(200);
      return polled.body.status === "running" ? undefined : polled.body;
    });
    expect(done).toMatchObject({
      executionId,
      conversationId,
      status: "success",
      output: { Done: true },
      path: ["start", "pause", "out"],
    });
    expect(done.creditUsage).toBeGreaterThan(0);

    const rows = await waitFor("the execution's log", async () => {
      const found = await logRowsOf(waitWorkflowId, executionId);
      return found.length > 0 ? found : undefined;
    });
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ executionId, level: "info" });
  });

  it("still answers 200 with the output when the run ends within the wait", async () => {
    const res = await call("POST", "/api/executeWorkflow", { body: { workflowId: echoWorkflowId } });
    expect(res.status).toBe(200);
    expect(res.headers.get("location")).toBeNull();
    expect(res.body).toMatchObject({ status: "success", output: { Done: true } });
  });

  it("replays a 202 under the same Idempotency-Key: the same execution, nothing runs again", async () => {
    const headers = { "idempotency-key": `ceiling-${Date.now()}` };
    const body = { workflowId: waitWorkflowId };
    const first = await call("POST", "/api/executeWorkflow", { body, headers });
    expect(first.status).toBe(202);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    const again = await call("POST", "/api/executeWorkflow", { body, headers });
    expect(again.status).toBe(202);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(again.body).toEqual(first.body);
    expect(again.headers.get("location")).toBe(first.headers.get("location"));

    // Once the run is over a replay still answers the first answer; the Location has the result.
    await waitFor("the execution to finish", async () => {
      const polled = await call("GET", first.headers.get("location")!);
      return polled.body.status === "success" ? true : undefined;
    });
    const late = await call("POST", "/api/executeWorkflow", { body, headers });
    expect(late.status).toBe(202);
    expect(late.body.executionId).toBe(first.body.executionId);
    const conversation = await call("POST", "/api/getConversationById", {
      body: { workflowId: waitWorkflowId, conversationId: first.body.conversationId },
    });
    expect(conversation.body.executions).toHaveLength(1);
  });

  it("is documented: 202 with its body, and the event stream", async () => {
    const doc = await call("GET", "/openapi.json");
    const operation = doc.body.paths["/api/executeWorkflow"].post;
    expect(operation.responses["202"].content["application/json"].schema.required).toEqual(
      expect.arrayContaining(["conversationId", "executionId", "status", "creditUsage"]),
    );
    expect(Object.keys(operation.responses["200"].content)).toEqual(
      expect.arrayContaining(["application/json", "text/event-stream"]),
    );
    expect(operation.responses["200"].content["application/json"].schema.required).toContain("output");
    expect(operation.requestBody.content["application/json"].schema.properties.stream.type).toBe("boolean");
  });
});

describe("streaming (Server-Sent Events)", () => {
  function expectWellFormed(events: SseEvent[]): void {
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    expect(events[0]!.event).toBe("started");
    expect(events.at(-1)!.event).toBe("result");
    expect(events.slice(1, -1).every((e) => e.event === "block")).toBe(true);
  }

  it("sends started, every block in dependency order, and the result last (stream: true)", async () => {
    const { status, headers, events } = await stream({
      workflowId: chainWorkflowId,
      input: { n: 4 },
      stream: true,
    });
    expect(status).toBe(200);
    expect(headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(headers.get("x-request-id")).toBeTruthy();
    expect(headers.get("x-ratelimit-limit")).toBeTruthy();
    expectWellFormed(events);
    const { executionId, conversationId } = events[0]!.data;
    expect(executionId).toMatch(/^exec_/);
    expect(conversationId).toMatch(/^conv_/);

    const blocks = events.filter((e) => e.event === "block").map((e) => e.data);
    const sequence = blocks.map((b) => `${b.blockId}:${b.status}`);
    // Every block of the chain is seen starting and finishing, each after the one it depends on.
    expect(sequence).toEqual([
      "start:running",
      "start:success",
      "double:running",
      "double:success",
      "inc:running",
      "inc:success",
      "out:running",
      "out:success",
    ]);
    const inc = blocks.find((b) => b.blockId === "inc" && b.status === "success")!;
    expect(inc).toMatchObject({ name: "Inc", type: "function" });
    expect(Date.parse(inc.endedAt as string)).toBeGreaterThanOrEqual(Date.parse(inc.startedAt as string));
    expect(inc.durationMs).toBe(Date.parse(inc.endedAt as string) - Date.parse(inc.startedAt as string));

    const result = events.at(-1)!.data;
    expect(result).toEqual({
      conversationId,
      executionId,
      output: { Result: 9 },
      creditUsage: expect.any(Number),
      status: "success",
    });
    expect(result.creditUsage).toBeGreaterThan(0);
    // The result is what the non-streaming call would have answered for this execution.
    const stored = await call("GET", `/api/v1/executions/${executionId as string}`);
    expect(stored.body).toMatchObject({
      status: "success",
      output: result.output,
      creditUsage: result.creditUsage,
    });
  });

  it("streams for Accept: text/event-stream too", async () => {
    const { status, headers, events } = await stream(
      { workflowId: chainWorkflowId, input: { n: 1 } },
      { accept: "text/event-stream" },
    );
    expect(status).toBe(200);
    expect(headers.get("content-type")).toMatch(/^text\/event-stream/);
    expectWellFormed(events);
    expect(events.filter((e) => e.event === "block")).toHaveLength(8);
    expect(events.at(-1)!.data).toMatchObject({ status: "success", output: { Result: 3 } });
  });

  it("reports a failing block in its block event and a result with status error", async () => {
    const { status, events } = await stream({ workflowId: failingWorkflowId, stream: true });
    expect(status).toBe(200);
    expectWellFormed(events);
    const boom = events.find(
      (e) => e.event === "block" && e.data.blockId === "boom" && e.data.status !== "running",
    );
    expect(boom?.data).toMatchObject({ status: "error", name: "Boom", type: "function" });
    expect(boom?.data.error).toMatch(/boom/);
    const result = events.at(-1)!.data;
    expect(result).toMatchObject({ status: "error", executionId: events[0]!.data.executionId });
    expect(result.error).toMatch(/boom/);
  });

  it("refuses bad input with an ordinary JSON 400 before anything streams", async () => {
    const res = await call("POST", "/api/executeWorkflow", {
      body: { workflowId: chainWorkflowId, input: { n: "four" }, stream: true },
    });
    expect(res.status).toBe(400);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(typeof res.body.error).toBe("string");
    const unknownWorkflow = await call("POST", "/api/executeWorkflow", {
      body: { workflowId: "wf_missing" },
      headers: { accept: "text/event-stream" },
    });
    expect(unknownWorkflow.status).toBe(404);
    expect(typeof unknownWorkflow.body.error).toBe("string");
    const badFlag = await call("POST", "/api/executeWorkflow", {
      body: { workflowId: chainWorkflowId, stream: "yes" },
    });
    expect(badFlag.status).toBe(400);
    expect(badFlag.body.error).toMatch(/stream/);
  });

  it("applies no sync ceiling, and a client that disconnects neither loses nor repeats the run", async () => {
    const full = await stream({ workflowId: waitWorkflowId, stream: true });
    expect(full.events.at(-1)!.data).toMatchObject({ status: "success", output: { Done: true } });

    const controller = new AbortController();
    const res = await fetch(`${stack.baseUrl}/api/executeWorkflow`, {
      method: "POST",
      headers: { "x-api-key": stack.adminKey, "content-type": "application/json" },
      body: JSON.stringify({ workflowId: waitWorkflowId, stream: true }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("event: started")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const started = parseSse(text.slice(0, text.indexOf("\n\n") + 2))[0]!;
    controller.abort();
    const executionId = started.data.executionId as string;
    const done = await waitFor("the abandoned stream's run to finish", async () => {
      const polled = await call("GET", `/api/v1/executions/${executionId}`);
      return polled.body.status === "running" ? undefined : polled.body;
    });
    expect(done).toMatchObject({ status: "success", output: { Done: true } });
    const rows = await waitFor("the execution's log", async () => {
      const found = await logRowsOf(waitWorkflowId, executionId);
      return found.length > 0 ? found : undefined;
    });
    expect(rows).toHaveLength(1);
    const conversation = await call("POST", "/api/getConversationById", {
      body: { workflowId: waitWorkflowId, conversationId: started.data.conversationId },
    });
    expect(conversation.body.executions).toHaveLength(1);
  });
});

describe("CORS (GATEWAY_CORS_ORIGINS)", () => {
  // CORS is answered by the gateway alone; no backend is reached by these requests.
  function gatewayWith(corsOrigins: string | undefined) {
    return buildGateway({
      config: { bodyLimitBytes: 1024, corsOrigins },
      log: createLogger("gateway", "silent"),
      clients: clientsFor({}, 1_000),
    });
  }

  it("answers a preflight and exposes the API's headers to allowed origins", async () => {
    const app = gatewayWith("https://app.example.com, https://admin.example.com");
    try {
      const preflight = await app.inject({
        method: "OPTIONS",
        url: "/api/executeWorkflow",
        headers: {
          origin: "https://admin.example.com",
          "access-control-request-method": "POST",
          "access-control-request-headers": "x-api-key, idempotency-key, content-type",
        },
      });
      expect(preflight.statusCode).toBe(204);
      expect(preflight.headers["access-control-allow-origin"]).toBe("https://admin.example.com");
      expect(String(preflight.headers["access-control-allow-methods"])).toContain("POST");
      const allowed = String(preflight.headers["access-control-allow-headers"]).toLowerCase();
      for (const header of ["x-api-key", "idempotency-key", "content-type"])
        expect(allowed).toContain(header);

      const simple = await app.inject({
        method: "GET",
        url: "/healthz",
        headers: { origin: "https://app.example.com" },
      });
      expect(simple.statusCode).toBe(200);
      expect(simple.headers["access-control-allow-origin"]).toBe("https://app.example.com");
      const exposed = String(simple.headers["access-control-expose-headers"]).toLowerCase();
      for (const header of [
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
        "location",
        "idempotent-replayed",
      ]) {
        expect(exposed).toContain(header);
      }
      // Errors carry the headers too, so a browser can read the {"error"}.
      const refused = await app.inject({
        method: "POST",
        url: "/api/executeWorkflow",
        headers: { origin: "https://app.example.com", "content-type": "application/json" },
        payload: "{}",
      });
      expect(refused.statusCode).toBe(401);
      expect(refused.headers["access-control-allow-origin"]).toBe("https://app.example.com");

      const foreign = await app.inject({
        method: "GET",
        url: "/healthz",
        headers: { origin: "https://evil.example.net" },
      });
      expect(foreign.headers["access-control-allow-origin"]).toBeUndefined();
    } finally {
      await app.close();
    }
  });

  it("allows any origin with *", async () => {
    const app = gatewayWith("*");
    try {
      const res = await app.inject({ method: "GET", url: "/healthz", headers: { origin: "https://x.test" } });
      expect(res.headers["access-control-allow-origin"]).toBe("*");
    } finally {
      await app.close();
    }
  });

  it("sends no CORS headers when unset", async () => {
    for (const setting of [undefined, ""]) {
      const app = gatewayWith(setting);
      try {
        const simple = await app.inject({
          method: "GET",
          url: "/healthz",
          headers: { origin: "https://app.example.com" },
        });
        expect(simple.statusCode).toBe(200);
        expect(Object.keys(simple.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
        const preflight = await app.inject({
          method: "OPTIONS",
          url: "/api/executeWorkflow",
          headers: { origin: "https://app.example.com", "access-control-request-method": "POST" },
        });
        expect(preflight.headers["access-control-allow-origin"]).toBeUndefined();
      } finally {
        await app.close();
      }
    }
  });
});
