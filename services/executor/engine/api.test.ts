import http from "node:http";
import type { AddressInfo } from "node:net";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileWorkflow } from "./definition.js";
import { checkWorkflowInput, DEFAULT_ENGINE_SETTINGS, type EngineSettings, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 1 });
const received: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];
let server: http.Server;
let base: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      received.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      if (req.url?.startsWith("/missing")) {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("no such thing");
      } else if (req.url?.startsWith("/slow")) {
        setTimeout(() => res.end("late"), 5_000).unref();
      } else if (req.url?.startsWith("/text")) {
        res.writeHead(200, { "content-type": "text/plain", "x-answer": "42" });
        res.end("plain words");
      } else {
        res.writeHead(201, { "content-type": "application/json; charset=utf-8" });
        res.end(JSON.stringify({ echoed: body === "" ? null : JSON.parse(body), path: req.url }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await sandbox.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const allowPrivate: EngineSettings = {
  ...DEFAULT_ENGINE_SETTINGS,
  api: { allowPrivate: true, timeoutMs: 5_000 },
};

function apiWorkflow(config: JsonObject) {
  return compileWorkflow(
    graphState(
      [
        b.input([
          { name: "name", type: "string" },
          { name: "count", type: "number" },
        ]),
        b.fn("prep", 'return { token: "t-" + input.name };'),
        b.of("call", "api", config),
        b.output("out", "Response", "blocks.call"),
      ],
      [
        ["start", "prep"],
        ["prep", "call"],
        ["call", "out"],
      ],
    ),
  );
}

async function run(
  workflow: ReturnType<typeof apiWorkflow>,
  settings: EngineSettings,
  input: JsonObject = {},
) {
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox, settings });
}

describe("api block", () => {
  it("sends the templated request and parses a JSON answer", async () => {
    const workflow = apiWorkflow({
      url: `${base}/users/{{ input.name }}?n={{ input.count }}`,
      method: "post",
      headers: { authorization: "Bearer {{ blocks.prep.token }}" },
      body: {
        name: "{{ input.name }}",
        count: "{{ input.count }}",
        label: "n={{ input.count }}",
        fixed: [1, true],
      },
    });
    const result = await run(workflow, allowPrivate, { name: "ada", count: 3 });
    expect(result.status).toBe("success");
    const request = received.at(-1)!;
    expect(request).toMatchObject({ method: "POST", url: "/users/ada?n=3" });
    expect(request.headers.authorization).toBe("Bearer t-ada");
    expect(request.headers["content-type"]).toBe("application/json");
    const sent = { name: "ada", count: 3, label: "n=3", fixed: [1, true] };
    expect(JSON.parse(request.body)).toEqual(sent);
    expect(result.output.Response).toMatchObject({
      status: 201,
      headers: { "content-type": "application/json; charset=utf-8" },
      body: { echoed: sent, path: "/users/ada?n=3" },
    });
    expect(result.spans.find((s) => s.blockId === "call")?.input).toMatchObject({
      method: "POST",
      url: `${base}/users/ada?n=3`,
      body: sent,
    });
  });

  it("keeps a non-JSON answer as text", async () => {
    const result = await run(apiWorkflow({ url: `${base}/text` }), allowPrivate);
    expect(result.output.Response).toMatchObject({
      status: 200,
      body: "plain words",
      headers: { "x-answer": "42" },
    });
  });

  it("refuses loopback targets unless private addresses are allowed", async () => {
    const before = received.length;
    const result = await run(apiWorkflow({ url: `${base}/secret` }), DEFAULT_ENGINE_SETTINGS);
    expect(result.status).toBe("error");
    expect(result.error).toMatch(
      /^block call: refusing to connect to 127\.0\.0\.1 \(127\.0\.0\.1: loopback\)/,
    );
    expect(received.length).toBe(before);
    const metadata = await run(
      apiWorkflow({ url: "http://169.254.169.254/latest/meta-data" }),
      DEFAULT_ENGINE_SETTINGS,
    );
    expect(metadata.error).toMatch(/link-local/);
  });

  it("fails on an error status, a timeout and a template that cannot be evaluated", async () => {
    const missing = await run(apiWorkflow({ url: `${base}/missing` }), allowPrivate);
    expect(missing).toMatchObject({
      status: "error",
      error: `block call: HTTP 404 from ${new URL(base).host}: no such thing`,
    });
    const slow = await run(apiWorkflow({ url: `${base}/slow`, timeoutMs: 100 }), allowPrivate);
    expect(slow).toMatchObject({ status: "error", error: "block call: request timed out after 100 ms" });
    const broken = await run(apiWorkflow({ url: `${base}/{{ input.nope }}` }), allowPrivate);
    expect(broken.status).toBe("error");
    expect(broken.error).toMatch(/^block call: .*nope/);
  });

  it.each([
    [{}, 'block "call": an api block needs config.url'],
    [{ url: "http://x/{{ 1 + }}" }, 'block "call": config.url: {{ 1 + }} does not compile'],
    [{ url: "http://x/{{ input.a" }, "unclosed"],
    [{ url: "http://x", method: "FETCH" }, "config.method must be one of"],
    [{ url: "http://x", headers: { "bad header": "v" } }, "is not a valid header name"],
    [{ url: "http://x", timeoutMs: -5 }, "config.timeoutMs must be a positive integer"],
  ])("rejects the definition %j", (config, message) => {
    expect(() => apiWorkflow(config as JsonObject)).toThrow(message);
  });
});
