import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT, runCli } from "./commands/index.js";
import { readSse, type SseEvent } from "./sse.js";
import { captureIo } from "./test-io.js";

async function* chunks(...parts: string[]): AsyncGenerator<Uint8Array> {
  const encoder = new TextEncoder();
  for (const part of parts) yield encoder.encode(part);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of readSse(source)) events.push(event);
  return events;
}

describe("readSse", () => {
  it("parses events split anywhere across chunks, with ids, comments and multi-line data", async () => {
    const stream =
      'id: 1\nevent: started\ndata: {"a":1}\n\n: keep-alive\n\nid: 2\nevent: block\ndata: line one\ndata: line two\n\n';
    // Every split point, including inside "\n\n".
    for (let cut = 0; cut <= stream.length; cut++) {
      const events = await collect(chunks(stream.slice(0, cut), stream.slice(cut)));
      expect(events).toEqual([
        { event: "started", data: '{"a":1}', id: "1" },
        { event: "block", data: "line one\nline two", id: "2" },
      ]);
    }
  });

  it("accepts CRLF and CR line ends, a BOM, 'data' without a space and events without a name", async () => {
    const events = await collect(
      chunks("\ufeffdata:x\r\n\r", "\nevent: e\rdata: y\r\r", "data: tail-without-blank-line"),
    );
    expect(events).toEqual([
      { event: "message", data: "x" },
      { event: "e", data: "y" },
    ]);
  });

  it("decodes UTF-8 split inside a character", async () => {
    const bytes = new TextEncoder().encode("data: ¡olé ✓\n\n");
    async function* split() {
      for (const byte of bytes) yield Uint8Array.of(byte);
    }
    expect(await collect(split())).toEqual([{ event: "message", data: "¡olé ✓" }]);
  });
});

