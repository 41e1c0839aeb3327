import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { demoInput, demoWorkflowJson } from "../../gateway/cli/demo-workflow.js";
import { type Answer, invariantBreach, type Stack, send, startStack, type Tenant } from "../fuzz/harness.js";
import { waitFor } from "../helpers/infra.js";

/**
 * Tenant isolation, scopes and key lifecycle through the REST edge (issue 9): another workspace's
 * ids never reveal data, a key missing a route's scope gets 403, and expired, revoked and
 * rotated-out keys get 401.
 */

let stack: Stack;
let owner: Tenant;
let intruder: Tenant;

/** Everything tenant "owner" has, by kind. */
const ids = {
  workflow: "",
  execution: "",
  backgroundExecution: "",
  conversation: "",
  schedule: "",
  log: "",
  token: "",
  subscription: "",
  delivery: "",
};

/** Some routes wrap their answer in {data}, others (the seeds' shapes) do not. */
// biome-ignore lint/suspicious/noExplicitAny: bodies are plain JSON
function dataOf(answer: Answer): any {
  return answer.body.data ?? answer.body;
}

function ok(answer: Answer, what: string): Answer {
  expect(answer.status, `${what}: ${answer.text}`).toBeLessThan(300);
  return answer;
}

beforeAll(async () => {
  stack = await startStack();
  owner = await stack.newTenant("Owner");
  intruder = await stack.newTenant("Intruder");
  const key = owner.adminKey;
  const base = stack.baseUrl;
  ids.workflow = dataOf(
    ok(
      await send(base, "POST", "/api/v1/workflows", {
        key,
        json: { name: "secret flow", state: demoWorkflowJson },
      }),
      "create workflow",
    ),
  ).id;
  const run = ok(
    await send(base, "POST", "/api/executeWorkflow", {
      key,
      json: { workflowId: ids.workflow, input: demoInput },
    }),
    "execute",
  ).body;
  ids.execution = run.executionId;
  ids.conversation = run.conversationId;
  ids.backgroundExecution = ok(
    await send(base, "POST", "/api/executeWorkflowBackground", {
      key,
      json: { workflowId: ids.workflow, input: demoInput },
    }),
    "background",
  ).body.executionId;
  ids.schedule = dataOf(
    ok(
      await send(base, "POST", `/api/v1/workflows/${ids.workflow}/schedules`, {
        key,
        json: { cron: "0 0 1 1 *", input: demoInput },
      }),
      "schedule",
    ),
  ).id;
  ids.token = dataOf(
    ok(
      await send(base, "POST", "/api/v1/tokens", { key, json: { name: "app", scopes: ["logs:read"] } }),
      "token",
    ),
  ).id;
  ids.subscription = dataOf(
    ok(
      await send(base, "POST", "/api/v1/notifications", {
        key,
        json: { name: "hook", webhook: { url: "https://example.com/flowplane" }, allWorkflows: true },
      }),
      "subscription",
    ),
  ).id;
  ids.delivery = dataOf(
    ok(await send(base, "POST", `/api/v1/notifications/${ids.subscription}/test`, { key }), "test delivery"),
  ).id;
  ids.log = await waitFor(
    "the owner's log row",
    async () => {
      const logs = await send(base, "GET", `/api/v1/logs?workspaceId=${owner.id}`, { key });
      const row = (logs.body?.data ?? []).find(
        (l: { executionId: string }) => l.executionId === ids.execution,
      );
      return row?.id as string | undefined;
    },
    30_000,
  );
}, 180_000);

afterAll(async () => {
  await stack?.stop();
});

interface RouteCall {
  method: string;
  path: string;
  json?: unknown;
  scope: string;
}

