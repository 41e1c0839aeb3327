import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoInput, demoWorkflowJson } from "../../gateway/cli/demo-workflow.js";
import { type Answer, invariantBreach, type Stack, send, startStack, type Tenant } from "../fuzz/harness.js";
import { waitFor } from "../helpers/infra.js";

/**
 * Hostile workflow code and hostile URLs (issue 9): function blocks cannot reach the host
 * (process, require, import, globalThis tricks, the Function constructor, prototype pollution),
 * and neither the api block nor webhook subscriptions can reach loopback or private addresses,
 * including through a DNS name ("localhost") and unusual spellings of 127.0.0.1.
 */

const CANARY = `canary-${process.pid}-${Date.now()}`;

let stack: Stack;
let tenant: Tenant;
let target: http.Server;
let targetPort = 0;
let targetHits = 0;

beforeAll(async () => {
  // A secret in the environment of the process the services run in: no run may ever show it.
  process.env.FLOWPLANE_SANDBOX_CANARY = CANARY;
  target = http.createServer((_req, res) => {
    targetHits++;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ internal: "secret-internal-answer" }));
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  targetPort = (target.address() as AddressInfo).port;
  stack = await startStack({ EXECUTOR_FUNCTION_TIMEOUT_MS: "1000", EXECUTOR_FUNCTION_MEMORY_MB: "32" });
  tenant = await stack.newTenant("Hostile");
}, 120_000);

afterAll(async () => {
  delete process.env.FLOWPLANE_SANDBOX_CANARY;
  await stack?.stop();
  target?.closeAllConnections();
  await new Promise((resolve) => target?.close(resolve));
});

/** A workflow of input → `block` → output "Result" (= blocks.x), published and run once. */
async function runBlock(
  block: { type: string; config: object },
  input: object = {},
): Promise<Answer & { workflowId: string }> {
  const state = {
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      x: { id: "x", type: block.type, name: "X", config: block.config },
      out: { id: "out", type: "output", name: "Result", config: { value: "blocks.x" } },
    },
    edges: [
      { id: "e1", source: "start", target: "x" },
      { id: "e2", source: "x", target: "out" },
    ],
  };
  const created = await send(stack.baseUrl, "POST", "/api/v1/workflows", {
    key: tenant.adminKey,
    json: { name: "hostile", state },
  });
  expect(created.status, created.text).toBe(201);
  const answer = await send(stack.baseUrl, "POST", "/api/executeWorkflow", {
    key: tenant.adminKey,
    json: { workflowId: created.body.id, input },
  });
  expect(invariantBreach(answer), answer.text).toBeUndefined();
  return Object.assign(answer, { workflowId: created.body.id as string });
}

async function assertDemoStillRuns(): Promise<void> {
  const created = await send(stack.baseUrl, "POST", "/api/v1/workflows", {
    key: tenant.adminKey,
    json: { name: "demo", state: demoWorkflowJson },
  });
  const ran = await send(stack.baseUrl, "POST", "/api/executeWorkflow", {
    key: tenant.adminKey,
    json: { workflowId: created.body.id, input: demoInput },
  });
  expect(ran.status, ran.text).toBe(200);
  expect(ran.body.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });
}

const escapes: Array<[string, string]> = [
  ["process global", "return typeof process === 'undefined' ? null : process.env.FLOWPLANE_SANDBOX_CANARY;"],
  ["require", "return require('fs').readFileSync('/etc/passwd', 'utf8');"],
  ["require via globalThis", "return globalThis.require ? globalThis.require('child_process') : null;"],
  ["dynamic import", "return import('node:fs').then((fs) => fs.readFileSync('/etc/passwd', 'utf8'));"],
  ["QuickJS std/os modules", "return import('std').then((std) => std.getenviron());"],
  [
    "Function constructor",
    "return Function('return typeof process === \"undefined\" ? null : process.env')();",
  ],
  [
    "constructor chain",
    "return this.constructor.constructor('return typeof process === \"undefined\" ? null : process.env')();",
  ],
  ["sloppy this", "return (function () { return this; })().process ?? null;"],
  [
    "globalThis keys",
    "return Object.getOwnPropertyNames(globalThis).filter((k) => /process|require|os|std/.test(k));",
  ],
  ["eval", "return eval('typeof process === \"undefined\" ? null : process.env');"],
  ["error stack host frames", "try { null.x } catch (e) { return String(e.stack); }"],
  ["infinite loop", "while (true) {}"],
  ["memory bomb", "const a = []; for (;;) a.push(new Array(1e6).fill(1));"],
  ["deep recursion", "const f = () => f(); return f();"],
  ["host prototype pollution via output", 'return JSON.parse(\'{"__proto__": {"polluted": "yes"}}\');'],
  [
    "sandbox prototype pollution",
    "Object.prototype.polluted = 'yes'; Array.prototype.polluted = 'yes'; return 1;",
  ],
];

