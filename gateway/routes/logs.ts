import { type JsonObject, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { FastifyInstance } from "fastify";
import {
  Trigger,
  WorkflowStateSchema,
} from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import {
  Details,
  type GetExecutionResponse,
  Order,
  type QueryLogsRequest,
} from "../../services/platform/gen/flowplane/logs/v1/logs_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest, HttpError } from "../errors.js";
import {
  costJson,
  isoTime,
  type LogListShape,
  logDetailJson,
  logListItemJson,
  triggerName,
} from "../json.js";
import { limitsBlock } from "../limits.js";
import { anyJsonObject, errorResponses, nullableTimestamp, objectOf } from "../openapi.js";

/**
 * Query strings are parsed by hand rather than by schema: every value arrives as a string, and the
 * messages must name the parameter the way the contract does.
 */
type RawQuery = Record<string, string | string[] | undefined>;

const LIST_PARAMETERS = new Set([
  "workspaceId",
  "limit",
  "cursor",
  "order",
  "details",
  "includeTraceSpans",
  "includeFinalOutput",
  "workflowIds",
  "folderIds",
  "triggers",
  "level",
  "startDate",
  "endDate",
  "executionId",
  "minDurationMs",
  "maxDurationMs",
  "minCost",
  "maxCost",
  "model",
]);

const TRIGGERS: Record<string, Trigger> = {
  api: Trigger.API,
  webhook: Trigger.WEBHOOK,
  schedule: Trigger.SCHEDULE,
  manual: Trigger.MANUAL,
  chat: Trigger.CHAT,
};

const MAX_LIST_VALUES = 1000;

function checkParameterNames(query: RawQuery, allowed: Set<string>): void {
  for (const name of Object.keys(query)) {
    if (!allowed.has(name)) throw badRequest(`unknown query parameter ${name}`);
  }
}

function single(query: RawQuery, name: string): string | undefined {
  const value = query[name];
  if (Array.isArray(value)) throw badRequest(`${name} must be given once`);
  return value;
}

function oneOf<const T extends string>(query: RawQuery, name: string, values: readonly T[]): T | undefined {
  const value = single(query, name);
  if (value === undefined) return undefined;
  if (!(values as readonly string[]).includes(value)) {
    throw badRequest(`${name} must be one of ${values.join(", ")}`);
  }
  return value as T;
}

function flag(query: RawQuery, name: string): boolean {
  return oneOf(query, name, ["true", "false"] as const) === "true";
}

function parseLimit(query: RawQuery): number {
  const raw = single(query, "limit");
  if (raw === undefined) return 0;
  const limit = /^\d{1,4}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(limit >= 1 && limit <= 1000)) throw badRequest("limit must be an integer between 1 and 1000");
  return limit;
}

/** A comma-separated list (IN semantics); present but empty is a mistake worth a 400. */
function commaList(query: RawQuery, name: string, what: string): string[] {
  const raw = single(query, name);
  if (raw === undefined) return [];
  const values = [...new Set(raw.split(",").map((v) => v.trim()))].filter((v) => v !== "");
  if (values.length === 0) throw badRequest(`${name} must list at least one ${what}`);
  if (values.length > MAX_LIST_VALUES) throw badRequest(`${name} accepts at most ${MAX_LIST_VALUES} values`);
  if (values.some((v) => v.length > 200))
    throw badRequest(`${name} contains a value longer than 200 characters`);
  return values;
}

