/** RPC handlers: request-level checks, then the function that does the work. */
import type { DescMessage, JsonObject } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { InvalidArgumentError, toConnectError } from "../platform/errors.js";
import {
  ExecuteBackgroundResponseSchema,
  ExecuteResponseSchema,
  type ExecutionService,
  type WorkflowService,
} from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { cancelExecution, getExecution } from "./cancel.js";
import {
  type ExecuteCommand,
  type ExecutionDeps,
  executeInBackground,
  executeWorkflow,
  finishedExecuteResponse,
  getConversation,
  type SyncWait,
} from "./executions.js";
import { createHook, triggerHook } from "./hooks.js";
import { fingerprintOf, type IdempotentCall, idempotent, validIdempotencyKey } from "./idempotency.js";
import { createSchedule, deleteSchedule, listSchedules } from "./schedules.js";
import { watchExecution } from "./watch.js";
import { createWorkflow, getWorkflow, listWorkflows, publishVersion } from "./workflows.js";

const MAX_NAME_LENGTH = 200;
const MAX_DESCRIPTION_LENGTH = 10_000;
const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;

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

// Execution ids become a NATS subject token (live events) too.
const EXECUTION_ID = /^exec_[0-9a-z]{26}$/;

function validExecutionId(value: string): string {
  required(value, "execution_id");
  if (!EXECUTION_ID.test(value)) throw new InvalidArgumentError("execution_id is not an execution id");
  return value;
}

const FOLDER_ID = /^[A-Za-z0-9_.:-]{1,200}$/;

function validFolderId(value: string): string {
  if (value !== "" && !FOLDER_ID.test(value)) {
    throw new InvalidArgumentError("folder_id must be 1-200 characters of letters, digits and _ . : -");
  }
  return value;
}

function validVersion(version: number): number {
  if (version < 0) {
    throw new InvalidArgumentError("version must be a published version number, or 0 for the latest");
  }
  return version;
}

function executeCommand(req: {
  tenantId: string;
  workflowId: string;
  version: number;
  input?: JsonObject;
  conversationId: string;
  trigger: ExecuteCommand["trigger"];
}): ExecuteCommand {
  return {
    tenantId: validTenantId(req.tenantId),
    workflowId: required(req.workflowId, "workflow_id"),
    version: validVersion(req.version),
    input: req.input ?? {},
    conversationId: req.conversationId,
    trigger: req.trigger,
  };
}

// The longest a streamed run is held for its watcher (start_when_watched_ms).
const MAX_START_HOLD_MS = 30_000;

function syncWaitOf(req: { maxWaitMs?: number; startWhenWatchedMs: number }): SyncWait {
  if (req.startWhenWatchedMs > MAX_START_HOLD_MS) {
    throw new InvalidArgumentError(`start_when_watched_ms must be at most ${MAX_START_HOLD_MS}`);
  }
  if (req.startWhenWatchedMs > 0 && req.maxWaitMs === undefined) {
    // Held for a watcher, the caller must be answered before the run starts, or nobody watches.
    throw new InvalidArgumentError("start_when_watched_ms needs max_wait_ms");
  }
  return { maxWaitMs: req.maxWaitMs, startWhenWatchedMs: req.startWhenWatchedMs };
}

// How long a first request holds its idempotency key without renewing it: the holder renews it
// while it runs, so a crashed executor frees the key for a retry within this time.
const IDEMPOTENCY_LEASE_MS = 15_000;

function idempotentCall<S extends DescMessage>(
  req: { idempotencyKey: string; requestFingerprint: string },
  cmd: ExecuteCommand,
  method: string,
  response: S,
  leaseMs: number,
): IdempotentCall<S> {
  return {
    tenantId: cmd.tenantId,
    key: validIdempotencyKey(req.idempotencyKey),
    method,
    // Callers other than the gateway may leave the fingerprint to the request's own fields.
    fingerprint:
      req.requestFingerprint ||
      fingerprintOf({
        workflowId: cmd.workflowId,
        version: cmd.version,
        input: cmd.input,
        conversationId: cmd.conversationId,
        trigger: cmd.trigger,
      }),
    leaseMs,
    response,
  };
}

