import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatabase } from "../services/platform/db.js";
import { Plan, TokenKind } from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { WorkflowService } from "../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { createRpcClient } from "../services/platform/rpc.js";
import { waitFor } from "../test/helpers/infra.js";
import { type Answer, type Stack, startStack } from "../test/helpers/stack.js";
import { demoInput, demoWorkflowState } from "./cli/demo-workflow.js";

let stack: Stack;

/** Every answer is JSON, never a 500, and a 4xx or 5xx carries {"error"}; a 503 is this file's to check. */
async function call(
  method: string,
  path: string,
  opts: { key?: string; json?: unknown } = {},
): Promise<Answer> {
  const res = await stack.send(method, path, opts);
  const parsed = JSON.parse(res.text);
  if (res.status >= 400) {
    expect(typeof parsed.error, `${method} ${path} ${res.status} has an "error" string: ${res.text}`).toBe(
      "string",
    );
  }
  expect(res.status, `${method} ${path}: ${res.text}`).not.toBe(500);
  return { ...res, body: parsed };
}

interface Workspace {
  tenantId: string;
  adminKey: string;
  adminId: string;
}

async function workspace(plan: Plan): Promise<Workspace> {
  const { tenant } = await stack.tenants.createTenant({ name: "ws", plan });
  const { token, secret } = await stack.auth.createToken({
    tenantId: tenant!.id,
    kind: TokenKind.ADMIN,
    name: "admin",
  });
  return { tenantId: tenant!.id, adminKey: secret, adminId: token!.id };
}

async function appKey(ws: Workspace, scopes: string[], extra: { workflowIds?: string[] } = {}) {
  const { token, secret } = await stack.auth.createToken({
    tenantId: ws.tenantId,
    kind: TokenKind.APP,
    name: `app ${scopes.length}`,
    scopes,
    ...extra,
  });
  return { id: token!.id, key: secret };
}

async function demoWorkflow(tenantId: string): Promise<string> {
  const { workflow } = await createRpcClient(WorkflowService, stack.urls.executor!).createWorkflow({
    tenantId,
    name: "Demo",
    description: "greets",
    state: demoWorkflowState(),
  });
  return workflow!.id;
}

beforeAll(async () => {
  stack = await startStack({
    services: ["auth", "executor", "logs"],
    serviceDefaults: false,
    env: {
      // Pro is wide so that the scope matrix never meets a limit; Free keeps the contract's 10/20 and a
      // tiny usage limit; Team's sync bucket holds two executions; Enterprise's execution buckets
      // refill one token a minute, so a count read after a slow run is still exact.
      auth: {
        AUTH_PLAN_PRO_API: "6000/6000",
        AUTH_PLAN_FREE_USAGE_LIMIT_USD: "0.0001",
        AUTH_PLAN_TEAM_SYNC: "1/2",
        AUTH_PLAN_ENTERPRISE_SYNC: "1/120",
        AUTH_PLAN_ENTERPRISE_ASYNC: "1/400",
      },
    },
    gateway: { bodyLimitBytes: 64 * 1024 },
    tenant: false,
  });
});

afterAll(async () => {
  await stack?.stop();
});