/** Every tenant-scoped route, aimed at the owner's resources. */
function ownerRoutes(): RouteCall[] {
  const wf = ids.workflow;
  return [
    { method: "GET", path: `/api/v1/workflows/${wf}`, scope: "workflows:read" },
    {
      method: "POST",
      path: `/api/v1/workflows/${wf}/versions`,
      json: demoWorkflowJson,
      scope: "workflows:write",
    },
    { method: "GET", path: `/api/v1/workflows/${wf}/schedules`, scope: "workflows:read" },
    {
      method: "POST",
      path: `/api/v1/workflows/${wf}/schedules`,
      json: { cron: "0 0 1 1 *", input: demoInput },
      scope: "workflows:write",
    },
    { method: "DELETE", path: `/api/v1/workflows/${wf}/schedules/${ids.schedule}`, scope: "workflows:write" },
    { method: "POST", path: `/api/v1/workflows/${wf}/hooks`, json: {}, scope: "workflows:write" },
    {
      method: "POST",
      path: "/api/executeWorkflow",
      json: { workflowId: wf, input: demoInput },
      scope: "workflows:execute",
    },
    {
      method: "POST",
      path: "/api/executeWorkflowBackground",
      json: { workflowId: wf, input: demoInput },
      scope: "workflows:execute",
    },
    {
      method: "POST",
      path: "/api/getConversationById",
      json: { workflowId: wf, conversationId: ids.conversation },
      scope: "workflows:read",
    },
    { method: "GET", path: `/api/v1/executions/${ids.execution}`, scope: "workflows:read" },
    {
      method: "POST",
      path: `/api/v1/executions/${ids.backgroundExecution}/cancel`,
      scope: "workflows:execute",
    },
    { method: "GET", path: `/api/v1/logs?workspaceId=${owner.id}`, scope: "logs:read" },
    { method: "GET", path: `/api/v1/logs/${ids.log}`, scope: "logs:read" },
    { method: "GET", path: `/api/v1/logs/executions/${ids.execution}`, scope: "logs:read" },
    { method: "GET", path: `/api/v1/tokens/${ids.token}`, scope: "tokens:read" },
    { method: "GET", path: `/api/v1/tokens/${ids.token}/events`, scope: "tokens:read" },
    { method: "POST", path: `/api/v1/tokens/${ids.token}/rotate`, json: {}, scope: "tokens:write" },
    { method: "DELETE", path: `/api/v1/tokens/${ids.token}`, scope: "tokens:write" },
    { method: "GET", path: `/api/v1/notifications/${ids.subscription}`, scope: "notifications:read" },
    {
      method: "PATCH",
      path: `/api/v1/notifications/${ids.subscription}`,
      json: { enabled: false },
      scope: "notifications:write",
    },
    {
      method: "GET",
      path: `/api/v1/notifications/${ids.subscription}/deliveries`,
      scope: "notifications:read",
    },
    {
      method: "POST",
      path: `/api/v1/notifications/${ids.subscription}/deliveries/${ids.delivery}/redeliver`,
      scope: "notifications:write",
    },
    { method: "POST", path: `/api/v1/notifications/${ids.subscription}/test`, scope: "notifications:write" },
    { method: "DELETE", path: `/api/v1/notifications/${ids.subscription}`, scope: "notifications:write" },
    { method: "GET", path: `/api/v1/tenants/${owner.id}`, scope: "tokens:read" },
  ];
}

/** Routes without an owner id in them, with the scope each needs. */
const collectionRoutes: RouteCall[] = [
  { method: "GET", path: "/api/v1/workflows", scope: "workflows:read" },
  { method: "POST", path: "/api/v1/workflows", json: { name: "x" }, scope: "workflows:write" },
  { method: "GET", path: "/api/v1/tokens", scope: "tokens:read" },
  { method: "POST", path: "/api/v1/tokens", json: { name: "x", scopes: [] }, scope: "tokens:write" },
  { method: "GET", path: "/api/v1/notifications", scope: "notifications:read" },
  {
    method: "POST",
    path: "/api/v1/notifications",
    json: { webhook: { url: "https://example.com/x" } },
    scope: "notifications:write",
  },
  { method: "POST", path: "/api/v1/tenants", json: { name: "x" }, scope: "tokens:write" },
];

const ALL_SCOPES = [
  "workflows:execute",
  "workflows:read",
  "workflows:write",
  "logs:read",
  "notifications:read",
  "notifications:write",
  "tokens:read",
  "tokens:write",
];

function call(route: RouteCall, key: string | undefined): Promise<Answer> {
  return send(stack.baseUrl, route.method, route.path, {
    key,
    json: route.json,
    // Bodiless POSTs still say what they are.
    headers: route.json === undefined && route.method !== "GET" ? {} : undefined,
  });
}

