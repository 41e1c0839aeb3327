/**
 * Runs no API key started (inbound hooks, schedules) consume the workspace's async execution bucket
 * and are refused over the usage limit, through the auth service's ConsumeExecution.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExecutionBucket, Plan } from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { newId } from "../services/platform/ids.js";
import { waitFor } from "../test/helpers/infra.js";
import { type Answer, type SendOptions, type Stack, startStack } from "../test/helpers/stack.js";
import { demoWorkflowJson } from "./cli/demo-workflow.js";

let stack: Stack;
let auth: Stack["auth"];
let sql: pg.Pool;
/** Free plan: an async bucket of one token per minute. */
let freeTenant: string;
let freeKey: string;
/** Team plan: a usage limit of 0 USD, so always over it. */
let brokeTenant: string;
let brokeKey: string;

/** Every answer: never a 5xx, a JSON body, and a 4xx carries {"error"}. */
const call = (method: string, path: string, opts?: SendOptions): Promise<Answer> =>
  stack.call(method, path, opts);

async function rpcError(work: Promise<unknown>): Promise<ConnectError> {
  try {
    await work;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

beforeAll(async () => {
  stack = await startStack({
    services: ["auth", "executor"],
    env: {
      auth: {
        AUTH_PLAN_FREE_API: "1000000/1000000",
        AUTH_PLAN_FREE_ASYNC: "1/1",
        AUTH_PLAN_TEAM_API: "1000000/1000000",
        AUTH_PLAN_TEAM_USAGE_LIMIT_USD: "0",
      },
      executor: (urls) => ({ AUTH_URL: urls.auth!, EXECUTOR_SCHEDULE_POLL_MS: "100" }),
    },
    tenant: false,
  });
  auth = stack.auth;
  ({ id: freeTenant, adminKey: freeKey } = await stack.newTenant("Free", Plan.FREE));
  ({ id: brokeTenant, adminKey: brokeKey } = await stack.newTenant("Broke", Plan.TEAM));
  sql = new pg.Pool({ connectionString: stack.databaseUrl, options: "-c search_path=executor", max: 2 });
  sql.on("error", () => {});
  sql.on("connect", (client) => client.on("error", () => {}));
}, 60_000);

afterAll(async () => {
  await sql?.end();
  await stack?.stop();
});

async function createDemo(key: string): Promise<string> {
  const res = await call("POST", "/api/v1/workflows", {
    key,
    json: { name: "Demo", state: structuredClone(demoWorkflowJson) },
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

async function createHook(key: string, workflowId: string): Promise<{ url: string; secret: string }> {
  const res = await call("POST", `/api/v1/workflows/${workflowId}/hooks`, { key, json: {} });
  expect(res.status).toBe(201);
  return { url: res.body.url, secret: res.body.secret };
}

describe("AuthService.ConsumeExecution", () => {
  it("checks its arguments", async () => {
    const noBucket = await rpcError(
      auth.consumeExecution({ tenantId: freeTenant, bucket: ExecutionBucket.UNSPECIFIED }),
    );
    expect(noBucket.code).toBe(Code.InvalidArgument);
    expect(noBucket.rawMessage).toContain("bucket");
    const badTenant = await rpcError(
      auth.consumeExecution({ tenantId: "nope", bucket: ExecutionBucket.SYNC }),
    );
    expect(badTenant.code).toBe(Code.InvalidArgument);
    expect(badTenant.rawMessage).toContain("tenant_id");
    const unknown = await rpcError(
      auth.consumeExecution({ tenantId: newId("ws"), bucket: ExecutionBucket.SYNC }),
    );
    expect(unknown.code).toBe(Code.NotFound);
  });

  it("consumes the execution bucket only, and refuses a tenant over its usage limit", async () => {
    const res = await auth.consumeExecution({ tenantId: freeTenant, bucket: ExecutionBucket.SYNC });
    const sync = res.limits?.workflowExecutionRateLimit?.sync;
    expect(sync?.maxBurst).toBe(20);
    expect(sync?.remaining).toBe(19);
    // The API-call bucket is reported, not consumed.
    expect(res.limits?.api?.remaining).toBe(1_000_000);
    expect(res.limits?.usage?.plan).toBe("free");

    const broke = await rpcError(
      auth.consumeExecution({ tenantId: brokeTenant, bucket: ExecutionBucket.SYNC }),
    );
    expect(broke.code).toBe(Code.FailedPrecondition);
    expect(broke.rawMessage).toBe("insufficient credits");
  });
});

describe("inbound hooks", () => {
  it("consume the async bucket: 429 with Retry-After once it is empty", async () => {
    const workflowId = await createDemo(freeKey);
    const { url, secret } = await createHook(freeKey, workflowId);
    const headers = { "x-hook-secret": secret };
    const first = await call("POST", url, { json: { "First Name": "One" }, headers });
    expect(first.status).toBe(202);
    const second = await call("POST", url, { json: { "First Name": "Two" }, headers });
    expect(second.status).toBe(429);
    expect(second.body.code).toBe("resource_exhausted");
    expect(second.body.error).toContain("async");
    const retryAfter = Number(second.headers.get("retry-after"));
    // One token a minute: ~60 s, which only the auth service's RateLimitExceeded detail (passed
    // through the executor) can tell; without it the gateway would fall back to 1 s.
    expect(retryAfter).toBeGreaterThanOrEqual(30);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(second.body.retryAfter).toBeGreaterThan(Date.now());
    // A wrong secret is still a 401, not a rate-limit answer (no token spent on strangers).
    const wrong = await call("POST", url, { json: {}, headers: { "x-hook-secret": "whsec_wrong" } });
    expect(wrong.status).toBe(401);
    // The run that got a token ran.
    await waitFor("the hook's run", async () => {
      const res = await call("GET", `/api/v1/executions/${first.body.executionId}`, { key: freeKey });
      return res.body.status === "success" ? true : undefined;
    });
  });

  it("answer 400 insufficient credits over the usage limit, starting nothing", async () => {
    const workflowId = await createDemo(brokeKey);
    const { url, secret } = await createHook(brokeKey, workflowId);
    const res = await call("POST", url, {
      json: { "First Name": "Broke" },
      headers: { "x-hook-secret": secret },
    });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe("insufficient credits");
    const { rows } = await sql.query("select count(*)::int as n from executions where workflow_id = $1", [
      workflowId,
    ]);
    expect(rows[0].n).toBe(0);
  });
});

describe("schedules", () => {
  it("record a refused tick as an execution with status error naming the refusal", async () => {
    const workflowId = await createDemo(brokeKey);
    const path = `/api/v1/workflows/${workflowId}/schedules`;
    const created = await call("POST", path, {
      key: brokeKey,
      json: { cron: "* * * * * *", input: { "First Name": "Cron" } },
    });
    expect(created.status).toBe(201);
    const refused = await waitFor(
      "a refused tick",
      async () => {
        const { rows } = await sql.query(
          "select id, status, error, trigger from executions where workflow_id = $1 and status = 'error'",
          [workflowId],
        );
        return rows[0];
      },
      30_000,
    );
    expect((await call("DELETE", `${path}/${created.body.id}`, { key: brokeKey })).status).toBe(200);
    expect(refused.trigger).toBe("schedule");
    expect(refused.error).toBe("scheduled run refused: insufficient credits");
    const shown = await call("GET", `/api/v1/executions/${refused.id}`, { key: brokeKey });
    expect(shown.body.status).toBe("error");
    expect(shown.body.error).toBe("scheduled run refused: insufficient credits");
    // No tick of this workflow ran.
    const { rows } = await sql.query(
      "select count(*)::int as n from executions where workflow_id = $1 and status <> 'error'",
      [workflowId],
    );
    expect(rows[0].n).toBe(0);
  });
});