describe("token and tenant routes", () => {
  it("checks the scope of every route: 401 without a key, 403 without the scope, through with it", async () => {
    const ws = await workspace(Plan.PRO);
    const target = await appKey(ws, ["logs:read"]);
    const routes: { method: string; path: () => string; scope: string; json?: unknown; admin?: boolean }[] = [
      {
        method: "POST",
        path: () => "/api/v1/tokens",
        scope: "tokens:write",
        json: { name: "x", scopes: ["logs:read"] },
      },
      { method: "GET", path: () => "/api/v1/tokens", scope: "tokens:read" },
      { method: "GET", path: () => `/api/v1/tokens/${target.id}`, scope: "tokens:read" },
      { method: "GET", path: () => `/api/v1/tokens/${target.id}/events`, scope: "tokens:read" },
      { method: "POST", path: () => `/api/v1/tokens/${target.id}/rotate`, scope: "tokens:write", json: {} },
      { method: "DELETE", path: () => `/api/v1/tokens/${target.id}`, scope: "tokens:write" },
      {
        method: "POST",
        path: () => "/api/v1/tenants",
        scope: "tokens:write",
        json: { name: "n" },
        admin: true,
      },
      { method: "GET", path: () => `/api/v1/tenants/${ws.tenantId}`, scope: "tokens:read", admin: true },
    ];
    const allButTokens = await appKey(ws, [
      "workflows:execute",
      "workflows:read",
      "workflows:write",
      "logs:read",
      "notifications:read",
      "notifications:write",
    ]);
    for (const route of routes) {
      const what = `${route.method} ${route.path()}`;
      const anonymous = await call(route.method, route.path(), { json: route.json });
      expect(anonymous.status, what).toBe(401);
      const wrong = await call(route.method, route.path(), { key: allButTokens.key, json: route.json });
      expect(wrong.status, what).toBe(403);
      expect(wrong.body.error, what).toBe(`API key lacks scope ${route.scope}`);
      // With logs:read besides, which the created and managed tokens hold (no escalation).
      const scoped = await appKey(ws, [route.scope, "logs:read"]);
      const withScope = await call(route.method, route.path(), { key: scoped.key, json: route.json });
      if (route.admin) {
        // Workspaces are for admin keys only, whatever an app key's scopes.
        expect(withScope.status, what).toBe(403);
        expect(withScope.body.error).toBe("an admin key is required");
        const asAdmin = await call(route.method, route.path(), { key: ws.adminKey, json: route.json });
        expect(asAdmin.status, what).toBeLessThan(300);
      } else {
        expect(withScope.status, what).toBeLessThan(300);
      }
    }
  });

  it("manages a token's whole life over REST: create, list, get, rotate with and without grace, revoke, events", async () => {
    const ws = await workspace(Plan.PRO);
    const created = await call("POST", "/api/v1/tokens", {
      key: ws.adminKey,
      json: {
        name: "CRM",
        purpose: "syncs leads",
        scopes: ["logs:read"],
        rateLimitPerMinute: 20,
        expiryWarningDays: 3,
        expiresAt: new Date(Date.now() + 30 * 86_400_000).toISOString(),
      },
    });
    expect(created.status).toBe(201);
    const id = created.body.data.id;
    const firstKey = created.body.data.key;
    expect(created.body.data).toMatchObject({
      rateLimitPerMinute: 20,
      expiryWarningDays: 3,
      createdBy: ws.adminId,
    });

    const list = await call("GET", "/api/v1/tokens?limit=100", { key: ws.adminKey });
    expect(list.status).toBe(200);
    const listed = list.body.data.find((t: { id: string }) => t.id === id);
    expect(listed).toMatchObject({ name: "CRM", purpose: "syncs leads", prefix: firstKey.slice(0, 12) });
    expect(listed.key).toBeUndefined();
    expect(JSON.stringify(list.body)).not.toContain(firstKey);
    const got = await call("GET", `/api/v1/tokens/${id}`, { key: ws.adminKey });
    expect(got.body.data.key).toBeUndefined();
    expect(got.body.data.id).toBe(id);

    const graced = await call("POST", `/api/v1/tokens/${id}/rotate`, {
      key: ws.adminKey,
      json: { gracePeriodSeconds: 600 },
    });
    expect(graced.status).toBe(200);
    const secondKey = graced.body.data.key;
    expect(secondKey).not.toBe(firstKey);
    expect(Date.parse(graced.body.data.previousKeyExpiresAt)).toBeGreaterThan(Date.now() + 500_000);
    const logsPath = `/api/v1/logs?workspaceId=${ws.tenantId}`;
    expect((await call("GET", logsPath, { key: firstKey })).status).toBe(200);
    expect((await call("GET", logsPath, { key: secondKey })).status).toBe(200);

    // Without grace (and no body at all): the secret in grace and the current one stop at once.
    const res = await fetch(`${stack.baseUrl}/api/v1/tokens/${id}/rotate`, {
      method: "POST",
      headers: { "x-api-key": ws.adminKey },
    });
    expect(res.status).toBe(200);
    const thirdKey = ((await res.json()) as { data: { key: string } }).data.key;
    expect((await call("GET", logsPath, { key: firstKey })).status).toBe(401);
    expect((await call("GET", logsPath, { key: secondKey })).status).toBe(401);
    expect((await call("GET", logsPath, { key: thirdKey })).status).toBe(200);

    const revoked = await call("DELETE", `/api/v1/tokens/${id}`, { key: ws.adminKey });
    expect(revoked.status).toBe(200);
    expect(revoked.body.data.revokedAt).toMatch(/Z$/);
    const refused = await call("GET", logsPath, { key: thirdKey });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe("API key revoked");

    const events = await call("GET", `/api/v1/tokens/${id}/events`, { key: ws.adminKey });
    expect(events.status).toBe(200);
    expect(events.body.data.map((e: { event: string }) => e.event)).toEqual([
      "created",
      "rotated",
      "rotated",
      "revoked",
      "refused_unauthenticated",
    ]);
    expect(events.body.data[3]).toMatchObject({ actor: ws.adminId, tokenId: id, workspaceId: ws.tenantId });
    expect(events.body.data[0].at).toMatch(/Z$/);
    const page = await call("GET", `/api/v1/tokens/${id}/events?limit=2`, { key: ws.adminKey });
    expect(page.body.data).toHaveLength(2);
    const next = await call("GET", `/api/v1/tokens/${id}/events?limit=2&cursor=${page.body.nextCursor}`, {
      key: ws.adminKey,
    });
    expect(next.body.data[0].id).toBe(events.body.data[2].id);
  });

  it("answers 400 for bad input, naming the field", async () => {
    const ws = await workspace(Plan.PRO);
    const target = await appKey(ws, ["logs:read"]);
    const cases: [string, string, unknown, RegExp][] = [
      ["POST", `/api/v1/tokens/${target.id}/rotate`, { gracePeriodSeconds: -1 }, /gracePeriodSeconds/],
      ["POST", `/api/v1/tokens/${target.id}/rotate`, { gracePeriodSeconds: "1" }, /gracePeriodSeconds/],
      ["POST", `/api/v1/tokens/${target.id}/rotate`, { grace: 1 }, /grace/],
      ["GET", "/api/v1/tokens/tok_nope", undefined, /params.id/],
      ["GET", "/api/v1/tokens?limit=0", undefined, /limit/],
      ["GET", "/api/v1/tokens?page=2", undefined, /page/],
      [
        "POST",
        "/api/v1/tokens",
        { name: "x", scopes: ["logs:read"], rateLimitPerMinute: 0 },
        /rateLimitPerMinute/,
      ],
      [
        "POST",
        "/api/v1/tokens",
        { name: "x", scopes: ["logs:read"], rateLimitPerMinute: 6001 },
        /rate_limit_per_minute/,
      ],
      ["POST", "/api/v1/tokens", { name: "x", scopes: ["logs:read"], expiryWarningDays: 2 }, /expires_at/],
      ["POST", "/api/v1/tenants", { name: "x", plan: "gold" }, /plan/],
      ["POST", "/api/v1/tenants", {}, /name/],
    ];
    for (const [method, path, json, message] of cases) {
      const res = await call(method, path, { key: ws.adminKey, json });
      expect(res.status, `${method} ${path} ${JSON.stringify(json)}`).toBe(400);
      expect(res.body.error).toMatch(message);
    }
  });

  it("answers 404 for another workspace's token or workspace and leaves them untouched", async () => {
    const ours = await workspace(Plan.PRO);
    const theirs = await workspace(Plan.PRO);
    const foreign = await appKey(theirs, ["logs:read"]);
    for (const [method, path] of [
      ["GET", `/api/v1/tokens/${foreign.id}`],
      ["GET", `/api/v1/tokens/${foreign.id}/events`],
      ["POST", `/api/v1/tokens/${foreign.id}/rotate`],
      ["DELETE", `/api/v1/tokens/${foreign.id}`],
      ["GET", `/api/v1/tenants/${theirs.tenantId}`],
    ] as const) {
      const res = await call(method, path, { key: ours.adminKey, json: method === "POST" ? {} : undefined });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(JSON.stringify(res.body)).not.toContain(
        theirs.tenantId === path.split("/").at(-1) ? "plan" : "prefix",
      );
    }
    const list = await call("GET", "/api/v1/tokens", { key: ours.adminKey });
    expect(list.body.data.map((t: { id: string }) => t.id)).not.toContain(foreign.id);
    expect(
      (await call("GET", `/api/v1/logs?workspaceId=${theirs.tenantId}`, { key: foreign.key })).status,
    ).toBe(200);
  });

  it("refuses escalation: no scope, workflow or admin rights beyond the caller's, on create and rotate", async () => {
    const ws = await workspace(Plan.PRO);
    const manager = await appKey(ws, ["tokens:write", "tokens:read", "logs:read"]);
    const create = (json: unknown) => call("POST", "/api/v1/tokens", { key: manager.key, json });
    expect((await create({ name: "more", scopes: ["workflows:execute"] })).status).toBe(403);
    expect((await create({ name: "admin", kind: "admin" })).status).toBe(403);
    const ok = await create({ name: "same", scopes: ["logs:read"] });
    expect(ok.status).toBe(201);
    const stronger = await appKey(ws, ["workflows:execute"]);
    const rotate = await call("POST", `/api/v1/tokens/${stronger.id}/rotate`, { key: manager.key, json: {} });
    expect(rotate.status).toBe(403);
    expect(rotate.body.error).toBe("cannot grant scope workflows:execute: the calling key does not hold it");
    expect((await call("DELETE", `/api/v1/tokens/${ws.adminId}`, { key: manager.key })).status).toBe(403);
    expect(
      (await call("POST", `/api/v1/tokens/${ok.body.data.id}/rotate`, { key: manager.key, json: {} })).status,
    ).toBe(200);
    const restricted = await appKey(ws, ["tokens:write", "workflows:execute"], {
      workflowIds: ["wf_01m84f5wr7tzs2kvtwwq4vdgj8"],
    });
    const unrestricted = await call("POST", "/api/v1/tokens", {
      key: restricted.key,
      json: { name: "open", scopes: ["workflows:execute"] },
    });
    expect(unrestricted.status).toBe(403);
    const events = await call("GET", `/api/v1/tokens/${manager.id}/events`, { key: ws.adminKey });
    expect(
      events.body.data.filter((e: { event: string }) => e.event === "refused_permission").length,
    ).toBeGreaterThanOrEqual(4);
  });

  it("creates a workspace with its admin key for an admin caller; the new key sees only its workspace", async () => {
    const ws = await workspace(Plan.PRO);
    const created = await call("POST", "/api/v1/tenants", {
      key: ws.adminKey,
      json: { name: "Branch office", plan: "team" },
    });
    expect(created.status).toBe(201);
    expect(created.body.data).toMatchObject({ name: "Branch office", plan: "team" });
    expect(created.body.data.id).toMatch(/^ws_/);
    expect(created.body.data.adminKey).toMatchObject({ kind: "admin", createdBy: ws.adminId });
    const newKey = created.body.data.adminKey.key;
    const own = await call("GET", `/api/v1/tenants/${created.body.data.id}`, { key: newKey });
    expect(own.status).toBe(200);
    expect(own.body.data).toMatchObject({ id: created.body.data.id, plan: "team" });
    expect(own.body.data.limits.workflowExecutionRateLimit.sync).toMatchObject({
      requestsPerMinute: 1,
      maxBurst: 2,
    });
    expect(own.body.data.limits.usage).toMatchObject({
      currentPeriodCost: 0,
      plan: "team",
      isExceeded: false,
    });
    expect((await call("GET", `/api/v1/tenants/${ws.tenantId}`, { key: newKey })).status).toBe(404);
    expect(JSON.stringify(created.body)).toContain(newKey);
  });
});

