import { Ajv2020 } from "ajv/dist/2020.js";
import type { RouteOptions } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Answer, type SendOptions, type Stack, startStack } from "../test/helpers/stack.js";
import { demoWorkflowJson } from "./cli/demo-workflow.js";

// biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is walked as plain JSON
type Json = any;

let stack: Stack;
let baseUrl: string;
let adminKey: string;
let otherTenantKey: string;
let document: Json;
const registered: RouteOptions[] = [];

/** Every answer: never a 5xx, JSON, and a 4xx carries {"error"}. */
const call = (method: string, path: string, opts?: SendOptions): Promise<Answer> =>
  stack.call(method, path, opts);

beforeAll(async () => {
  stack = await startStack({
    services: ["auth", "executor"],
    tenant: "Product test",
    // Routes are registered when the app loads, so this sees every one of them.
    beforeListen: (gateway) =>
      gateway.addHook("onRoute", (route) => {
        registered.push(route);
      }),
  });
  baseUrl = stack.baseUrl;
  adminKey = stack.adminKey;
  otherTenantKey = (await stack.newTenant("Other")).adminKey;
  const res = await call("GET", "/openapi.json");
  expect(res.status).toBe(200);
  document = res.body;
}, 60_000);

afterAll(async () => {
  await stack?.stop();
});

/** /api/v1/logs/:id → /api/v1/logs/{id} */
function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

function methodsOf(route: RouteOptions): string[] {
  return (Array.isArray(route.method) ? route.method : [route.method]).map((m) => m.toLowerCase());
}

/** Every `$ref` value in the document, with where it sits. */
function refsIn(node: Json, at = "#"): { at: string; ref: string }[] {
  if (Array.isArray(node)) return node.flatMap((item, i) => refsIn(item, `${at}/${i}`));
  if (node === null || typeof node !== "object") return [];
  return Object.entries(node).flatMap(([key, value]) =>
    key === "$ref" && typeof value === "string"
      ? [{ at, ref: value }]
      : refsIn(value, `${at}/${key.replaceAll("~", "~0").replaceAll("/", "~1")}`),
  );
}

function resolvePointer(root: Json, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let node = root;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (node === null || typeof node !== "object" || !(key in node)) return undefined;
    node = node[key];
  }
  return node;
}

const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });

/** Checks a real answer against the schema the document gives for that operation and status. */
function expectDocumented(method: string, path: string, answer: Answer): void {
  const operation = document.paths[path]?.[method];
  expect(operation, `${method} ${path} is documented`).toBeDefined();
  const response = operation.responses[String(answer.status)];
  expect(response, `${method} ${path} documents status ${answer.status}`).toBeDefined();
  const schema = response.content?.["application/json"]?.schema;
  expect(schema, `${method} ${path} ${answer.status} has a JSON schema`).toBeDefined();
  const validate = ajv.compile(schema);
  expect(validate(answer.body), JSON.stringify(validate.errors)).toBe(true);
}

