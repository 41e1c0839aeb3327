import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import {
  type Cost,
  CostSchema,
  type TraceSpan,
  TraceSpanSchema,
  WorkflowStateSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type GetExecutionResponse,
  GetExecutionResponseSchema,
  type LogEntry,
  LogEntrySchema,
  type QueryLogsResponse,
  QueryLogsResponseSchema,
  WorkflowSummarySchema,
} from "../platform/gen/flowplane/logs/v1/logs_pb.js";
import { type CursorCodec, CursorError, type LogCursor, queryFingerprint } from "./cursor.js";
import {
  type Database,
  type ExecutionLogRow,
  type LIST_COLUMNS,
  type LogFilters,
  type Position,
  selectExecution,
  selectHighWater,
  selectLateRows,
  selectLog,
  selectLogPage,
  triggerFromStored,
  type WORKFLOW_COLUMNS,
} from "./store.js";

export interface LogQuery {
  tenantId: string;
  filters: LogFilters;
  limit: number;
  ascending: boolean;
  /** The client's cursor as given ("" for the first page). */
  cursor: string;
  withWorkflow: boolean;
  withFinalOutput: boolean;
  withTraceSpans: boolean;
}

/** A row as a page selects it (store.LIST_COLUMNS and what the request asks to show). */
type ListedRow = Pick<ExecutionLogRow, (typeof LIST_COLUMNS)[number]> &
  Partial<Pick<ExecutionLogRow, (typeof WORKFLOW_COLUMNS)[number] | "final_output" | "trace_spans" | "seq">>;

/** The position and guard a request's cursor carries; CursorError names what is wrong. */
function openCursor(codec: CursorCodec, q: LogQuery, fingerprint: string): LogCursor | undefined {
  if (q.cursor === "") return undefined;
  const cursor = codec.decode(q.cursor);
  if (cursor.query !== fingerprint || cursor.order !== (q.ascending ? "asc" : "desc")) {
    throw new CursorError("cursor does not match the query");
  }
  return cursor;
}

/**
 * One page of a tenant's logs plus the cursor to continue from.
 *
 * Descending is a plain keyset walk. Ascending is also the polling order, where a run that started
 * before the cursor's position but finished after its page was served would otherwise be skipped
 * for good; so an ascending cursor remembers the tenant's high-water seq `seen` when it was issued,
 * and the next page first serves the rows behind the position with seq > seen (in seq order), then
 * continues the keyset walk. Page and high-water mark are read in one snapshot, and a tenant's seqs
 * commit in order (store.insertExecutionLog), so every log is served exactly once.
 */
export async function queryLogs(
  db: Kysely<Database>,
  codec: CursorCodec,
  q: LogQuery,
): Promise<QueryLogsResponse> {
  const fingerprint = queryFingerprint({ ...q.filters });
  const cursor = openCursor(codec, q, fingerprint);
  const order = q.ascending ? "asc" : "desc";
  const shown = {
    withWorkflow: q.withWorkflow,
    withFinalOutput: q.withFinalOutput,
    withTraceSpans: q.withTraceSpans,
  };
  const pageOf = (after: Position | undefined, fetch: number) =>
    selectLogPage(db, { ...q, ascending: q.ascending, after, fetch });
  const issue = (pos: Position, seen: number) =>
    codec.encode({ startedAt: pos.startedAt, id: pos.id, seen, order, query: fingerprint });
  const positionOf = (row: ListedRow): Position => ({ startedAt: row.started_at, id: row.id });

  if (!q.ascending) {
    const rows = await pageOf(cursor, q.limit + 1);
    const page = rows.slice(0, q.limit);
    const last = page.at(-1);
    return response(page, shown, rows.length > q.limit && last ? issue(positionOf(last), 0) : "");
  }

  return db
    .transaction()
    .setIsolationLevel("repeatable read")
    .execute(async (tx) => {
      const highWater = await selectHighWater(tx, q.tenantId);
      if (!cursor) {
        const page = (await selectLogPage(tx, { ...q, after: undefined, fetch: q.limit })) as ListedRow[];
        const last = page.at(-1);
        return response(page, shown, last ? issue(positionOf(last), highWater) : "");
      }
      const late = (await selectLateRows(tx, {
        ...q,
        position: cursor,
        seen: cursor.seen,
        fetch: q.limit,
      })) as (ListedRow & { seq: number })[];
      if (late.length === q.limit) {
        // The page is all late rows: keep the position, advance `seen` only past what was served.
        return response(late, shown, issue(cursor, (late.at(-1) as { seq: number }).seq));
      }
      const onward = (await selectLogPage(tx, {
        ...q,
        after: cursor,
        fetch: q.limit - late.length,
      })) as ListedRow[];
      const last = onward.at(-1);
      return response([...late, ...onward], shown, issue(last ? positionOf(last) : cursor, highWater));
    });
}

function response(
  rows: ListedRow[],
  shown: { withWorkflow: boolean; withFinalOutput: boolean; withTraceSpans: boolean },
  nextCursor: string,
): QueryLogsResponse {
  return create(QueryLogsResponseSchema, { data: rows.map((row) => listEntry(row, shown)), nextCursor });
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

/** An execution's workflow snapshot and metadata, or undefined when the tenant has no such execution. */
export async function getExecution(
  db: Kysely<Database>,
  tenantId: string,
  executionId: string,
): Promise<GetExecutionResponse | undefined> {
  const row = await selectExecution(db, tenantId, executionId);
  if (!row) return undefined;
  return create(GetExecutionResponseSchema, {
    executionId: row.execution_id,
    workflowId: row.workflow_id,
    // Logs ingested before snapshots were recorded answer an empty state rather than nothing.
    workflowState: row.state
      ? fromJson(WorkflowStateSchema, row.state, { ignoreUnknownFields: true })
      : create(WorkflowStateSchema),
    trigger: triggerFromStored(row.trigger),
    startedAt: timestampFromDate(row.started_at),
    endedAt: timestampFromDate(row.ended_at),
    totalDurationMs: BigInt(row.total_duration_ms),
    cost: costFromJson(row.cost, row.cost_total),
  });
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
