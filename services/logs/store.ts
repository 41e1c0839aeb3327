import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import {
  type ColumnType,
  CompiledQuery,
  type ExpressionBuilder,
  type Generated,
  type Insertable,
  type Kysely,
  type Selectable,
  type SelectQueryBuilder,
  sql,
} from "kysely";
import { PREPARED_QUERY } from "../platform/db.js";
import { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";

/** jsonb columns are written as JSON text (node-pg would turn a JS array into a PostgreSQL array). */
type JsonColumn<T> = ColumnType<T, string, never>;

export interface ExecutionLogsTable {
  id: string;
  tenant_id: string;
  execution_id: string;
  workflow_id: string;
  workflow_version: number;
  workflow_name: string;
  workflow_description: string;
  folder_id: string;
  conversation_id: string;
  level: string;
  trigger: string;
  status: string;
  started_at: ColumnType<Date, Date, never>;
  ended_at: ColumnType<Date, Date, never>;
  total_duration_ms: number;
  cost_total: number;
  /** Names of the models the execution used (keys of cost.models), for the `model` filter. */
  models: ColumnType<string[], string[], never>;
  /** The full Cost as proto JSON. */
  cost: JsonColumn<JsonValue>;
  final_output: ColumnType<JsonObject | null, string | null, never>;
  /** TraceSpan[] as proto JSON. */
  trace_spans: JsonColumn<JsonValue[]>;
  error: string | null;
  ingested_at: Generated<Date>;
  /** Ingestion sequence (see migration 0002). */
  seq: ColumnType<number, never, never>;
}

export interface WorkflowSnapshotsTable {
  tenant_id: string;
  workflow_id: string;
  version: number;
  /** WorkflowState as proto JSON, secrets already redacted. */
  state: JsonColumn<JsonObject>;
  created_at: Generated<Date>;
}

export interface Database {
  execution_logs: ExecutionLogsTable;
  workflow_snapshots: WorkflowSnapshotsTable;
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

export interface NewSnapshot {
  tenant_id: string;
  workflow_id: string;
  version: number;
  state: string;
}

/**
 * Inserts one execution's log (a second completion of the same execution is ignored) and the
 * version's snapshot if it is the first log of that version. The per-tenant transaction lock,
 * taken before the row draws its seq and held until commit, makes a tenant's seqs commit in order.
 */
export async function insertExecutionLog(
  db: Kysely<Database>,
  row: NewExecutionLog,
  snapshot: NewSnapshot | undefined,
): Promise<boolean> {
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtext('flowplane.logs'), hashtext(${row.tenant_id}))`.execute(
      tx,
    );
    const inserted = await tx
      .insertInto("execution_logs")
      .values(row)
      .onConflict((oc) => oc.column("execution_id").doNothing())
      .returning("id")
      .executeTakeFirst();
    if (snapshot) {
      await tx
        .insertInto("workflow_snapshots")
        .values(snapshot)
        .onConflict((oc) => oc.columns(["tenant_id", "workflow_id", "version"]).doNothing())
        .execute();
    }
    return inserted !== undefined;
  });
}

/**
 * insertExecutionLog for several completions in one transaction (the consumer's batches): every
 * tenant of the batch is locked first, in a fixed order so concurrent batches cannot deadlock, then
 * the rows draw their seqs in one statement. Returns how many logs were new.
 */
export async function insertExecutionLogs(
  db: Kysely<Database>,
  entries: { row: NewExecutionLog; snapshot: NewSnapshot | undefined }[],
): Promise<number> {
  const rows = [...new Map(entries.map((e) => [e.row.execution_id, e.row])).values()];
  if (rows.length === 0) return 0;
  const snapshots = new Map<string, NewSnapshot>();
  for (const { snapshot } of entries) {
    if (snapshot)
      snapshots.set(JSON.stringify([snapshot.tenant_id, snapshot.workflow_id, snapshot.version]), snapshot);
  }
  const tenants = [...new Set(rows.map((r) => r.tenant_id))].sort();
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtext('flowplane.logs'), hashtext(t)) from unnest(${tenants}::text[]) with ordinality as l(t, n) order by n`.execute(
      tx,
    );
    const inserted = await tx
      .insertInto("execution_logs")
      .values(rows)
      .onConflict((oc) => oc.column("execution_id").doNothing())
      .returning("id")
      .execute();
    if (snapshots.size > 0) {
      await tx
        .insertInto("workflow_snapshots")
        .values([...snapshots.values()])
        .onConflict((oc) => oc.columns(["tenant_id", "workflow_id", "version"]).doNothing())
        .execute();
    }
    return inserted.length;
  });
}