describe("function block sandbox", () => {
  for (const [name, code] of escapes) {
    it(`contains: ${name}`, async () => {
      const answer = await runBlock({ type: "function", config: { code } });
      expect(answer.text).not.toContain(CANARY);
      expect(answer.text).not.toMatch(/root:.*:0:0:/);
      expect(answer.text).not.toMatch(/node:internal|\/work\/main|node_modules/);
      if (answer.status === 200 && answer.body.status === "success") {
        // Whatever came back is plain data from inside the sandbox.
        const result = answer.body.output.Result;
        expect(JSON.stringify(result ?? null)).not.toMatch(/PATH|HOME|FLOWPLANE_/);
      }
      // Nothing leaked onto the host's prototypes (the services run in this process).
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(([] as unknown as Record<string, unknown>).polluted).toBeUndefined();
    });
  }

  it("does not carry one run's prototype pollution into the next run", async () => {
    await runBlock({
      type: "function",
      config: { code: "Object.prototype.leak = 'from-before'; return 1;" },
    });
    const next = await runBlock({
      type: "function",
      config: { code: "return { leak: ({}).leak ?? null };" },
    });
    expect(next.status, next.text).toBe(200);
    expect(next.body.output.Result).toEqual({ leak: null });
  });

  it("fails a block whose output is nested too deep instead of a 500 and undecodable events", async () => {
    // Regression: a 60-deep return value made the answer a 500 and the completion event
    // undecodable (no log row, no usage); 200 deep left the run "running" for ever.
    for (const depth of [60, 200]) {
      const answer = await runBlock({
        type: "function",
        config: { code: `let o = 1; for (let i = 0; i < ${depth}; i++) o = { k: o }; return o;` },
      });
      expect(answer.status, answer.text).toBe(200);
      expect(answer.body.status).toBe("error");
      expect(answer.body.error).toMatch(/nested deeper than 32 levels/);
      const log = await waitFor(
        "the failed run's log row",
        async () => {
          const found = await send(
            stack.baseUrl,
            "GET",
            `/api/v1/logs/executions/${answer.body.executionId}`,
            {
              key: tenant.adminKey,
            },
          );
          return found.status === 200 ? found : undefined;
        },
        30_000,
      );
      expect(log.text).toContain(answer.body.executionId);
    }
    const shallow = await runBlock({
      type: "function",
      config: { code: "let o = 1; for (let i = 0; i < 30; i++) o = { k: o }; return o;" },
    });
    expect(shallow.body.status, shallow.text).toBe("success");
  });

  it("records runs whose output or error carries a NUL character (was: 400 and no log, background stuck)", async () => {
    for (const [code, expected] of [
      ['return { s: "a\\u0000b" };', /the output contains a NUL/],
      ['return { ["k\\u0000"]: 1 };', /the output contains a NUL/],
      ['throw new Error("bad\\u0000news");', /bad\\u0000news/],
    ] as const) {
      const answer = await runBlock({ type: "function", config: { code } });
      expect(answer.status, answer.text).toBe(200);
      expect(answer.body.status, code).toBe("error");
      expect(answer.body.error, code).toMatch(expected);
      const background = await send(stack.baseUrl, "POST", "/api/executeWorkflowBackground", {
        key: tenant.adminKey,
        json: { workflowId: answer.workflowId, input: {} },
      });
      expect(background.status, background.text).toBe(200);
      const finished = await waitFor(
        "the background run to finish",
        async () => {
          const got = await send(stack.baseUrl, "GET", `/api/v1/executions/${background.body.executionId}`, {
            key: tenant.adminKey,
          });
          return got.status === 200 && got.body.status === "error" ? got : undefined;
        },
        30_000,
      );
      expect(finished.body.error).toMatch(expected);
      await waitFor(
        "the log row",
        async () => {
          const log = await send(stack.baseUrl, "GET", `/api/v1/logs/executions/${answer.body.executionId}`, {
            key: tenant.adminKey,
          });
          return log.status === 200 ? log : undefined;
        },
        30_000,
      );
    }
  });

  it("keeps serving after every escape attempt", async () => {
    await assertDemoStillRuns();
  });
});

