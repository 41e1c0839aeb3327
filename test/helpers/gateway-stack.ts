/**
 * An in-process stack for gateway tests that need the gateway's own settings (sync wait, CORS, RPC
 * timeout) and to stop and restart one service on its port: real auth, executor and logs services on
 * a fresh database and NATS namespace, and the gateway in front of them.
 */
import type { AddressInfo } from "node:net";
import type { JsonObject } from "@bufbuild/protobuf";
import type { FastifyInstance } from "fastify";
import { buildGateway, type GatewayDeps } from "../../gateway/app.js";
import { createGatewayClients } from "../../gateway/clients.js";
import { authService } from "../../services/auth/service.js";
import { executorService } from "../../services/executor/service.js";
import { logsService } from "../../services/logs/service.js";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createLogger } from "../../services/platform/log.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { type RunningService, startService } from "../../services/platform/service.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
} from "./infra.js";

export type ServiceName = "auth" | "executor" | "logs";

function startNamed(name: ServiceName, env: Record<string, string>): Promise<RunningService> {
  if (name === "auth") return startService(authService, env);
  if (name === "executor") return startService(executorService, env);
  return startService(logsService, env);
}
const portVariables: Record<ServiceName, string> = {
  auth: "AUTH_PORT",
  executor: "EXECUTOR_PORT",
  logs: "LOGS_PORT",
};

export interface GatewayStack {
  baseUrl: string;
  gateway: FastifyInstance;
  tenantId: string;
  adminKey: string;
  /** Base URLs of the services (stable across restartService). */
  urls: Record<ServiceName, string>;
  /** Stops one service; its port stays reserved for restart(). */
  stopService(name: ServiceName): Promise<void>;
  /** Starts a stopped service again on the port it had. */
  restartService(name: ServiceName): Promise<void>;
  /** Creates a workflow from workflowState JSON through the REST API; answers its id. */
  createWorkflow(name: string, state: JsonObject): Promise<string>;
  stop(): Promise<void>;
}

export async function startGatewayStack(
  opts: {
    gateway?: Omit<GatewayDeps["config"], "bodyLimitBytes">;
    executorEnv?: Record<string, string>;
  } = {},
): Promise<GatewayStack> {
  const db: TestDatabase = await createTestDatabase();
  const namespace = testNamespace();
  const common = {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOG_LEVEL: process.env.STACK_LOG_LEVEL ?? "silent",
  };
  const env: Record<ServiceName, Record<string, string>> = {
    auth: {
      ...common,
      AUTH_PLAN_PRO_API: "1000000/1000000",
      AUTH_PLAN_PRO_SYNC: "1000000/1000000",
      AUTH_PLAN_PRO_ASYNC: "1000000/1000000",
    },
    executor: {
      ...common,
      EXECUTOR_WORKER_CONCURRENCY: "2",
      EXECUTOR_FUNCTION_WORKERS: "1",
      ...opts.executorEnv,
    },
    logs: common,
  };
  const running = new Map<ServiceName, RunningService>();
  const ports = new Map<ServiceName, number>();
  const start = async (name: ServiceName) => {
    const service = await startNamed(name, {
      ...env[name],
      [portVariables[name]]: String(ports.get(name) ?? 0),
    });
    running.set(name, service);
    ports.set(name, service.port);
  };
  for (const name of ["auth", "executor", "logs"] as const) await start(name);

  const urls = {
    auth: `http://127.0.0.1:${ports.get("auth")}`,
    executor: `http://127.0.0.1:${ports.get("executor")}`,
    logs: `http://127.0.0.1:${ports.get("logs")}`,
  };
  const authUrl = urls.auth;
  const gateway = buildGateway({
    config: { bodyLimitBytes: 256 * 1024, rpcTimeoutMs: 10_000, ...opts.gateway },
    log: createLogger("gateway", process.env.STACK_LOG_LEVEL === "error" ? "error" : "silent"),
    clients: createGatewayClients({
      authUrl,
      executorUrl: urls.executor,
      logsUrl: urls.logs,
      rpcTimeoutMs: opts.gateway?.rpcTimeoutMs ?? 10_000,
    }),
  });
  await gateway.listen({ port: 0, host: "127.0.0.1" });
  const baseUrl = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;

  const { tenant } = await createRpcClient(TenantService, authUrl).createTenant({
    name: "gateway stack",
    plan: Plan.PRO,
  });
  const { secret: adminKey } = await createRpcClient(AuthService, authUrl).createToken({
    tenantId: tenant!.id,
    kind: TokenKind.ADMIN,
    name: "admin",
  });

  return {
    baseUrl,
    gateway,
    tenantId: tenant!.id,
    adminKey,
    urls,
    async stopService(name) {
      await running.get(name)?.stop();
      running.delete(name);
    },
    async restartService(name) {
      if (!running.has(name)) await start(name);
    },
    async createWorkflow(name, state) {
      const res = await fetch(`${baseUrl}/api/v1/workflows`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": adminKey },
        body: JSON.stringify({ name, state }),
      });
      const body = (await res.json()) as { data?: { id?: string }; id?: string; error?: string };
      if (res.status !== 201) throw new Error(`workflow not created: ${res.status} ${JSON.stringify(body)}`);
      const id = body.data?.id ?? body.id;
      if (!id) throw new Error(`workflow id missing in ${JSON.stringify(body)}`);
      return id;
    },
    async stop() {
      await gateway.close();
      for (const name of ["logs", "executor", "auth"] as const) await running.get(name)?.stop();
      await db.drop();
      await deleteNamespaceStreams(namespace);
    },
  };
}
