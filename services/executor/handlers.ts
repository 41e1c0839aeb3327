/** RPC handlers: request-level checks, then the function that does the work. */
import type { ServiceImpl } from "@connectrpc/connect";
import { InvalidArgumentError } from "../platform/errors.js";
import type { ExecutionService, WorkflowService } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { type ExecutionDeps, executeWorkflow, getConversation } from "./executions.js";
import { createWorkflow, publishVersion, type WorkflowDeps } from "./workflows.js";

const MAX_NAME_LENGTH = 200;
const MAX_DESCRIPTION_LENGTH = 10_000;

function required(value: string, field: string): string {
  if (value.trim() === "") throw new InvalidArgumentError(`${field} is required`);
  return value;
}

// Tenant ids become a NATS subject token, so they must not contain dots, spaces or wildcards.
const TENANT_ID = /^[A-Za-z0-9_-]{1,64}$/;

function validTenantId(value: string): string {
  required(value, "tenant_id");
  if (!TENANT_ID.test(value)) throw new InvalidArgumentError("tenant_id is not a valid tenant id");
  return value;
}

export function workflowHandlers(deps: WorkflowDeps): ServiceImpl<typeof WorkflowService> {
  return {
    async createWorkflow(req) {
      const tenantId = validTenantId(req.tenantId);
      const name = required(req.name, "name").trim();
      if (name.length > MAX_NAME_LENGTH) {
        throw new InvalidArgumentError(`name must be at most ${MAX_NAME_LENGTH} characters`);
      }
      if (req.description.length > MAX_DESCRIPTION_LENGTH) {
        throw new InvalidArgumentError(`description must be at most ${MAX_DESCRIPTION_LENGTH} characters`);
      }
      return createWorkflow(deps, { tenantId, name, description: req.description, state: req.state });
    },

    async publishVersion(req) {
      const tenantId = validTenantId(req.tenantId);
      const workflowId = required(req.workflowId, "workflow_id");
      if (!req.state) throw new InvalidArgumentError("state is required");
      return { version: await publishVersion(deps, { tenantId, workflowId, state: req.state }) };
    },
  };
}

export function executionHandlers(deps: ExecutionDeps): ServiceImpl<typeof ExecutionService> {
  return {
    async execute(req) {
      const tenantId = validTenantId(req.tenantId);
      const workflowId = required(req.workflowId, "workflow_id");
      if (req.version < 0) {
        throw new InvalidArgumentError("version must be a published version number, or 0 for the latest");
      }
      return executeWorkflow(deps, {
        tenantId,
        workflowId,
        version: req.version,
        input: req.input ?? {},
        conversationId: req.conversationId,
        trigger: req.trigger,
      });
    },

    async getConversation(req) {
      const conversation = await getConversation(deps.db, {
        tenantId: validTenantId(req.tenantId),
        workflowId: required(req.workflowId, "workflow_id"),
        conversationId: required(req.conversationId, "conversation_id"),
      });
      return { conversation };
    },
  };
}