function loopbackUrls(): string[] {
  const p = targetPort;
  return [
    `http://127.0.0.1:${p}/`,
    `http://localhost:${p}/`,
    `http://LOCALHOST.:${p}/`,
    `http://[::1]:${p}/`,
    `http://[::ffff:127.0.0.1]:${p}/`,
    `http://127.1:${p}/`,
    `http://2130706433:${p}/`,
    `http://0x7f000001:${p}/`,
    `http://0177.0.0.1:${p}/`,
    `http://0.0.0.0:${p}/`,
    `http://user:pw@127.0.0.1:${p}/`,
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
  ];
}

describe("SSRF through the api block", () => {
  it("refuses every loopback, private and link-local target, including via DNS names", async () => {
    const before = targetHits;
    for (const url of loopbackUrls()) {
      const answer = await runBlock({ type: "api", config: { url, timeoutMs: 2000 } });
      expect(answer.text, url).not.toContain("secret-internal-answer");
      expect(answer.status, `${url}: ${answer.text}`).toBe(200);
      expect(answer.body.status, url).toBe("error");
      expect(answer.body.error, url).toMatch(/refusing to connect|not allowed|ENOTFOUND/);
    }
    expect(targetHits - before).toBe(0);
  }, 120_000);

  it("refuses non-HTTP schemes", async () => {
    for (const url of ["file:///etc/passwd", "gopher://127.0.0.1:25/", "ftp://127.0.0.1/", "data:,hello"]) {
      const answer = await runBlock({ type: "api", config: { url } });
      expect(answer.text, url).not.toMatch(/root:.*:0:0:/);
      expect(answer.status, `${url}: ${answer.text}`).toBe(200);
      expect(answer.body.error, url).toMatch(/unsupported URL scheme/);
    }
  });
});

describe("SSRF through webhook subscriptions", () => {
  it("never delivers to loopback or private addresses, including via localhost", async () => {
    const before = targetHits;
    for (const url of [
      `http://localhost:${targetPort}/hook`,
      `http://127.0.0.1:${targetPort}/hook`,
      `http://[::1]:${targetPort}/hook`,
      "http://169.254.169.254/latest/meta-data/",
    ]) {
      const created = await send(stack.baseUrl, "POST", "/api/v1/notifications", {
        key: tenant.adminKey,
        json: { name: "ssrf", webhook: { url }, allWorkflows: true },
      });
      expect(invariantBreach(created), created.text).toBeUndefined();
      if (created.status === 400) continue; // refused up front
      expect(created.status, created.text).toBe(201);
      const id = (created.body.data ?? created.body).id as string;
      const test = await send(stack.baseUrl, "POST", `/api/v1/notifications/${id}/test`, {
        key: tenant.adminKey,
      });
      expect(test.status, test.text).toBe(202);
      const deliveryId = (test.body.data ?? test.body).id as string;
      // Wait until the notifier has tried (and refused) this delivery and settled its status: the
      // attempt row is written before the delivery's final status.
      const delivery = await waitFor(
        `a refused, settled delivery for ${url}`,
        async () => {
          const list = await send(stack.baseUrl, "GET", `/api/v1/notifications/${id}/deliveries`, {
            key: tenant.adminKey,
          });
          // biome-ignore lint/suspicious/noExplicitAny: deliveries are plain JSON
          const found = (list.body.data ?? []).find((d: any) => d.id === deliveryId);
          return found && found.attempts.length > 0 && found.status !== "delivering" ? found : undefined;
        },
        30_000,
      );
      expect(delivery.status, JSON.stringify(delivery)).toBe("failed");
      expect(delivery.attempts[0].error, url).toMatch(/refus/);
    }
    expect(targetHits - before).toBe(0);
  }, 120_000);
});
