import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { type Kysely, sql } from "kysely";
import { connect, type JetStreamClient, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  freePort,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { loadConfig } from "../platform/config.js";
import { createDatabase } from "../platform/db.js";
import { UnavailableError } from "../platform/errors.js";
import {
  AuthService,
  ExecutionBucket,
  Plan,
  RateLimitExceededSchema,
  TenantService,
  TokenKind,
} from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  ExecutionCompletedSchema,
  ExecutionStatus,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { newId } from "../platform/ids.js";
import { createLogger } from "../platform/log.js";
import { natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { type BucketState, consumeToken, remainingOf, resetAtOf, retryAtOf } from "./buckets.js";
import { RateLimits } from "./limits.js";
import { planSettings, planTable } from "./plans.js";
import { authService } from "./service.js";
import type { Database } from "./store.js";
import { billingPeriodOf, recordExecutionCost } from "./usage.js";

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("expected the call to be refused");
}

describe("rate limits and usage", () => {
  let testDb: TestDatabase;
  let namespace: string;
  let running: RunningService;
  let db: Kysely<Database>;
  let auth: Client<typeof AuthService>;
  let tenants: Client<typeof TenantService>;
  let nc: NatsConnection;
  let js: JetStreamClient;

  async function tenantWithAdmin(plan: Plan) {
    const { tenant } = await tenants.createTenant({ name: "t", plan });
    const { token, secret } = await auth.createToken({
      tenantId: tenant!.id,
      kind: TokenKind.ADMIN,
      name: "admin",
    });
    return { tenantId: tenant!.id, tokenId: token!.id, key: secret };
  }

  async function publishCompletion(tenantId: string, executionId: string, cost: number, msgID: string) {
    const event = create(ExecutionCompletedSchema, {
      executionId,
      tenantId,
      workflowId: newId("wf"),
      status: ExecutionStatus.SUCCESS,
      startedAt: timestampFromDate(new Date()),
      endedAt: timestampFromDate(new Date()),
      cost: { total: cost },
    });
    const { toBinary } = await import("@bufbuild/protobuf");
    await js.publish(
      natsNames(namespace).executionCompleted(tenantId),
      toBinary(ExecutionCompletedSchema, event),
      {
        msgID,
      },
    );
  }

  beforeAll(async () => {
    testDb = await createTestDatabase();
    namespace = testNamespace();
    running = await startService(authService, {
      DATABASE_URL: testDb.url,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: namespace,
      AUTH_PORT: "0",
      AUTH_KEY_ENV: "test",
      LOG_LEVEL: "silent",
      // A bucket of burst 120 refilling one token a minute: the concurrency test cannot be helped by
      // refill unless it runs for a minute. The API bucket is wide so that only the sync one binds.
      AUTH_PLAN_ENTERPRISE_SYNC: "1/120",
      AUTH_PLAN_ENTERPRISE_API: "6000/6000",
      AUTH_PLAN_FREE_USAGE_LIMIT_USD: "0.5",
    });
    const url = `http://127.0.0.1:${running.port}`;
    auth = createRpcClient(AuthService, url);
    tenants = createRpcClient(TenantService, url);
    db = createDatabase<Database>({ url: testDb.url, schema: "auth", maxConnections: 2 });
    nc = await connect({ servers: TEST_NATS_URL });
    js = nc.jetstream();
  });

  afterAll(async () => {
    await running?.stop();
    await nc?.close();
    await db?.destroy();
    await testDb?.drop();
    await deleteNamespaceStreams(namespace);
  });

  describe("GetLimits", () => {
    it("reports the plan's buckets full and no usage for a new workspace, consuming nothing", async () => {
      const { tenantId } = await tenantWithAdmin(Plan.PRO);
      for (let i = 0; i < 2; i++) {
        const { limits } = await auth.getLimits({ tenantId });
        expect(limits!.api).toMatchObject({ limitPerMinute: 30, maxBurst: 60, remaining: 60 });
        expect(limits!.workflowExecutionRateLimit!.sync).toMatchObject({
          requestsPerMinute: 60,
          maxBurst: 120,
          remaining: 120,
        });
        expect(limits!.workflowExecutionRateLimit!.async).toMatchObject({
          requestsPerMinute: 200,
          maxBurst: 400,
          remaining: 400,
        });
        expect(limits!.usage).toMatchObject({
          currentPeriodCost: 0,
          limit: 10,
          plan: "pro",
          isExceeded: false,
        });
        const { start, end } = billingPeriodOf(new Date());
        expect(timestampDate(limits!.usage!.periodStart!)).toEqual(start);
        expect(timestampDate(limits!.usage!.periodEnd!)).toEqual(end);
      }
    });

    it("reflects consumption by Authorize", async () => {
      const { tenantId, key } = await tenantWithAdmin(Plan.PRO);
      const first = await auth.authorize({ apiKey: key, action: "logs:read" });
      expect(first.limits!.api).toMatchObject({ limitPerMinute: 30, maxBurst: 60, remaining: 59 });
      expect(first.limits!.workflowExecutionRateLimit).toBeUndefined();
      const exec = await auth.authorize({
        apiKey: key,
        action: "workflows:execute",
        bucket: ExecutionBucket.SYNC,
        includeLimits: true,
      });
      expect(exec.limits!.api!.remaining).toBe(58);
      expect(exec.limits!.workflowExecutionRateLimit!.sync!.remaining).toBe(119);
      expect(exec.limits!.workflowExecutionRateLimit!.async!.remaining).toBe(400);
      expect(exec.limits!.usage).toMatchObject({ plan: "pro", limit: 10 });
      await auth.authorize({ apiKey: key, action: "workflows:execute", bucket: ExecutionBucket.ASYNC });
      const { limits } = await auth.getLimits({ tenantId });
      expect(limits!.api!.remaining).toBe(57);
      expect(limits!.workflowExecutionRateLimit!.sync!.remaining).toBe(119);
      expect(limits!.workflowExecutionRateLimit!.async!.remaining).toBe(399);
    });

    it("answers NotFound for an unknown workspace and InvalidArgument for a malformed id", async () => {
      expect((await refusal(auth.getLimits({ tenantId: newId("ws") }))).code).toBe(Code.NotFound);
      const bad = await refusal(auth.getLimits({ tenantId: "nope" }));
      expect(bad.code).toBe(Code.InvalidArgument);
      expect(bad.rawMessage).toMatch(/tenant_id/);
    });
  });

  describe("buckets", () => {
    it("grants exactly the burst to 200 concurrent executions and refuses the rest with a retry time", async () => {
      const { tenantId, key } = await tenantWithAdmin(Plan.ENTERPRISE);
      const results = await Promise.allSettled(
        Array.from({ length: 200 }, () =>
          auth.authorize({ apiKey: key, action: "workflows:execute", bucket: ExecutionBucket.SYNC }),
        ),
      );
      const granted = results.filter((r) => r.status === "fulfilled");
      const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason as ConnectError] : []));
      expect(granted).toHaveLength(120);
      expect(refused).toHaveLength(80);
      for (const err of refused) {
        expect(err.code).toBe(Code.ResourceExhausted);
        const [detail] = err.findDetails(RateLimitExceededSchema);
        expect(detail!.bucket).toBe("sync");
        // One token a minute: the next one is at most a minute away.
        expect(Number(detail!.retryAfterMs)).toBeGreaterThan(0);
        expect(Number(detail!.retryAfterMs)).toBeLessThanOrEqual(60_000);
        expect(detail!.api!.limitPerMinute).toBe(6000);
      }
      const { limits } = await auth.getLimits({ tenantId });
      expect(limits!.workflowExecutionRateLimit!.sync!.remaining).toBe(0);
    });

    it("refuses API calls over the plan's burst with the api bucket's retry time", async () => {
      const { key } = await tenantWithAdmin(Plan.FREE);
      for (let i = 0; i < 20; i++) await auth.authorize({ apiKey: key, action: "logs:read" });
      const err = await refusal(auth.authorize({ apiKey: key, action: "logs:read" }));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.rawMessage).toBe("rate limit exceeded");
      const [detail] = err.findDetails(RateLimitExceededSchema);
      expect(detail).toMatchObject({ bucket: "api" });
      expect(detail!.api).toMatchObject({ limitPerMinute: 10, maxBurst: 20, remaining: 0 });
      // 10 a minute: one token within 6 s.
      expect(Number(detail!.retryAfterMs)).toBeLessThanOrEqual(6000);
    });

    it("applies a token's own, narrower limit besides the plan's", async () => {
      const { tenantId } = await tenantWithAdmin(Plan.PRO);
      const { secret } = await auth.createToken({
        tenantId,
        name: "slow",
        scopes: ["logs:read"],
        rateLimitPerMinute: 3,
      });
      for (let i = 0; i < 3; i++) {
        const { limits } = await auth.authorize({ apiKey: secret, action: "logs:read" });
        expect(limits!.api).toMatchObject({ limitPerMinute: 3, maxBurst: 3, remaining: 2 - i });
      }
      const err = await refusal(auth.authorize({ apiKey: secret, action: "logs:read" }));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.findDetails(RateLimitExceededSchema)[0]!.bucket).toBe("token");
      const wide = await refusal(
        auth.createToken({ tenantId, name: "wide", scopes: ["logs:read"], rateLimitPerMinute: 31 }),
      );
      expect(wide.code).toBe(Code.InvalidArgument);
      expect(wide.rawMessage).toMatch(/rate_limit_per_minute.*30/);
    });

    it("refills continuously up to the burst (bucket maths)", async () => {
      const spec = { perMinute: 6, burst: 5 };
      const key = `test:${newId("evt")}`;
      for (let i = 0; i < 5; i++) expect((await consumeToken(db, key, spec)).granted).toBe(true);
      const empty = await consumeToken(db, key, spec);
      expect(empty.granted).toBe(false);
      expect(remainingOf(empty)).toBe(0);
      // 25 s at 6 a minute adds 2.5 tokens: one is consumed, 1.5 are left.
      await sql`update rate_buckets set updated_at = updated_at - interval '25 seconds' where key = ${key}`.execute(
        db,
      );
      const refilled = await consumeToken(db, key, spec);
      expect(refilled.granted).toBe(true);
      expect(refilled.level).toBeGreaterThanOrEqual(1.5);
      expect(refilled.level).toBeLessThan(1.6);
      expect(remainingOf(refilled)).toBe(1);
      // An idle hour fills it to the burst, never beyond.
      await sql`update rate_buckets set updated_at = updated_at - interval '1 hour' where key = ${key}`.execute(
        db,
      );
      const capped = await consumeToken(db, key, spec);
      expect(capped.level).toBe(4);
    });

    it("computes reset and retry times from the refill rate", () => {
      const at = new Date("2030-01-01T00:00:00.000Z");
      const spec = { perMinute: 60, burst: 10 };
      const state = (level: number): BucketState => ({ spec, level, at });
      expect(resetAtOf(state(10))).toEqual(at);
      expect(resetAtOf(state(9.5)).getTime() - at.getTime()).toBe(500);
      expect(resetAtOf(state(0)).getTime() - at.getTime()).toBe(1000);
      expect(retryAtOf(state(0.25)).getTime() - at.getTime()).toBe(750);
      expect(retryAtOf(state(3))).toEqual(at);
      expect(remainingOf(state(2.9999999999))).toBe(3);
    });

    it("fails closed when the buckets' storage cannot be reached", async () => {
      const unreachable = createDatabase<Database>({
        url: `postgres://postgres@127.0.0.1:${await freePort()}/nowhere`,
        schema: "auth",
      });
      try {
        const limits = new RateLimits(
          unreachable,
          planTable(loadConfig(planSettings, {})),
          createLogger("limits-test", "silent"),
        );
        const who = {
          tenantId: newId("ws"),
          tokenId: newId("tok"),
          plan: "pro" as const,
          tokenRateLimitPerMinute: null,
        };
        await expect(limits.consume(who, undefined, false)).rejects.toBeInstanceOf(UnavailableError);
        await expect(limits.consume(who, "sync", true)).rejects.toThrow("rate limiter unavailable");
      } finally {
        await unreachable.destroy();
      }
    });
  });

  describe("usage", () => {
    it("sums completion costs per period once per execution, even when events are redelivered", async () => {
      const { tenantId } = await tenantWithAdmin(Plan.PRO);
      const a = newId("exec");
      const b = newId("exec");
      await publishCompletion(tenantId, a, 0.25, `${a}:completed`);
      // The same execution published again under another message id (JetStream would drop an exact
      // duplicate): the consumer must still count it once.
      await publishCompletion(tenantId, a, 0.25, `${a}:completed:again`);
      await publishCompletion(tenantId, b, 0.125, `${b}:completed`);
      await publishCompletion(tenantId, b, 0.125, `${b}:completed:again`);
      await waitFor("every completion to be consumed", async () => {
        const info = await (await nc.jetstreamManager()).consumers.info(
          natsNames(namespace).executionsStream,
          "auth-usage",
        );
        return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
      });
      const { limits } = await auth.getLimits({ tenantId });
      expect(limits!.usage).toMatchObject({ currentPeriodCost: 0.375, limit: 10, isExceeded: false });
      const counted = await db
        .selectFrom("usage_executions")
        .selectAll()
        .where("tenant_id", "=", tenantId)
        .execute();
      expect(counted.map((r) => r.execution_id).sort()).toEqual([a, b].sort());
      // A direct replay is a no-op too.
      expect(
        await recordExecutionCost(db, { executionId: a, tenantId, costUsd: 0.25, endedAt: new Date() }),
      ).toBe(false);
    });

    it("counts an execution in the calendar month (UTC) it ended in", async () => {
      const tenantId = newId("ws");
      const lastYear = new Date("2025-12-31T23:59:59.999Z");
      await recordExecutionCost(db, { executionId: newId("exec"), tenantId, costUsd: 2, endedAt: lastYear });
      const rows = await db
        .selectFrom("usage_periods")
        .selectAll()
        .where("tenant_id", "=", tenantId)
        .execute();
      expect(rows).toMatchObject([
        { period_start: new Date("2025-12-01T00:00:00.000Z"), cost: 2, executions: 1 },
      ]);
      expect(billingPeriodOf(new Date("2026-01-01T00:00:00.000Z")).start).toEqual(
        new Date("2026-01-01T00:00:00.000Z"),
      );
    });

    it("refuses executions with insufficient credits once the period's usage reaches the plan's limit", async () => {
      const { tenantId, key } = await tenantWithAdmin(Plan.FREE);
      await auth.authorize({ apiKey: key, action: "workflows:execute", bucket: ExecutionBucket.SYNC });
      const exec = newId("exec");
      await publishCompletion(tenantId, exec, 0.6, `${exec}:completed`);
      await waitFor("the usage to be counted", async () => {
        const { limits } = await auth.getLimits({ tenantId });
        return limits!.usage!.isExceeded ? limits : undefined;
      });
      for (const bucket of [ExecutionBucket.SYNC, ExecutionBucket.ASYNC]) {
        const err = await refusal(auth.authorize({ apiKey: key, action: "workflows:execute", bucket }));
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.rawMessage).toBe("insufficient credits");
      }
      // Reading is not an execution: still allowed, and the usage is reported.
      const { limits } = await auth.authorize({ apiKey: key, action: "logs:read", includeLimits: true });
      expect(limits!.usage).toMatchObject({
        currentPeriodCost: 0.6,
        limit: 0.5,
        plan: "free",
        isExceeded: true,
      });
      // The refused executions consumed no execution token.
      expect(limits!.workflowExecutionRateLimit!.sync!.remaining).toBe(19);
    });
  });
});
