/** Creating workflows and publishing their immutable versions. */
import { create, type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, NotFoundError } from "../platform/errors.js";
import { type WorkflowState, WorkflowStateSchema } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type GetWorkflowResponse,
  GetWorkflowResponseSchema,
  type ListWorkflowsResponse,
  ListWorkflowsResponseSchema,
  type Workflow,
  WorkflowSchema,
  type WorkflowVersion,
  WorkflowVersionSchema,
} from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { isId, newId } from "../platform/ids.js";
import { compileWorkflow } from "./engine/definition.js";
import {
  type ExecutorDb,
  findWorkflow,
  insertNextVersion,
  insertWorkflow,
  listVersions,
  listWorkflows as listWorkflowRows,
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
    folderId: row.folder_id,
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
  req: {
    tenantId: string;
    name: string;
    description: string;
    folderId: string;
    state: WorkflowState | undefined;
  },
): Promise<{ workflow: Workflow; version?: WorkflowVersion }> {
  const compiled = req.state === undefined ? undefined : compileWorkflow(req.state);
  const created = await insertWorkflow(
    deps.db,
    {
      id: newId("wf"),
      tenantId: req.tenantId,
      name: req.name,
      description: req.description,
      folderId: req.folderId,
    },
    req.state === undefined ? undefined : stateJson(req.state),
  );
  const workflow = workflowMessage(created.workflow);
  if (created.version === undefined || req.state === undefined || compiled === undefined) return { workflow };
  deps.versions.remember(req.tenantId, created.workflow.id, created.version.version, compiled, req.state);
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
  deps.versions.remember(req.tenantId, req.workflowId, row.version, compiled, req.state);
  return versionMessage(row, req.state);
}

export async function getWorkflow(
  deps: WorkflowDeps,
  req: { tenantId: string; workflowId: string },
): Promise<GetWorkflowResponse> {
  const row = await findWorkflow(deps.db, req.tenantId, req.workflowId);
  if (!row) throw new NotFoundError(`workflow ${req.workflowId} not found`);
  const versions = await listVersions(deps.db, req.tenantId, req.workflowId);
  return create(GetWorkflowResponseSchema, {
    workflow: workflowMessage(row),
    versions: versions.map((v) => ({ version: v.version, createdAt: timestampFromDate(v.created_at) })),
  });
}

/** The cursor of a workflow page: the last workflow id, base64url-encoded. */
function encodeCursor(workflowId: string): string {
  return Buffer.from(workflowId, "utf8").toString("base64url");
}

function decodeCursor(cursor: string): string {
  const id = Buffer.from(cursor, "base64url").toString("utf8");
  if (!isId("wf", id)) throw new InvalidArgumentError("cursor is not a cursor this API returned");
  return id;
}

/** Newest first; keyset pagination on the (time-sortable) workflow id. */
export async function listWorkflows(
  deps: WorkflowDeps,
  req: { tenantId: string; limit: number; cursor: string; folderId: string },
): Promise<ListWorkflowsResponse> {
  const beforeId = req.cursor === "" ? undefined : decodeCursor(req.cursor);
  const rows = await listWorkflowRows(deps.db, req.tenantId, {
    limit: req.limit + 1,
    beforeId,
    folderId: req.folderId || undefined,
  });
  const page = rows.slice(0, req.limit);
  return create(ListWorkflowsResponseSchema, {
    workflows: page.map(workflowMessage),
    nextCursor: rows.length > req.limit ? encodeCursor(page[page.length - 1]!.id) : "",
  });
}
