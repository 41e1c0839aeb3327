/**
 * Auth bench (DESIGN §10).
 *
 * authorizeCached*: the check the gateway's routes run (gateway/auth.ts `authorize`, as called by
 * the `requireScope` hook) with the gateway's authorization cache on (GATEWAY_AUTH_CACHE_TTL_MS=1000,
 * fed revocations by real NATS), against a real auth service on a real PostgreSQL: one call at a time,
 * a busy key, so calls are served from the grant and leased tokens this process holds while a
 * background Authorize refills them. authorizeUncached*: the same function with the cache off (one
 * Authorize RPC per call). Measured alternating A/B in the same run; *CpuUsPerCall is the process's
 * CPU time per call over a run of each alone (the auth service runs in this process too, so it
 * includes the server's share).
 *
 * authorizeRpc*: Authorize over gRPC on loopback against two auth replicas on one database,
 * one with the key-lookup cache (AUTH_TOKEN_CACHE_TTL_MS=1000) and one without (0), measured in the
 * same run, alternating A/B, one call at a time for latency; then calls/s with 32 in flight on the
 * cached replica. Every call, cached or not, consumes a rate-limit token of the bucket shared by all
 * replicas in PostgreSQL; a busy bucket is consumed through leases (services/auth/leases.ts: one
 * statement takes the tokens of the next quarter second), so most calls touch no database at all
 * and the cache saves the key lookup. The key check
 * alone (Tokens.authorize in process: checksum, hash, lookup, scope) is measured too, with a warm
 * cache and without one.
 */
import { performance } from "node:perf_hooks";
import type { FastifyRequest } from "fastify";
import { authorize } from "../../gateway/auth.js";
import { AuthCache, startRevocationFeed } from "../../gateway/auth-cache.js";
import { createGatewayClients, labelClients } from "../../gateway/clients.js";
import { planSettings, planTable } from "../../services/auth/plans.js";
import { authService } from "../../services/auth/service.js";
import type { Database } from "../../services/auth/store.js";
import { Tokens } from "../../services/auth/tokens.js";
import { loadConfig } from "../../services/platform/config.js";
import { createDatabase } from "../../services/platform/db.js";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createLogger } from "../../services/platform/log.js";
import { natsNames } from "../../services/platform/nats.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { type RunningService, startService } from "../../services/platform/service.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  testNamespace,
} from "../helpers/infra.js";

export const description =
  "auth: the gateway's authorization check with and without its cache, Authorize RPC p50/p99 with and without the lookup cache, and calls/s";

export const targets: Record<string, string> = {
  authorizeCachedP99Ms: "< 1",
  keyCheckCachedP99Ms: "< 1",
};

const WARMUP = 300;
const SAMPLES = 2000;
const THROUGHPUT_MS = 5000;
const IN_FLIGHT = 32;
const CPU_CALLS = { cached: 20_000, uncached: 2_000 };

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;

