import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import { demoOutput } from "../../gateway/cli/demo-workflow.js";
import { type Stack, startStack } from "../../gateway/cli/stack.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../helpers/infra.js";

/**
 * The seeds' own JavaScript client snippets, run against every service as its own process. Each
 * snippet is the seed's text with only its placeholders filled in (host, API key, and the workflow
 * and workspace ids, which the seeds leave as examples); it runs as written, with `console` and
 * `setInterval` handed in so the test can read what it prints and drive its timer.
 */

// Seed 001, "JavaScript (usando fetch)" of POST /api/executeWorkflow.
const SEED_001_EXECUTE = `const apiKey = "tu-api-key";
const workflowId = "12345";
const response = await fetch(
"https://api.arkai.app/api/executeWorkflow",
{
method: "POST",
headers: {
"Content-Type": "application/json",
"x-api-key": apiKey,
},
body: JSON.stringify({
workflowId: workflowId,
version: 1,
input: {
"First Name": "John",
Age: 30,
},
}),
}
);
const result = await response.json();
console.log(result.output);`;

// Seed 001, "JavaScript (usando fetch)" of POST /api/executeWorkflowBackground.
const SEED_001_BACKGROUND = `const apiKey = "tu-api-key";
const workflowId = "12345";
const response = await fetch(
"https://api.arkai.app/api/executeWorkflowBackground",
{
method: "POST",
headers: {
"Content-Type": "application/json",
"x-api-key": apiKey,
},
body: JSON.stringify({
workflowId: workflowId,
version: 1,
input: {
"Nombre": "John",
"Edad": 30,
},
}),
}
);
const result = await response.json();
console.log(result.conversationId);`;

// Seed 002, "Ejemplo: Sondeo para nuevos registros".
const SEED_002_POLLING = `let cursor = null;
const workspaceId = 'YOUR_WORKSPACE_ID';
const startDate = new Date().toISOString();
async function pollLogs() {
const params = new URLSearchParams({
workspaceId,
startDate,
order: 'asc',
limit: '100'
});
if (cursor) {
params.append('cursor', cursor);
}
const response = await fetch(
\`https://sim.ai/api/v1/logs?\${params}\`,
{
headers: {
'x-api-key': 'YOUR_API_KEY'
}
}
);
if (response.ok) {
const data = await response.json();
// Process new logs
for (const log of data.data) {
console.log(\`New execution: \${log.executionId}\`);
}
// Update cursor for next poll
if (data.nextCursor) {
cursor = data.nextCursor;
}
}
}
// Poll every 30 seconds
setInterval(pollLogs, 30000);`;

type Snippet = (console: { log: (...args: unknown[]) => void }, setInterval: TimerLike) => Promise<void>;
type TimerLike = (fn: () => Promise<void>, ms: number) => void;

const AsyncFunction = (async () => {}).constructor as new (...args: string[]) => Snippet;

/** The snippet with its placeholders replaced, as a function of the globals the test hands in. */
function snippet(text: string, replacements: Record<string, string>): Snippet {
  let code = text;
  for (const [placeholder, value] of Object.entries(replacements)) {
    expect(code, `the snippet has ${placeholder}`).toContain(placeholder);
    code = code.replaceAll(placeholder, value);
  }
  return new AsyncFunction("console", "setInterval", code);
}

function capturingConsole(): { log: (...args: unknown[]) => void; lines: unknown[][] } {
  const lines: unknown[][] = [];
  return { log: (...args) => lines.push(args), lines };
}

const noTimer: TimerLike = () => {
  throw new Error("this snippet sets no timer");
};

