import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoWorkflowJson } from "../../gateway/cli/demo-workflow.js";
import { type Answer, invariantBreach, type Stack, send, startStack, type Tenant } from "./harness.js";

/**
 * Property-based fuzzing of every REST route (issue 9): whatever is sent, the answer is a success
 * or a 4xx with {"error": string}, never a 5xx, and the services stay up.
 * FUZZ_RUNS raises the number of cases (`npm run fuzz`).
 */

const RUNS = Number(process.env.FUZZ_RUNS ?? "300");
const WORKFLOW_RUNS = Math.max(20, Math.floor(RUNS / 5));

interface Operation {
  method: string;
  path: string;
  queryNames: string[];
  bodyNames: string[];
}

let stack: Stack;
let tenant: Tenant;
const operations: Operation[] = [];
let workflowId: string;

// biome-ignore lint/suspicious/noExplicitAny: the OpenAPI document is walked as plain JSON
type Json = any;

beforeAll(async () => {
  stack = await startStack();
  tenant = await stack.newTenant("Fuzz");
  const doc = (await send(stack.baseUrl, "GET", "/openapi.json")).body as Json;
  for (const [path, ops] of Object.entries<Json>(doc.paths)) {
    for (const [method, op] of Object.entries<Json>(ops)) {
      const queryNames = ((op.parameters ?? []) as Json[])
        .filter((p) => p.in === "query")
        .map((p) => p.name as string);
      const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
      operations.push({
        method: method.toUpperCase(),
        path,
        queryNames,
        bodyNames: Object.keys(bodySchema?.properties ?? {}),
      });
    }
  }
  const created = await send(stack.baseUrl, "POST", "/api/v1/workflows", {
    key: tenant.adminKey,
    json: { name: "fuzz target", state: demoWorkflowJson },
  });
  expect(created.status).toBe(201);
  workflowId = created.body.id;
}, 120_000);

afterAll(async () => {
  await stack?.stop();
});

const weirdString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constantFrom(
    "",
    " ",
    "null",
    "undefined",
    "0",
    "-1",
    "1e309",
    "NaN",
    "9007199254740993",
    "2024-13-45T99:99:99Z",
    "not-a-date",
    "0000-00-00",
    "1970-01-01T00:00:00Z",
    "+275760-09-13T00:00:00.001Z",
    "eyJpZCI6MX0",
    "Zm9v",
    "%00",
    "\u0000",
    "../../etc/passwd",
    "'; DROP TABLE logs; --",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\uD800",
    "a".repeat(5000),
  ),
);

const RAW_SEGMENTS = ["%ZZ", "%C0%AF", "%00", "%E2%82", "%", "..", "."];

const idLike = fc.oneof(
  weirdString,
  fc.constantFrom(...RAW_SEGMENTS),
  fc.uuid(),
  fc.constantFrom("wf_x", "exec_1", "00000000-0000-0000-0000-000000000000", "tok_zzz"),
);

const scalar = fc.oneof(
  weirdString,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(Number.MAX_SAFE_INTEGER, -0, 1e300, 2_147_483_648),
);

const jsonish = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(weirdString, tie("value"), { maxKeys: 4 }),
  ),
})).value;

function deepJson(depth: number): string {
  return `${"[".repeat(depth)}1${"]".repeat(depth)}`;
}

/** Bodies: structured values near the route's own fields, and raw texts JSON.parse handles oddly. */
function bodyFor(op: Operation): fc.Arbitrary<{ raw?: string; json?: unknown }> {
  const named =
    op.bodyNames.length === 0
      ? fc.constant({})
      : fc.dictionary(fc.constantFrom(...op.bodyNames), fc.oneof(jsonish, scalar), { maxKeys: 6 });
  return fc.oneof(
    named.map((json) => ({ json })),
    named.map((json) => ({ json: { ...json, workflowId } })),
    jsonish.map((json) => ({ json })),
    fc
      .constantFrom(
        '{"name":"a","name":"b"}',
        '{"workflowId":"x","workflowId":{"a":1},"input":{}}',
        '{"__proto__":{"polluted":true},"name":"p"}',
        '{"constructor":{"prototype":{"polluted":true}}}',
        "{",
        "[",
        "nul",
        "null",
        "true",
        '"string"',
        "1e999999",
        "\uFEFF{}",
        "{}garbage",
        deepJson(2000),
        `{"a":${deepJson(500)}}`,
        JSON.stringify({ blob: "x".repeat(200_000) }),
        JSON.stringify({ blob: "x".repeat(300_000) }),
        JSON.stringify(Array.from({ length: 20_000 }, (_, i) => i)),
        '{"input":{"First Name":"\\ud800"}}',
      )
      .map((raw) => ({ raw })),
  );
}

