/**
 * The gateway's authorization cache (gateway/auth-cache.ts) against a real auth service, NATS and
 * PostgreSQL: a busy key is served from memory, refusals are exactly the plain path's, leased tokens
 * are never lost or overspent, and revocations, rotations and grace ends still bite within a second.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authService } from "../services/auth/service.js";
import {
  ExecutionBucket,
  Plan,
  RateLimitExceededSchema,
  TokenKind,
} from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { newId } from "../services/platform/ids.js";
import { createLogger } from "../services/platform/log.js";
import { natsNames } from "../services/platform/nats.js";
import { startService } from "../services/platform/service.js";
import { TEST_NATS_URL, waitFor } from "../test/helpers/infra.js";
import { clientsFor, type Stack, startStack } from "../test/helpers/stack.js";
import { buildGateway } from "./app.js";
import { AuthCache, startRevocationFeed } from "./auth-cache.js";
import type { GatewayClients } from "./clients.js";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));
const log = createLogger("auth-cache-test", "silent");
let stack: Stack;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  stack = await startStack({
    services: ["auth"],
    serviceDefaults: false,
    env: {
      auth: {
        AUTH_TOKEN_CACHE_TTL_MS: "1000",
        // Grace ends must be honoured by the grant itself, not by the sweeper's event.
        AUTH_SWEEP_INTERVAL_MS: "600000",
        AUTH_PLAN_PRO_API: "6000/6000",
        // Buckets refilling one token a minute: counts are exact for the length of a test.
        AUTH_PLAN_FREE_API: "1/20",
        AUTH_PLAN_ENTERPRISE_API: "6000/6000",
        AUTH_PLAN_ENTERPRISE_SYNC: "1/120",
      },
    },
    gateway: { bodyLimitBytes: 64 * 1024 },
    tenant: false,
  });
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await stack?.stop();
});

/** An in-process gateway with the cache on and fed by NATS; counts the Authorize RPCs it makes. */
async function cachedGateway(authUrl = stack.authUrl) {
  const clients = clientsFor({ auth: authUrl });
  let authorizeCalls = 0;
  const counted: GatewayClients = {
    ...clients,
    auth: {
      ...clients.auth,
      authorize: ((...args: Parameters<GatewayClients["auth"]["authorize"]>) => {
        authorizeCalls++;
        return clients.auth.authorize(...args);
      }) as GatewayClients["auth"]["authorize"],
    },
  };
  const cache = new AuthCache({ ttlMs: 1000, log });
  const feed = startRevocationFeed({ cache, natsUrl: TEST_NATS_URL, names: natsNames(stack.namespace), log });
  await feed.ready;
  const app = buildGateway({
    config: { bodyLimitBytes: 64 * 1024 },
    log,
    clients: counted,
    authCache: cache,
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const address = app.server.address();
  const baseUrl = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  cleanups.push(async () => {
    await app.close();
    await feed.close();
  });
  return { baseUrl, cache, calls: () => authorizeCalls };
}

/** gateway/main.ts as a child process on this stack (cache on unless `env` says otherwise). */
async function gatewayProcess(env: Record<string, string>) {
  const child: ChildProcess = fork(MAIN, [], {
    execArgv: ["--import", "tsx"],
    env: {
      ...process.env,
      LOG_LEVEL: "silent",
      GATEWAY_PORT: "0",
      GATEWAY_HOST: "127.0.0.1",
      GATEWAY_ADMIN_PORT: "0",
      GATEWAY_AUTH_CACHE_TTL_MS: "1000",
      AUTH_URL: stack.authUrl,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: stack.namespace,
      ...env,
    },
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  cleanups.push(async () => {
    child.kill("SIGTERM");
    await exited;
  });
  const { port } = await new Promise<{ port: number }>((resolve, reject) => {
    child.once("message", (msg) => resolve(msg as { port: number }));
    child.once("exit", (code) => reject(new Error(`gateway exited with ${code}`)));
  });
  return { child, port, exited };
}

async function workspace(plan: Plan) {
  const { tenant } = await stack.tenants.createTenant({ name: "ws", plan });
  const { token, secret } = await stack.auth.createToken({
    tenantId: tenant!.id,
    kind: TokenKind.ADMIN,
    name: "admin",
  });
  return { tenantId: tenant!.id, tokenId: token!.id, key: secret };
}

/** A request that needs tokens:write and is then refused by validation (400): no backend call. */
async function probe(baseUrl: string, key: string): Promise<Response> {
  return fetch(`${baseUrl}/api/v1/tokens`, {
    method: "POST",
    headers: { "x-api-key": key, "content-type": "application/json" },
    body: JSON.stringify({ unknownField: true }),
  });
}

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("expected a refusal");
}

describe("gateway authorization cache", () => {
  it("serves a busy key from memory: far fewer Authorize RPCs than requests", async () => {
    const gw = await cachedGateway();
    const ws = await workspace(Plan.PRO);
    const requests = 400;
    for (let i = 0; i < requests; i++) {
      const res = await probe(gw.baseUrl, ws.key);
      expect(res.status).toBe(400);
      expect(res.headers.get("x-ratelimit-limit")).toBe("6000");
      expect(Number(res.headers.get("x-ratelimit-remaining"))).toBeGreaterThan(6000 - requests - 1000);
    }
    // One RPC per request without the cache; a lease covers a quarter second of the key's rate.
    expect(gw.calls()).toBeLessThan(requests / 5);
    // Requests for the logs `limits` block always ask the auth service.
    const before = gw.calls();
    for (let i = 0; i < 5; i++) {
      await gw.cache.authorize({ apiKey: ws.key, action: "logs:read", includeLimits: true });
    }
    expect(gw.calls() - before).toBe(5);
  });

  it("grants exactly the bucket to 200 concurrent executions and refuses the rest with the plain 429", async () => {
    const gw = await cachedGateway();
    const ws = await workspace(Plan.ENTERPRISE);
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, () =>
        gw.cache.authorize({ apiKey: ws.key, action: "workflows:execute", bucket: ExecutionBucket.SYNC }),
      ),
    );
    const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason as ConnectError] : []));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(120);
    expect(refused).toHaveLength(80);
    for (const err of refused) {
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.findDetails(RateLimitExceededSchema)[0]!.bucket).toBe("sync");
    }
    expect(gw.calls()).toBeLessThan(200);
  });

  it("gives unused leased tokens back: a free-plan key gets exactly its burst across a cache expiry", async () => {
    const gw = await cachedGateway();
    const ws = await workspace(Plan.FREE);
    let through = 0;
    for (let i = 0; i < 12; i++) if ((await probe(gw.baseUrl, ws.key)).status === 400) through++;
    expect(through).toBe(12);
    // The busy start leased ahead: this gateway holds tokens the key has not used.
    expect(gw.cache.held.tokens).toBeGreaterThan(0);
    await waitFor("the unused tokens to go back", () => {
      const held = gw.cache.held;
      return held.tokens === 0 && held.returning === 0 ? true : undefined;
    });
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await probe(gw.baseUrl, ws.key)).status);
    // 20 tokens in all (one a minute of refill cannot add one here): 8 more pass, then 429.
    expect(statuses.filter((s) => s === 400)).toHaveLength(8);
    expect(statuses.filter((s) => s === 429)).toHaveLength(12);
    expect(statuses.slice(8).every((s) => s === 429)).toBe(true);
  });

  it("refuses a cached key's other scope and other workflow with 403, audited", async () => {
    const gw = await cachedGateway();
    const ws = await workspace(Plan.PRO);
    const allowed = newId("wf");
    const { token, secret } = await stack.auth.createToken({
      tenantId: ws.tenantId,
      kind: TokenKind.APP,
      name: "reader",
      scopes: ["tokens:read", "workflows:read"],
      workflowIds: [allowed],
    });
    const read = () => fetch(`${gw.baseUrl}/api/v1/tokens?limit=1`, { headers: { "x-api-key": secret } });
    for (let i = 0; i < 30; i++) expect((await read()).status).toBe(200);
    expect(gw.cache.size).toBeGreaterThan(0);
    const denied = await probe(gw.baseUrl, secret);
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { error: string }).error).toBe("API key lacks scope tokens:write");
    const request = { apiKey: secret, action: "workflows:read", resourceId: allowed };
    for (let i = 0; i < 30; i++) await gw.cache.authorize(request);
    const other = await refusal(gw.cache.authorize({ ...request, resourceId: newId("wf") }));
    expect(other.code).toBe(Code.PermissionDenied);
    const { events } = await stack.auth.listTokenEvents({ tenantId: ws.tenantId, tokenId: token!.id });
    expect(events.map((e) => e.event).filter((e) => e === "refused_permission")).toHaveLength(2);
  });

  it("stops using the replaced secret when its rotation grace ends, without waiting for an event", async () => {
    const gw = await cachedGateway();
    const ws = await workspace(Plan.PRO);
    for (let i = 0; i < 30; i++) expect((await probe(gw.baseUrl, ws.key)).status).toBe(400);
    const callsBefore = gw.calls();
    const { token } = await stack.auth.rotateToken({
      tenantId: ws.tenantId,
      id: ws.tokenId,
      gracePeriodSeconds: 2,
    });
    const graceEnd = timestampDate(token!.previousSecretExpiresAt!).getTime();
    const answers: { sentAt: number; status: number }[] = [];
    for (;;) {
      const sentAt = Date.now();
      const { status } = await probe(gw.baseUrl, ws.key);
      answers.push({ sentAt, status });
      if (status === 401) break;
      expect(status).toBe(400);
      if (sentAt > graceEnd + 5000) throw new Error("the replaced secret still works 5 s after its grace");
    }
    // Served from the cache during the grace, and never after it (grace_ended is published only
    // every 10 minutes here).
    expect(answers.length).toBeGreaterThan(20);
    expect(gw.calls() - callsBefore).toBeLessThan(answers.length / 2);
    const lastAccepted = answers.filter((a) => a.status === 400).at(-1)!;
    expect(lastAccepted.sentAt).toBeLessThan(graceEnd + 50);
    expect(answers.at(-1)!.sentAt).toBeLessThan(graceEnd + 1000);
  });

  it("does not let a grant taken during a rotation grace outlive it", async () => {
    // An auth replica without its lookup cache: a grant's validity is then the full TTL from the
    // call, so only the grace bound can end it earlier.
    const replica = await startService(authService, {
      DATABASE_URL: stack.databaseUrl,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: stack.namespace,
      AUTH_PORT: "0",
      LOG_LEVEL: "silent",
      AUTH_TOKEN_CACHE_TTL_MS: "0",
      AUTH_SWEEP_INTERVAL_MS: "600000",
      // The loop below calls as fast as the machine allows for a second: no bucket may run dry.
      AUTH_PLAN_PRO_API: "6000000/6000000",
    });
    cleanups.push(() => replica.stop());
    const gw = await cachedGateway(`http://127.0.0.1:${replica.port}`);
    const ws = await workspace(Plan.PRO);
    const request = { apiKey: ws.key, action: "tokens:write" };
    // Warm the replica and the connection before anything is timed.
    for (let i = 0; i < 50; i++) await gw.cache.authorize(request);
    const { token } = await stack.auth.rotateToken({
      tenantId: ws.tenantId,
      id: ws.tokenId,
      gracePeriodSeconds: 1,
    });
    const graceEnd = timestampDate(token!.previousSecretExpiresAt!).getTime();
    // Busy with the replaced secret until 0.3 s before the grace ends: a grant then would run 0.7 s
    // past it without the bound.
    let calls = 0;
    while (Date.now() < graceEnd - 300 || calls < 5) {
      await gw.cache.authorize(request);
      calls++;
    }
    expect(gw.cache.held.tokens).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, graceEnd - Date.now() + 30)));
    expect((await refusal(gw.cache.authorize(request))).code).toBe(Code.Unauthenticated);
  });

  it("refuses a revoked key within a second on a second gateway process, its cache on", async () => {
    const gw = await cachedGateway();
    const ws = await workspace(Plan.PRO);
    const { port } = await gatewayProcess({});
    const urls = [gw.baseUrl, `http://127.0.0.1:${port}`];
    // The child subscribes to revocations once NATS is connected: wait until a revocation of another
    // key reaches it before measuring.
    // key reaches it (a fresh canary each time, refused at once only through the event).
    await waitFor("the second gateway to drop a revoked canary at once", async () => {
      const canary = await workspace(Plan.PRO);
      for (let i = 0; i < 20; i++) await probe(urls[1]!, canary.key);
      await stack.auth.revokeToken({ tenantId: canary.tenantId, id: canary.tokenId });
      await new Promise((resolve) => setTimeout(resolve, 50));
      const status = (await probe(urls[1]!, canary.key)).status;
      return status === 401 ? true : undefined;
    });

    // Both gateways hold a grant for the key.
    for (let i = 0; i < 40; i++) for (const url of urls) expect((await probe(url, ws.key)).status).toBe(400);
    const callsBefore = gw.calls();
    for (let i = 0; i < 20; i++) expect((await probe(urls[0]!, ws.key)).status).toBe(400);
    expect(gw.calls() - callsBefore).toBeLessThan(10);

    const since = Date.now();
    await stack.auth.revokeToken({ tenantId: ws.tenantId, id: ws.tokenId });
    const pending = new Set(urls);
    while (pending.size > 0) {
      for (const url of [...pending]) if ((await probe(url, ws.key)).status === 401) pending.delete(url);
      if (Date.now() - since > 5000) throw new Error("a gateway still accepts the revoked key after 5 s");
    }
    expect(Date.now() - since).toBeLessThan(1000);
    for (const url of urls) expect((await probe(url, ws.key)).status).toBe(401);
  });

  it("serves, with its cache, and stops cleanly while NATS is unreachable", async () => {
    const { port, child, exited } = await gatewayProcess({ NATS_URL: "nats://127.0.0.1:1" });
    const ws = await workspace(Plan.PRO);
    for (let i = 0; i < 20; i++) expect((await probe(`http://127.0.0.1:${port}`, ws.key)).status).toBe(400);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
