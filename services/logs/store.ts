import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { ColumnType, Generated, Insertable, Kysely, Selectable } from "kysely";
import { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";

/** jsonb columns are written as JSON text (node-pg would turn a JS array into a PostgreSQL array). */
type JsonColumn<T> = ColumnType<T, string, never>;

export interface ExecutionLogsTable {
  id: string;
  tenant_id: string;
  execution_id: string;
  workflow_id: string;
  workflow_name: string;
  workflow_description: string;
  conversation_id: string;
  level: string;
  trigger: string;
  status: string;
  started_at: ColumnType<Date, Date, never>;
  ended_at: ColumnType<Date, Date, never>;
  total_duration_ms: number;
  cost_total: number;
  /** The full Cost as proto JSON. */
  cost: JsonColumn<JsonValue>;
  final_output: ColumnType<JsonObject | null, string | null, never>;
  /** TraceSpan[] as proto JSON. */
  trace_spans: JsonColumn<JsonValue[]>;
  error: string | null;
  ingested_at: Generated<Date>;
}

export interface Database {
  execution_logs: ExecutionLogsTable;
}

export type NewExecutionLog = Insertable<ExecutionLogsTable>;
export type ExecutionLogRow = Selectable<ExecutionLogsTable>;

const TRIGGER_NAMES: Record<Trigger, string> = {
  [Trigger.UNSPECIFIED]: "unspecified",
  [Trigger.API]: "api",
  [Trigger.WEBHOOK]: "webhook",
  [Trigger.SCHEDULE]: "schedule",
  [Trigger.MANUAL]: "manual",
  [Trigger.CHAT]: "chat",
};

/** Triggers are stored by their seed names (api, webhook, …) so the table reads like the REST API. */
export function storedTrigger(trigger: Trigger): string {
  return TRIGGER_NAMES[trigger] ?? "unspecified";
}

export function triggerFromStored(name: string): Trigger {
  for (const [value, stored] of Object.entries(TRIGGER_NAMES)) {
    if (stored === name) return Number(value) as Trigger;
  }
  return Trigger.UNSPECIFIED;
}

/** Inserts one execution's log; a second completion of the same execution is ignored. */
export async function insertExecutionLog(db: Kysely<Database>, row: NewExecutionLog): Promise<boolean> {
  const inserted = await db
    .insertInto("execution_logs")
    .values(row)
    .onConflict((oc) => oc.column("execution_id").doNothing())
    .returning("id")
    .executeTakeFirst();
  return inserted !== undefined;
}

export interface LogPageQuery {
  tenantId: string;
  workflowIds: string[];
  ascending: boolean;
  /** Rows strictly after this (started_at, id) position in the chosen order. */
  after: { startedAt: Date; id: string } | undefined;
  /** How many rows to fetch (the caller asks one more than it shows, to know whether more exist). */
  fetch: number;
  withFinalOutput: boolean;
  withTraceSpans: boolean;
}

const LIST_COLUMNS = [
  "id",
  "tenant_id",
  "execution_id",
  "workflow_id",
  "workflow_name",
  "workflow_description",
  "conversation_id",
  "level",
  "trigger",
  "status",
  "started_at",
  "ended_at",
  "total_duration_ms",
  "cost_total",
] as const;

/** One keyset page: a row-value comparison on (started_at, id), never OFFSET (DESIGN §7). */
export async function selectLogPage(db: Kysely<Database>, q: LogPageQuery) {
  const direction = q.ascending ? "asc" : "desc";
  let query = db
    .selectFrom("execution_logs")
    .select(LIST_COLUMNS)
    .where("tenant_id", "=", q.tenantId)
    .$if(q.workflowIds.length > 0, (qb) => qb.where("workflow_id", "in", q.workflowIds))
    .$if(q.withFinalOutput, (qb) => qb.select("final_output"))
    .$if(q.withTraceSpans, (qb) => qb.select("trace_spans"));
  const after = q.after;
  if (after) {
    query = query.where(({ eb, refTuple, tuple }) =>
      eb(refTuple("started_at", "id"), q.ascending ? ">" : "<", tuple(after.startedAt, after.id)),
    );
  }
  return query.orderBy("started_at", direction).orderBy("id", direction).limit(q.fetch).execute();
}

export async function selectLog(
  db: Kysely<Database>,
  tenantId: string,
  id: string,
): Promise<ExecutionLogRow | undefined> {
  return db
    .selectFrom("execution_logs")
    .selectAll()
    .where("id", "=", id)
    .where("tenant_id", "=", tenantId)
    .executeTakeFirst();
}
