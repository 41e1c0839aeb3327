/** Creating workflows and publishing their immutable versions. */
import { create, type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { NotFoundError } from "../platform/errors.js";
import { type WorkflowState, WorkflowStateSchema } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type Workflow,
  WorkflowSchema,
  type WorkflowVersion,
  WorkflowVersionSchema,
} from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import { compileWorkflow } from "./engine/definition.js";
import {
  type ExecutorDb,
  insertNextVersion,
  insertWorkflow,
  type WorkflowRow,
  type WorkflowVersionRow,
} from "./store.js";
import type { CompiledVersions } from "./versions.js";

export interface WorkflowDeps {
  db: ExecutorDb;
  versions: CompiledVersions;
}

function workflowMessage(row: WorkflowRow): Workflow {
  return create(WorkflowSchema, {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    description: row.description,
    latestVersion: row.latest_version,
    createdAt: timestampFromDate(row.created_at),
  });
}

function versionMessage(row: WorkflowVersionRow, state: WorkflowState): WorkflowVersion {
  return create(WorkflowVersionSchema, {
    workflowId: row.workflow_id,
    version: row.version,
    state,
    createdAt: timestampFromDate(row.created_at),
  });
}

function stateJson(state: WorkflowState): JsonObject {
  return toJson(WorkflowStateSchema, state) as JsonObject;
}

/** Creates a workflow; a given state is validated (InvalidArgument) and becomes version 1. */
export async function createWorkflow(
  deps: WorkflowDeps,
  req: { tenantId: string; name: string; description: string; state: WorkflowState | undefined },
): Promise<{ workflow: Workflow; version?: WorkflowVersion }> {
  const compiled = req.state === undefined ? undefined : compileWorkflow(req.state);
  const created = await insertWorkflow(
    deps.db,
    { id: newId("wf"), tenantId: req.tenantId, name: req.name, description: req.description },
    req.state === undefined ? undefined : stateJson(req.state),
  );
  const workflow = workflowMessage(created.workflow);
  if (created.version === undefined || req.state === undefined || compiled === undefined) return { workflow };
  deps.versions.remember(req.tenantId, created.workflow.id, created.version.version, compiled);
  return { workflow, version: versionMessage(created.version, req.state) };
}

/** Validates `state` and stores it as the workflow's next version. */
export async function publishVersion(
  deps: WorkflowDeps,
  req: { tenantId: string; workflowId: string; state: WorkflowState },
): Promise<WorkflowVersion> {
  const compiled = compileWorkflow(req.state);
  const row = await insertNextVersion(deps.db, req.tenantId, req.workflowId, stateJson(req.state));
  if (!row) throw new NotFoundError(`workflow ${req.workflowId} not found`);
  deps.versions.remember(req.tenantId, req.workflowId, row.version, compiled);
  return versionMessage(row, req.state);
}
