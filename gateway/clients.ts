import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { AuthService, TenantService } from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  ExecutionService,
  WorkflowService,
} from "../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { LogsService } from "../services/platform/gen/flowplane/logs/v1/logs_pb.js";
import { NotifierService } from "../services/platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { createRpcClient } from "../services/platform/rpc.js";
import type { GatewayConfig } from "./config.js";
import { type BackendName, labelBackendError } from "./errors.js";

/** The backend services the gateway calls. */
export interface GatewayClients {
  auth: Client<typeof AuthService>;
  tenants: Client<typeof TenantService>;
  executions: Client<typeof ExecutionService>;
  workflows: Client<typeof WorkflowService>;
  logs: Client<typeof LogsService>;
  notifications: Client<typeof NotifierService>;
}

export function createGatewayClients(
  config: Pick<GatewayConfig, "authUrl" | "executorUrl" | "logsUrl" | "rpcTimeoutMs"> &
    Partial<Pick<GatewayConfig, "notifierUrl">>,
): GatewayClients {
  const opts = { timeoutMs: config.rpcTimeoutMs };
  return {
    auth: createRpcClient(AuthService, config.authUrl, opts),
    tenants: createRpcClient(TenantService, config.authUrl, opts),
    executions: createRpcClient(ExecutionService, config.executorUrl, opts),
    workflows: createRpcClient(WorkflowService, config.executorUrl, opts),
    logs: createRpcClient(LogsService, config.logsUrl, opts),
    notifications: createRpcClient(NotifierService, config.notifierUrl ?? "http://127.0.0.1:50054", opts),
  };
}

type UnaryFn = (...args: unknown[]) => Promise<unknown>;

/**
 * Wraps each unary method so a backend that is down or slow is named in the error. Done here and
 * not in an interceptor because the transport turns its own deadline into DeadlineExceeded only
 * after the interceptors have run.
 */
function labelled<T extends DescService>(service: T, backend: BackendName, client: Client<T>): Client<T> {
  const wrapped: Record<string, unknown> = {};
  const methods = client as unknown as Record<string, UnaryFn>;
  for (const method of service.methods) {
    const call = methods[method.localName];
    if (method.methodKind !== "unary" || !call) continue;
    wrapped[method.localName] = async (...args: unknown[]) => {
      try {
        return await call(...args);
      } catch (err) {
        throw labelBackendError(backend, err);
      }
    };
  }
  return { ...client, ...wrapped } as Client<T>;
}

export function labelClients(clients: GatewayClients): GatewayClients {
  return {
    auth: labelled(AuthService, "auth", clients.auth),
    tenants: labelled(TenantService, "auth", clients.tenants),
    executions: labelled(ExecutionService, "executor", clients.executions),
    workflows: labelled(WorkflowService, "executor", clients.workflows),
    logs: labelled(LogsService, "logs", clients.logs),
    notifications: labelled(NotifierService, "notifier", clients.notifications),
  };
}
