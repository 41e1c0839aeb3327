import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { type Kysely, sql } from "kysely";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { createDatabase } from "../platform/db.js";
import { AuthService, Plan, TenantService, TokenKind } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  type TokenExpiring,
  TokenExpiringSchema,
  type TokenRevoked,
  TokenRevokedSchema,
} from "../platform/gen/flowplane/events/v1/token_pb.js";
import { newId } from "../platform/ids.js";
import { natsNames } from "../platform/nats.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { hashApiKey } from "./keys.js";
import { SCOPES } from "./scopes.js";
import { authService } from "./service.js";
import type { Database, TokenRow } from "./store.js";
import { sweepTokens } from "./sweeper.js";
import type { SecretsStopped } from "./tokens.js";

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("expected the call to be refused");
}

describe("token lifecycle", () => {
  let testDb: TestDatabase;
  let namespace: string;
  let running: RunningService;
  let db: Kysely<Database>;
  let auth: Client<typeof AuthService>;
  let tenants: Client<typeof TenantService>;
  let nc: NatsConnection;
  const revoked: TokenRevoked[] = [];
  const expiring: TokenExpiring[] = [];
  let tenantId: string;
  let adminId: string;

  const eventsOf = async (tokenId: string) =>
    (await auth.listTokenEvents({ tenantId, tokenId, limit: 1000 })).events.map((e) => e.event);

  beforeAll(async () => {
    testDb = await createTestDatabase();
    namespace = testNamespace();
    nc = await connect({ servers: TEST_NATS_URL });
    const names = natsNames(namespace);
    nc.subscribe(names.tokenRevoked, {
      callback: (_err, msg) => revoked.push(fromBinary(TokenRevokedSchema, msg.data)),
    });
    nc.subscribe(names.tokenExpiring, {
      callback: (_err, msg) => expiring.push(fromBinary(TokenExpiringSchema, msg.data)),
    });
    await nc.flush();
    running = await startService(authService, {
      DATABASE_URL: testDb.url,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: namespace,
      AUTH_PORT: "0",
      AUTH_KEY_ENV: "test",
      AUTH_SWEEP_INTERVAL_MS: "200",
      AUTH_PLAN_PRO_API: "6000/6000",
      LOG_LEVEL: "silent",
    });
    const url = `http://127.0.0.1:${running.port}`;
    auth = createRpcClient(AuthService, url);
    tenants = createRpcClient(TenantService, url);
    db = createDatabase<Database>({ url: testDb.url, schema: "auth", maxConnections: 4 });
    const { tenant } = await tenants.createTenant({ name: "Acme", plan: Plan.PRO });
    tenantId = tenant!.id;
    adminId = (await auth.createToken({ tenantId, kind: TokenKind.ADMIN, name: "admin" })).token!.id;
  });

  afterAll(async () => {
    await running?.stop();
    await nc?.close();
    await db?.destroy();
    await testDb?.drop();
    await deleteNamespaceStreams(namespace);
  });

  describe("list, get and events", () => {
    it("lists a workspace's tokens in pages without secrets, and never another workspace's", async () => {
      const { tenant } = await tenants.createTenant({ name: "Lister", plan: Plan.PRO });
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push(
          (await auth.createToken({ tenantId: tenant!.id, name: `t${i}`, scopes: ["logs:read"] })).token!.id,
        );
      }
      const first = await auth.listTokens({ tenantId: tenant!.id, limit: 3 });
      expect(first.tokens.map((t) => t.id)).toEqual(ids.slice(0, 3));
      const second = await auth.listTokens({ tenantId: tenant!.id, limit: 3, cursor: first.nextCursor });
      expect(second.tokens.map((t) => t.id)).toEqual(ids.slice(3));
      expect(second.nextCursor).toBe("");
      expect(JSON.stringify(first, (_k, v) => (typeof v === "bigint" ? String(v) : v))).not.toMatch(
        /fp_test_[0-9A-Za-z]{36}/,
      );
      expect((await auth.listTokens({ tenantId })).tokens.map((t) => t.id)).not.toContain(ids[0]);
      expect((await refusal(auth.listTokens({ tenantId, limit: 5000 }))).code).toBe(Code.InvalidArgument);
    });

    it("answers NotFound for another workspace's token and its events", async () => {
      const { tenant } = await tenants.createTenant({ name: "Other" });
      const { token } = await auth.createToken({
        tenantId: tenant!.id,
        name: "theirs",
        scopes: ["logs:read"],
      });
      for (const call of [
        () => auth.getToken({ tenantId, id: token!.id }),
        () => auth.listTokenEvents({ tenantId, tokenId: token!.id }),
        () => auth.rotateToken({ tenantId, id: token!.id, actor: adminId }),
        () => auth.revokeToken({ tenantId, id: token!.id, actor: adminId }),
      ]) {
        const err = await refusal(call());
        expect(err.code).toBe(Code.NotFound);
        expect(err.rawMessage).toBe(`token ${token!.id} not found`);
      }
      // Still alive after those attempts.
      expect((await auth.getToken({ tenantId: tenant!.id, id: token!.id })).token!.revokedAt).toBeUndefined();
      expect((await refusal(auth.getToken({ tenantId, id: "tok_bad" }))).code).toBe(Code.InvalidArgument);
    });
  });

  describe("rotation", () => {
    it("without grace: the new secret works and the old one stops at once", async () => {
      const { token, secret: old } = await auth.createToken({ tenantId, name: "ci", scopes: ["logs:read"] });
      const rotated = await auth.rotateToken({ tenantId, id: token!.id, actor: adminId });
      expect(rotated.secret).not.toBe(old);
      expect(rotated.token!.prefix).toBe(rotated.secret.slice(0, 12));
      expect(rotated.token!.rotatedAt).toBeDefined();
      expect(rotated.token!.previousSecretExpiresAt).toBeUndefined();
      await auth.authorize({ apiKey: rotated.secret, action: "logs:read" });
      const err = await refusal(auth.authorize({ apiKey: old, action: "logs:read" }));
      expect(err.code).toBe(Code.Unauthenticated);
      await waitFor("the revocation event", () =>
        revoked.find((e) => e.tokenId === token!.id && e.reason === "rotated"),
      ).then((e) => expect(e.secretHashes).toEqual([hashApiKey(old)]));
      // The old secret no longer identifies the token: refused as an unknown key.
      expect(err.rawMessage).toBe("invalid API key");
      expect(await eventsOf(token!.id)).toEqual(["created", "rotated"]);
    });

    it("with grace: both secrets work until the grace ends, then only the new one", async () => {
      const { token, secret: old } = await auth.createToken({ tenantId, name: "crm", scopes: ["logs:read"] });
      const rotated = await auth.rotateToken({
        tenantId,
        id: token!.id,
        gracePeriodSeconds: 3600,
        actor: adminId,
      });
      const until = timestampDate(rotated.token!.previousSecretExpiresAt!);
      expect(Math.abs(until.getTime() - (Date.now() + 3_600_000))).toBeLessThan(60_000);
      await auth.authorize({ apiKey: old, action: "logs:read" });
      await auth.authorize({ apiKey: rotated.secret, action: "logs:read" });
      // The grace ends (moved into the past): the old secret is refused even before the sweeper runs…
      await db
        .updateTable("tokens")
        .set({ previous_secret_expires_at: new Date(Date.now() - 1) })
        .where("id", "=", token!.id)
        .execute();
      await waitFor("the old secret to be refused", async () => {
        const err = await refusal(auth.authorize({ apiKey: old, action: "logs:read" }));
        return err.code === Code.Unauthenticated ? err : undefined;
      });
      // …and the sweeper clears it, records the end and announces it.
      const announced = await waitFor("the grace end to be announced", () =>
        revoked.find((e) => e.tokenId === token!.id && e.reason === "grace_ended"),
      );
      expect(announced.secretHashes).toEqual([hashApiKey(old)]);
      await waitFor("grace_ended to be audited", async () =>
        (await eventsOf(token!.id)).includes("grace_ended") ? true : undefined,
      );
      await auth.authorize({ apiKey: rotated.secret, action: "logs:read" });
      const row = await db
        .selectFrom("tokens")
        .selectAll()
        .where("id", "=", token!.id)
        .executeTakeFirstOrThrow();
      expect(row.previous_secret_hash).toBeNull();
    });

    it("a second rotation during a grace stops the first secret at once", async () => {
      const { token, secret: first } = await auth.createToken({
        tenantId,
        name: "twice",
        scopes: ["logs:read"],
      });
      const second = await auth.rotateToken({
        tenantId,
        id: token!.id,
        gracePeriodSeconds: 600,
        actor: adminId,
      });
      const third = await auth.rotateToken({
        tenantId,
        id: token!.id,
        gracePeriodSeconds: 600,
        actor: adminId,
      });
      expect((await refusal(auth.authorize({ apiKey: first, action: "logs:read" }))).code).toBe(
        Code.Unauthenticated,
      );
      await auth.authorize({ apiKey: second.secret, action: "logs:read" });
      await auth.authorize({ apiKey: third.secret, action: "logs:read" });
    });

    it("refuses escalation: an app key may not rotate a token holding more than it does", async () => {
      const { token: caller } = await auth.createToken({
        tenantId,
        name: "manager",
        scopes: ["tokens:write", "logs:read"],
      });
      const { token: stronger } = await auth.createToken({
        tenantId,
        name: "runner",
        scopes: ["workflows:execute"],
      });
      const err = await refusal(auth.rotateToken({ tenantId, id: stronger!.id, actor: caller!.id }));
      expect(err.code).toBe(Code.PermissionDenied);
      expect(err.rawMessage).toBe("cannot grant scope workflows:execute: the calling key does not hold it");
      const adminErr = await refusal(auth.rotateToken({ tenantId, id: adminId, actor: caller!.id }));
      expect(adminErr.rawMessage).toMatch(/app key cannot create or manage an admin key/);
      const { token: readOnly } = await auth.createToken({ tenantId, name: "ro", scopes: ["logs:read"] });
      const { token: weaker } = await auth.createToken({ tenantId, name: "weak", scopes: ["logs:read"] });
      const noWrite = await refusal(auth.rotateToken({ tenantId, id: weaker!.id, actor: readOnly!.id }));
      expect(noWrite.rawMessage).toBe("API key lacks scope tokens:write");
      // Within its rights it may.
      await auth.rotateToken({ tenantId, id: weaker!.id, actor: caller!.id });
      const refusals = (await auth.listTokenEvents({ tenantId, tokenId: caller!.id })).events;
      expect(refusals.filter((e) => e.event === "refused_permission")).toHaveLength(2);
    });

    it("refuses a negative or overlong grace and a revoked token", async () => {
      const { token } = await auth.createToken({ tenantId, name: "g", scopes: ["logs:read"] });
      expect(
        (await refusal(auth.rotateToken({ tenantId, id: token!.id, gracePeriodSeconds: -1 }))).rawMessage,
      ).toMatch(/grace_period_seconds/);
      expect(
        (await refusal(auth.rotateToken({ tenantId, id: token!.id, gracePeriodSeconds: 31 * 86400 }))).code,
      ).toBe(Code.InvalidArgument);
      await auth.revokeToken({ tenantId, id: token!.id });
      const err = await refusal(auth.rotateToken({ tenantId, id: token!.id }));
      expect(err.code).toBe(Code.FailedPrecondition);
    });
  });

  describe("revocation", () => {
    it("stops the token and any secret in grace, audits and announces it, and is idempotent", async () => {
      const { token, secret: old } = await auth.createToken({
        tenantId,
        name: "gone",
        scopes: ["logs:read"],
      });
      const { secret } = await auth.rotateToken({ tenantId, id: token!.id, gracePeriodSeconds: 600 });
      const res = await auth.revokeToken({ tenantId, id: token!.id, actor: adminId, reason: "leaked" });
      expect(res.token!.revokedAt).toBeDefined();
      for (const key of [old, secret]) {
        const err = await refusal(auth.authorize({ apiKey: key, action: "logs:read" }));
        expect(err.code).toBe(Code.Unauthenticated);
        expect(err.rawMessage).toBe("API key revoked");
      }
      const event = await waitFor("the revocation event", () =>
        revoked.find((e) => e.tokenId === token!.id && e.reason === "revoked"),
      );
      expect([...event.secretHashes].sort()).toEqual([hashApiKey(old), hashApiKey(secret)].sort());
      expect(event.tenantId).toBe(tenantId);
      const again = await auth.revokeToken({ tenantId, id: token!.id, actor: adminId });
      expect(timestampDate(again.token!.revokedAt!)).toEqual(timestampDate(res.token!.revokedAt!));
      const events = (await auth.listTokenEvents({ tenantId, tokenId: token!.id })).events;
      expect(events.filter((e) => e.event === "revoked")).toMatchObject([
        { actor: adminId, reason: "leaked" },
      ]);
    });

    it("refuses an app key without tokens:write and an app key revoking an admin key", async () => {
      const { token: reader } = await auth.createToken({ tenantId, name: "reader", scopes: ["tokens:read"] });
      const { token: target } = await auth.createToken({ tenantId, name: "target", scopes: ["tokens:read"] });
      expect((await refusal(auth.revokeToken({ tenantId, id: target!.id, actor: reader!.id }))).code).toBe(
        Code.PermissionDenied,
      );
      const { token: writer } = await auth.createToken({ tenantId, name: "w", scopes: [...SCOPES] });
      expect((await refusal(auth.revokeToken({ tenantId, id: adminId, actor: writer!.id }))).code).toBe(
        Code.PermissionDenied,
      );
      expect((await auth.getToken({ tenantId, id: adminId })).token!.revokedAt).toBeUndefined();
    });
  });

  describe("expiry", () => {
    it("records an expired event once when a token's expiry passes", async () => {
      const { token, secret } = await auth.createToken({
        tenantId,
        name: "short",
        scopes: ["logs:read"],
        expiresAt: timestampFromDate(new Date(Date.now() + 3_600_000)),
      });
      await auth.authorize({ apiKey: secret, action: "logs:read" });
      await db
        .updateTable("tokens")
        .set({ expires_at: new Date(Date.now() - 1) })
        .where("id", "=", token!.id)
        .execute();
      await waitFor("the expiry to be audited", async () =>
        (await eventsOf(token!.id)).includes("expired") ? true : undefined,
      );
      // The lookup of the key may be cached for up to a second (expires_at never changes in real use).
      const err = await waitFor("the key to be refused", async () => {
        const refused = await refusal(auth.authorize({ apiKey: secret, action: "logs:read" })).catch(
          () => undefined,
        );
        return refused;
      });
      expect(err.rawMessage).toBe("API key expired");
      const events = (await auth.listTokenEvents({ tenantId, tokenId: token!.id })).events;
      expect(events.filter((e) => e.event === "expired")).toMatchObject([{ actor: "system", tenantId }]);
    });

    it("publishes token.expiring once, N days before expiry", async () => {
      const expiresAt = new Date(Date.now() + 5 * 86_400_000);
      const { token } = await auth.createToken({
        tenantId,
        name: "warned",
        scopes: ["logs:read"],
        expiresAt: timestampFromDate(expiresAt),
        expiryWarningDays: 7,
      });
      const { token: later } = await auth.createToken({
        tenantId,
        name: "not yet",
        scopes: ["logs:read"],
        expiresAt: timestampFromDate(new Date(Date.now() + 30 * 86_400_000)),
        expiryWarningDays: 7,
      });
      const warning = await waitFor("the warning", () => expiring.find((e) => e.tokenId === token!.id));
      expect(warning).toMatchObject({ tenantId, name: "warned", warningDays: 7, prefix: token!.prefix });
      expect(timestampDate(warning.expiresAt!)).toEqual(expiresAt);
      // Several more sweeps (the service's own, and two racing replicas) send nothing more.
      const hooks = {
        secretsStopped: (_e: SecretsStopped) => {},
        expiring: async (t: TokenRow) => {
          expiring.push({ tokenId: t.id } as TokenExpiring);
        },
      };
      await Promise.all([sweepTokens(db, hooks), sweepTokens(db, hooks)]);
      await nc.flush();
      expect(expiring.filter((e) => e.tokenId === token!.id)).toHaveLength(1);
      expect(expiring.find((e) => e.tokenId === later!.id)).toBeUndefined();
      const bad = await refusal(
        auth.createToken({ tenantId, name: "x", scopes: ["logs:read"], expiryWarningDays: 3 }),
      );
      expect(bad.rawMessage).toBe("expiry_warning_days needs expires_at");
    });

    it("sends each due warning once when replicas sweep at the same time", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) {
        const { token } = await auth.createToken({
          tenantId,
          name: `race${i}`,
          scopes: ["logs:read"],
          expiresAt: timestampFromDate(new Date(Date.now() + 30 * 86_400_000)),
          expiryWarningDays: 7,
        });
        ids.push(token!.id);
      }
      const sent: string[] = [];
      const hooks = {
        secretsStopped: () => {},
        expiring: async (t: TokenRow) => {
          sent.push(t.id);
        },
      };
      // Due now: 30 days away with a 40-day warning.
      await sql`update tokens set expiry_warning_days = 40 where id = any(${ids}::text[])`.execute(db);
      await Promise.all([sweepTokens(db, hooks), sweepTokens(db, hooks), sweepTokens(db, hooks)]);
      const fromService = expiring.filter((e) => ids.includes(e.tokenId)).map((e) => e.tokenId);
      expect([...sent, ...fromService].sort()).toEqual([...ids].sort());
    });
  });

  describe("tenants", () => {
    it("creates a workspace with its first admin key when asked, recording the calling admin", async () => {
      const res = await tenants.createTenant({
        name: "New",
        plan: Plan.TEAM,
        issueAdminToken: true,
        createdBy: adminId,
      });
      expect(res.tenant).toMatchObject({ name: "New", plan: Plan.TEAM });
      expect(res.adminToken).toMatchObject({
        tenantId: res.tenant!.id,
        kind: TokenKind.ADMIN,
        createdBy: adminId,
      });
      const { principal } = await auth.authorize({ apiKey: res.adminSecret, action: "tokens:write" });
      expect(principal).toMatchObject({ tenantId: res.tenant!.id, plan: Plan.TEAM });
      expect((await tenants.getTenant({ id: res.tenant!.id })).tenant!.name).toBe("New");
      expect((await refusal(tenants.getTenant({ id: newId("ws") }))).code).toBe(Code.NotFound);
    });

    it("refuses a calling key that is not an admin key", async () => {
      const { token } = await auth.createToken({ tenantId, name: "app", scopes: [...SCOPES] });
      const err = await refusal(
        tenants.createTenant({ name: "Nope", issueAdminToken: true, createdBy: token!.id }),
      );
      expect(err.code).toBe(Code.PermissionDenied);
    });
  });
});
