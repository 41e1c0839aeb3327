/**
 * Inbound webhooks: POST /api/v1/hooks/{hookId} starts a background run of the hook's workflow with
 * the request body as input. The caller proves itself with the hook's own secret (x-hook-secret),
 * not an API key; the secret is shown once and stored as its SHA-256.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { NotFoundError, UnauthenticatedError } from "../platform/errors.js";
import { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { type Hook, HookSchema } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { isId, newId } from "../platform/ids.js";
import { type ExecutionDeps, executeInBackground } from "./executions.js";
import { consumeAsyncExecution } from "./quota.js";
import type { HookRow } from "./store.js";

function sha256(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

function hookMessage(row: HookRow): Hook {
  return create(HookSchema, {
    id: row.id,
    workflowId: row.workflow_id,
    version: row.version,
    createdAt: timestampFromDate(row.created_at),
  });
}

export async function createHook(
  deps: ExecutionDeps,
  req: { tenantId: string; workflowId: string; version: number },
): Promise<{ hook: Hook; secret: string }> {
  // The workflow and version must exist now; the input is the caller's, checked at each call.
  const workflow = await deps.db
    .selectFrom("workflows")
    .select(["id", "latest_version"])
    .where("tenant_id", "=", req.tenantId)
    .where("id", "=", req.workflowId)
    .executeTakeFirst();
  if (!workflow) throw new NotFoundError(`workflow ${req.workflowId} not found`);
  if (req.version !== 0 && req.version > workflow.latest_version) {
    throw new NotFoundError(`version ${req.version} of workflow ${req.workflowId} not found`);
  }
  const secret = `whsec_${randomBytes(24).toString("base64url")}`;
  const row = await deps.db
    .insertInto("hooks")
    .values({
      id: newId("hook"),
      tenant_id: req.tenantId,
      workflow_id: req.workflowId,
      version: req.version,
      secret_sha256: sha256(secret).toString("hex"),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return { hook: hookMessage(row), secret };
}

export async function triggerHook(
  deps: ExecutionDeps,
  req: { hookId: string; secret: string; input: JsonObject },
): Promise<{ conversationId: string; executionId: string; workflowId: string }> {
  const row = isId("hook", req.hookId)
    ? await deps.db.selectFrom("hooks").selectAll().where("id", "=", req.hookId).executeTakeFirst()
    : undefined;
  if (!row) throw new NotFoundError(`hook ${req.hookId} not found`);
  const expected = Buffer.from(row.secret_sha256, "hex");
  if (req.secret === "" || !timingSafeEqual(sha256(req.secret), expected)) {
    throw new UnauthenticatedError("invalid hook secret");
  }
  const cmd = {
    tenantId: row.tenant_id,
    workflowId: row.workflow_id,
    version: row.version,
    input: req.input,
    conversationId: "",
    trigger: Trigger.WEBHOOK,
  };
  // Consumed as the execute routes do for an API key, once the caller has proven itself.
  await consumeAsyncExecution(deps.auth, row.tenant_id);
  const queued = await executeInBackground(deps, cmd);
  return {
    conversationId: queued.conversationId,
    executionId: queued.executionId,
    workflowId: row.workflow_id,
  };
}