describe("another workspace's ids", () => {
  it("answer 404 or 403 on every tenant-scoped route, with no data", async () => {
    for (const route of ownerRoutes()) {
      const answer = await call(route, intruder.adminKey);
      const what = `${route.method} ${route.path}`;
      expect(invariantBreach(answer), what).toBeUndefined();
      expect([403, 404], `${what}: ${answer.status} ${answer.text}`).toContain(answer.status);
      expect(answer.body.data, what).toBeUndefined();
      expect(answer.text, what).not.toContain("secret flow");
      expect(answer.text, what).not.toContain("Hello John");
    }
  });

  it("never appear in the intruder's lists", async () => {
    for (const path of [
      "/api/v1/workflows",
      `/api/v1/logs?workspaceId=${intruder.id}`,
      "/api/v1/tokens",
      "/api/v1/notifications",
    ]) {
      const answer = await send(stack.baseUrl, "GET", path, { key: intruder.adminKey });
      expect(answer.status, path).toBe(200);
      for (const id of Object.values(ids)) expect(answer.text, `${path} leaks ${id}`).not.toContain(id);
    }
  });

  it("left every owner resource untouched", async () => {
    const key = owner.adminKey;
    const base = stack.baseUrl;
    const workflow = await send(base, "GET", `/api/v1/workflows/${ids.workflow}`, { key });
    expect(workflow.status).toBe(200);
    expect(workflow.body.data?.latestVersion ?? workflow.body.latestVersion).toBe(1);
    const schedules = await send(base, "GET", `/api/v1/workflows/${ids.workflow}/schedules`, { key });
    expect(schedules.text).toContain(ids.schedule);
    const token = await send(base, "GET", `/api/v1/tokens/${ids.token}`, { key });
    expect(dataOf(token).revokedAt).toBeNull();
    expect(dataOf(token).rotatedAt).toBeNull();
    const subscription = await send(base, "GET", `/api/v1/notifications/${ids.subscription}`, { key });
    expect(subscription.status).toBe(200);
    expect(dataOf(subscription).enabled).toBe(true);
  });
});

describe("scopes", () => {
  it("a key missing a route's scope gets 403 on that route, for every scope", async () => {
    const keyWithout = new Map<string, string>();
    for (const scope of ALL_SCOPES) {
      const created = await send(stack.baseUrl, "POST", "/api/v1/tokens", {
        key: owner.adminKey,
        json: { name: `without ${scope}`, scopes: ALL_SCOPES.filter((s) => s !== scope) },
      });
      expect(created.status, created.text).toBe(201);
      keyWithout.set(scope, created.body.data.key);
    }
    const routes = [...ownerRoutes(), ...collectionRoutes];
    for (const scope of ALL_SCOPES)
      expect(
        routes.some((r) => r.scope === scope),
        scope,
      ).toBe(true);
    for (const route of routes) {
      const answer = await call(route, keyWithout.get(route.scope));
      const what = `${route.method} ${route.path} without ${route.scope}`;
      expect(answer.status, `${what}: ${answer.text}`).toBe(403);
      expect(typeof answer.body.error, what).toBe("string");
    }
  });

  it("no key at all gets 401 on every route", async () => {
    for (const route of [...ownerRoutes(), ...collectionRoutes]) {
      const answer = await call(route, undefined);
      expect(answer.status, `${route.method} ${route.path}: ${answer.text}`).toBe(401);
      expect(typeof answer.body.error).toBe("string");
    }
  });
});

describe("key lifecycle", () => {
  async function appKey(json: object): Promise<{ id: string; key: string }> {
    const created = await send(stack.baseUrl, "POST", "/api/v1/tokens", {
      key: owner.adminKey,
      json: { name: "lifecycle", scopes: ["workflows:read"], ...json },
    });
    expect(created.status, created.text).toBe(201);
    return { id: created.body.data.id, key: created.body.data.key };
  }

  const read = (key: string) => send(stack.baseUrl, "GET", "/api/v1/workflows", { key });

  it("a revoked key gets 401", async () => {
    const token = await appKey({});
    expect((await read(token.key)).status).toBe(200);
    const revoked = await send(stack.baseUrl, "DELETE", `/api/v1/tokens/${token.id}`, {
      key: owner.adminKey,
    });
    expect(revoked.status).toBeLessThan(300);
    const answer = await read(token.key);
    expect(answer.status).toBe(401);
    expect(typeof answer.body.error).toBe("string");
  });

  it("an expired key gets 401", async () => {
    const token = await appKey({ expiresAt: new Date(Date.now() + 3_000).toISOString() });
    await waitFor(
      "the key to expire",
      async () => ((await read(token.key)).status === 401 ? true : undefined),
      30_000,
    );
    const answer = await read(token.key);
    expect(answer.status).toBe(401);
    expect(typeof answer.body.error).toBe("string");
  });

  it("a key rotated out without grace gets 401 and the new one works", async () => {
    const token = await appKey({});
    const rotated = await send(stack.baseUrl, "POST", `/api/v1/tokens/${token.id}/rotate`, {
      key: owner.adminKey,
      json: { gracePeriodSeconds: 0 },
    });
    expect(rotated.status, rotated.text).toBe(200);
    expect((await read(token.key)).status).toBe(401);
    expect((await read(rotated.body.data.key)).status).toBe(200);
  });

  it("a key with one character changed, or in another case, gets 401", async () => {
    const token = await appKey({});
    const last = token.key.at(-1) === "a" ? "b" : "a";
    expect((await read(`${token.key.slice(0, -1)}${last}`)).status).toBe(401);
    expect((await read(token.key.toUpperCase())).status).toBe(401);
  });
});