describe("OpenAPI document", () => {
  it("is OpenAPI 3.1 with servers, the x-api-key scheme and tags", () => {
    expect(document.openapi).toMatch(/^3\.1\.\d+$/);
    expect(document.info.title).toBe("Flowplane REST API");
    expect(document.servers.length).toBeGreaterThan(0);
    expect(document.components.securitySchemes.apiKey).toEqual(
      expect.objectContaining({ type: "apiKey", in: "header", name: "x-api-key" }),
    );
    expect(document.security).toEqual([{ apiKey: [] }]);
    expect(document.tags.map((t: Json) => t.name)).toEqual(
      expect.arrayContaining(["execute", "logs", "workflows", "tokens", "notifications"]),
    );
  });

  it("documents every registered route with its method, a summary, tags and responses", () => {
    const documented = registered.filter((r) => !(r.schema as Json)?.hide);
    // Sanity: the collector saw the routes (the app has far more than a handful).
    expect(documented.length).toBeGreaterThan(30);
    for (const route of documented) {
      for (const method of methodsOf(route)) {
        if (method === "head") continue; // Fastify's automatic HEAD twins of GET routes
        const operation = document.paths[openApiPath(route.url)]?.[method];
        expect(operation, `${method.toUpperCase()} ${route.url} is in the document`).toBeDefined();
        expect(operation.summary, `${method} ${route.url} has a summary`).toEqual(expect.any(String));
        expect(operation.tags?.length, `${method} ${route.url} has tags`).toBeGreaterThan(0);
        const statuses = Object.keys(operation.responses);
        expect(
          statuses.some((s) => s.startsWith("2")),
          `${method} ${route.url} documents its success`,
        ).toBe(true);
        const error = operation.responses["500"]?.content?.["application/json"]?.schema;
        expect(error?.required, `${method} ${route.url} documents the error shape`).toEqual(["error"]);
      }
    }
    // Only the docs page's own asset routes are hidden.
    for (const route of registered.filter((r) => (r.schema as Json)?.hide)) {
      expect(route.url.startsWith("/docs")).toBe(true);
    }
  });

  it("is structurally valid: path parameters declared, responses described, schemas compile", () => {
    const methods = ["get", "put", "post", "delete", "patch", "head", "options"];
    for (const [path, item] of Object.entries<Json>(document.paths)) {
      for (const method of methods.filter((m) => m in item)) {
        const operation = item[method];
        const where = `${method} ${path}`;
        const parameters: Json[] = operation.parameters ?? [];
        for (const [, name] of path.matchAll(/\{([^}]+)\}/g)) {
          const declared = parameters.find((p) => p.in === "path" && p.name === name);
          expect(declared?.required, `${where} declares path parameter ${name}`).toBe(true);
        }
        for (const parameter of parameters) {
          expect(["query", "header", "path", "cookie"]).toContain(parameter.in);
          expect(() => ajv.compile(parameter.schema), `${where} ${parameter.name}`).not.toThrow();
        }
        const bodySchema = operation.requestBody?.content?.["application/json"]?.schema;
        if (bodySchema) expect(() => ajv.compile(bodySchema), `${where} body`).not.toThrow();
        for (const [status, response] of Object.entries<Json>(operation.responses)) {
          expect(status).toMatch(/^[1-5](\d\d|XX)$/);
          expect(typeof response.description, `${where} ${status} description`).toBe("string");
          const schema = response.content?.["application/json"]?.schema;
          if (schema) expect(() => ajv.compile(schema), `${where} ${status}`).not.toThrow();
        }
      }
    }
  });

  it("has no dangling $ref", () => {
    for (const { at, ref } of refsIn(document)) {
      expect(resolvePointer(document, ref), `${ref} at ${at}`).toBeDefined();
    }
  });

  it("marks the public routes as needing no key, and documents hand-parsed queries", () => {
    expect(document.paths["/healthz"].get.security).toEqual([]);
    expect(document.paths["/openapi.json"].get.security).toEqual([]);
    expect(document.paths["/api/v1/hooks/{hookId}"].post.security).toEqual([{ hookSecret: [] }]);
    const logParameters = document.paths["/api/v1/logs"].get.parameters.map((p: Json) => p.name);
    expect(logParameters).toEqual(
      expect.arrayContaining(["workspaceId", "limit", "cursor", "order", "triggers", "startDate"]),
    );
    const workspace = document.paths["/api/v1/logs"].get.parameters.find(
      (p: Json) => p.name === "workspaceId",
    );
    expect(workspace).toEqual(expect.objectContaining({ in: "query", required: true }));
  });

  it("is served without a key and /docs answers the offline HTML page", async () => {
    const docs = await fetch(`${baseUrl}/docs`);
    expect(docs.status).toBe(200);
    expect(docs.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await docs.text();
    expect(html).toContain("swagger-ui");
    // Its assets come from the gateway itself.
    const bundle = await fetch(`${baseUrl}/docs/static/swagger-ui-bundle.js`);
    expect(bundle.status).toBe(200);
    expect((await bundle.text()).length).toBeGreaterThan(100_000);
    const spec = await call("GET", "/docs/json");
    expect(spec.body.openapi).toBe(document.openapi);
  });
});

