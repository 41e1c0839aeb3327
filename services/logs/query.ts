import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  type Cost,
  CostSchema,
  type TraceSpan,
  TraceSpanSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type LogEntry,
  LogEntrySchema,
  type QueryLogsResponse,
  QueryLogsResponseSchema,
  WorkflowSummarySchema,
} from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { encodeLogCursor, type LogCursor } from "./cursor.js";
import { type Database, type ExecutionLogRow, selectLog, selectLogPage, triggerFromStored } from "./store.js";

export interface LogQuery {
  tenantId: string;
  limit: number;
  ascending: boolean;
  after: LogCursor | undefined;
  workflowIds: string[];
  withWorkflow: boolean;
  withFinalOutput: boolean;
  withTraceSpans: boolean;
}

type ListedRow = Omit<ExecutionLogRow, "cost" | "final_output" | "trace_spans" | "error" | "ingested_at"> & {
  final_output?: ExecutionLogRow["final_output"];
  trace_spans?: ExecutionLogRow["trace_spans"];
};

/** One page of a tenant's logs plus the cursor to continue from. */
export async function queryLogs(db: Kysely<Database>, q: LogQuery): Promise<QueryLogsResponse> {
  const rows = await selectLogPage(db, {
    tenantId: q.tenantId,
    workflowIds: q.workflowIds,
    ascending: q.ascending,
    after: q.after,
    fetch: q.limit + 1,
    withFinalOutput: q.withFinalOutput,
    withTraceSpans: q.withTraceSpans,
  });
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  const last = page.at(-1);
  // Ascending is the polling order: the last page still hands back its end position, so a poller that
  // keeps the latest non-empty cursor resumes after the newest row it saw instead of re-reading it.
  const nextCursor =
    last && (more || q.ascending) ? encodeLogCursor({ startedAt: last.started_at, id: last.id }) : "";
  return create(QueryLogsResponseSchema, {
    data: page.map((row) =>
      listEntry(row, {
        withWorkflow: q.withWorkflow,
        withFinalOutput: q.withFinalOutput,
        withTraceSpans: q.withTraceSpans,
      }),
    ),
    nextCursor,
  });
}

/** A log with all its execution data, or undefined when the tenant has no such log. */
export async function getLog(
  db: Kysely<Database>,
  tenantId: string,
  id: string,
): Promise<LogEntry | undefined> {
  const row = await selectLog(db, tenantId, id);
  if (!row) return undefined;
  const entry = listEntry(row, { withWorkflow: true, withFinalOutput: true, withTraceSpans: true });
  entry.cost = costFromJson(row.cost, row.cost_total);
  return entry;
}

function listEntry(
  row: ListedRow,
  opts: { withWorkflow: boolean; withFinalOutput: boolean; withTraceSpans: boolean },
): LogEntry {
  const entry = create(LogEntrySchema, {
    id: row.id,
    workflowId: row.workflow_id,
    executionId: row.execution_id,
    conversationId: row.conversation_id,
    level: row.level,
    trigger: triggerFromStored(row.trigger),
    startedAt: timestampFromDate(row.started_at),
    endedAt: timestampFromDate(row.ended_at),
    totalDurationMs: BigInt(row.total_duration_ms),
    // Lists carry only the total (DESIGN §5b); GetLog replaces it with the full breakdown.
    cost: create(CostSchema, { total: row.cost_total }),
  });
  if (opts.withWorkflow) {
    entry.workflow = create(WorkflowSummarySchema, {
      id: row.workflow_id,
      name: row.workflow_name,
      description: row.workflow_description,
    });
  }
  if (opts.withFinalOutput && row.final_output) entry.finalOutput = row.final_output;
  if (opts.withTraceSpans && row.trace_spans) entry.traceSpans = row.trace_spans.map(traceSpanFromJson);
  return entry;
}

function costFromJson(json: JsonValue, total: number): Cost {
  const cost = fromJson(CostSchema, json, { ignoreUnknownFields: true });
  cost.total = total;
  return cost;
}

function traceSpanFromJson(json: JsonValue): TraceSpan {
  return fromJson(TraceSpanSchema, json, { ignoreUnknownFields: true });
}