const apiKey = (admin: string) =>
  fc.oneof(
    fc.constant(admin),
    fc.constant(admin),
    fc.constant(undefined),
    fc.constantFrom(
      "",
      "x",
      "fp_",
      `${admin}x`,
      admin.slice(0, -1),
      admin.toUpperCase(),
      `${admin},${admin}`,
      "a".repeat(8000),
      "Bearer abc",
      "fp_live_%%%%",
    ),
    fc.stringMatching(/^[\x21-\x7e]{0,80}$/),
  );

const contentType = fc.constantFrom(
  undefined,
  "application/json",
  "application/json; charset=utf-8",
  "application/json; charset=utf-16",
  "APPLICATION/JSON",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/octet-stream",
  "a/b;;;=",
  "application/merge-patch+json",
);

const idempotencyKey = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom("", " ", "k".repeat(1000), "ключ".replace(/./g, "x"), "a,b", "\t"),
  fc.stringMatching(/^[\x21-\x7e]{1,300}$/),
);

/** Lone surrogates become U+FFFD, as any HTTP client would send them. */
function wellFormed(text: string): string {
  return Buffer.from(text, "utf8").toString("utf8");
}

function fillPath(path: string, ids: string[]): string {
  let i = 0;
  return path.replace(/\{[^}]+\}/g, () => {
    const id = ids[i++ % ids.length] ?? "x";
    // Raw escapes (malformed percent-encoding) go through as they are.
    return RAW_SEGMENTS.includes(id) ? id : encodeURIComponent(wellFormed(id));
  });
}

function queryFor(op: Operation): fc.Arbitrary<string> {
  const names = [...op.queryNames, "limit", "cursor", "startDate", "endDate", "x", "__proto__"];
  return fc
    .array(fc.tuple(fc.constantFrom(...names), weirdString), { maxLength: 5 })
    .map((pairs) =>
      pairs.length === 0
        ? ""
        : `?${new URLSearchParams(pairs.map(([k, v]): [string, string] => [k, v])).toString()}`,
    );
}

function assertHealthy(answer: Answer, what: string): void {
  const breach = invariantBreach(answer);
  expect(breach, `${what} → ${breach}`).toBeUndefined();
}

async function assertServicesUp(): Promise<void> {
  const health = await send(stack.baseUrl, "GET", "/healthz");
  expect(health.status).toBe(200);
  const check = await send(stack.baseUrl, "GET", "/api/v1/workflows", { key: tenant.adminKey });
  expect(check.status).toBe(200);
}