describe("documented answers match the real ones", () => {
  it("execute, workflow, execution, conversation and token answers match their schemas", async () => {
    const created = await call("POST", "/api/v1/workflows", {
      key: adminKey,
      json: { name: "Demo", state: structuredClone(demoWorkflowJson) },
    });
    expect(created.status).toBe(201);
    expectDocumented("post", "/api/v1/workflows", created);
    const workflowId = created.body.id;

    const run = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      json: { workflowId, input: { "First Name": "John", Age: 30 } },
    });
    expect(run.status).toBe(200);
    expect(run.body.output).toEqual({ Greeting: "Hello John", "Next Age": 31 });
    expectDocumented("post", "/api/executeWorkflow", run);

    const queued = await call("POST", "/api/executeWorkflowBackground", {
      key: adminKey,
      json: { workflowId, input: { "First Name": "Ann" } },
    });
    expectDocumented("post", "/api/executeWorkflowBackground", queued);

    const execution = await call("GET", `/api/v1/executions/${run.body.executionId}`, { key: adminKey });
    expectDocumented("get", "/api/v1/executions/{id}", execution);

    const conversation = await call("POST", "/api/getConversationById", {
      key: adminKey,
      json: { workflowId, conversationId: run.body.conversationId },
    });
    expectDocumented("post", "/api/getConversationById", conversation);

    expectDocumented("get", "/api/v1/workflows", await call("GET", "/api/v1/workflows", { key: adminKey }));
    expectDocumented("get", "/api/v1/tokens", await call("GET", "/api/v1/tokens", { key: adminKey }));
    expectDocumented("get", "/healthz", await call("GET", "/healthz"));
  });

  it("errors match the documented error shape", async () => {
    expectDocumented(
      "post",
      "/api/executeWorkflow",
      await call("POST", "/api/executeWorkflow", { json: {} }),
    );
    expectDocumented(
      "get",
      "/api/v1/executions/{id}",
      await call("GET", `/api/v1/executions/exec_${"0".repeat(26)}`, { key: otherTenantKey }),
    );
  });

  it("hand-parsed query strings keep their own checks and messages", async () => {
    const unknown = await call("GET", "/api/v1/logs?workspaceId=x&colour=red", { key: adminKey });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe("unknown query parameter colour");
    const limit = await call("GET", "/api/v1/logs?workspaceId=x&limit=abc", { key: adminKey });
    expect(limit.status).toBe(400);
    expect(limit.body.error).toBe("limit must be an integer between 1 and 1000");
    const missing = await call("GET", "/api/v1/logs", { key: adminKey });
    expect(missing.body.error).toBe("workspaceId is required");
    const detail = await call("GET", "/api/v1/logs/log_1?colour=red", { key: adminKey });
    expect(detail.body.error).toBe("unknown query parameter colour");
  });
});