export default async function run(): Promise<Record<string, number>> {
  const db = await createTestDatabase();
  const namespace = testNamespace();
  const replicas: RunningService[] = [];
  try {
    const common = {
      DATABASE_URL: db.url,
      NATS_URL: TEST_NATS_URL,
      FLOWPLANE_NAMESPACE: namespace,
      AUTH_PORT: "0",
      LOG_LEVEL: "silent",
      // Wide enough that no call is refused: the bench measures the check, not the refusal.
      AUTH_PLAN_ENTERPRISE_API: "6000000/6000000",
    };
    replicas.push(await startService(authService, { ...common, AUTH_TOKEN_CACHE_TTL_MS: "1000" }));
    replicas.push(await startService(authService, { ...common, AUTH_TOKEN_CACHE_TTL_MS: "0" }));
    const [cached, uncached] = replicas.map((r) =>
      createRpcClient(AuthService, `http://127.0.0.1:${r.port}`),
    );
    const tenants = createRpcClient(TenantService, `http://127.0.0.1:${replicas[0]!.port}`);
    const { tenant } = await tenants.createTenant({ name: "bench", plan: Plan.ENTERPRISE });
    const { secret } = await cached!.createToken({
      tenantId: tenant!.id,
      kind: TokenKind.APP,
      name: "bench",
      scopes: ["workflows:execute"],
    });
    const request = { apiKey: secret, action: "workflows:execute" };

    // The gateway's check, as the routes call it, with and without the cache.
    const log = createLogger("bench", "silent");
    const gatewayClients = labelClients(
      createGatewayClients({
        authUrl: `http://127.0.0.1:${replicas[0]!.port}`,
        executorUrl: "http://127.0.0.1:1",
        logsUrl: "http://127.0.0.1:1",
        rpcTimeoutMs: 30_000,
      }),
    );
    const cache = new AuthCache({ ttlMs: 1000, log });
    const feed = startRevocationFeed({ cache, natsUrl: TEST_NATS_URL, names: natsNames(namespace), log });
    await feed.ready;
    const routeAuth = { cached: cache.wrap(gatewayClients.auth), uncached: gatewayClients.auth };
    const fakeRequest = { headers: { "x-api-key": secret } } as unknown as FastifyRequest;
    const check = (kind: "cached" | "uncached") =>
      authorize(fakeRequest, routeAuth[kind], "workflows:execute");
    const gatewayMs = { cached: [] as number[], uncached: [] as number[] };
    const gatewayCpuUs = { cached: 0, uncached: 0 };
    let waitedShare = 0;
    try {
      for (let i = 0; i < WARMUP + SAMPLES; i++) {
        if (i === WARMUP) cache.stats.waited = cache.stats.fromMemory = 0;
        const order = i % 2 === 0 ? (["cached", "uncached"] as const) : (["uncached", "cached"] as const);
        for (const kind of order) {
          const t0 = performance.now();
          await check(kind);
          if (i >= WARMUP) gatewayMs[kind].push(performance.now() - t0);
        }
      }
      waitedShare = cache.stats.waited / (cache.stats.waited + cache.stats.fromMemory);
      for (const kind of ["cached", "uncached"] as const) {
        const cpu0 = process.cpuUsage();
        for (let i = 0; i < CPU_CALLS[kind]; i++) await check(kind);
        const cpu = process.cpuUsage(cpu0);
        gatewayCpuUs[kind] = (cpu.user + cpu.system) / CPU_CALLS[kind];
      }
    } finally {
      await cache.close();
      await feed.close();
    }

    for (let i = 0; i < WARMUP; i++) {
      await cached!.authorize(request);
      await uncached!.authorize(request);
    }
    const cachedMs: number[] = [];
    const uncachedMs: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      // Alternate which goes first so neither always follows the other.
      const order = i % 2 === 0 ? ([cached!, uncached!] as const) : ([uncached!, cached!] as const);
      for (const client of order) {
        const t0 = performance.now();
        await client.authorize(request);
        (client === cached ? cachedMs : uncachedMs).push(performance.now() - t0);
      }
    }

    let calls = 0;
    const deadline = performance.now() + THROUGHPUT_MS;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (performance.now() < deadline) {
          await cached!.authorize(request);
          calls++;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;

    const pool = createDatabase<Database>({ url: db.url, schema: "auth", maxConnections: 2 });
    const options = {
      keyEnv: "live" as const,
      log,
      plans: planTable(loadConfig(planSettings, {})),
    };
    const checks = {
      cached: new Tokens(pool, { ...options, cacheTtlMs: 1000 }),
      uncached: new Tokens(pool, options),
    };
    const checkMs = { cached: [] as number[], uncached: [] as number[] };
    const input = { apiKey: secret, action: "workflows:execute" as const, resourceId: "" };
    try {
      for (let i = 0; i < WARMUP + SAMPLES; i++) {
        for (const kind of ["cached", "uncached"] as const) {
          const t0 = performance.now();
          await checks[kind].authorize(input);
          if (i >= WARMUP) checkMs[kind].push(performance.now() - t0);
        }
      }
    } finally {
      await checks.cached.flush();
      await checks.uncached.flush();
      await pool.destroy();
    }

    return {
      authorizeCachedP50Ms: round(percentile(gatewayMs.cached, 50)),
      authorizeCachedP99Ms: round(percentile(gatewayMs.cached, 99)),
      authorizeUncachedP50Ms: round(percentile(gatewayMs.uncached, 50)),
      authorizeUncachedP99Ms: round(percentile(gatewayMs.uncached, 99)),
      // Share of the cached calls that waited for an Authorize RPC (none in steady state).
      authorizeCachedWaitedShare: Math.round(waitedShare * 10_000) / 10_000,
      authorizeCachedCpuUsPerCall: Math.round(gatewayCpuUs.cached * 10) / 10,
      authorizeUncachedCpuUsPerCall: Math.round(gatewayCpuUs.uncached * 10) / 10,
      authorizeRpcCachedP50Ms: round(percentile(cachedMs, 50)),
      authorizeRpcCachedP99Ms: round(percentile(cachedMs, 99)),
      authorizeRpcUncachedP50Ms: round(percentile(uncachedMs, 50)),
      authorizeRpcUncachedP99Ms: round(percentile(uncachedMs, 99)),
      authorizePerSec: Math.round(calls / seconds),
      keyCheckCachedP99Ms: round(percentile(checkMs.cached, 99)),
      keyCheckUncachedP99Ms: round(percentile(checkMs.uncached, 99)),
    };
  } finally {
    for (const replica of replicas) await replica.stop();
    await db.drop();
    await deleteNamespaceStreams(namespace);
  }
}