/** Filters of QueryLogs, already validated; all ANDed. */
export interface LogFilters {
  workflowIds: string[];
  folderIds: string[];
  triggers: string[];
  level: string;
  startDate: Date | undefined;
  endDate: Date | undefined;
  executionId: string;
  minDurationMs: number | undefined;
  maxDurationMs: number | undefined;
  minCost: number | undefined;
  maxCost: number | undefined;
  models: string[];
}

/** No filter at all. */
export function noFilters(): LogFilters {
  return {
    workflowIds: [],
    folderIds: [],
    triggers: [],
    level: "",
    startDate: undefined,
    endDate: undefined,
    executionId: "",
    minDurationMs: undefined,
    maxDurationMs: undefined,
    minCost: undefined,
    maxCost: undefined,
    models: [],
  };
}

/**
 * What a list item shows (query.ts listEntry). A page selects nothing more: decoding rows is most of
 * a page's cost once the query is planned (two timestamptz per row above all), so tenant, status and
 * the workflow's name are not fetched unless shown.
 */
export const LIST_COLUMNS = [
  "id",
  "execution_id",
  "workflow_id",
  "conversation_id",
  "level",
  "trigger",
  "started_at",
  "ended_at",
  "total_duration_ms",
  "cost_total",
] as const;

/** Shown with details=full. */
export const WORKFLOW_COLUMNS = ["workflow_name", "workflow_description"] as const;

type LogsQuery<O> = SelectQueryBuilder<Database, "execution_logs", O>;

function filtered<O>(query: LogsQuery<O>, tenantId: string, f: LogFilters): LogsQuery<O> {
  let q = query.where("tenant_id", "=", tenantId);
  if (f.workflowIds.length === 1) q = q.where("workflow_id", "=", f.workflowIds[0] as string);
  else if (f.workflowIds.length > 1) q = q.where("workflow_id", "in", f.workflowIds);
  if (f.folderIds.length > 0) q = q.where("folder_id", "in", f.folderIds);
  if (f.triggers.length > 0) q = q.where("trigger", "in", f.triggers);
  if (f.level !== "") q = q.where("level", "=", f.level);
  if (f.startDate) q = q.where("started_at", ">=", f.startDate);
  if (f.endDate) q = q.where("started_at", "<=", f.endDate);
  if (f.executionId !== "") q = q.where("execution_id", "=", f.executionId);
  if (f.minDurationMs !== undefined) q = q.where("total_duration_ms", ">=", f.minDurationMs);
  if (f.maxDurationMs !== undefined) q = q.where("total_duration_ms", "<=", f.maxDurationMs);
  if (f.minCost !== undefined) q = q.where("cost_total", ">=", f.minCost);
  if (f.maxCost !== undefined) q = q.where("cost_total", "<=", f.maxCost);
  if (f.models.length > 0) {
    const models = f.models;
    q = q.where(sql<boolean>`models && ${sql.val(models)}::text[]`);
  }
  return q;
}

export interface Position {
  startedAt: Date;
  id: string;
}

function beyond(eb: ExpressionBuilder<Database, "execution_logs">, pos: Position, ascending: boolean) {
  return eb(eb.refTuple("started_at", "id"), ascending ? ">" : "<", eb.tuple(pos.startedAt, pos.id));
}

export interface PageQuery {
  tenantId: string;
  filters: LogFilters;
  ascending: boolean;
  /** Rows strictly beyond this (started_at, id) position in the chosen order. */
  after: Position | undefined;
  /** How many rows to fetch (one more than shown tells whether more exist). */
  fetch: number;
  withWorkflow: boolean;
  withFinalOutput: boolean;
  withTraceSpans: boolean;
}

