/**
 * The one in-process stack for gateway, fuzz, security and tracing tests: real auth, executor, logs
 * and notifier services (any subset) on a fresh database and NATS namespace, and the gateway built in
 * front of them. Services can be stopped and restarted on their port; tenants with an admin key are
 * made through the auth service; `send`/`call` talk to the gateway.
 */
import type { AddressInfo } from "node:net";
import type { JsonObject } from "@bufbuild/protobuf";
import type { FastifyInstance } from "fastify";
import { expect } from "vitest";
import { buildGateway, type GatewayDeps } from "../../gateway/app.js";
import { createGatewayClients, type GatewayClients } from "../../gateway/clients.js";
import { instrumentGateway } from "../../gateway/observability.js";
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
} from "./infra.js";

type Logger = ReturnType<typeof createLogger>;

export type ServiceName = "auth" | "executor" | "logs" | "notifier";
/** Start order: later services may be pointed at earlier ones (executor → auth, notifier → auth). */
export const SERVICE_NAMES: readonly ServiceName[] = ["auth", "executor", "logs", "notifier"];

function startNamed(name: ServiceName, env: Record<string, string>): Promise<RunningService> {
  if (name === "auth") return startService(authService, env);
  if (name === "executor") return startService(executorService, env);
  if (name === "logs") return startService(logsService, env);
  return startService(notifierService, env);
}
const portVariables: Record<ServiceName, string> = {
  auth: "AUTH_PORT",
  executor: "EXECUTOR_PORT",
  logs: "LOGS_PORT",
  notifier: "NOTIFIER_PORT",
};

/** Limits out of the way: stack tests call far more often than a plan's minute allows. */
const DEFAULT_ENV: Record<ServiceName, Record<string, string>> = {
  auth: {
    AUTH_PLAN_PRO_API: "1000000/1000000",
    AUTH_PLAN_PRO_SYNC: "1000000/1000000",
    AUTH_PLAN_PRO_ASYNC: "1000000/1000000",
  },
  executor: { EXECUTOR_WORKER_CONCURRENCY: "2", EXECUTOR_FUNCTION_WORKERS: "1" },
  logs: {},
  notifier: {},
};

/** Where nothing listens: a backend the test does not start is refused at once. */
export const UNREACHABLE_URL = "http://127.0.0.1:1";

/** Base URLs of the services started so far (stable across restartService). */
export type ServiceUrls = Partial<Record<ServiceName, string>>;
type EnvOption = Record<string, string> | ((urls: ServiceUrls) => Record<string, string>);

export interface StackOptions {
  /** Which services to start; all four when not given. */
  services?: readonly ServiceName[];
  /** Per-service environment, over the defaults; a function sees the URLs of the services started before. */
  env?: Partial<Record<ServiceName, EnvOption>>;
  /** false: no unlimited Pro plan nor executor worker settings, the services' own defaults. */
  serviceDefaults?: boolean;
  /** Gateway settings over { bodyLimitBytes: 256 KiB }; rpcTimeoutMs also sets the clients' deadline (else 10 s). */
  gateway?: Partial<GatewayDeps["config"]>;
  /** Points the gateway at other URLs than the started services (a service not started: UNREACHABLE_URL). */
  backendUrls?: ServiceUrls;
  gatewayLog?: Logger;
  /** Adds the gateway's OpenTelemetry hooks, as gateway/main.ts does. */
  instrument?: boolean;
  /** Runs on the built gateway before it listens (hooks that must see route registration). */
  beforeListen?: (gateway: FastifyInstance) => void;
  /** Makes a Pro tenant with an admin key up front (stack.tenantId / stack.adminKey); default true. */
  tenant?: boolean | string;
}

export interface Tenant {
  id: string;
  adminKey: string;
}

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: bodies are asserted field by field
  body: any;
}

export interface SendOptions {
  headers?: Record<string, string>;
  body?: string;
  json?: unknown;
  key?: string;
}