describe("rate limits and usage at the edge", () => {
  it("reports X-RateLimit-* on every authenticated answer and the limits block on logs", async () => {
    const ws = await workspace(Plan.FREE);
    const workflowId = await demoWorkflow(ws.tenantId);
    const executed = await call("POST", "/api/executeWorkflow", {
      key: ws.adminKey,
      json: { workflowId, input: demoInput },
    });
    expect(executed.status).toBe(200);
    expect(executed.headers.get("x-ratelimit-limit")).toBe("10");
    expect(executed.headers.get("x-ratelimit-remaining")).toBe("19");
    expect(new Date(executed.headers.get("x-ratelimit-reset")!).toISOString()).toBe(
      executed.headers.get("x-ratelimit-reset"),
    );
    const list = await waitFor("the execution's log", async () => {
      const res = await call("GET", `/api/v1/logs?workspaceId=${ws.tenantId}`, { key: ws.adminKey });
      return res.body.data.length > 0 ? res : undefined;
    });
    expect(Number(list.headers.get("x-ratelimit-remaining"))).toBeLessThan(19);
    expect(list.body.limits.workflowExecutionRateLimit.sync).toMatchObject({
      requestsPerMinute: 10,
      maxBurst: 20,
    });
    expect(list.body.limits.workflowExecutionRateLimit.sync.remaining).toBe(19);
    expect(list.body.limits.workflowExecutionRateLimit.async).toMatchObject({
      requestsPerMinute: 50,
      maxBurst: 100,
      remaining: 100,
    });
    expect(list.body.limits.workflowExecutionRateLimit.sync.resetAt).toMatch(/Z$/);
    expect(list.body.limits.usage).toMatchObject({ limit: 0.0001, plan: "free" });
    const detail = await call("GET", `/api/v1/logs/${list.body.data[0].id}`, { key: ws.adminKey });
    expect(detail.status).toBe(200);
    expect(detail.body.limits.workflowExecutionRateLimit.sync.remaining).toBe(19);
    // A refusal after authentication still reports the bucket; a 401 has no bucket to report.
    const notFound = await call("GET", "/api/v1/tokens/tok_01m84f5wr7tzs2kvtwwq4vdgj8", { key: ws.adminKey });
    expect(notFound.status).toBe(404);
    expect(notFound.headers.get("x-ratelimit-limit")).toBe("10");
    expect((await call("GET", "/api/v1/tokens")).headers.get("x-ratelimit-limit")).toBeNull();
  });

  it("refuses executions with 400 insufficient credits once the period's usage reaches the plan's limit", async () => {
    const ws = await workspace(Plan.FREE);
    const workflowId = await demoWorkflow(ws.tenantId);
    expect(
      (
        await call("POST", "/api/executeWorkflow", {
          key: ws.adminKey,
          json: { workflowId, input: demoInput },
        })
      ).status,
    ).toBe(200);
    await waitFor("the execution's cost to be counted", async () => {
      const res = await call("GET", `/api/v1/tenants/${ws.tenantId}`, { key: ws.adminKey });
      return res.body.data.limits.usage.isExceeded ? res : undefined;
    });
    const refused = await call("POST", "/api/executeWorkflow", {
      key: ws.adminKey,
      json: { workflowId, input: demoInput },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe("insufficient credits");
  });

  it("takes background executions from the async bucket and sync ones from the sync bucket", async () => {
    const ws = await workspace(Plan.ENTERPRISE);
    const workflowId = await demoWorkflow(ws.tenantId);
    const queued = await call("POST", "/api/executeWorkflowBackground", {
      key: ws.adminKey,
      json: { workflowId, input: demoInput },
    });
    expect(queued.status).toBe(200);
    const sync = await call("POST", "/api/executeWorkflow", {
      key: ws.adminKey,
      json: { workflowId, input: demoInput },
    });
    expect(sync.status).toBe(200);
    const own = await call("GET", `/api/v1/tenants/${ws.tenantId}`, { key: ws.adminKey });
    expect(own.body.data.limits.workflowExecutionRateLimit).toMatchObject({
      sync: { requestsPerMinute: 1, maxBurst: 120, remaining: 119 },
      async: { requestsPerMinute: 1, maxBurst: 400, remaining: 399 },
    });
  });

  it("answers 429 with Retry-After and retryAfter when the API bucket is empty", async () => {
    const ws = await workspace(Plan.FREE);
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++)
      statuses.push((await call("GET", "/api/v1/tokens", { key: ws.adminKey })).status);
    expect(statuses.every((s) => s === 200)).toBe(true);
    const before = Date.now();
    const limited = await call("GET", "/api/v1/tokens", { key: ws.adminKey });
    expect(limited.status).toBe(429);
    expect(limited.body.error).toBe("rate limit exceeded");
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(6);
    expect(limited.body.retryAfter).toBeGreaterThan(before);
    expect(limited.body.retryAfter).toBeLessThanOrEqual(Date.now() + 6000);
    expect(limited.headers.get("x-ratelimit-remaining")).toBe("0");
    expect(limited.headers.get("x-ratelimit-limit")).toBe("10");
  });

  it("answers 429 when the sync execution bucket is empty", async () => {
    const ws = await workspace(Plan.TEAM);
    const workflowId = await demoWorkflow(ws.tenantId);
    const run = () =>
      call("POST", "/api/executeWorkflow", { key: ws.adminKey, json: { workflowId, input: demoInput } });
    expect((await run()).status).toBe(200);
    expect((await run()).status).toBe(200);
    const limited = await run();
    expect(limited.status).toBe(429);
    expect(limited.body.error).toBe("workflow execution rate limit exceeded (sync)");
    // One token a minute.
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(1);
    expect(Number(limited.headers.get("retry-after"))).toBeLessThanOrEqual(60);
    // Reading is not executing.
    expect((await call("GET", `/api/v1/logs?workspaceId=${ws.tenantId}`, { key: ws.adminKey })).status).toBe(
      200,
    );
  });

  it("fails closed with 503, never 401 and never through, when the limiter's storage fails", async () => {
    const ws = await workspace(Plan.PRO);
    await call("GET", "/api/v1/tokens", { key: ws.adminKey });
    const db = createDatabase({ url: stack.databaseUrl, schema: "auth", maxConnections: 1 });
    try {
      await sql`alter table rate_buckets rename to rate_buckets_away`.execute(db);
      try {
        const res = await call("GET", "/api/v1/tokens", { key: ws.adminKey });
        expect(res.status).toBe(503);
        expect(res.body.error).toBe("auth service unavailable");
      } finally {
        await sql`alter table rate_buckets_away rename to rate_buckets`.execute(db);
      }
    } finally {
      await db.destroy();
    }
    expect((await call("GET", "/api/v1/tokens", { key: ws.adminKey })).status).toBe(200);
  });
});