function parseTriggers(query: RawQuery): Trigger[] {
  return commaList(query, "triggers", "trigger").map((name) => {
    const trigger = TRIGGERS[name];
    if (trigger === undefined) {
      throw badRequest(`triggers must be a comma-separated list of ${Object.keys(TRIGGERS).join(", ")}`);
    }
    return trigger;
  });
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

/** An ISO-8601 timestamp; a date alone is midnight UTC and a time without a zone is UTC. */
function parseDate(query: RawQuery, name: string): Date | undefined {
  const raw = single(query, name);
  if (raw === undefined) return undefined;
  const match = ISO_DATE.exec(raw);
  const zoned = match && match[1] !== undefined && match[4] === undefined ? `${raw}Z` : raw;
  const date = match ? new Date(zoned) : undefined;
  if (!date || Number.isNaN(date.getTime())) {
    throw badRequest(`${name} must be an ISO-8601 timestamp, e.g. 2025-01-01T12:34:56.789Z`);
  }
  return date;
}

function parseInteger(query: RawQuery, name: string): bigint | undefined {
  const raw = single(query, name);
  if (raw === undefined) return undefined;
  if (!/^\d{1,15}$/.test(raw)) throw badRequest(`${name} must be a non-negative integer (milliseconds)`);
  return BigInt(raw);
}

function parseAmount(query: RawQuery, name: string): number | undefined {
  const raw = single(query, name);
  if (raw === undefined) return undefined;
  if (!/^\d{1,12}(\.\d{1,12})?$/.test(raw)) throw badRequest(`${name} must be a non-negative number (USD)`);
  return Number(raw);
}

function ordered<T extends number | bigint | Date>(
  min: T | undefined,
  max: T | undefined,
  minName: string,
  maxName: string,
) {
  if (min !== undefined && max !== undefined && min > max) {
    throw badRequest(`${minName} must not be greater than ${maxName}`);
  }
}

/** workspaceId is the tenant in the contract's words; a key may only read its own workspace. */
function checkWorkspace(workspaceId: string | undefined, tenantId: string): void {
  if (workspaceId !== undefined && workspaceId !== tenantId) {
    throw new HttpError(403, "workspaceId does not match the API key's workspace");
  }
}

type ListRequest = Omit<Partial<QueryLogsRequest>, "$typeName" | "tenantId">;

function parseListQuery(query: RawQuery): { workspaceId: string; shape: LogListShape; request: ListRequest } {
  checkParameterNames(query, LIST_PARAMETERS);
  const workspaceId = single(query, "workspaceId");
  if (workspaceId === undefined || workspaceId === "") throw badRequest("workspaceId is required");
  const order = oneOf(query, "order", ["asc", "desc"] as const);
  const details = oneOf(query, "details", ["basic", "full"] as const);
  const level = oneOf(query, "level", ["info", "error"] as const);
  const startDate = parseDate(query, "startDate");
  const endDate = parseDate(query, "endDate");
  ordered(startDate, endDate, "startDate", "endDate");
  const minDurationMs = parseInteger(query, "minDurationMs");
  const maxDurationMs = parseInteger(query, "maxDurationMs");
  ordered(minDurationMs, maxDurationMs, "minDurationMs", "maxDurationMs");
  const minCost = parseAmount(query, "minCost");
  const maxCost = parseAmount(query, "maxCost");
  ordered(minCost, maxCost, "minCost", "maxCost");
  const executionId = single(query, "executionId");
  if (executionId === "") throw badRequest("executionId must not be empty");
  const cursor = single(query, "cursor");
  if (cursor === "") throw badRequest("cursor must not be empty");
  const shape: LogListShape = {
    full: details === "full",
    includeTraceSpans: flag(query, "includeTraceSpans"),
    includeFinalOutput: flag(query, "includeFinalOutput"),
  };
  return {
    workspaceId,
    shape,
    request: {
      limit: parseLimit(query),
      cursor: cursor ?? "",
      order: order === "asc" ? Order.ASC : Order.DESC,
      details: shape.full ? Details.FULL : Details.BASIC,
      includeTraceSpans: shape.includeTraceSpans,
      includeFinalOutput: shape.includeFinalOutput,
      workflowIds: commaList(query, "workflowIds", "workflow id"),
      folderIds: commaList(query, "folderIds", "folder id"),
      triggers: parseTriggers(query),
      level: level ?? "",
      startDate: startDate ? timestampFromDate(startDate) : undefined,
      endDate: endDate ? timestampFromDate(endDate) : undefined,
      executionId: executionId ?? "",
      minDurationMs,
      maxDurationMs,
      minCost,
      maxCost,
      models: commaList(query, "model", "model name"),
    },
  };
}

/** The seed's workflowState: every collection present even when empty. */
function executionJson(execution: GetExecutionResponse) {
  const state = execution.workflowState
    ? (toJson(WorkflowStateSchema, execution.workflowState) as JsonObject)
    : {};
  return {
    executionId: execution.executionId,
    workflowId: execution.workflowId,
    workflowState: { blocks: {}, edges: [], loops: {}, parallels: {}, ...state },
    executionMetadata: {
      trigger: triggerName(execution.trigger),
      startedAt: isoTime(execution.startedAt),
      endedAt: isoTime(execution.endedAt),
      totalDurationMs: Number(execution.totalDurationMs),
      cost: costJson(execution.cost),
    },
  };
}

function parseWorkspaceOnly(query: RawQuery): string | undefined {
  checkParameterNames(query, new Set(["workspaceId"]));
  return single(query, "workspaceId");
}

const idParamsSchema = (name: string) => ({
  type: "object",
  required: [name],
  properties: { [name]: { type: "string", minLength: 1, maxLength: 200 } },
});

// OpenAPI documentation of the hand-parsed query strings (never used to validate them).
const commaSeparated = (what: string) => ({
  type: "string",
  description: `comma-separated ${what} (matches any)`,
});

const listQueryDocs = {
  type: "object",
  required: ["workspaceId"],
  additionalProperties: false,
  properties: {
    workspaceId: { type: "string", description: "the API key's workspace (403 if another)" },
    limit: { type: "integer", minimum: 1, maximum: 1000, description: "page size (default 100)" },
    cursor: { type: "string", description: "nextCursor of the previous page" },
    order: { type: "string", enum: ["desc", "asc"], description: "by startedAt (default desc)" },
    details: { type: "string", enum: ["basic", "full"] },
    includeTraceSpans: { type: "boolean" },
    includeFinalOutput: { type: "boolean" },
    workflowIds: commaSeparated("workflow ids"),
    folderIds: commaSeparated("folder ids"),
    triggers: commaSeparated("triggers: api, webhook, schedule, manual, chat"),
    level: { type: "string", enum: ["info", "error"] },
    startDate: { type: "string", format: "date-time", description: "ISO-8601, inclusive" },
    endDate: { type: "string", format: "date-time", description: "ISO-8601, inclusive" },
    executionId: { type: "string" },
    minDurationMs: { type: "integer", minimum: 0 },
    maxDurationMs: { type: "integer", minimum: 0 },
    minCost: { type: "number", minimum: 0, description: "USD" },
    maxCost: { type: "number", minimum: 0, description: "USD" },
    model: commaSeparated("model names"),
  },
} as const;

const workspaceQueryDocs = {
  type: "object",
  additionalProperties: false,
  properties: {
    workspaceId: { type: "string", description: "the API key's workspace (403 if another)" },
  },
} as const;

const executionBucketSchema = {
  type: ["object", "null"],
  properties: {
    requestsPerMinute: { type: "integer" },
    maxBurst: { type: "integer" },
    remaining: { type: "integer" },
    resetAt: nullableTimestamp,
  },
} as const;

export const limitsSchema = {
  type: "object",
  description: "The workspace's execution rate limits and billing-period usage",
  properties: {
    workflowExecutionRateLimit: {
      type: "object",
      properties: { sync: executionBucketSchema, async: executionBucketSchema },
    },
    usage: {
      type: ["object", "null"],
      properties: {
        currentPeriodCost: { type: "number", description: "USD" },
        limit: { type: "number", description: "USD" },
        plan: { type: "string" },
        isExceeded: { type: "boolean" },
      },
    },
  },
} as const;

const costTotalSchema = objectOf({ total: { type: "number", description: "USD" } });

const logItemSchema = {
  type: "object",
  required: [
    "id",
    "workflowId",
    "executionId",
    "level",
    "trigger",
    "startedAt",
    "endedAt",
    "totalDurationMs",
    "cost",
    "files",
  ],
  properties: {
    id: { type: "string" },
    workflowId: { type: "string" },
    executionId: { type: "string" },
    level: { type: "string", enum: ["info", "error"] },
    trigger: { type: ["string", "null"] },
    startedAt: nullableTimestamp,
    endedAt: nullableTimestamp,
    totalDurationMs: { type: "integer" },
    cost: costTotalSchema,
    files: { type: "null" },
    workflow: { type: ["object", "null"], description: "details=full" },
    finalOutput: { type: ["object", "null"], description: "includeFinalOutput=true" },
    traceSpans: { type: "array", items: anyJsonObject, description: "includeTraceSpans=true" },
  },
} as const;

const logDetailSchema = {
  type: "object",
  required: [...logItemSchema.required.filter((k) => k !== "files"), "workflow", "executionData"],
  properties: {
    ...logItemSchema.properties,
    cost: { type: "object", description: "total, tokens and per-model cost", properties: {} },
    executionData: {
      type: "object",
      properties: {
        traceSpans: { type: "array", items: anyJsonObject },
        finalOutput: { type: ["object", "null"] },
      },
    },
  },
} as const;

const executionSnapshotSchema = objectOf(
  {
    executionId: { type: "string" },
    workflowId: { type: "string" },
    workflowState: { ...anyJsonObject, description: "blocks, edges, loops and parallels as run" },
    executionMetadata: objectOf({
      trigger: { type: ["string", "null"] },
      startedAt: nullableTimestamp,
      endedAt: nullableTimestamp,
      totalDurationMs: { type: "integer" },
      cost: { type: "object", properties: {} },
    }),
  },
  "The execution with the workflow definition it ran",
);

/** GET /api/v1/logs, /api/v1/logs/:id and /api/v1/logs/executions/:executionId (seed 002). */
export function registerLogRoutes(app: FastifyInstance, clients: GatewayClients): void {
  const withLimits = requireScope(clients.auth, "logs:read", undefined, { includeLimits: true });
  app.get(
    "/api/v1/logs",
    {
      schema: {
        summary: "List execution logs",
        description:
          "Keyset-paginated, newest first by default: follow nextCursor until it is null. Unknown " +
          "query parameters are refused with 400.",
        tags: ["logs"],
        response: {
          200: objectOf(
            {
              data: { type: "array", items: logItemSchema },
              nextCursor: { type: ["string", "null"] },
              limits: limitsSchema,
            },
            "One page of logs",
          ),
          ...errorResponses([400]),
        },
      },
      config: { openapi: { querystring: listQueryDocs } },
      preValidation: withLimits,
    },
    async (request) => {
      const { workspaceId, shape, request: listRequest } = parseListQuery(request.query as RawQuery);
      const principal = principalOf(request);
      checkWorkspace(workspaceId, principal.tenantId);
      const res = await clients.logs.queryLogs({ ...listRequest, tenantId: principal.tenantId });
      // The list response, assembled here only.
      return {
        data: res.data.map((entry) => logListItemJson(entry, shape)),
        nextCursor: res.nextCursor === "" ? null : res.nextCursor,
        limits: limitsBlock(request),
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/logs/:id",
    {
      schema: {
        summary: "Get one log with its trace spans and output",
        tags: ["logs"],
        params: idParamsSchema("id"),
        response: {
          200: objectOf({ data: logDetailSchema, limits: limitsSchema }, "The log"),
          ...errorResponses([400, 404]),
        },
      },
      config: { openapi: { querystring: workspaceQueryDocs } },
      preValidation: withLimits,
    },
    async (request) => {
      const workspaceId = parseWorkspaceOnly(request.query as RawQuery);
      const principal = principalOf(request);
      checkWorkspace(workspaceId, principal.tenantId);
      const { log } = await clients.logs.getLog({ tenantId: principal.tenantId, id: request.params.id });
      if (!log) throw new Error("logs service answered GetLog without a log");
      // The detail response, assembled here only.
      return { data: logDetailJson(log), limits: limitsBlock(request) };
    },
  );

  app.get<{ Params: { executionId: string } }>(
    "/api/v1/logs/executions/:executionId",
    {
      schema: {
        summary: "Get an execution's snapshot by execution id",
        tags: ["logs"],
        params: idParamsSchema("executionId"),
        response: { 200: executionSnapshotSchema, ...errorResponses([400, 404]) },
      },
      config: { openapi: { querystring: workspaceQueryDocs } },
      preValidation: requireScope(clients.auth, "logs:read"),
    },
    async (request) => {
      const workspaceId = parseWorkspaceOnly(request.query as RawQuery);
      const principal = principalOf(request);
      checkWorkspace(workspaceId, principal.tenantId);
      const execution = await clients.logs.getExecution({
        tenantId: principal.tenantId,
        executionId: request.params.executionId,
      });
      return executionJson(execution);
    },
  );
}