export interface Stack {
  baseUrl: string;
  gateway: FastifyInstance;
  databaseUrl: string;
  namespace: string;
  urls: ServiceUrls;
  /** The auth service's URL (UNREACHABLE_URL when auth is not started). */
  authUrl: string;
  /** The running services, in start order. */
  services: RunningService[];
  tenants: ReturnType<typeof createRpcClient<typeof TenantService>>;
  auth: ReturnType<typeof createRpcClient<typeof AuthService>>;
  /** The up-front tenant (options.tenant); empty strings when it was not asked for. */
  tenantId: string;
  adminKey: string;
  newTenant(name?: string, plan?: Plan): Promise<Tenant>;
  /** Makes an app token of the tenant with these scopes; answers its secret. */
  appKey(tenantId: string, name: string, scopes: string[]): Promise<string>;
  /** Stops one service; its port stays reserved for restartService(). */
  stopService(name: ServiceName): Promise<void>;
  /** Starts a stopped service again on the port it had. */
  restartService(name: ServiceName): Promise<void>;
  /** Creates a workflow from workflowState JSON through the REST API; answers its id. */
  createWorkflow(name: string, state: JsonObject, key?: string): Promise<string>;
  send(method: string, path: string, opts?: SendOptions): Promise<Answer>;
  call(method: string, path: string, opts?: SendOptions): Promise<Answer>;
  stop(): Promise<void>;
}

/** Builds a gateway on the given clients and listens on a free port; answers the app and its URL. */
export async function listenGateway(
  clients: GatewayClients,
  opts: {
    config?: Partial<GatewayDeps["config"]>;
    log?: Logger;
    instrument?: boolean;
    beforeListen?: (gateway: FastifyInstance) => void;
  } = {},
): Promise<{ gateway: FastifyInstance; baseUrl: string }> {
  const gateway = buildGateway({
    config: { bodyLimitBytes: 256 * 1024, ...opts.config },
    log: opts.log ?? createLogger("gateway", process.env.STACK_LOG_LEVEL === "error" ? "error" : "silent"),
    clients,
  });
  if (opts.instrument) instrumentGateway(gateway);
  opts.beforeListen?.(gateway);
  await gateway.listen({ port: 0, host: "127.0.0.1" });
  return { gateway, baseUrl: `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}` };
}

/** Gateway clients for service URLs; a missing one is UNREACHABLE_URL. */
export function clientsFor(urls: ServiceUrls, rpcTimeoutMs = 10_000): GatewayClients {
  return createGatewayClients({
    authUrl: urls.auth ?? UNREACHABLE_URL,
    executorUrl: urls.executor ?? UNREACHABLE_URL,
    logsUrl: urls.logs ?? UNREACHABLE_URL,
    notifierUrl: urls.notifier ?? UNREACHABLE_URL,
    rpcTimeoutMs,
  });
}

