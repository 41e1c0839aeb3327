import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import type { FastifyInstance, FastifyRequest, preValidationAsyncHookHandler } from "fastify";
import {
  type WorkflowState,
  WorkflowStateSchema,
} from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import type {
  Hook,
  Schedule,
  VersionSummary,
  Workflow,
  WorkflowVersion,
} from "../../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import { principalOf, requireScope, type Scope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest } from "../errors.js";
import { isoTime } from "../json.js";
import { anyJsonObject, errorResponses, nullableTimestamp, objectOf } from "../openapi.js";

/**
 * Workflows (issue 4): create, list, get, publish versions, schedules and inbound-hook creation.
 * Workflow definitions travel as the seeds' `workflowState` JSON (DESIGN §5b).
 */

const workflowStateSchema = {
  type: "object",
  required: ["blocks"],
  additionalProperties: false,
  properties: {
    blocks: { type: "object" },
    edges: { type: "array" },
    loops: { type: "object" },
    parallels: { type: "object" },
  },
} as const;

const idParamsSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", minLength: 1, maxLength: 200 } },
} as const;

const FOLDER_ID_PATTERN = "^[A-Za-z0-9_.:-]{1,200}$";

interface CreateWorkflowBody {
  name: string;
  description?: string;
  folderId?: string;
  state?: JsonObject;
}

const createWorkflowBodySchema = {
  type: "object",
  required: ["name"],
  additionalProperties: false,
  properties: {
    name: { type: "string", minLength: 1, maxLength: 200 },
    description: { type: "string", maxLength: 10_000 },
    folderId: { type: "string", pattern: FOLDER_ID_PATTERN },
    state: workflowStateSchema,
  },
} as const;

interface ListWorkflowsQuery {
  limit?: string;
  cursor?: string;
  folderId?: string;
}

const listWorkflowsQuerySchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    limit: { type: "string", pattern: "^[0-9]{1,3}$" },
    cursor: { type: "string", maxLength: 400 },
    folderId: { type: "string", pattern: FOLDER_ID_PATTERN },
  },
} as const;

interface CreateScheduleBody {
  cron: string;
  timezone?: string;
  version?: number;
  input?: JsonObject;
}

const createScheduleBodySchema = {
  type: "object",
  required: ["cron"],
  additionalProperties: false,
  properties: {
    cron: { type: "string", minLength: 1, maxLength: 200 },
    timezone: { type: "string", minLength: 1, maxLength: 64 },
    version: { type: "integer", minimum: 1, maximum: 2_147_483_647 },
    input: { type: "object" },
  },
} as const;

interface CreateHookBody {
  version?: number;
}

const createHookBodySchema = {
  type: "object",
  additionalProperties: false,
  properties: { version: { type: "integer", minimum: 1, maximum: 2_147_483_647 } },
} as const;

const versionSchema = objectOf({
  workflowId: { type: "string" },
  version: { type: "integer" },
  createdAt: nullableTimestamp,
});

const workflowSchema = objectOf({
  id: { type: "string" },
  name: { type: "string" },
  description: { type: "string" },
  folderId: { type: ["string", "null"] },
  latestVersion: { type: "integer", description: "0 until a version is published" },
  createdAt: nullableTimestamp,
});

const workflowWithVersionsSchema = {
  ...workflowSchema,
  required: [...(workflowSchema.required as string[]), "versions"],
  properties: {
    ...(workflowSchema.properties as object),
    versions: { type: "array", items: versionSchema },
  },
};

const scheduleSchema = objectOf({
  id: { type: "string" },
  workflowId: { type: "string" },
  version: { type: ["integer", "null"], description: "null runs the latest version" },
  cron: { type: "string" },
  timezone: { type: "string" },
  input: anyJsonObject,
  createdAt: nullableTimestamp,
  nextRunAt: nullableTimestamp,
});

const hookSchema = objectOf({
  id: { type: "string" },
  workflowId: { type: "string" },
  version: { type: ["integer", "null"] },
  url: { type: "string", description: "POST here with x-hook-secret" },
  createdAt: nullableTimestamp,
  secret: { type: "string", description: "shown only in this answer" },
});

/** The definition as the executor's contract wants it; a JSON shape problem is a 400 naming it. */
function parseState(json: JsonObject, field: string): WorkflowState {
  try {
    return fromJson(WorkflowStateSchema, json);
  } catch (err) {
    throw badRequest(`${field} is not a valid workflowState: ${(err as Error).message}`);
  }
}