function listQuery(
  db: Kysely<Database>,
  q: Pick<PageQuery, "withWorkflow" | "withFinalOutput" | "withTraceSpans">,
) {
  return db
    .selectFrom("execution_logs")
    .select(LIST_COLUMNS)
    .$if(q.withWorkflow, (qb) => qb.select(WORKFLOW_COLUMNS))
    .$if(q.withFinalOutput, (qb) => qb.select("final_output"))
    .$if(q.withTraceSpans, (qb) => qb.select("trace_spans"));
}

/** One keyset page: a row-value comparison on (started_at, id), never OFFSET (DESIGN §7). */
export function logPageQuery(db: Kysely<Database>, q: PageQuery) {
  const direction = q.ascending ? "asc" : "desc";
  let query = filtered(listQuery(db, q), q.tenantId, q.filters);
  const after = q.after;
  if (after) query = query.where((eb) => beyond(eb, after, q.ascending));
  return query
    .orderBy("started_at", direction)
    .orderBy("id", direction)
    .limit(q.fetch)
    .modifyEnd(sql.raw(PREPARED_QUERY));
}

type PageRow = Awaited<ReturnType<ReturnType<typeof logPageQuery>["execute"]>>[number];

/** A page's SQL and where each of its parameters comes from, for one shape of request. */
interface CompiledPage {
  sql: string;
  parameters: ((q: PageQuery) => unknown)[];
}

/** Which parts of a PageQuery change its SQL text (not the values it binds). */
function shapeOf(q: PageQuery): string {
  const f = q.filters;
  const flags = [q.ascending, q.after, q.withWorkflow, q.withFinalOutput, q.withTraceSpans, f.level !== ""];
  const more = [f.startDate, f.endDate, f.executionId !== "", f.minDurationMs, f.maxDurationMs];
  const lists = [f.workflowIds.length, f.folderIds.length, f.triggers.length, f.models.length > 0 ? 1 : 0];
  return `${[...flags, ...more, f.minCost, f.maxCost].map((v) => (v === undefined || v === false ? 0 : 1)).join("")}:${lists.join(",")}`;
}

/**
 * Compiles logPageQuery once for the shape of `q`: built with a unique placeholder object for every
 * value, so each compiled parameter names the field it binds. Undefined when that cannot be mapped
 * or the result differs from compiling `q` itself (then the page is built and compiled per call).
 */
function compilePage(db: Kysely<Database>, q: PageQuery): CompiledPage | undefined {
  const sources = new Map<unknown, (q: PageQuery) => unknown>();
  const slot = <T>(source: (q: PageQuery) => unknown): T => {
    const placeholder = {};
    sources.set(placeholder, source);
    return placeholder as T;
  };
  const f = q.filters;
  const ifSet = <T>(v: T | undefined, source: (q: PageQuery) => unknown) =>
    v === undefined ? undefined : slot<T>(source);
  const models = [...f.models];
  sources.set(models, (p) => p.filters.models);
  const placeholders: PageQuery = {
    ...q,
    tenantId: slot((p) => p.tenantId),
    fetch: slot((p) => p.fetch),
    after: q.after && {
      startedAt: slot((p) => p.after?.startedAt),
      id: slot((p) => p.after?.id),
    },
    filters: {
      workflowIds: f.workflowIds.map((_, i) => slot((p) => p.filters.workflowIds[i])),
      folderIds: f.folderIds.map((_, i) => slot((p) => p.filters.folderIds[i])),
      triggers: f.triggers.map((_, i) => slot((p) => p.filters.triggers[i])),
      level: f.level === "" ? "" : slot((p) => p.filters.level),
      startDate: ifSet(f.startDate, (p) => p.filters.startDate),
      endDate: ifSet(f.endDate, (p) => p.filters.endDate),
      executionId: f.executionId === "" ? "" : slot((p) => p.filters.executionId),
      minDurationMs: ifSet(f.minDurationMs, (p) => p.filters.minDurationMs),
      maxDurationMs: ifSet(f.maxDurationMs, (p) => p.filters.maxDurationMs),
      minCost: ifSet(f.minCost, (p) => p.filters.minCost),
      maxCost: ifSet(f.maxCost, (p) => p.filters.maxCost),
      models,
    },
  };
  const compiled = logPageQuery(db, placeholders).compile();
  const parameters = compiled.parameters.map((p) => sources.get(p));
  if (parameters.some((source) => source === undefined)) return undefined;
  const page = { sql: compiled.sql, parameters: parameters as CompiledPage["parameters"] };
  const direct = logPageQuery(db, q).compile();
  const bound = page.parameters.map((source) => source(q));
  const same =
    direct.sql === page.sql &&
    direct.parameters.length === bound.length &&
    direct.parameters.every((v, i) => v === bound[i]);
  return same ? page : undefined;
}

