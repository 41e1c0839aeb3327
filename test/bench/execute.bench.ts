/**
 * Execute bench (DESIGN §10): synchronous POST /api/executeWorkflow through the gateway of a full
 * stack (every service its own process, as `npm start` runs them) for a trivial 3-block workflow
 * (input → function → output), against a bare node:http JSON hello-world in the same run, with 20
 * keep-alive connections, alternating bare/sync rounds.
 */

import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fromJson } from "@bufbuild/protobuf";
import { startStack } from "../../gateway/cli/stack.js";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { WorkflowStateSchema } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { WorkflowService } from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  testNamespace,
} from "../helpers/infra.js";

export const description =
  "execute: sync executeWorkflow req/s and latency through the gateway (3-block workflow) vs a bare node:http server, 20 connections";

export const targets: Record<string, string> = { syncRatioVsBareHttp: "≥ 0.25" };

const CONNECTIONS = 20;
const ROUND_MS = Number(process.env.EXECUTE_BENCH_ROUND_MS ?? 5_000);
const ROUNDS = 2;
const UNLIMITED = "1000000/1000000";

export const trivialWorkflow = {
  blocks: {
    start: {
      id: "start",
      type: "input",
      name: "Input",
      config: { fields: [{ name: "name", type: "string", required: true }] },
    },
    hello: {
      id: "hello",
      type: "function",
      name: "Hello",
      config: { code: 'return "Hello " + input.name;' },
    },
    out: { id: "out", type: "output", name: "greeting", config: { value: "blocks.hello" } },
  },
  edges: [
    { id: "e1", source: "start", target: "hello" },
    { id: "e2", source: "hello", target: "out" },
  ],
};

interface Round {
  completed: number;
  failed: number;
  latenciesMs: number[];
  elapsedMs: number;
}

/** `CONNECTIONS` loops each sending one request after the other for `durationMs`. */
async function load(
  target: { port: number; path: string; headers: Record<string, string>; body: string },
  durationMs: number,
): Promise<Round> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const latenciesMs: number[] = [];
  let failed = 0;
  const once = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = http.request(
        {
          host: "127.0.0.1",
          port: target.port,
          path: target.path,
          method: "POST",
          agent,
          headers: {
            ...target.headers,
            "content-type": "application/json",
            "content-length": Buffer.byteLength(target.body),
          },
        },
        (res) => {
          res.resume();
          res.on("end", () => {
            if (res.statusCode === 200) latenciesMs.push(performance.now() - t0);
            else failed++;
            resolve();
          });
        },
      );
      req.on("error", () => {
        failed++;
        resolve();
      });
      req.end(target.body);
    });
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < deadline) await once();
    }),
  );
  const elapsedMs = performance.now() - started;
  agent.destroy();
  return { completed: latenciesMs.length, failed, latenciesMs, elapsedMs };
}

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
}

const round2 = (n: number) => Math.round(n * 100) / 100;

export default async function run(): Promise<Record<string, number>> {
  const db = await createTestDatabase();
  const namespace = testNamespace();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-bench-"));
  const stack = await startStack({
    databaseUrl: db.url,
    natsUrl: TEST_NATS_URL,
    namespace,
    dataDir,
    logDir: path.join(dataDir, "logs"),
    ports: { auth: 0, executor: 0, logs: 0, notifier: 0, gateway: 0 },
    logLevel: "warn",
    env: {
      ...(process.env.EXECUTE_BENCH_NODE_OPTIONS
        ? { NODE_OPTIONS: process.env.EXECUTE_BENCH_NODE_OPTIONS }
        : {}),
      AUTH_PLAN_ENTERPRISE_API: UNLIMITED,
      AUTH_PLAN_ENTERPRISE_SYNC: UNLIMITED,
      AUTH_PLAN_ENTERPRISE_ASYNC: UNLIMITED,
      AUTH_PLAN_ENTERPRISE_USAGE_LIMIT_USD: "1000000",
    },
    report: () => {},
  });
  const bare = http.createServer((_req, res) => {
    _req.resume();
    _req.on("end", () => {
      const body = JSON.stringify({ hello: "world" });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => bare.listen(0, "127.0.0.1", resolve));
  try {
    const { tenant } = await createRpcClient(TenantService, stack.serviceUrls.auth).createTenant({
      name: "Bench",
      plan: Plan.ENTERPRISE,
    });
    const { secret } = await createRpcClient(AuthService, stack.serviceUrls.auth).createToken({
      tenantId: tenant!.id,
      kind: TokenKind.APP,
      name: "bench",
      scopes: ["workflows:execute"],
    });
    const { workflow } = await createRpcClient(WorkflowService, stack.serviceUrls.executor).createWorkflow({
      tenantId: tenant!.id,
      name: "Trivial",
      state: fromJson(WorkflowStateSchema, trivialWorkflow),
    });
    const gatewayPort = Number(new URL(stack.gatewayUrl).port);
    const sync = {
      port: gatewayPort,
      path: "/api/executeWorkflow",
      headers: { "x-api-key": secret },
      body: JSON.stringify({ workflowId: workflow!.id, version: 1, input: { name: "bench" } }),
    };
    const hello = { port: (bare.address() as AddressInfo).port, path: "/", headers: {}, body: "{}" };

    // Warm-up: JIT, connection pools, caches (token, compiled version, sandbox workers).
    await load(sync, 1_000);
    await load(hello, 500);
    const bareRounds: Round[] = [];
    const syncRounds: Round[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      bareRounds.push(await load(hello, ROUND_MS));
      syncRounds.push(await load(sync, ROUND_MS));
    }
    const rate = (rounds: Round[]) =>
      rounds.reduce((n, r) => n + r.completed, 0) / (rounds.reduce((ms, r) => ms + r.elapsedMs, 0) / 1000);
    const syncLatencies = syncRounds.flatMap((r) => r.latenciesMs);
    const syncPerSec = rate(syncRounds);
    const bareHttpPerSec = rate(bareRounds);
    return {
      syncPerSec: Math.round(syncPerSec),
      bareHttpPerSec: Math.round(bareHttpPerSec),
      syncRatioVsBareHttp: Math.round((syncPerSec / bareHttpPerSec) * 10_000) / 10_000,
      syncP50Ms: round2(percentile(syncLatencies, 50)),
      syncP99Ms: round2(percentile(syncLatencies, 99)),
      syncFailed: syncRounds.reduce((n, r) => n + r.failed, 0),
      syncRequests: syncLatencies.length,
    };
  } finally {
    await new Promise<void>((resolve) => bare.close(() => resolve()));
    await stack.stop();
    await db.drop();
    await deleteNamespaceStreams(namespace);
    await rm(dataDir, { recursive: true, force: true });
  }
}
