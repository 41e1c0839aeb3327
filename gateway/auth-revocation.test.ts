import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authService } from "../services/auth/service.js";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createLogger } from "../services/platform/log.js";
import { createRpcClient } from "../services/platform/rpc.js";
import { type RunningService, startService } from "../services/platform/service.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  freePort,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
} from "../test/helpers/infra.js";
import { buildGateway } from "./app.js";
import { createGatewayClients } from "./clients.js";

/**
 * Two gateways, each in front of its own auth replica (each with its one-second lookup cache), on
 * one database and one NATS: a key revoked or rotated through one is refused by both within 1 s.
 */
describe("revocation across gateway replicas", () => {
  let testDb: TestDatabase;
  let namespace: string;
  const replicas: RunningService[] = [];
  const gateways: ReturnType<typeof buildGateway>[] = [];
  const urls: string[] = [];
  let tenantId: string;
  let adminKey: string;

  beforeAll(async () => {
    testDb = await createTestDatabase();
    namespace = testNamespace();
    const unused = `http://127.0.0.1:${await freePort()}`;
    for (let i = 0; i < 2; i++) {
      const replica = await startService(authService, {
        DATABASE_URL: testDb.url,
        NATS_URL: TEST_NATS_URL,
        FLOWPLANE_NAMESPACE: namespace,
        AUTH_PORT: "0",
        AUTH_TOKEN_CACHE_TTL_MS: "1000",
        AUTH_PLAN_PRO_API: "6000/6000",
        LOG_LEVEL: "silent",
      });
      replicas.push(replica);
      const gateway = buildGateway({
        config: { bodyLimitBytes: 64 * 1024 },
        log: createLogger("gateway", "silent"),
        clients: createGatewayClients({
          authUrl: `http://127.0.0.1:${replica.port}`,
          executorUrl: unused,
          logsUrl: unused,
          rpcTimeoutMs: 10_000,
        }),
      });
      await gateway.listen({ port: 0, host: "127.0.0.1" });
      gateways.push(gateway);
      urls.push(`http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`);
    }
    const authUrl = `http://127.0.0.1:${replicas[0]!.port}`;
    const { tenant } = await createRpcClient(TenantService, authUrl).createTenant({
      name: "Two",
      plan: Plan.PRO,
    });
    tenantId = tenant!.id;
    adminKey = (
      await createRpcClient(AuthService, authUrl).createToken({
        tenantId,
        kind: TokenKind.ADMIN,
        name: "admin",
      })
    ).secret;
  });

  afterAll(async () => {
    for (const gateway of gateways) await gateway.close();
    for (const replica of replicas) await replica.stop();
    await testDb?.drop();
    if (namespace) await deleteNamespaceStreams(namespace);
  });

  const probe = async (url: string, key: string) =>
    (await fetch(`${url}/api/v1/tokens?limit=1`, { headers: { "x-api-key": key } })).status;

  /** Ms until every gateway answers 401 for `key`, polling; fails after 5 s. */
  async function msUntilRefusedEverywhere(key: string, since: number): Promise<number> {
    const pending = new Set(urls);
    while (pending.size > 0) {
      for (const url of [...pending]) if ((await probe(url, key)) === 401) pending.delete(url);
      if (Date.now() - since > 5000) throw new Error("a gateway still accepts the key after 5 s");
      if (pending.size > 0) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return Date.now() - since;
  }

  async function createKey(): Promise<{ id: string; key: string }> {
    const res = await fetch(`${urls[0]}/api/v1/tokens`, {
      method: "POST",
      headers: { "x-api-key": adminKey, "content-type": "application/json" },
      body: JSON.stringify({ name: "integration", scopes: ["tokens:read"] }),
    });
    expect(res.status).toBe(201);
    const { data } = (await res.json()) as { data: { id: string; key: string } };
    return data;
  }

  it("refuses a revoked key on both gateways within a second", async () => {
    const { id, key } = await createKey();
    // Both replicas now hold the key's lookup in their cache.
    for (const url of urls) expect(await probe(url, key)).toBe(200);
    const res = await fetch(`${urls[0]}/api/v1/tokens/${id}`, {
      method: "DELETE",
      headers: { "x-api-key": adminKey },
    });
    expect(res.status).toBe(200);
    const elapsed = await msUntilRefusedEverywhere(key, Date.now());
    expect(elapsed).toBeLessThan(1000);
    for (const url of urls) expect(await probe(url, key)).toBe(401);
  });

  it("refuses a key replaced by a rotation without grace on both gateways within a second", async () => {
    const { id, key } = await createKey();
    for (const url of urls) expect(await probe(url, key)).toBe(200);
    const res = await fetch(`${urls[1]}/api/v1/tokens/${id}/rotate`, {
      method: "POST",
      headers: { "x-api-key": adminKey, "content-type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    const { data } = (await res.json()) as { data: { key: string } };
    const elapsed = await msUntilRefusedEverywhere(key, Date.now());
    expect(elapsed).toBeLessThan(1000);
    for (const url of urls) expect(await probe(url, data.key)).toBe(200);
  });
});
