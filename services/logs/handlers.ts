import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { InvalidArgumentError, NotFoundError } from "../platform/errors.js";
import { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  Details,
  type LogsService,
  Order,
  type QueryLogsRequest,
} from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { type CursorCodec, CursorError } from "./cursor.js";
import { getExecution, getLog, queryLogs } from "./query.js";
import { type Database, type LogFilters, storedTrigger } from "./store.js";

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
const MAX_LIST_VALUES = 1000;
const LEVELS = ["", "info", "error"];
const TRIGGERS = [Trigger.API, Trigger.WEBHOOK, Trigger.SCHEDULE, Trigger.MANUAL, Trigger.CHAT];

function idList(values: string[], field: string): string[] {
  if (values.length > MAX_LIST_VALUES) {
    throw new InvalidArgumentError(`${field} accepts at most ${MAX_LIST_VALUES} values`);
  }
  if (values.some((v) => v === ""))
    throw new InvalidArgumentError(`${field} must not contain an empty value`);
  return [...new Set(values)];
}

function dateOf(ts: Timestamp | undefined, field: string): Date | undefined {
  if (!ts) return undefined;
  const date = timestampDate(ts);
  if (Number.isNaN(date.getTime())) throw new InvalidArgumentError(`${field} is out of range`);
  return date;
}

function bounds<T extends number>(min: T | undefined, max: T | undefined, field: string): void {
  if ((min !== undefined && min < 0) || (max !== undefined && max < 0)) {
    throw new InvalidArgumentError(`${field} bounds must not be negative`);
  }
  if (min !== undefined && max !== undefined && min > max) {
    throw new InvalidArgumentError(`min_${field} must not exceed max_${field}`);
  }
}

/** The request's filters, validated; InvalidArgument names the first bad field. */
export function filtersOf(req: QueryLogsRequest): LogFilters {
  for (const t of req.triggers) {
    if (!TRIGGERS.includes(t)) throw new InvalidArgumentError("triggers contains an unknown trigger");
  }
  if (!LEVELS.includes(req.level)) throw new InvalidArgumentError("level must be info or error");
  const finite = (v: number | undefined, field: string) => {
    if (v !== undefined && !Number.isFinite(v))
      throw new InvalidArgumentError(`${field} must be a finite number`);
    return v;
  };
  const minDurationMs = req.minDurationMs === undefined ? undefined : Number(req.minDurationMs);
  const maxDurationMs = req.maxDurationMs === undefined ? undefined : Number(req.maxDurationMs);
  bounds(minDurationMs, maxDurationMs, "duration_ms");
  const minCost = finite(req.minCost, "min_cost");
  const maxCost = finite(req.maxCost, "max_cost");
  bounds(minCost, maxCost, "cost");
  const startDate = dateOf(req.startDate, "start_date");
  const endDate = dateOf(req.endDate, "end_date");
  if (startDate && endDate && startDate > endDate) {
    throw new InvalidArgumentError("start_date must not be after end_date");
  }
  return {
    workflowIds: idList(req.workflowIds, "workflow_ids"),
    folderIds: idList(req.folderIds, "folder_ids"),
    triggers: [...new Set(req.triggers.map(storedTrigger))],
    level: req.level,
    startDate,
    endDate,
    executionId: req.executionId,
    minDurationMs,
    maxDurationMs,
    minCost,
    maxCost,
    models: idList(req.models, "models"),
  };
}

export function logsHandlers(db: Kysely<Database>, codec: CursorCodec): ServiceImpl<typeof LogsService> {
  return {
    async queryLogs(req) {
      if (req.tenantId === "") throw new InvalidArgumentError("tenant_id is required");
      const limit = req.limit === 0 ? DEFAULT_LIMIT : req.limit;
      if (limit < 1 || limit > MAX_LIMIT) {
        throw new InvalidArgumentError(`limit must be between 1 and ${MAX_LIMIT}`);
      }
      if (![Order.UNSPECIFIED, Order.DESC, Order.ASC].includes(req.order)) {
        throw new InvalidArgumentError("order must be asc or desc");
      }
      if (![Details.UNSPECIFIED, Details.BASIC, Details.FULL].includes(req.details)) {
        throw new InvalidArgumentError("details must be basic or full");
      }
      try {
        return await queryLogs(db, codec, {
          tenantId: req.tenantId,
          filters: filtersOf(req),
          limit,
          ascending: req.order === Order.ASC,
          cursor: req.cursor,
          withWorkflow: req.details === Details.FULL,
          withFinalOutput: req.includeFinalOutput,
          withTraceSpans: req.includeTraceSpans,
        });
      } catch (err) {
        if (err instanceof CursorError) throw new InvalidArgumentError(err.message);
        throw err;
      }
    },

    async getLog(req) {
      if (req.tenantId === "") throw new InvalidArgumentError("tenant_id is required");
      if (req.id === "") throw new InvalidArgumentError("id is required");
      const log = await getLog(db, req.tenantId, req.id);
      // Another tenant's log answers exactly like a missing one (DESIGN §5).
      if (!log) throw new NotFoundError(`log ${req.id} not found`);
      return { log };
    },

    async getExecution(req) {
      if (req.tenantId === "") throw new InvalidArgumentError("tenant_id is required");
      if (req.executionId === "") throw new InvalidArgumentError("execution_id is required");
      const execution = await getExecution(db, req.tenantId, req.executionId);
      if (!execution) throw new NotFoundError(`execution ${req.executionId} not found`);
      return execution;
    },
  };
}