/** Makes a tenant on the given plan (Pro by default) with an admin key. */
export async function createTenant(authUrl: string, name = "tenant", plan: Plan = Plan.PRO): Promise<Tenant> {
  const { tenant } = await createRpcClient(TenantService, authUrl).createTenant({ name, plan });
  const { secret } = await createRpcClient(AuthService, authUrl).createToken({
    tenantId: tenant!.id,
    kind: TokenKind.ADMIN,
    name: "admin",
  });
  return { id: tenant!.id, adminKey: secret };
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const db: TestDatabase = await createTestDatabase();
  const namespace = testNamespace();
  const common = {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOG_LEVEL: process.env.STACK_LOG_LEVEL ?? "silent",
  };
  const wanted = SERVICE_NAMES.filter((name) => (options.services ?? SERVICE_NAMES).includes(name));
  const running = new Map<ServiceName, RunningService>();
  const ports = new Map<ServiceName, number>();
  const urls: ServiceUrls = {};
  const envOf = new Map<ServiceName, Record<string, string>>();
  const start = async (name: ServiceName) => {
    if (!envOf.has(name)) {
      const extra = options.env?.[name];
      envOf.set(name, {
        ...common,
        ...(options.serviceDefaults === false ? {} : DEFAULT_ENV[name]),
        ...(typeof extra === "function" ? extra({ ...urls }) : extra),
      });
    }
    const service = await startNamed(name, {
      ...envOf.get(name),
      [portVariables[name]]: String(ports.get(name) ?? 0),
    });
    running.set(name, service);
    ports.set(name, service.port);
    urls[name] = `http://127.0.0.1:${service.port}`;
  };
  const stopAll = async () => {
    for (const name of [...SERVICE_NAMES].reverse()) await running.get(name)?.stop();
    running.clear();
  };

  let gateway: FastifyInstance | undefined;
  try {
    for (const name of wanted) await start(name);
    const authUrl = urls.auth ?? UNREACHABLE_URL;
    const tenants = createRpcClient(TenantService, authUrl);
    const authClient = createRpcClient(AuthService, authUrl);
    const rpcTimeoutMs = options.gateway?.rpcTimeoutMs ?? 10_000;
    const listening = await listenGateway(clientsFor({ ...urls, ...options.backendUrls }, rpcTimeoutMs), {
      config: options.gateway,
      log: options.gatewayLog,
      instrument: options.instrument,
      beforeListen: options.beforeListen,
    });
    gateway = listening.gateway;
    const { baseUrl } = listening;
    const wantTenant = options.tenant ?? true;
    const first =
      wantTenant && urls.auth
        ? await createTenant(authUrl, typeof wantTenant === "string" ? wantTenant : "gateway stack")
        : { id: "", adminKey: "" };
    const send = (method: string, path: string, opts?: SendOptions) => sendTo(baseUrl, method, path, opts);
    const app = gateway;
    return {
      baseUrl,
      gateway: app,
      databaseUrl: db.url,
      namespace,
      urls,
      authUrl,
      get services() {
        return SERVICE_NAMES.flatMap((name) => running.get(name) ?? []);
      },
      tenants,
      auth: authClient,
      tenantId: first.id,
      adminKey: first.adminKey,
      newTenant: (name = "tenant", plan = Plan.PRO) => createTenant(authUrl, name, plan),
      appKey: async (tenantId, name, scopes) =>
        (await authClient.createToken({ tenantId, kind: TokenKind.APP, name, scopes })).secret,
      async stopService(name) {
        await running.get(name)?.stop();
        running.delete(name);
      },
      async restartService(name) {
        if (!running.has(name)) await start(name);
      },
      async createWorkflow(name, state, key = first.adminKey) {
        const res = await send("POST", "/api/v1/workflows", { key, json: { name, state } });
        if (res.status !== 201) throw new Error(`workflow not created: ${res.status} ${res.text}`);
        const id = res.body?.data?.id ?? res.body?.id;
        if (!id) throw new Error(`workflow id missing in ${res.text}`);
        return id as string;
      },
      send,
      call: (method, path, opts) => callTo(baseUrl, method, path, opts),
      async stop() {
        await app.close();
        await stopAll();
        await db.drop();
        await deleteNamespaceStreams(namespace);
      },
    };
  } catch (err) {
    // A half-started stack would keep ports, connections and the database past the failed file.
    await gateway?.close();
    await stopAll();
    await db.drop();
    await deleteNamespaceStreams(namespace);
    throw err;
  }
}

/** Sends a raw request; the body is sent byte for byte as given, JSON is parsed when it parses. */
export async function sendTo(
  baseUrl: string,
  method: string,
  path: string,
  opts: SendOptions = {},
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

/**
 * sendTo plus the API's promise on every answer: never a 5xx, a JSON body (but on 204), and a 4xx
 * carries {"error": string}.
 * For tests that expect a 503/504 from a broken backend, use sendTo.
 */
export async function callTo(
  baseUrl: string,
  method: string,
  path: string,
  opts: SendOptions = {},
): Promise<Answer> {
  const answer = await sendTo(baseUrl, method, path, opts);
  if (answer.text !== "" && answer.body === undefined)
    expect.fail(`${method} ${path} is not JSON: ${answer.text}`);
  expect(answer.status, `${method} ${path} must never be a 5xx: ${answer.text}`).toBeLessThan(500);
  if (answer.status >= 400) {
    expect(
      typeof answer.body?.error,
      `${method} ${path} ${answer.status} has an "error" string: ${answer.text}`,
    ).toBe("string");
  }
  return answer;
}