/** A local server standing in for the gateway's POST /api/executeWorkflow {"stream": true}. */
describe("flowplane run --watch against an SSE server", () => {
  let server: Server;
  let baseUrl: string;
  let script: (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => void;
  const seen: Array<{ headers: IncomingMessage["headers"]; body: Record<string, unknown> }> = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      let raw = "";
      req.on("data", (c: Buffer) => {
        raw += c.toString();
      });
      req.on("end", () => {
        const body = (raw ? JSON.parse(raw) : {}) as Record<string, unknown>;
        seen.push({ headers: req.headers, body });
        script(req, res, body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  const started = { conversationId: "conv_1", executionId: "exec_1" };
  const block = (status: string, extra: Record<string, unknown> = {}) => ({
    blockId: "greet",
    name: "Greet",
    type: "function",
    status,
    startedAt: "2026-01-01T00:00:00.000Z",
    ...extra,
  });
  const result = {
    conversationId: "conv_1",
    executionId: "exec_1",
    output: { Greeting: "Hello John" },
    creditUsage: 1,
    status: "success",
  };

  /** Sends the events and ends the stream, or cuts the connection after them. */
  function streamEvents(events: Array<[string, unknown]>, opts: { end?: boolean } = {}) {
    script = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
      let text = "";
      let n = 0;
      for (const [event, data] of events)
        text += `id: ${++n}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
      // A cut stream: the events reach the client, then the connection drops without ending.
      if (opts.end === false) res.write(text, () => res.destroy());
      else res.end(text);
    };
  }

  const env = () => ({ FLOWPLANE_URL: baseUrl, FLOWPLANE_API_KEY: "fp_test_key" });

  it("shows each block as it changes, then the output; exit 0", async () => {
    streamEvents([
      ["started", started],
      ["block", block("running")],
      ["block", block("success", { endedAt: "2026-01-01T00:00:00.012Z", durationMs: 12 })],
      ["result", result],
    ]);
    const io = captureIo(env());
    const code = await runCli(
      ["run", "wf_1", "--input", "First Name=John", "--input", "Age=30", "--watch"],
      io,
    );
    expect(code).toBe(EXIT.ok);
    const request = seen.at(-1)!;
    expect(request.body).toEqual({
      workflowId: "wf_1",
      input: { "First Name": "John", Age: 30 },
      stream: true,
    });
    expect(request.headers["x-api-key"]).toBe("fp_test_key");
    expect(request.headers.accept).toBe("text/event-stream");
    expect(JSON.parse(io.out())).toEqual({ Greeting: "Hello John" });
    expect(io.err()).toContain("running exec_1 (conversation conv_1)");
    expect(io.err()).toContain("… Greet (function) running\n");
    expect(io.err()).toContain("✓ Greet (function) success 12 ms\n");
    expect(io.err()).toContain("success; execution exec_1");
  });

  it("redraws the block list in place on a terminal", async () => {
    streamEvents([
      ["block", block("running")],
      ["block", { ...block("running"), blockId: "out", name: "Greeting", type: "output" }],
      ["block", block("success", { durationMs: 3 })],
      ["result", result],
    ]);
    const io = captureIo(env(), { tty: true });
    expect(await runCli(["run", "wf_1", "--watch"], io)).toBe(EXIT.ok);
    // The third event moves up over the two lines drawn and draws both again.
    expect(io.err()).toContain(
      "\x1b[2A\x1b[2K  ✓ Greet (function) success 3 ms\n\x1b[2K  … Greeting (output) running\n",
    );
  });

  it("--json prints every event as one JSON line; a failed run exits 1", async () => {
    const failed = { ...result, output: {}, status: "error", error: "boom" };
    streamEvents([
      ["started", started],
      ["block", block("error", { durationMs: 1, error: "boom" })],
      ["result", failed],
    ]);
    const io = captureIo(env());
    expect(await runCli(["run", "wf_1", "--watch", "--json"], io)).toBe(EXIT.failed);
    const lines = io
      .out()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toEqual([
      { event: "started", ...started },
      { event: "block", ...block("error", { durationMs: 1, error: "boom" }) },
      { event: "result", ...failed },
    ]);
  });

  it("maps an error event's code to the exit code, and a cut stream to 5", async () => {
    streamEvents([
      ["started", started],
      ["error", { error: "executor unavailable", code: "unavailable" }],
    ]);
    let io = captureIo(env());
    expect(await runCli(["run", "wf_1", "--watch"], io)).toBe(EXIT.unavailable);
    expect(io.err()).toContain("flowplane: executor unavailable");

    streamEvents(
      [
        ["started", started],
        ["block", block("running")],
      ],
      { end: false },
    );
    io = captureIo(env());
    expect(await runCli(["run", "wf_1", "--watch"], io)).toBe(EXIT.unavailable);
    expect(io.err()).toMatch(/event stream (ended before the result|broke)/);
  });

  it("a refusal before the stream starts keeps its status's exit code", async () => {
    script = (_req, res) => {
      res
        .writeHead(401, { "content-type": "application/json" })
        .end(JSON.stringify({ error: "invalid API key" }));
    };
    const io = captureIo(env());
    expect(await runCli(["run", "wf_1", "--watch"], io)).toBe(EXIT.auth);
    expect(io.err()).toBe("flowplane: 401: invalid API key\n");
  });

  it("maps 429 to exit 6 with the wait, and 503 to 5, for a plain run", async () => {
    script = (_req, res) => {
      res
        .writeHead(429, { "content-type": "application/json", "retry-after": "7" })
        .end(JSON.stringify({ error: "rate limit exceeded", retryAfter: Date.now() + 7000 }));
    };
    let io = captureIo(env());
    expect(await runCli(["run", "wf_1"], io)).toBe(EXIT.rateLimited);
    expect(io.err()).toBe("flowplane: 429: rate limit exceeded (retry in 7 s)\n");

    script = (_req, res) => {
      res
        .writeHead(503, { "content-type": "application/json" })
        .end(JSON.stringify({ error: "executor unavailable" }));
    };
    io = captureIo(env());
    expect(await runCli(["run", "wf_1"], io)).toBe(EXIT.unavailable);
  });

  it("a sync run answered 202 (past the gateway's wait) is followed to its end", async () => {
    let polls = 0;
    script = (req, res) => {
      const json = (status: number, body: unknown) =>
        res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.method === "POST") {
        return json(202, {
          conversationId: "conv_1",
          executionId: "exec_1",
          status: "running",
          creditUsage: 0,
        });
      }
      expect(req.url).toBe("/api/v1/executions/exec_1");
      polls++;
      json(200, {
        ...result,
        status: polls < 2 ? "running" : "success",
        output: polls < 2 ? null : result.output,
        workflowId: "wf_1",
        error: null,
      });
    };
    const io = captureIo(env());
    expect(await runCli(["run", "wf_1"], io)).toBe(EXIT.ok);
    expect(polls).toBe(2);
    expect(JSON.parse(io.out())).toEqual(result.output);
    expect(io.err()).toContain("exec_1 is still running; following it until it ends");
  });

  it("Ctrl-C (abort) while waiting for events ends with exit 0", async () => {
    script = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(`event: started\ndata: ${JSON.stringify(started)}\n\n`);
      // …and then nothing until the client goes away.
    };
    const controller = new AbortController();
    const io = captureIo(env(), { signal: controller.signal });
    const running = runCli(["run", "wf_1", "--watch"], io);
    await waitForText(() => io.err(), "running exec_1");
    controller.abort();
    expect(await running).toBe(EXIT.ok);
  });
});

async function waitForText(read: () => string, text: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!read().includes(text)) {
    if (Date.now() > deadline)
      throw new Error(`never saw ${JSON.stringify(text)} in ${JSON.stringify(read())}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
