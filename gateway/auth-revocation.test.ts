import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authService } from "../services/auth/service.js";
import { type RunningService, startService } from "../services/platform/service.js";
import { TEST_NATS_URL } from "../test/helpers/infra.js";
import { clientsFor, listenGateway, type Stack, startStack } from "../test/helpers/stack.js";

/**
 * Two gateways, each in front of its own auth replica (each with its one-second lookup cache), on
 * one database and one NATS: a key revoked or rotated through one is refused by both within 1 s.
 */
describe("revocation across gateway replicas", () => {
  let stack: Stack;
  let second: RunningService | undefined;
  let secondGateway: { close(): Promise<unknown> } | undefined;
  const urls: string[] = [];
  let adminKey: string;

  beforeAll(async () => {
    const authEnv = { AUTH_TOKEN_CACHE_TTL_MS: "1000", AUTH_PLAN_PRO_API: "6000/6000" };
    // The first replica and its gateway are the stack's; the second shares its database and NATS namespace.
    stack = await startStack({
      services: ["auth"],
      serviceDefaults: false,
      env: { auth: authEnv },
      gateway: { bodyLimitBytes: 64 * 1024 },
      tenant: "Two",
    });
    urls.push(stack.baseUrl);
    adminKey = stack.adminKey;
    second = await startService(authService, {
      DATABASE_URL: stack.databaseUrl,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: stack.namespace,
      AUTH_PORT: "0",
      LOG_LEVEL: "silent",
      ...authEnv,
    });
    const listening = await listenGateway(clientsFor({ auth: `http://127.0.0.1:${second.port}` }), {
      config: { bodyLimitBytes: 64 * 1024 },
    });
    secondGateway = listening.gateway;
    urls.push(listening.baseUrl);
  });

  afterAll(async () => {
    await secondGateway?.close();
    await second?.stop();
    await stack?.stop();
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