describe("Idempotency-Key on the execute routes", () => {
  let workflowId: string;
  let slowWorkflowId: string;

  beforeAll(async () => {
    const created = await call("POST", "/api/v1/workflows", {
      key: adminKey,
      json: { name: "Idempotent demo", state: structuredClone(demoWorkflowJson) },
    });
    workflowId = created.body.id;
    const slow = await call("POST", "/api/v1/workflows", {
      key: adminKey,
      json: {
        name: "Slow",
        state: {
          blocks: {
            start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
            pause: { id: "pause", type: "wait", name: "Pause", config: { durationMs: 3000 } },
            out: { id: "out", type: "output", name: "Waited", config: { value: "blocks.pause.waitedMs" } },
          },
          edges: [
            { id: "e1", source: "start", target: "pause" },
            { id: "e2", source: "pause", target: "out" },
          ],
        },
      },
    });
    expect(slow.status).toBe(201);
    slowWorkflowId = slow.body.id;
  });

  const executionsOf = async (conversationId: string, key = adminKey, wf = workflowId) => {
    const res = await call("POST", "/api/getConversationById", {
      key,
      json: { workflowId: wf, conversationId },
    });
    expect(res.status).toBe(200);
    return res.body.executions as Json[];
  };

  it("replays the first answer for the same key and body, running once", async () => {
    const headers = { "idempotency-key": "order-1001" };
    const first = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      headers,
      json: { workflowId, input: { "First Name": "John", Age: 30 } },
    });
    expect(first.status).toBe(200);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    // Same body with its keys in another order.
    const again = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      headers,
      json: { input: { Age: 30, "First Name": "John" }, workflowId },
    });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await executionsOf(first.body.conversationId)).toHaveLength(1);
  });

  it("answers 409 for the same key with another body", async () => {
    const headers = { "idempotency-key": "order-1002" };
    const first = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      headers,
      json: { workflowId, input: { "First Name": "Ann" } },
    });
    expect(first.status).toBe(200);
    const other = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      headers,
      json: { workflowId, input: { "First Name": "Bob" } },
    });
    expect(other.status).toBe(409);
    expect(other.body.error).toBe("Idempotency-Key reused with a different request");
    // The same key on the other execute route is another request too.
    const background = await call("POST", "/api/executeWorkflowBackground", {
      key: adminKey,
      headers,
      json: { workflowId, input: { "First Name": "Ann" } },
    });
    expect(background.status).toBe(409);
    expect(await executionsOf(first.body.conversationId)).toHaveLength(1);
  });

  it("keeps workspaces apart: another workspace's same key runs its own request", async () => {
    const headers = { "idempotency-key": "shared-key" };
    const mine = await call("POST", "/api/executeWorkflow", {
      key: adminKey,
      headers,
      json: { workflowId, input: { "First Name": "Mine" } },
    });
    expect(mine.status).toBe(200);
    const otherWorkflow = await call("POST", "/api/v1/workflows", {
      key: otherTenantKey,
      json: { name: "Theirs", state: structuredClone(demoWorkflowJson) },
    });
    const theirs = await call("POST", "/api/executeWorkflow", {
      key: otherTenantKey,
      headers,
      json: { workflowId: otherWorkflow.body.id, input: { "First Name": "Theirs" } },
    });
    expect(theirs.status).toBe(200);
    expect(theirs.headers.get("idempotent-replayed")).toBeNull();
    expect(theirs.body.output.Greeting).toBe("Hello Theirs");
    expect(theirs.body.executionId).not.toBe(mine.body.executionId);
  });

  it("replays a background request with the same executionId and queues once", async () => {
    const headers = { "idempotency-key": "nightly-2030-01-01" };
    const json = { workflowId, input: { "First Name": "Queued" } };
    const first = await call("POST", "/api/executeWorkflowBackground", { key: adminKey, headers, json });
    expect(first.status).toBe(200);
    const again = await call("POST", "/api/executeWorkflowBackground", { key: adminKey, headers, json });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect(again.body.executionId).toBe(first.body.executionId);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await executionsOf(first.body.conversationId)).toHaveLength(1);
  });

  it("refuses a concurrent duplicate while the first is still running", async () => {
    const headers = { "idempotency-key": "slow-1" };
    const json = { workflowId: slowWorkflowId, input: {} };
    const [a, b] = await Promise.all([
      call("POST", "/api/executeWorkflow", { key: adminKey, headers, json }),
      call("POST", "/api/executeWorkflow", { key: adminKey, headers, json }),
    ]);
    const statuses = [a.status, b.status].sort();
    expect(statuses).toEqual([200, 409]);
    const [done, refused] = a.status === 200 ? [a, b] : [b, a];
    expect(refused.body.error).toBe("request with this Idempotency-Key is in progress");
    // Once it finished, the same request replays it.
    const later = await call("POST", "/api/executeWorkflow", { key: adminKey, headers, json });
    expect(later.status).toBe(200);
    expect(later.body).toEqual(done.body);
    expect(await executionsOf(done.body.conversationId, adminKey, slowWorkflowId)).toHaveLength(1);
  }, 30_000);

  it("refuses malformed keys with 400 and runs nothing", async () => {
    for (const bad of ["has space", "x".repeat(256), ""]) {
      const res = await call("POST", "/api/executeWorkflow", {
        key: adminKey,
        headers: { "idempotency-key": bad },
        json: { workflowId, input: { "First Name": "Nobody" } },
      });
      expect(res.status, `key ${JSON.stringify(bad)}`).toBe(400);
      expect(res.body.error).toBe("Idempotency-Key must be given once, as 1 to 255 visible ASCII characters");
    }
  });

  it("documents the header on both execute operations", () => {
    for (const path of ["/api/executeWorkflow", "/api/executeWorkflowBackground"]) {
      const header = document.paths[path].post.parameters.find((p: Json) => p.name === "idempotency-key");
      expect(header).toEqual(expect.objectContaining({ in: "header", required: false }));
      expect(document.paths[path].post.responses["409"]).toBeDefined();
    }
  });
});