export function workflowJson(workflow: Workflow) {
  return {
    id: workflow.id,
    name: workflow.name,
    description: workflow.description,
    folderId: workflow.folderId === "" ? null : workflow.folderId,
    latestVersion: workflow.latestVersion,
    createdAt: isoTime(workflow.createdAt),
  };
}

function versionJson(version: WorkflowVersion | VersionSummary, workflowId: string) {
  return { workflowId, version: version.version, createdAt: isoTime(version.createdAt) };
}

function scheduleJson(schedule: Schedule) {
  return {
    id: schedule.id,
    workflowId: schedule.workflowId,
    version: schedule.version === 0 ? null : schedule.version,
    cron: schedule.cron,
    timezone: schedule.timezone,
    input: schedule.input ?? {},
    createdAt: isoTime(schedule.createdAt),
    nextRunAt: isoTime(schedule.nextRunAt),
  };
}

function hookJson(hook: Hook) {
  return {
    id: hook.id,
    workflowId: hook.workflowId,
    version: hook.version === 0 ? null : hook.version,
    url: `/api/v1/hooks/${hook.id}`,
    createdAt: isoTime(hook.createdAt),
  };
}

/** requireScope with the workflow id of the path as the authorized resource. */
function requireScopeOnWorkflow(auth: GatewayClients["auth"], action: Scope): preValidationAsyncHookHandler {
  return async function checkWorkflowScope(request, reply) {
    const id = (request.params as { id?: unknown }).id;
    return requireScope(auth, action, () => id).call(this, request, reply);
  };
}

function tenantOf(request: FastifyRequest): string {
  return principalOf(request).tenantId;
}

