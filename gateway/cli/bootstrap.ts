/**
 * First-run setup of the local stack: a demo workspace, an admin key and the demo workflow, saved in
 * `<dataDir>/dev.json` and reused on later runs while the key still works.
 */
import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AuthService,
  Plan,
  TenantService,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { WorkflowService } from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { DEMO_WORKFLOW_DESCRIPTION, DEMO_WORKFLOW_NAME, demoWorkflowState } from "./demo-workflow.js";

export interface DevCredentials {
  gatewayUrl: string;
  apiKey: string;
  workspaceId: string;
  workflowId: string;
}

export interface BootstrapResult extends DevCredentials {
  /** False when an existing dev.json was reused. */
  created: boolean;
  file: string;
}

function parseCredentials(text: string): Omit<DevCredentials, "gatewayUrl"> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== "object" || value === null) return undefined;
    const { apiKey, workspaceId, workflowId } = value as Record<string, unknown>;
    if (typeof apiKey !== "string" || typeof workspaceId !== "string" || typeof workflowId !== "string") {
      return undefined;
    }
    return { apiKey, workspaceId, workflowId };
  } catch {
    return undefined;
  }
}

export async function bootstrapDemo(opts: {
  serviceUrls: { auth: string; executor: string };
  gatewayUrl: string;
  dataDir: string;
}): Promise<BootstrapResult> {
  const file = path.join(path.resolve(opts.dataDir), "dev.json");
  const auth = createRpcClient(AuthService, opts.serviceUrls.auth);
  const save = async (credentials: DevCredentials) => {
    await writeFile(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
    // `mode` applies only when the file is created.
    await chmod(file, 0o600);
  };

  const saved = parseCredentials(await readFile(file, "utf8").catch(() => ""));
  if (saved) {
    try {
      const { principal } = await auth.authorize({
        apiKey: saved.apiKey,
        action: "workflows:execute",
        resourceId: saved.workflowId,
      });
      if (principal?.tenantId === saved.workspaceId) {
        const credentials = { gatewayUrl: opts.gatewayUrl, ...saved };
        await save(credentials);
        return { ...credentials, created: false, file };
      }
    } catch (err) {
      // A key from a database that was since reset: start over. Anything else is a real failure.
      const code = err instanceof ConnectError ? err.code : undefined;
      if (code !== Code.Unauthenticated && code !== Code.PermissionDenied && code !== Code.NotFound)
        throw err;
    }
  }

  const tenants = createRpcClient(TenantService, opts.serviceUrls.auth);
  const workflows = createRpcClient(WorkflowService, opts.serviceUrls.executor);
  const { tenant } = await tenants.createTenant({ name: "Demo workspace", plan: Plan.PRO });
  if (!tenant) throw new Error("auth: CreateTenant answered without a tenant");
  const { secret } = await auth.createToken({
    tenantId: tenant.id,
    kind: TokenKind.ADMIN,
    name: "dev admin",
    purpose: "local development",
    createdBy: "",
  });
  const { workflow } = await workflows.createWorkflow({
    tenantId: tenant.id,
    name: DEMO_WORKFLOW_NAME,
    description: DEMO_WORKFLOW_DESCRIPTION,
    state: demoWorkflowState(),
  });
  if (!workflow) throw new Error("executor: CreateWorkflow answered without a workflow");
  const credentials: DevCredentials = {
    gatewayUrl: opts.gatewayUrl,
    apiKey: secret,
    workspaceId: tenant.id,
    workflowId: workflow.id,
  };
  await save(credentials);
  return { ...credentials, created: true, file };
}
