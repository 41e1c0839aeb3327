import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { buildGateway } from "../../gateway/app.js";
import { createGatewayClients } from "../../gateway/clients.js";
import { authService } from "../../services/auth/service.js";
import { executorService } from "../../services/executor/service.js";
import { logsService } from "../../services/logs/service.js";
import { notifierService } from "../../services/notifier/service.js";
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
} from "../helpers/infra.js";

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: bodies are asserted field by field
  body: any;
}

export interface Tenant {
  id: string;
  adminKey: string;
}

/** A gateway built in-process against real auth, executor, logs and notifier services. */
export interface Stack {
  baseUrl: string;
  gateway: FastifyInstance;
  services: RunningService[];
  authUrl: string;
  tenants: ReturnType<typeof createRpcClient<typeof TenantService>>;
  auth: ReturnType<typeof createRpcClient<typeof AuthService>>;
  newTenant(name: string): Promise<Tenant>;
  stop(): Promise<void>;
}

export async function startStack(extra: Record<string, string> = {}): Promise<Stack> {
  const db: TestDatabase = await createTestDatabase();
  const namespace = testNamespace();
  const common = {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOG_LEVEL: process.env.STACK_LOG_LEVEL ?? "silent",
  };
  const services: RunningService[] = [];
  const auth = await startService(authService, {
    ...common,
    AUTH_PORT: "0",
    AUTH_PLAN_PRO_API: "1000000/1000000",
    AUTH_PLAN_PRO_SYNC: "1000000/1000000",
    AUTH_PLAN_PRO_ASYNC: "1000000/1000000",
  });
  services.push(auth);
  const executor = await startService(executorService, {
    ...common,
    EXECUTOR_PORT: "0",
    EXECUTOR_WORKER_CONCURRENCY: "2",
    EXECUTOR_FUNCTION_WORKERS: "1",
    ...extra,
  });
  services.push(executor);
  const logs = await startService(logsService, { ...common, LOGS_PORT: "0" });
  services.push(logs);
  const notifier = await startService(notifierService, { ...common, NOTIFIER_PORT: "0" });
  services.push(notifier);
  const authUrl = `http://127.0.0.1:${auth.port}`;
  const tenants = createRpcClient(TenantService, authUrl);
  const authClient = createRpcClient(AuthService, authUrl);
  const gateway = buildGateway({
    config: { bodyLimitBytes: 256 * 1024 },
    log: createLogger("gateway", process.env.STACK_LOG_LEVEL === "error" ? "error" : "silent"),
    clients: createGatewayClients({
      authUrl,
      executorUrl: `http://127.0.0.1:${executor.port}`,
      logsUrl: `http://127.0.0.1:${logs.port}`,
      notifierUrl: `http://127.0.0.1:${notifier.port}`,
      rpcTimeoutMs: 10_000,
    }),
  });
  await gateway.listen({ port: 0, host: "127.0.0.1" });
  const baseUrl = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;
  return {
    baseUrl,
    gateway,
    services,
    authUrl,
    tenants,
    auth: authClient,
    async newTenant(name) {
      const { tenant } = await tenants.createTenant({ name, plan: Plan.PRO });
      const { secret } = await authClient.createToken({
        tenantId: tenant!.id,
        kind: TokenKind.ADMIN,
        name: "admin",
      });
      return { id: tenant!.id, adminKey: secret };
    },
    async stop() {
      await gateway.close();
      for (const service of services.reverse()) await service.stop();
      await db.drop();
      await deleteNamespaceStreams(namespace);
    },
  };
}

/** Sends a raw request; the body is sent byte for byte as given. */
export async function send(
  baseUrl: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string; json?: unknown; key?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key !== undefined) headers["x-api-key"] = opts.key;
  let body = opts.body;
  if (opts.json !== undefined) {
    body = JSON.stringify(opts.json);
    headers["content-type"] ??= "application/json";
  }
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    body: method === "GET" || method === "HEAD" ? undefined : body,
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === "" ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

/** The fuzz invariant: success, or a 4xx carrying {"error": string}. Returns a reason when broken. */
export function invariantBreach(answer: Answer): string | undefined {
  if (answer.status >= 500) return `status ${answer.status}: ${answer.text.slice(0, 300)}`;
  if (answer.status >= 400) {
    if (answer.body === undefined || typeof answer.body.error !== "string") {
      return `status ${answer.status} without {"error"}: ${answer.text.slice(0, 300)}`;
    }
  }
  return undefined;
}