export function workflowHandlers(deps: ExecutionDeps): ServiceImpl<typeof WorkflowService> {
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
      return createWorkflow(deps, {
        tenantId,
        name,
        description: req.description,
        folderId: validFolderId(req.folderId),
        state: req.state,
      });
    },

    async publishVersion(req) {
      const tenantId = validTenantId(req.tenantId);
      const workflowId = required(req.workflowId, "workflow_id");
      if (!req.state) throw new InvalidArgumentError("state is required");
      return { version: await publishVersion(deps, { tenantId, workflowId, state: req.state }) };
    },

    async getWorkflow(req) {
      return getWorkflow(deps, {
        tenantId: validTenantId(req.tenantId),
        workflowId: required(req.workflowId, "workflow_id"),
      });
    },

    async listWorkflows(req) {
      if (req.limit < 0 || req.limit > MAX_PAGE) {
        throw new InvalidArgumentError(`limit must be between 1 and ${MAX_PAGE} (0 for ${DEFAULT_PAGE})`);
      }
      return listWorkflows(deps, {
        tenantId: validTenantId(req.tenantId),
        limit: req.limit || DEFAULT_PAGE,
        cursor: req.cursor,
        folderId: validFolderId(req.folderId),
      });
    },

    async createSchedule(req) {
      const schedule = await createSchedule(deps, {
        tenantId: validTenantId(req.tenantId),
        workflowId: required(req.workflowId, "workflow_id"),
        version: validVersion(req.version),
        cron: required(req.cron, "cron").trim(),
        timezone: req.timezone.trim() || "UTC",
        input: req.input ?? {},
      });
      return { schedule };
    },

    async listSchedules(req) {
      const schedules = await listSchedules(
        deps.db,
        validTenantId(req.tenantId),
        required(req.workflowId, "workflow_id"),
      );
      return { schedules };
    },

    async deleteSchedule(req) {
      await deleteSchedule(deps.db, {
        tenantId: validTenantId(req.tenantId),
        workflowId: required(req.workflowId, "workflow_id"),
        scheduleId: required(req.scheduleId, "schedule_id"),
      });
      return {};
    },

    async createHook(req) {
      return createHook(deps, {
        tenantId: validTenantId(req.tenantId),
        workflowId: required(req.workflowId, "workflow_id"),
        version: validVersion(req.version),
      });
    },
  };
}

export function executionHandlers(deps: ExecutionDeps): ServiceImpl<typeof ExecutionService> {
  return {
    async execute(req) {
      const cmd = executeCommand(req);
      const wait = syncWaitOf(req);
      if (req.idempotencyKey === "") return executeWorkflow(deps, cmd, wait);
      // A run answered early (status running) stores that answer: a repeat gets the same execution id.
      return idempotent(
        deps,
        {
          ...idempotentCall(req, cmd, "execute", ExecuteResponseSchema, IDEMPOTENCY_LEASE_MS),
          recover: (executionId) => finishedExecuteResponse(deps, cmd.tenantId, executionId),
        },
        (bind) => executeWorkflow(deps, cmd, wait, bind),
      );
    },

    async executeBackground(req) {
      const cmd = executeCommand(req);
      if (req.idempotencyKey === "") return executeInBackground(deps, cmd);
      return idempotent(
        deps,
        idempotentCall(req, cmd, "execute_background", ExecuteBackgroundResponseSchema, IDEMPOTENCY_LEASE_MS),
        () => executeInBackground(deps, cmd),
      );
    },

    async getConversation(req) {
      const conversation = await getConversation(deps.db, {
        tenantId: validTenantId(req.tenantId),
        workflowId: required(req.workflowId, "workflow_id"),
        conversationId: required(req.conversationId, "conversation_id"),
      });
      return { conversation };
    },

    async cancelExecution(req) {
      const execution = await cancelExecution(
        deps,
        validTenantId(req.tenantId),
        validExecutionId(req.executionId),
      );
      return { execution };
    },

    async getExecution(req) {
      const execution = await getExecution(
        deps,
        validTenantId(req.tenantId),
        validExecutionId(req.executionId),
      );
      return { execution };
    },

    async *watchExecution(req, ctx) {
      try {
        const tenantId = validTenantId(req.tenantId);
        const executionId = validExecutionId(req.executionId);
        for await (const event of watchExecution(deps, tenantId, executionId, ctx.signal)) {
          yield { event };
        }
      } catch (err) {
        // A streaming handler's errors surface after the interceptor returned, so they are mapped here.
        throw toConnectError(err);
      }
    },

    async triggerHook(req) {
      return triggerHook(deps, {
        hookId: required(req.hookId, "hook_id"),
        secret: req.secret,
        input: req.input ?? {},
      });
    },
  };
}