const compiledPages = new Map<string, CompiledPage | undefined>();

/**
 * One keyset page (logPageQuery), compiled once per shape of request: building and compiling the
 * query cost about a fifth of a page's client CPU (0.1 of 0.5 ms).
 */
export async function selectLogPage(db: Kysely<Database>, q: PageQuery): Promise<PageRow[]> {
  const shape = shapeOf(q);
  let page = compiledPages.get(shape);
  if (page === undefined && !compiledPages.has(shape)) {
    page = compilePage(db, q);
    // Shapes are bounded by the filter combinations; forget them all rather than grow.
    if (compiledPages.size >= 1000) compiledPages.clear();
    compiledPages.set(shape, page);
  }
  if (!page) return logPageQuery(db, q).execute();
  const parameters = page.parameters.map((source) => source(q));
  const result = await db.executeQuery(CompiledQuery.raw(page.sql, parameters) as CompiledQuery<PageRow>);
  return result.rows;
}

/**
 * Rows at or before an ascending cursor's position that were ingested after the cursor's page
 * (seq > seen): runs that started earlier but finished later. Served in ingestion order.
 */
export function lateRowsQuery(
  db: Kysely<Database>,
  q: Omit<PageQuery, "after" | "ascending"> & { position: Position; seen: number },
) {
  // seq: the next cursor's `seen` when the page is all late rows.
  return filtered(listQuery(db, q).select("seq"), q.tenantId, q.filters)
    .where("seq", ">", q.seen)
    .where((eb) => eb(eb.refTuple("started_at", "id"), "<=", eb.tuple(q.position.startedAt, q.position.id)))
    .orderBy("seq", "asc")
    .limit(q.fetch)
    .modifyEnd(sql.raw(PREPARED_QUERY));
}

export async function selectLateRows(
  db: Kysely<Database>,
  q: Omit<PageQuery, "after" | "ascending"> & { position: Position; seen: number },
) {
  return lateRowsQuery(db, q).execute();
}

/** The tenant's highest visible seq: every row of the tenant with a lower seq is visible too. */
export async function selectHighWater(db: Kysely<Database>, tenantId: string): Promise<number> {
  const row = await db
    .selectFrom("execution_logs")
    .select((eb) => eb.fn.max("seq").as("seq"))
    .where("tenant_id", "=", tenantId)
    .executeTakeFirst();
  return row?.seq == null ? 0 : Number(row.seq);
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

/** An execution's log row with the snapshot of the version it ran (null when none was recorded). */
export async function selectExecution(db: Kysely<Database>, tenantId: string, executionId: string) {
  return db
    .selectFrom("execution_logs as l")
    .leftJoin("workflow_snapshots as s", (join) =>
      join
        .onRef("s.tenant_id", "=", "l.tenant_id")
        .onRef("s.workflow_id", "=", "l.workflow_id")
        .onRef("s.version", "=", "l.workflow_version"),
    )
    .select([
      "l.execution_id",
      "l.workflow_id",
      "l.trigger",
      "l.started_at",
      "l.ended_at",
      "l.total_duration_ms",
      "l.cost",
      "l.cost_total",
      "s.state",
    ])
    .where("l.tenant_id", "=", tenantId)
    .where("l.execution_id", "=", executionId)
    .executeTakeFirst();
}