describe("the seeds' client snippets", () => {
  let db: TestDatabase;
  let namespace: string;
  let dataDir: string;
  let stack: Stack;
  let apiKey: string;
  let workspaceId: string;
  let demoWorkflowId: string;
  let spanishWorkflowId: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    namespace = testNamespace();
    dataDir = await mkdtemp(path.join(tmpdir(), "flowplane-seeds-"));
    stack = await startStack({
      databaseUrl: db.url,
      natsUrl: TEST_NATS_URL,
      namespace,
      dataDir,
      logDir: path.join(dataDir, "logs"),
      logLevel: "info",
      ports: { auth: 0, executor: 0, logs: 0, notifier: 0, gateway: 0 },
      report: () => {},
    });
    const dev = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    apiKey = dev.apiKey;
    workspaceId = dev.workspaceId;
    demoWorkflowId = dev.workflowId;
    // The background example's input components are "Nombre" and "Edad".
    const created = await fetch(`${stack.gatewayUrl}/api/v1/workflows`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": apiKey },
      body: JSON.stringify({
        name: "Saludo",
        state: {
          blocks: {
            start: {
              id: "start",
              type: "input",
              name: "Input",
              config: {
                fields: [
                  { name: "Nombre", type: "string", required: true },
                  { name: "Edad", type: "number" },
                ],
              },
            },
            hola: {
              id: "hola",
              type: "function",
              name: "Hola",
              config: { code: 'return "Hola " + input.Nombre + " (" + input.Edad + ")";' },
            },
            out: { id: "out", type: "output", name: "Saludo", config: { value: "blocks.hola" } },
          },
          edges: [
            { id: "e1", source: "start", target: "hola" },
            { id: "e2", source: "hola", target: "out" },
          ],
        },
      }),
    });
    expect(created.status).toBe(201);
    spanishWorkflowId = ((await created.json()) as { id: string }).id;
    // A fresh executor's first function block also starts its sandbox worker, which on a loaded
    // machine can exceed the function time limit; the snippets should meet a started service.
    await waitFor("the executor's sandbox to be warm", async () => {
      const res = await fetch(`${stack.gatewayUrl}/api/executeWorkflow`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": apiKey },
        body: JSON.stringify({ workflowId: demoWorkflowId, input: { "First Name": "Warm", Age: 1 } }),
      });
      const body = (await res.json()) as { status?: string };
      return body.status === "success" ? true : undefined;
    });
  });

  afterAll(async () => {
    await stack?.stop();
    await db?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("seed 001 (sync and background) and seed 002 (log polling) get the documented results", async () => {
    // Seed 002's poller starts first: its startDate is "now", so it sees the runs that follow.
    const pollerConsole = capturingConsole();
    let tick: (() => Promise<void>) | undefined;
    await snippet(SEED_002_POLLING, {
      YOUR_WORKSPACE_ID: workspaceId,
      YOUR_API_KEY: apiKey,
      "https://sim.ai": stack.gatewayUrl,
    })(pollerConsole, (fn, ms) => {
      expect(ms).toBe(30_000);
      tick = fn;
    });
    expect(tick).toBeDefined();
    await tick!();
    expect(pollerConsole.lines).toEqual([]);

    // Seed 001, sync: prints the output components.
    const syncConsole = capturingConsole();
    await snippet(SEED_001_EXECUTE, {
      "tu-api-key": apiKey,
      '"12345"': JSON.stringify(demoWorkflowId),
      "https://api.arkai.app": stack.gatewayUrl,
    })(syncConsole, noTimer);
    expect(syncConsole.lines).toEqual([[demoOutput]]);

    // Seed 001, background: prints the conversation id at once, to be polled with getConversationById.
    const backgroundConsole = capturingConsole();
    await snippet(SEED_001_BACKGROUND, {
      "tu-api-key": apiKey,
      '"12345"': JSON.stringify(spanishWorkflowId),
      "https://api.arkai.app": stack.gatewayUrl,
    })(backgroundConsole, noTimer);
    expect(backgroundConsole.lines).toHaveLength(1);
    const conversationId = backgroundConsole.lines[0]![0] as string;
    expect(conversationId).toMatch(/^conv_/);
    // The seed's getConversationById request: {"workflowId", "conversationId"}.
    const execution = await waitFor("the background run in its conversation", async () => {
      const res = await fetch(`${stack.gatewayUrl}/api/getConversationById`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "x-api-key": apiKey },
        body: JSON.stringify({ workflowId: spanishWorkflowId, conversationId }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as {
        executions: { status: string; output: unknown; executionId: string }[];
      };
      const first = body.executions[0];
      return first && first.status === "success" ? first : undefined;
    });
    expect(execution.output).toEqual({ Saludo: "Hola John (30)" });

    // Seed 002: each later tick prints the new executions, each exactly once.
    await waitFor(
      "the poller to print both executions",
      async () => {
        await tick!();
        const printed = pollerConsole.lines.map((line) => line[0]);
        return printed.includes(`New execution: ${execution.executionId}`) && printed.length >= 2
          ? true
          : undefined;
      },
      30_000,
      500,
    );
    await tick!();
    const printed = pollerConsole.lines.map((line) => line[0] as string);
    expect(printed).toHaveLength(2);
    expect(new Set(printed).size).toBe(2);
    for (const line of printed) expect(line).toMatch(/^New execution: exec_/);
  });

  it("streams a run as Server-Sent Events through the gateway process", async () => {
    const res = await fetch(`${stack.gatewayUrl}/api/executeWorkflow`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": apiKey, accept: "text/event-stream" },
      body: JSON.stringify({ workflowId: demoWorkflowId, input: { "First Name": "John", Age: 30 } }),
    });
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const text = await res.text();
    const events = [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    expect(events[0]).toBe("started");
    expect(events.at(-1)).toBe("result");
    expect(events.filter((e) => e === "block").length, text).toBeGreaterThanOrEqual(8);
    const result = JSON.parse(
      text
        .trim()
        .split("\n")
        .at(-1)!
        .replace(/^data: /, ""),
    );
    expect(result).toMatchObject({ status: "success", output: demoOutput, creditUsage: 1 });
  });

  it("answers 503 while the executor process is stopped and recovers when it is back", async () => {
    const run = async () => {
      const res = await fetch(`${stack.gatewayUrl}/api/executeWorkflow`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": apiKey },
        body: JSON.stringify({ workflowId: demoWorkflowId, input: { "First Name": "Ada", Age: 36 } }),
      });
      return { status: res.status, body: (await res.json()) as { error?: string; output?: unknown } };
    };
    await stack.stopProcess("executor");
    const began = Date.now();
    const down = await run();
    expect(down.status).toBe(503);
    expect(down.body.error).toBe("executor service unavailable");
    expect(Date.now() - began).toBeLessThan(2_000);
    await stack.startProcess("executor");
    const back = await run();
    expect(back.status).toBe(200);
    expect(back.body.output).toEqual({ Greeting: "Hello Ada", "Next Age": 37 });
  });
});