describe("REST fuzzing", () => {
  it("finds routes to fuzz in the OpenAPI document", () => {
    expect(operations.length).toBeGreaterThan(20);
    expect(operations.some((o) => o.path === "/api/executeWorkflow")).toBe(true);
  });

  it("answers every generated request with 2xx/3xx or 4xx {error}, never 5xx", async () => {
    const request = fc.constantFrom(...operations).chain((op) =>
      fc.record({
        op: fc.constant(op),
        ids: fc.array(idLike, { minLength: 1, maxLength: 3 }),
        query: queryFor(op),
        body: bodyFor(op),
        key: apiKey(tenant.adminKey),
        contentType,
        idempotencyKey,
        hookSecret: fc.option(fc.stringMatching(/^[\x21-\x7e]{0,64}$/), { nil: undefined }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const headers: Record<string, string> = {};
        if (r.contentType !== undefined) headers["content-type"] = r.contentType;
        if (r.idempotencyKey !== undefined) headers["idempotency-key"] = r.idempotencyKey;
        if (r.hookSecret !== undefined) headers["x-hook-secret"] = r.hookSecret;
        if (r.key !== undefined) headers["x-api-key"] = r.key;
        const body = r.body.raw ?? (r.body.json === undefined ? undefined : JSON.stringify(r.body.json));
        const path = `${fillPath(r.op.path, r.ids)}${r.query}`;
        const answer = await send(stack.baseUrl, r.op.method, path, { headers, body });
        assertHealthy(answer, `${r.op.method} ${path} ${(body ?? "").slice(0, 200)}`);
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
    await assertServicesUp();
  }, 300_000);

  it("answers header oddities on an authenticated read with 4xx {error} or success", async () => {
    const oddHeaders = fc.dictionary(
      fc.constantFrom(
        "x-api-key",
        "content-type",
        "idempotency-key",
        "x-request-id",
        "accept",
        "x-forwarded-for",
      ),
      fc.stringMatching(/^[\x20-\x7e]{0,200}$/),
      { maxKeys: 4 },
    );
    await fc.assert(
      fc.asyncProperty(oddHeaders, fc.constantFrom("GET", "POST"), async (headers, method) => {
        const answer = await send(
          stack.baseUrl,
          method,
          method === "GET" ? "/api/v1/logs" : "/api/executeWorkflow",
          {
            headers,
            body:
              method === "POST" ? JSON.stringify({ workflowId, input: { "First Name": "A" } }) : undefined,
          },
        );
        assertHealthy(answer, `${method} with ${JSON.stringify(headers).slice(0, 300)}`);
      }),
      { numRuns: Math.max(20, Math.floor(RUNS / 3)), endOnFailure: true },
    );
    await assertServicesUp();
  }, 300_000);
});

const blockType = fc.constantFrom("input", "function", "output", "api", "agent", "condition", "nope", "");

const fieldType = fc.constantFrom("string", "number", "boolean", "object", "array", "date", 1);

const functionCode = fc.constantFrom(
  "return 1;",
  "return input;",
  "throw new Error('x')",
  "while(true){}",
  "return {a: blocks};",
  "syntax error (",
  "return undefined;",
  "return 1n;",
  "return Symbol('x');",
  "return () => 1;",
  "const a = []; a.length = 2**32 - 1; return a;",
  "let s = 'x'; for (;;) s += s;",
  "return { greeting: 'x'.repeat(100000) };",
  'return JSON.parse(\'{"__proto__":{"x":1}}\');',
  // NUL characters and deep values: found by this suite (outputs PostgreSQL or protobuf cannot carry).
  "return { s: 'nul \\u0000 inside' };",
  "throw 'thrown \\u0000 string';",
  "let o = 1; for (let i = 0; i < 80; i++) o = [o]; return o;",
);

const outputValue = fc.constantFrom(
  "input",
  "blocks.greet",
  "blocks.greet.greeting",
  "1 +",
  "blocks.nope.x",
  "'a' + 1",
  "input['First Name']",
  "1 / 0",
  "[1,2,3].map(x, x * 2)",
  "size(input)",
);

const blockArb = fc.record(
  {
    id: fc.oneof(fc.constantFrom("start", "f", "out"), weirdString),
    type: blockType,
    name: fc.oneof(fc.constantFrom("Input", "F", "Out"), weirdString),
    enabled: fc.oneof(fc.boolean(), scalar),
    config: fc.oneof(
      fc.record({
        fields: fc.array(
          fc.record({ name: weirdString, type: fieldType, required: fc.oneof(fc.boolean(), scalar) }),
          { maxLength: 3 },
        ),
      }),
      fc.record({ code: functionCode }),
      fc.record({
        value: fc.constantFrom("input", "blocks.f", "1 +", "blocks.nope.x", "'a' + 1", "input['First Name']"),
      }),
      jsonish,
    ),
  },
  { requiredKeys: ["id", "type"] },
);

/** Near-valid definitions: the demo workflow with its code, output expression and fields varied. */
const demoVariant = fc
  .record({
    code: functionCode,
    value: outputValue,
    outName: fc.oneof(fc.constantFrom("Greeting", "Out"), weirdString),
    dropEdge: fc.boolean(),
    ageType: fc.oneof({ arbitrary: fc.constant("number"), weight: 4 }, { arbitrary: fieldType, weight: 1 }),
  })
  .map(({ code, value, outName, dropEdge, ageType }) => {
    const state = structuredClone(demoWorkflowJson) as Json;
    state.blocks.greet.config.code = code;
    state.blocks.out_greeting.config.value = value;
    state.blocks.out_greeting.name = outName;
    state.blocks.start.config.fields[1].type = ageType;
    if (dropEdge) state.edges = state.edges.slice(0, 2);
    return state;
  });

const workflowStateArb = fc.oneof(
  demoVariant,
  demoVariant,
  fc.array(blockArb, { maxLength: 5 }).chain((blocks) => {
    const ids = blocks.map((b) => String(b.id));
    const idArb = ids.length > 0 ? fc.oneof(fc.constantFrom(...ids), weirdString) : weirdString;
    return fc.record({
      blocks: fc.constant(Object.fromEntries(blocks.map((b) => [String(b.id), b]))),
      edges: fc.array(
        fc.record(
          { id: weirdString, source: idArb, target: idArb, sourceHandle: fc.oneof(weirdString, scalar) },
          { requiredKeys: ["source", "target"] },
        ),
        { maxLength: 6 },
      ),
    });
  }),
  fc.record({ blocks: jsonish, edges: jsonish }, { requiredKeys: [] }),
);

describe("workflow definition fuzzing", () => {
  it("publishes generated definitions: 400 naming a problem or 200/201, and runs the accepted ones", async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(
        workflowStateArb,
        fc.oneof(
          { arbitrary: fc.constant({ "First Name": "Ann", Age: 3 }), weight: 3 },
          { arbitrary: jsonish, weight: 1 },
        ),
        async (state, input) => {
          const created = await send(stack.baseUrl, "POST", "/api/v1/workflows", {
            key: tenant.adminKey,
            json: { name: "fuzzed" },
          });
          expect(created.status).toBe(201);
          const id = created.body.id as string;
          const published = await send(stack.baseUrl, "POST", `/api/v1/workflows/${id}/versions`, {
            key: tenant.adminKey,
            json: state,
          });
          assertHealthy(published, `publish ${JSON.stringify(state).slice(0, 400)}`);
          if (published.status >= 400) {
            expect(published.status).toBe(400);
            expect(published.body.error.length).toBeGreaterThan(0);
            return;
          }
          accepted++;
          const run = await send(stack.baseUrl, "POST", "/api/executeWorkflow", {
            key: tenant.adminKey,
            json: { workflowId: id, input },
          });
          assertHealthy(
            run,
            `run ${JSON.stringify(state).slice(0, 400)} with ${JSON.stringify(input).slice(0, 200)}`,
          );
        },
      ),
      { numRuns: WORKFLOW_RUNS, endOnFailure: true },
    );
    // The demo workflow is a valid definition: published and run, it answers 200.
    const demo = await send(stack.baseUrl, "POST", `/api/v1/workflows/${workflowId}/versions`, {
      key: tenant.adminKey,
      json: demoWorkflowJson,
    });
    expect(demo.status).toBeLessThan(300);
    const ran = await send(stack.baseUrl, "POST", "/api/executeWorkflow", {
      key: tenant.adminKey,
      json: { workflowId, input: { "First Name": "John", Age: 30 } },
    });
    expect(ran.status, ran.text).toBe(200);
    // Demo variants are generated often enough that some definitions are valid and run.
    expect(accepted).toBeGreaterThan(0);
    await assertServicesUp();
  }, 300_000);
});

describe("fuzz regressions", () => {
  it("refuses JSON nested deeper than 32 levels with 400 (was a 500: protobuf recursion limit)", async () => {
    const deep = (n: number) => `${"[".repeat(n)}1${"]".repeat(n)}`;
    const execute = await send(stack.baseUrl, "POST", "/api/executeWorkflow", {
      key: tenant.adminKey,
      headers: { "content-type": "application/json" },
      body: `{"workflowId":"${workflowId}","input":{"First Name":"x","a":${deep(50)}}}`,
    });
    expect(execute.status, execute.text).toBe(400);
    expect(execute.body.error).toMatch(/^body\.input\.a.* is nested deeper than 32 levels$/);
    const hook = await send(stack.baseUrl, "POST", "/api/v1/hooks/hk_unknown", {
      headers: { "content-type": "application/json", "x-hook-secret": "s" },
      body: `{"a":${deep(50)}}`,
    });
    expect(hook.status, hook.text).toBe(400);
    expect(hook.body.error).toMatch(/nested deeper than 32 levels/);
  });

  it("refuses NUL characters in path, query and body with 400 naming where (was a 500 from PostgreSQL)", async () => {
    const inPath = await send(stack.baseUrl, "GET", "/api/v1/notifications/%00", { key: tenant.adminKey });
    expect(inPath.status).toBe(400);
    expect(inPath.body.error).toMatch(/params\.id/);
    const inQuery = await send(stack.baseUrl, "GET", "/api/v1/logs?cursor=%00", { key: tenant.adminKey });
    expect(inQuery.status).toBe(400);
    expect(inQuery.body.error).toMatch(/querystring\.cursor/);
    const inBody = await send(stack.baseUrl, "POST", "/api/v1/workflows", {
      key: tenant.adminKey,
      json: { name: "a\u0000b" },
    });
    expect(inBody.status).toBe(400);
    expect(inBody.body.error).toMatch(/body\.name/);
    const inInput = await send(stack.baseUrl, "POST", "/api/executeWorkflow", {
      key: tenant.adminKey,
      json: { workflowId, input: { "First Name": "x\u0000" } },
    });
    expect(inInput.status).toBe(400);
    expect(inInput.body.error).toMatch(/body\.input\.First Name/);
  });
});