export function registerWorkflowRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: CreateWorkflowBody }>(
    "/api/v1/workflows",
    {
      schema: {
        summary: "Create a workflow",
        description: "With `state`, its first version is published at once.",
        tags: ["workflows"],
        body: createWorkflowBodySchema,
        response: {
          201: { ...workflowWithVersionsSchema, description: "The workflow" },
          ...errorResponses([400, 413, 415]),
        },
      },
      preValidation: requireScope(clients.auth, "workflows:write"),
    },
    async (request, reply) => {
      const { name, description, folderId, state } = request.body;
      const res = await clients.workflows.createWorkflow({
        tenantId: tenantOf(request),
        name,
        description: description ?? "",
        folderId: folderId ?? "",
        state: state === undefined ? undefined : parseState(state, "body.state"),
      });
      const workflow = res.workflow!;
      return reply.code(201).send({
        ...workflowJson(workflow),
        versions: res.version ? [versionJson(res.version, workflow.id)] : [],
      });
    },
  );

  app.get<{ Querystring: ListWorkflowsQuery }>(
    "/api/v1/workflows",
    {
      schema: {
        summary: "List workflows",
        tags: ["workflows"],
        querystring: listWorkflowsQuerySchema,
        response: {
          200: objectOf(
            {
              workflows: { type: "array", items: workflowSchema },
              nextCursor: { type: ["string", "null"] },
            },
            "One page of workflows",
          ),
          ...errorResponses([400]),
        },
      },
      preValidation: requireScope(clients.auth, "workflows:read"),
    },
    async (request) => {
      const { limit, cursor, folderId } = request.query;
      const pageSize = limit === undefined ? 0 : Number(limit);
      if (limit !== undefined && !(pageSize >= 1 && pageSize <= 200)) {
        throw badRequest("limit must be an integer between 1 and 200");
      }
      const res = await clients.workflows.listWorkflows({
        tenantId: tenantOf(request),
        limit: pageSize,
        cursor: cursor ?? "",
        folderId: folderId ?? "",
      });
      return { workflows: res.workflows.map(workflowJson), nextCursor: res.nextCursor || null };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/workflows/:id",
    {
      schema: {
        summary: "Get a workflow and its versions",
        tags: ["workflows"],
        params: idParamsSchema,
        response: {
          200: { ...workflowWithVersionsSchema, description: "The workflow" },
          ...errorResponses([400, 404]),
        },
      },
      preValidation: requireScopeOnWorkflow(clients.auth, "workflows:read"),
    },
    async (request) => {
      const res = await clients.workflows.getWorkflow({
        tenantId: tenantOf(request),
        workflowId: request.params.id,
      });
      const workflow = res.workflow!;
      return { ...workflowJson(workflow), versions: res.versions.map((v) => versionJson(v, workflow.id)) };
    },
  );

  app.post<{ Params: { id: string }; Body: JsonObject }>(
    "/api/v1/workflows/:id/versions",
    {
      schema: {
        summary: "Publish a new immutable version",
        description: "The body is the workflowState: blocks, edges, loops and parallels.",
        tags: ["workflows"],
        params: idParamsSchema,
        body: workflowStateSchema,
        response: {
          201: { ...versionSchema, description: "The version" },
          ...errorResponses([400, 404, 413, 415]),
        },
      },
      preValidation: requireScopeOnWorkflow(clients.auth, "workflows:write"),
    },
    async (request, reply) => {
      const res = await clients.workflows.publishVersion({
        tenantId: tenantOf(request),
        workflowId: request.params.id,
        state: parseState(request.body, "body"),
      });
      return reply.code(201).send(versionJson(res.version!, request.params.id));
    },
  );

  app.post<{ Params: { id: string }; Body: CreateScheduleBody }>(
    "/api/v1/workflows/:id/schedules",
    {
      schema: {
        summary: "Schedule a workflow (cron)",
        tags: ["workflows"],
        params: idParamsSchema,
        body: createScheduleBodySchema,
        response: {
          201: { ...scheduleSchema, description: "The schedule" },
          ...errorResponses([400, 404, 413, 415]),
        },
      },
      preValidation: requireScopeOnWorkflow(clients.auth, "workflows:write"),
    },
    async (request, reply) => {
      const { cron, timezone, version, input } = request.body;
      const res = await clients.workflows.createSchedule({
        tenantId: tenantOf(request),
        workflowId: request.params.id,
        version: version ?? 0,
        cron,
        timezone: timezone ?? "",
        input: input ?? {},
      });
      return reply.code(201).send(scheduleJson(res.schedule!));
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/workflows/:id/schedules",
    {
      schema: {
        summary: "List a workflow's schedules",
        tags: ["workflows"],
        params: idParamsSchema,
        response: {
          200: objectOf({ schedules: { type: "array", items: scheduleSchema } }, "The schedules"),
          ...errorResponses([400, 404]),
        },
      },
      preValidation: requireScopeOnWorkflow(clients.auth, "workflows:read"),
    },
    async (request) => {
      const res = await clients.workflows.listSchedules({
        tenantId: tenantOf(request),
        workflowId: request.params.id,
      });
      return { schedules: res.schedules.map(scheduleJson) };
    },
  );

  app.delete<{ Params: { id: string; scheduleId: string } }>(
    "/api/v1/workflows/:id/schedules/:scheduleId",
    {
      schema: {
        summary: "Delete a schedule",
        tags: ["workflows"],
        response: {
          200: objectOf({ deleted: { type: "boolean", enum: [true] } }, "Deleted"),
          ...errorResponses([400, 404]),
        },
        params: {
          type: "object",
          required: ["id", "scheduleId"],
          properties: {
            id: { type: "string", minLength: 1, maxLength: 200 },
            scheduleId: { type: "string", minLength: 1, maxLength: 200 },
          },
        },
      },
      preValidation: requireScopeOnWorkflow(clients.auth, "workflows:write"),
    },
    async (request, reply) => {
      await clients.workflows.deleteSchedule({
        tenantId: tenantOf(request),
        workflowId: request.params.id,
        scheduleId: request.params.scheduleId,
      });
      return reply.code(200).send({ deleted: true });
    },
  );

  app.post<{ Params: { id: string }; Body: CreateHookBody | undefined }>(
    "/api/v1/workflows/:id/hooks",
    {
      schema: {
        summary: "Create an inbound hook (URL + secret) that runs the workflow in the background",
        tags: ["workflows"],
        params: idParamsSchema,
        body: createHookBodySchema,
        response: {
          201: { ...hookSchema, description: "The hook, with its secret shown once" },
          ...errorResponses([400, 404, 413, 415]),
        },
      },
      preValidation: requireScopeOnWorkflow(clients.auth, "workflows:write"),
    },
    async (request, reply) => {
      const res = await clients.workflows.createHook({
        tenantId: tenantOf(request),
        workflowId: request.params.id,
        version: request.body?.version ?? 0,
      });
      // The secret is shown only here.
      return reply.code(201).send({ ...hookJson(res.hook!), secret: res.secret });
    },
  );
}
