import type { FastifyInstance } from "fastify";
import { Details, Order } from "../../services/platform/gen/flowplane/logs/v1/logs_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest, HttpError } from "../errors.js";
import { type LogListShape, logDetailJson, logListItemJson } from "../json.js";

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
]);

// Filters of seed 002 that LogsService.QueryLogs cannot apply yet: refusing them beats answering
// unfiltered data a client would take as filtered.
const UNSUPPORTED_FILTERS = new Set([
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

function checkParameterNames(query: RawQuery, allowed: Set<string>): void {
  for (const name of Object.keys(query)) {
    if (allowed.has(name)) continue;
    if (UNSUPPORTED_FILTERS.has(name)) throw badRequest(`the ${name} filter is not supported yet`);
    throw badRequest(`unknown query parameter ${name}`);
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

function parseWorkflowIds(query: RawQuery): string[] {
  const raw = single(query, "workflowIds");
  if (raw === undefined) return [];
  const ids = raw
    .split(",")
    .map((id) => id.trim())
    .filter((id) => id !== "");
  if (ids.length === 0) throw badRequest("workflowIds must list at least one workflow id");
  return ids;
}

/** workspaceId is the tenant in the contract's words; a key may only read its own workspace. */
function checkWorkspace(workspaceId: string | undefined, tenantId: string): void {
  if (workspaceId !== undefined && workspaceId !== tenantId) {
    throw new HttpError(403, "workspaceId does not match the API key's workspace");
  }
}

function parseListQuery(query: RawQuery) {
  checkParameterNames(query, LIST_PARAMETERS);
  const workspaceId = single(query, "workspaceId");
  if (workspaceId === undefined || workspaceId === "") throw badRequest("workspaceId is required");
  const order = oneOf(query, "order", ["asc", "desc"] as const);
  const details = oneOf(query, "details", ["basic", "full"] as const);
  return {
    workspaceId,
    limit: parseLimit(query),
    cursor: single(query, "cursor") ?? "",
    order: order === "asc" ? Order.ASC : Order.DESC,
    full: details === "full",
    includeTraceSpans: flag(query, "includeTraceSpans"),
    includeFinalOutput: flag(query, "includeFinalOutput"),
    workflowIds: parseWorkflowIds(query),
  };
}

/** GET /api/v1/logs and GET /api/v1/logs/:id (seed 002). */
export function registerLogRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.get("/api/v1/logs", { preValidation: requireScope(clients.auth, "logs:read") }, async (request) => {
    const params = parseListQuery(request.query as RawQuery);
    const principal = principalOf(request);
    checkWorkspace(params.workspaceId, principal.tenantId);
    const res = await clients.logs.queryLogs({
      tenantId: principal.tenantId,
      limit: params.limit,
      cursor: params.cursor,
      order: params.order,
      details: params.full ? Details.FULL : Details.BASIC,
      includeTraceSpans: params.includeTraceSpans,
      includeFinalOutput: params.includeFinalOutput,
      workflowIds: params.workflowIds,
    });
    const shape: LogListShape = params;
    return {
      data: res.data.map((entry) => logListItemJson(entry, shape)),
      nextCursor: res.nextCursor === "" ? null : res.nextCursor,
    };
  });

  app.get<{ Params: { id: string } }>(
    "/api/v1/logs/:id",
    { preValidation: requireScope(clients.auth, "logs:read") },
    async (request) => {
      const query = request.query as RawQuery;
      checkParameterNames(query, new Set(["workspaceId"]));
      const workspaceId = single(query, "workspaceId");
      const principal = principalOf(request);
      checkWorkspace(workspaceId, principal.tenantId);
      const { log } = await clients.logs.getLog({ tenantId: principal.tenantId, id: request.params.id });
      if (!log) throw new Error("logs service answered GetLog without a log");
      return { data: logDetailJson(log) };
    },
  );
}
