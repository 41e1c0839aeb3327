import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  freePort,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { loadConfig } from "../platform/config.js";
import { createDatabase } from "../platform/db.js";
import { UnauthenticatedError } from "../platform/errors.js";
import {
  AuthService,
  CreateTokenRequestSchema,
  Plan,
  TenantService,
  TokenKind,
} from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { newId } from "../platform/ids.js";
import { createLogger } from "../platform/log.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import { generateApiKey, hashApiKey } from "./keys.js";
import { planSettings, planTable } from "./plans.js";
import { SCOPES } from "./scopes.js";
import { authService } from "./service.js";
import type { Database } from "./store.js";
import { Tokens } from "./tokens.js";

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("expected the call to be refused");
}

async function expectRefused(promise: Promise<unknown>, code: Code, message: string | RegExp): Promise<void> {
  const err = await refusal(promise);
  expect(Code[err.code], err.rawMessage).toBe(Code[code]);
  if (typeof message === "string") expect(err.rawMessage).toBe(message);
  else expect(err.rawMessage).toMatch(message);
}

describe("auth service", () => {
  let testDb: TestDatabase;
  let namespace: string;
  let running: RunningService;
  let db: Kysely<Database>;
  let auth: Client<typeof AuthService>;
  let tenants: Client<typeof TenantService>;
  let tenantId: string;
  let adminKey: string;
  let adminTokenId: string;

  async function createToken(init: Omit<MessageInitShape<typeof CreateTokenRequestSchema>, "$typeName">) {
    return auth.createToken(create(CreateTokenRequestSchema, { tenantId, name: "test token", ...init }));
  }

  async function eventsOf(tokenId: string) {
    return db.selectFrom("token_events").selectAll().where("token_id", "=", tokenId).orderBy("id").execute();
  }

  beforeAll(async () => {
    testDb = await createTestDatabase();
    namespace = testNamespace();
    running = await startService(authService, {
      DATABASE_URL: testDb.url,
      NATS_URL: "nats://127.0.0.1:4222",
      FLOWPLANE_NAMESPACE: namespace,
      AUTH_PORT: "0",
      AUTH_KEY_ENV: "test",
      // These tests change token rows behind the service's back: no cached lookups.
      AUTH_TOKEN_CACHE_TTL_MS: "0",
      AUTH_PLAN_PRO_API: "6000/6000",
      LOG_LEVEL: "silent",
    });
    const url = `http://127.0.0.1:${running.port}`;
    auth = createRpcClient(AuthService, url);
    tenants = createRpcClient(TenantService, url);
    db = createDatabase<Database>({ url: testDb.url, schema: "auth", maxConnections: 2 });

    const { tenant } = await tenants.createTenant({ name: "  Acme  ", plan: Plan.PRO });
    tenantId = tenant!.id;
    const { token, secret } = await createToken({ kind: TokenKind.ADMIN, name: "bootstrap admin" });
    adminKey = secret;
    adminTokenId = token!.id;
  });

  afterAll(async () => {
    await running?.stop();
    await db?.destroy();
    await testDb?.drop();
    await deleteNamespaceStreams(namespace);
  });

  describe("CreateTenant", () => {
    it("creates a workspace with a ws_ id, trimmed name and default FREE plan", async () => {
      const { tenant } = await tenants.createTenant({ name: "Solo" });
      expect(tenant!.id).toMatch(/^ws_[0-9a-z]{26}$/);
      expect(tenant!.name).toBe("Solo");
      expect(tenant!.plan).toBe(Plan.FREE);
      expect(Math.abs(timestampDate(tenant!.createdAt!).getTime() - Date.now())).toBeLessThan(60_000);
      const row = await db.selectFrom("tenants").selectAll().where("id", "=", tenant!.id).executeTakeFirst();
      expect(row).toMatchObject({ name: "Solo", plan: "free" });
    });

    it("refuses a missing or overlong name and an unknown plan", async () => {
      await expectRefused(tenants.createTenant({ name: "   " }), Code.InvalidArgument, "name is required");
      await expectRefused(tenants.createTenant({ name: "x".repeat(101) }), Code.InvalidArgument, /name.*100/);
      await expectRefused(
        tenants.createTenant({ name: "ok", plan: 42 as Plan }),
        Code.InvalidArgument,
        /plan/,
      );
    });
  });

  describe("CreateToken by an operator", () => {
    it("returns the admin token and its secret once, storing only the hash", async () => {
      expect(adminKey).toMatch(/^fp_test_[0-9A-Za-z]{36}$/);
      const row = await db
        .selectFrom("tokens")
        .selectAll()
        .where("id", "=", adminTokenId)
        .executeTakeFirstOrThrow();
      expect(row).toMatchObject({
        tenant_id: tenantId,
        kind: "admin",
        name: "bootstrap admin",
        created_by: "operator",
        prefix: adminKey.slice(0, 12),
        secret_hash: hashApiKey(adminKey),
        scopes: [...SCOPES],
        workflow_ids: [],
        expires_at: null,
        revoked_at: null,
      });
      expect(JSON.stringify(row)).not.toContain(adminKey);
      const events = await eventsOf(adminTokenId);
      expect(events).toMatchObject([{ event: "created", actor: "operator", tenant_id: tenantId }]);
    });

    it("defaults to an app token holding exactly its scopes, in order and without duplicates", async () => {
      const workflowId = newId("wf");
      const expiresAt = new Date(Date.now() + 3_600_000);
      const { token, secret } = await createToken({
        name: "ci",
        purpose: "deploys from CI",
        scopes: ["workflows:execute", "logs:read", "workflows:execute"],
        workflowIds: [workflowId],
        expiresAt: timestampFromDate(expiresAt),
      });
      expect(token).toMatchObject({
        tenantId,
        kind: TokenKind.APP,
        name: "ci",
        purpose: "deploys from CI",
        scopes: ["workflows:execute", "logs:read"],
        workflowIds: [workflowId],
        prefix: secret.slice(0, 12),
        createdBy: "operator",
      });
      expect(token!.id).toMatch(/^tok_/);
      expect(timestampDate(token!.expiresAt!).getTime()).toBe(expiresAt.getTime());
      expect(token!.lastUsedAt).toBeUndefined();
    });

    it("refuses invalid input with InvalidArgument naming the field", async () => {
      await expectRefused(
        createToken({ scopes: ["logs:read", "logs:delete"] }),
        Code.InvalidArgument,
        /logs:delete/,
      );
      await expectRefused(createToken({ scopes: [] }), Code.InvalidArgument, /scopes.*at least one/);
      await expectRefused(
        createToken({ name: "", scopes: ["logs:read"] }),
        Code.InvalidArgument,
        "name is required",
      );
      await expectRefused(
        createToken({ name: "n".repeat(101), scopes: ["logs:read"] }),
        Code.InvalidArgument,
        /name.*100/,
      );
      await expectRefused(
        createToken({ purpose: "p".repeat(501), scopes: ["logs:read"] }),
        Code.InvalidArgument,
        /purpose.*500/,
      );
      await expectRefused(
        createToken({ scopes: ["logs:read"], workflowIds: ["not-a-workflow"] }),
        Code.InvalidArgument,
        /workflow_ids\[0\].*not-a-workflow/,
      );
      await expectRefused(
        createToken({ scopes: ["logs:read"], expiresAt: timestampFromDate(new Date(Date.now() - 1000)) }),
        Code.InvalidArgument,
        /expires_at.*future/,
      );
      await expectRefused(
        createToken({ scopes: ["logs:read"], kind: 7 as TokenKind }),
        Code.InvalidArgument,
        /kind/,
      );
      await expectRefused(
        createToken({ tenantId: "", scopes: ["logs:read"] }),
        Code.InvalidArgument,
        /tenant_id/,
      );
      await expectRefused(
        createToken({ scopes: ["logs:read"], createdBy: "someone" }),
        Code.InvalidArgument,
        /created_by/,
      );
    });

    it("answers NotFound for a workspace that does not exist", async () => {
      const missing = newId("ws");
      await expectRefused(
        createToken({ tenantId: missing, scopes: ["logs:read"] }),
        Code.NotFound,
        `workspace ${missing} not found`,
      );
    });
  });

  describe("Authorize", () => {
    it("resolves an admin key to its principal with the plan and every scope", async () => {
      const { principal } = await auth.authorize({ apiKey: adminKey, action: "tokens:write" });
      expect(principal).toMatchObject({
        tenantId,
        tokenId: adminTokenId,
        kind: TokenKind.ADMIN,
        scopes: [...SCOPES],
        workflowIds: [],
        plan: Plan.PRO,
      });
    });

    it("records the key's last use without being asked to", async () => {
      const { token, secret } = await createToken({ scopes: ["logs:read"] });
      await auth.authorize({ apiKey: secret, action: "logs:read" });
      const row = await waitFor("last_used_at to be written", async () => {
        const r = await db
          .selectFrom("tokens")
          .selectAll()
          .where("id", "=", token!.id)
          .executeTakeFirstOrThrow();
        return r.last_used_at ?? undefined;
      });
      expect(Math.abs(row.getTime() - Date.now())).toBeLessThan(60_000);
    });

    it("refuses malformed and checksum-broken keys without touching the database", async () => {
      const eventsBefore = await db
        .selectFrom("token_events")
        .select(db.fn.countAll<number>().as("n"))
        .executeTakeFirstOrThrow();
      const last = adminKey.at(-1) === "A" ? "B" : "A";
      const broken = [
        "",
        "fp_live_bogus",
        `${adminKey.slice(0, -1)}${last}`,
        adminKey.slice(0, -1),
        adminKey.replace("fp_test_", "fp_live_"),
        `Bearer ${adminKey}`,
      ];
      for (const apiKey of broken) {
        await expectRefused(
          auth.authorize({ apiKey, action: "logs:read" }),
          Code.Unauthenticated,
          "invalid API key",
        );
      }
      const eventsAfter = await db
        .selectFrom("token_events")
        .select(db.fn.countAll<number>().as("n"))
        .executeTakeFirstOrThrow();
      expect(eventsAfter.n).toBe(eventsBefore.n);

      // Proof that no query runs: against a database that cannot be reached, a broken key still gets
      // its 401 while a well-formed one fails on the connection.
      const unreachable = createDatabase<Database>({
        url: `postgres://postgres@127.0.0.1:${await freePort()}/nowhere`,
        schema: "auth",
      });
      try {
        const offline = new Tokens(unreachable, {
          keyEnv: "test",
          log: createLogger("auth-test", "silent"),
          plans: planTable(loadConfig(planSettings, {})),
        });
        for (const apiKey of broken) {
          await expect(
            offline.authorize({ apiKey, action: "logs:read", resourceId: "" }),
          ).rejects.toBeInstanceOf(UnauthenticatedError);
        }
        const wellFormed = offline.authorize({
          apiKey: generateApiKey("test"),
          action: "logs:read",
          resourceId: "",
        });
        await expect(wellFormed).rejects.toMatchObject({ code: "ECONNREFUSED" });
      } finally {
        await unreachable.destroy();
      }
    });

    it("refuses an unknown, well-formed key", async () => {
      await expectRefused(
        auth.authorize({ apiKey: generateApiKey("test"), action: "logs:read" }),
        Code.Unauthenticated,
        "invalid API key",
      );
      await expectRefused(
        auth.authorize({ apiKey: generateApiKey("live"), action: "logs:read" }),
        Code.Unauthenticated,
        "invalid API key",
      );
    });

    it("refuses an empty or unknown action as InvalidArgument", async () => {
      await expectRefused(auth.authorize({ apiKey: adminKey, action: "" }), Code.InvalidArgument, /action/);
      await expectRefused(auth.authorize({ apiKey: adminKey, action: "root" }), Code.InvalidArgument, /root/);
    });

    it("refuses an app key lacking the scope and audits it", async () => {
      const { token, secret } = await createToken({ scopes: ["logs:read"] });
      const { principal } = await auth.authorize({ apiKey: secret, action: "logs:read" });
      expect(principal).toMatchObject({ kind: TokenKind.APP, scopes: ["logs:read"], plan: Plan.PRO });
      await expectRefused(
        auth.authorize({ apiKey: secret, action: "workflows:execute" }),
        Code.PermissionDenied,
        "API key lacks scope workflows:execute",
      );
      const events = await eventsOf(token!.id);
      expect(events.map((e) => e.event)).toEqual(["created", "refused_permission"]);
      expect(events[1]).toMatchObject({
        tenant_id: tenantId,
        token_id: token!.id,
        actor: token!.id,
        reason: "API key lacks scope workflows:execute",
      });
    });

    it("limits a workflow-restricted key to its workflows", async () => {
      const allowed = newId("wf");
      const other = newId("wf");
      const { token, secret } = await createToken({ scopes: ["workflows:execute"], workflowIds: [allowed] });
      const { principal } = await auth.authorize({
        apiKey: secret,
        action: "workflows:execute",
        resourceId: allowed,
      });
      expect(principal!.workflowIds).toEqual([allowed]);
      await expectRefused(
        auth.authorize({ apiKey: secret, action: "workflows:execute", resourceId: other }),
        Code.PermissionDenied,
        `API key is not allowed to access workflow ${other}`,
      );
      const events = await eventsOf(token!.id);
      expect(events.at(-1)).toMatchObject({
        event: "refused_permission",
        reason: expect.stringContaining(other),
      });

      // An unrestricted key may target any workflow.
      const { secret: open } = await createToken({ scopes: ["workflows:execute"] });
      await auth.authorize({ apiKey: open, action: "workflows:execute", resourceId: other });
    });

    it("refuses an expired key and audits it", async () => {
      const { token, secret } = await createToken({
        scopes: ["logs:read"],
        expiresAt: timestampFromDate(new Date(Date.now() + 3_600_000)),
      });
      await auth.authorize({ apiKey: secret, action: "logs:read" });
      await db
        .updateTable("tokens")
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where("id", "=", token!.id)
        .execute();
      await expectRefused(
        auth.authorize({ apiKey: secret, action: "logs:read" }),
        Code.Unauthenticated,
        "API key expired",
      );
      expect((await eventsOf(token!.id)).at(-1)).toMatchObject({
        event: "refused_unauthenticated",
        tenant_id: tenantId,
        reason: "API key expired",
      });
    });

    it("refuses a revoked key and audits it", async () => {
      const { token, secret } = await createToken({ scopes: ["logs:read"] });
      await db.updateTable("tokens").set({ revoked_at: new Date() }).where("id", "=", token!.id).execute();
      await expectRefused(
        auth.authorize({ apiKey: secret, action: "logs:read" }),
        Code.Unauthenticated,
        "API key revoked",
      );
      expect((await eventsOf(token!.id)).at(-1)).toMatchObject({
        event: "refused_unauthenticated",
        reason: "API key revoked",
      });
    });
  });

  describe("CreateToken by a calling key (no escalation)", () => {
    it("lets an app key with tokens:write grant what it holds, recording it as the creator", async () => {
      const { token: creator } = await createToken({ scopes: ["tokens:write", "workflows:execute"] });
      const { token, secret } = await createToken({ scopes: ["workflows:execute"], createdBy: creator!.id });
      expect(token!.createdBy).toBe(creator!.id);
      await auth.authorize({ apiKey: secret, action: "workflows:execute" });
      expect(await eventsOf(token!.id)).toMatchObject([{ event: "created", actor: creator!.id }]);
    });

    it("refuses to let an app key grant a scope it lacks", async () => {
      const { token: creator } = await createToken({ scopes: ["tokens:write", "workflows:execute"] });
      await expectRefused(
        createToken({ scopes: ["workflows:execute", "logs:read"], createdBy: creator!.id }),
        Code.PermissionDenied,
        "cannot grant scope logs:read: the calling key does not hold it",
      );
      expect((await eventsOf(creator!.id)).at(-1)).toMatchObject({ event: "refused_permission" });
    });

    it("refuses an app key without tokens:write", async () => {
      const { token: creator } = await createToken({ scopes: ["logs:read"] });
      await expectRefused(
        createToken({ scopes: ["logs:read"], createdBy: creator!.id }),
        Code.PermissionDenied,
        "API key lacks scope tokens:write",
      );
    });

    it("refuses an admin token requested by an app key", async () => {
      const { token: creator } = await createToken({ scopes: [...SCOPES] });
      await expectRefused(
        createToken({ kind: TokenKind.ADMIN, createdBy: creator!.id }),
        Code.PermissionDenied,
        /app key cannot create or manage an admin key/,
      );
    });

    it("lets an admin key create admin and app tokens", async () => {
      const { token } = await createToken({ kind: TokenKind.ADMIN, createdBy: adminTokenId });
      expect(token).toMatchObject({ kind: TokenKind.ADMIN, createdBy: adminTokenId, scopes: [...SCOPES] });
    });

    it("refuses a calling key of another workspace", async () => {
      const { tenant: other } = await tenants.createTenant({ name: "Other" });
      const { token: foreignAdmin } = await auth.createToken({
        tenantId: other!.id,
        kind: TokenKind.ADMIN,
        name: "foreign admin",
      });
      await expectRefused(
        createToken({ scopes: ["logs:read"], createdBy: foreignAdmin!.id }),
        Code.PermissionDenied,
        /does not belong to workspace/,
      );
      await expectRefused(
        createToken({ scopes: ["logs:read"], createdBy: newId("tok") }),
        Code.PermissionDenied,
        /does not belong to workspace/,
      );
    });

    it("refuses a revoked calling key", async () => {
      const { token: creator } = await createToken({ scopes: ["tokens:write", "logs:read"] });
      await db.updateTable("tokens").set({ revoked_at: new Date() }).where("id", "=", creator!.id).execute();
      await expectRefused(
        createToken({ scopes: ["logs:read"], createdBy: creator!.id }),
        Code.Unauthenticated,
        "API key revoked",
      );
    });

    it("keeps a workflow-restricted creator's tokens within its workflows", async () => {
      const [a, b, c] = [newId("wf"), newId("wf"), newId("wf")];
      const { token: creator } = await createToken({
        scopes: ["tokens:write", "workflows:execute"],
        workflowIds: [a, b],
      });
      const { token } = await createToken({
        scopes: ["workflows:execute"],
        workflowIds: [b],
        createdBy: creator!.id,
      });
      expect(token!.workflowIds).toEqual([b]);
      await expectRefused(
        createToken({ scopes: ["workflows:execute"], workflowIds: [a, c], createdBy: creator!.id }),
        Code.PermissionDenied,
        new RegExp(c),
      );
      await expectRefused(
        createToken({ scopes: ["workflows:execute"], createdBy: creator!.id }),
        Code.PermissionDenied,
        /subset/,
      );
    });
  });
});
