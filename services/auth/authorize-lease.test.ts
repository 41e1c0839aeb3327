/**
 * Authorize leases (the gateway's authorization cache, issue 3): several tokens in one call, at
 * least one or the plain refusal, how long they may be used, and ReturnTokens.
 */
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
} from "../../test/helpers/infra.js";
import {
  AuthService,
  ExecutionBucket,
  Plan,
  TenantService,
  TokenKind,
} from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { authService } from "./service.js";

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("expected the call to be refused");
}

describe("Authorize leases", () => {
  let testDb: TestDatabase;
  let namespace: string;
  let running: RunningService;
  let auth: Client<typeof AuthService>;
  let tenants: Client<typeof TenantService>;

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
      // Without the lookup cache a grant's validity starts at the call (no lookup age to subtract).
      AUTH_TOKEN_CACHE_TTL_MS: "0",
      // Buckets refilling one token a minute: counts are exact for the length of a test.
      AUTH_PLAN_ENTERPRISE_API: "1/6000",
      AUTH_PLAN_ENTERPRISE_SYNC: "1/10",
      AUTH_PLAN_FREE_API: "1/20",
    });
    const url = `http://127.0.0.1:${running.port}`;
    auth = createRpcClient(AuthService, url);
    tenants = createRpcClient(TenantService, url);
  });

  afterAll(async () => {
    await running?.stop();
    await testDb?.drop();
    await deleteNamespaceStreams(namespace);
  });

  async function tenantWithKey(plan: Plan, extra: { expiresAt?: Date } = {}) {
    const { tenant } = await tenants.createTenant({ name: "t", plan });
    const { token, secret } = await auth.createToken({
      tenantId: tenant!.id,
      kind: TokenKind.ADMIN,
      name: "admin",
      expiresAt: extra.expiresAt
        ? { seconds: BigInt(Math.floor(extra.expiresAt.getTime() / 1000)), nanos: 0 }
        : undefined,
    });
    return { tenantId: tenant!.id, tokenId: token!.id, key: secret };
  }

  it("keeps the one-token answer without a lease", async () => {
    const { key } = await tenantWithKey(Plan.ENTERPRISE);
    for (const leaseTokens of [0, 1]) {
      const res = await auth.authorize({ apiKey: key, action: "logs:read", leaseTokens, leaseTtlMs: 1000 });
      expect(res.grantedTokens).toBe(1);
      expect(res.grantValidMs).toBe(0);
    }
    const res = await auth.authorize({ apiKey: key, action: "logs:read" });
    expect(res.limits!.api!.remaining).toBe(5997);
  });

  it("grants several tokens in one call, valid for at most the TTL asked", async () => {
    const { key } = await tenantWithKey(Plan.ENTERPRISE);
    const res = await auth.authorize({ apiKey: key, action: "logs:read", leaseTokens: 50, leaseTtlMs: 800 });
    expect(res.grantedTokens).toBe(50);
    expect(res.grantValidMs).toBeGreaterThan(0);
    expect(res.grantValidMs).toBeLessThanOrEqual(800);
    expect(res.limits!.api!.remaining).toBe(5950);
    // includeLimits never leases.
    const full = await auth.authorize({
      apiKey: key,
      action: "logs:read",
      includeLimits: true,
      leaseTokens: 50,
      leaseTtlMs: 800,
    });
    expect(full.grantedTokens).toBe(1);
  });

  it("grants what the execution bucket holds and gives the API-call surplus back", async () => {
    const { tenantId, tokenId, key } = await tenantWithKey(Plan.ENTERPRISE);
    const lease = {
      apiKey: key,
      action: "workflows:execute",
      bucket: ExecutionBucket.SYNC,
      leaseTtlMs: 1000,
    };
    const res = await auth.authorize({ ...lease, leaseTokens: 50 });
    expect(res.grantedTokens).toBe(10);
    // Only the ten granted are gone from the API-call bucket.
    expect(res.limits!.api!.remaining).toBe(5990);
    expect(res.limits!.workflowExecutionRateLimit!.sync!.remaining).toBe(0);
    const empty = await refusal(auth.authorize({ ...lease, leaseTokens: 50 }));
    expect(empty.code).toBe(Code.ResourceExhausted);
    // Seven of the ten come back: the next lease gets exactly those.
    await auth.returnTokens({ tenantId, tokenId, bucket: ExecutionBucket.SYNC, tokens: 7 });
    const again = await auth.authorize({ ...lease, leaseTokens: 50 });
    expect(again.grantedTokens).toBe(7);
    // The refused call cost one API-call token, as without a lease.
    expect(again.limits!.api!.remaining).toBe(5990 - 1 + 7 - 7);
  });

  it("never lets a grant outlive a rotation grace or the key's expiry", async () => {
    const { tenantId, tokenId, key } = await tenantWithKey(Plan.ENTERPRISE);
    await auth.rotateToken({ tenantId, id: tokenId, gracePeriodSeconds: 2 });
    const old = await auth.authorize({
      apiKey: key,
      action: "logs:read",
      leaseTokens: 5,
      leaseTtlMs: 60_000,
    });
    expect(old.grantedTokens).toBe(5);
    expect(old.grantValidMs).toBeGreaterThan(0);
    expect(old.grantValidMs).toBeLessThanOrEqual(2000);

    const expiring = await tenantWithKey(Plan.ENTERPRISE, { expiresAt: new Date(Date.now() + 3000) });
    const res = await auth.authorize({
      apiKey: expiring.key,
      action: "logs:read",
      leaseTokens: 5,
      leaseTtlMs: 60_000,
    });
    expect(res.grantValidMs).toBeGreaterThan(0);
    expect(res.grantValidMs).toBeLessThanOrEqual(3000);
  });

  it("refuses an empty bucket exactly as a one-token call does, and bad lease arguments", async () => {
    const { tenantId, tokenId, key } = await tenantWithKey(Plan.FREE);
    const res = await auth.authorize({
      apiKey: key,
      action: "logs:read",
      leaseTokens: 100,
      leaseTtlMs: 1000,
    });
    expect(res.grantedTokens).toBe(20);
    const err = await refusal(
      auth.authorize({ apiKey: key, action: "logs:read", leaseTokens: 5, leaseTtlMs: 1000 }),
    );
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toBe("rate limit exceeded");
    expect((await refusal(auth.authorize({ apiKey: key, action: "logs:read", leaseTokens: -1 }))).code).toBe(
      Code.InvalidArgument,
    );
    expect(
      (
        await refusal(
          auth.returnTokens({ tenantId, tokenId, bucket: ExecutionBucket.UNSPECIFIED, tokens: -1 }),
        )
      ).code,
    ).toBe(Code.InvalidArgument);
    const other = await tenantWithKey(Plan.FREE);
    expect((await refusal(auth.returnTokens({ tenantId: other.tenantId, tokenId, tokens: 1 }))).code).toBe(
      Code.NotFound,
    );
  });
});
