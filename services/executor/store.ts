/** Queries on the `executor` schema. Every query is scoped by tenant_id. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import {
  type ColumnType,
  type Insertable,
  type InsertObject,
  type Kysely,
  type Selectable,
  sql,
} from "kysely";
import { executionsByStatus } from "../platform/metrics.js";
import { currentTraceparent } from "../platform/telemetry.js";

/** jsonb: read as parsed JSON, written as a JSON string (pg would turn JS arrays into SQL arrays). */
type Jsonb<T extends JsonValue = JsonValue> = ColumnType<T, string, string>;
type CreatedAt = ColumnType<Date, Date | undefined, never>;

export type ExecutionStatusText = "queued" | "running" | "success" | "error";
export type TriggerText = "api" | "webhook" | "schedule" | "manual" | "chat";

export interface WorkflowsTable {
  id: string;
  tenant_id: string;
  name: string;
  description: string;
  latest_version: number;
  /** Empty when the workflow is in no folder. */
  folder_id: ColumnType<string, string | undefined, string>;
  created_at: CreatedAt;
}

export interface WorkflowVersionsTable {
  workflow_id: string;
  version: number;
  tenant_id: string;
  /** The definition in its JSON form (WorkflowState). */
  state: Jsonb<JsonObject>;
  created_at: CreatedAt;
}

export interface ConversationsTable {
  id: string;
  tenant_id: string;
  workflow_id: string;
  created_at: CreatedAt;
}

export interface ExecutionsTable {
  id: string;
  tenant_id: string;
  workflow_id: string;
  workflow_version: number;
  conversation_id: string;
  status: ExecutionStatusText;
  trigger: TriggerText;
  input: Jsonb<JsonObject>;
  output: Jsonb<JsonObject>;
  path: string[];
  error: string | null;
  warnings: string[];
  /** TraceSpan JSON objects. */
  trace_spans: Jsonb<JsonValue[]>;
  /** USD. */
  cost: number;
  /** Cost JSON. */
  cost_detail: Jsonb<JsonObject>;
  credit_usage: number;
  started_at: Date;
  ended_at: Date | null;
  duration_ms: number;
  published_at: Date | null;
  /** How many times a worker took this background run. */
  attempts: ColumnType<number, number | undefined, number>;
  /** Set when a cancel arrived while the run was running; its worker stops it. */
  cancel_requested: ColumnType<boolean, boolean | undefined, boolean>;
  /** W3C traceparent of the request that created it (null when tracing is off), for the outbox. */
  traceparent: ColumnType<string | null, string | null | undefined, string | null>;
  /** A watcher asked for the live events of this run before a worker claimed it. */
  watched: ColumnType<boolean, boolean | undefined, boolean>;
}

export interface SchedulesTable {
  id: string;
  tenant_id: string;
  workflow_id: string;
  /** 0 = the latest version at each tick. */
  version: number;
  cron: string;
  timezone: string;
  input: Jsonb<JsonObject>;
  created_at: CreatedAt;
}

export interface ScheduleTicksTable {
  schedule_id: string;
  tick_at: Date;
  execution_id: string;
}

export interface HooksTable {
  id: string;
  tenant_id: string;
  workflow_id: string;
  /** 0 = the latest version. */
  version: number;
  secret_sha256: string;
  created_at: CreatedAt;
}

export interface Database {
  workflows: WorkflowsTable;
  workflow_versions: WorkflowVersionsTable;
  conversations: ConversationsTable;
  executions: ExecutionsTable;
  schedules: SchedulesTable;
  schedule_ticks: ScheduleTicksTable;
  hooks: HooksTable;
}

export type ExecutorDb = Kysely<Database>;
export type WorkflowRow = Selectable<WorkflowsTable>;
export type WorkflowVersionRow = Selectable<WorkflowVersionsTable>;
export type ConversationRow = Selectable<ConversationsTable>;
export type ExecutionRow = Selectable<ExecutionsTable>;
export type NewExecutionRow = Insertable<ExecutionsTable>;
export type ScheduleRow = Selectable<SchedulesTable>;
export type HookRow = Selectable<HooksTable>;

export async function insertWorkflow(
  db: ExecutorDb,
  workflow: { id: string; tenantId: string; name: string; description: string; folderId: string },
  firstVersionState: JsonObject | undefined,
): Promise<{ workflow: WorkflowRow; version?: WorkflowVersionRow }> {
  return db.transaction().execute(async (tx) => {
    const row = await tx
      .insertInto("workflows")
      .values({
        id: workflow.id,
        tenant_id: workflow.tenantId,
        name: workflow.name,
        description: workflow.description,
        folder_id: workflow.folderId,
        latest_version: firstVersionState === undefined ? 0 : 1,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    if (firstVersionState === undefined) return { workflow: row };
    const version = await tx
      .insertInto("workflow_versions")
      .values({
        workflow_id: row.id,
        version: 1,
        tenant_id: row.tenant_id,
        state: JSON.stringify(firstVersionState),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { workflow: row, version };
  });
}

export async function findWorkflow(
  db: ExecutorDb,
  tenantId: string,
  workflowId: string,
): Promise<WorkflowRow | undefined> {
  return db
    .selectFrom("workflows")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("id", "=", workflowId)
    .executeTakeFirst();
}

/**
 * Stores `state` as the workflow's next version. The row lock taken by the increment serialises
 * concurrent publishes, so each gets its own number. Undefined when the workflow is not the tenant's.
 */
export async function insertNextVersion(
  db: ExecutorDb,
  tenantId: string,
  workflowId: string,
  state: JsonObject,
): Promise<WorkflowVersionRow | undefined> {
  return db.transaction().execute(async (tx) => {
    const bumped = await tx
      .updateTable("workflows")
      .set((eb) => ({ latest_version: eb("latest_version", "+", 1) }))
      .where("tenant_id", "=", tenantId)
      .where("id", "=", workflowId)
      .returning("latest_version")
      .executeTakeFirst();
    if (!bumped) return undefined;
    return tx
      .insertInto("workflow_versions")
      .values({
        workflow_id: workflowId,
        version: bumped.latest_version,
        tenant_id: tenantId,
        state: JSON.stringify(state),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

export async function findVersionState(
  db: ExecutorDb,
  tenantId: string,
  workflowId: string,
  version: number,
): Promise<JsonObject | undefined> {
  const row = await db
    .selectFrom("workflow_versions")
    .select("state")
    .where("tenant_id", "=", tenantId)
    .where("workflow_id", "=", workflowId)
    .where("version", "=", version)
    .executeTakeFirst();
  return row?.state;
}

export async function findConversation(
  db: ExecutorDb,
  tenantId: string,
  conversationId: string,
): Promise<ConversationRow | undefined> {
  return db
    .selectFrom("conversations")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("id", "=", conversationId)
    .executeTakeFirst();
}

/**
 * Writes an execution, creating its conversation first when it is new: one statement (the
 * conversation in a data-modifying CTE), so one round trip and atomic without a transaction.
 */
export async function insertExecution(
  db: ExecutorDb,
  execution: NewExecutionRow,
  newConversation: { id: string; createdAt: Date } | undefined,
): Promise<void> {
  const values: InsertObject<Database, "executions"> = {
    ...execution,
    traceparent: execution.traceparent ?? currentTraceparent() ?? null,
  };
  if (!newConversation) {
    await db.insertInto("executions").values(values).execute();
  } else {
    await insertWithConversation(db, values, execution, newConversation);
  }
  executionsByStatus.inc({ status: execution.status, trigger: execution.trigger });
}

async function insertWithConversation(
  db: ExecutorDb,
  values: InsertObject<Database, "executions">,
  execution: NewExecutionRow,
  newConversation: { id: string; createdAt: Date },
): Promise<void> {
  await db
    .with("new_conversation", (qb) =>
      qb.insertInto("conversations").values({
        id: newConversation.id,
        tenant_id: execution.tenant_id,
        workflow_id: execution.workflow_id,
        created_at: newConversation.createdAt,
      }),
    )
    .insertInto("executions")
    .values(values)
    .execute();
}

export async function listConversationExecutions(
  db: ExecutorDb,
  tenantId: string,
  conversationId: string,
): Promise<ExecutionRow[]> {
  return db
    .selectFrom("executions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("conversation_id", "=", conversationId)
    .orderBy("started_at", "asc")
    .orderBy("id", "asc")
    .execute();
}

export type UnpublishedExecution = ExecutionRow & {
  workflow_name: string;
  workflow_description: string;
  workflow_folder_id: string;
};

/**
 * Executions whose completion was never acknowledged and that started before `startedBefore`,
 * oldest first, with their workflow's name and description. The outbox sweeper runs across
 * tenants; each row carries its own tenant_id.
 */
export async function findUnpublishedExecutions(
  db: ExecutorDb,
  startedBefore: Date,
  limit: number,
): Promise<UnpublishedExecution[]> {
  return (
    db
      .selectFrom("executions as e")
      .innerJoin("workflows as w", (join) =>
        join.onRef("w.id", "=", "e.workflow_id").onRef("w.tenant_id", "=", "e.tenant_id"),
      )
      .selectAll("e")
      .select([
        "w.name as workflow_name",
        "w.description as workflow_description",
        "w.folder_id as workflow_folder_id",
      ])
      .where("e.published_at", "is", null)
      // Queued and running background executions have nothing to publish yet.
      .where("e.status", "in", ["success", "error"])
      .where("e.started_at", "<", startedBefore)
      .orderBy("e.started_at", "asc")
      .limit(limit)
      .execute()
  );
}

/** A page of the tenant's workflows, newest first, after the workflow id `afterId` when given. */
export async function listWorkflows(
  db: ExecutorDb,
  tenantId: string,
  opts: { limit: number; beforeId?: string; folderId?: string },
): Promise<WorkflowRow[]> {
  let query = db.selectFrom("workflows").selectAll().where("tenant_id", "=", tenantId);
  if (opts.folderId) query = query.where("folder_id", "=", opts.folderId);
  if (opts.beforeId) query = query.where("id", "<", opts.beforeId);
  return query.orderBy("id", "desc").limit(opts.limit).execute();
}

export async function listVersions(
  db: ExecutorDb,
  tenantId: string,
  workflowId: string,
): Promise<{ version: number; created_at: Date }[]> {
  return db
    .selectFrom("workflow_versions")
    .select(["version", "created_at"])
    .where("tenant_id", "=", tenantId)
    .where("workflow_id", "=", workflowId)
    .orderBy("version", "asc")
    .execute();
}

export async function findExecution(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
): Promise<ExecutionRow | undefined> {
  return db
    .selectFrom("executions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .executeTakeFirst();
}

/** Removes a queued execution that could not be queued (and its conversation when it was new). */
export async function deleteQueuedExecution(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
  newConversationId: string | undefined,
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx
      .deleteFrom("executions")
      .where("tenant_id", "=", tenantId)
      .where("id", "=", executionId)
      .where("status", "=", "queued")
      .execute();
    if (newConversationId) {
      await tx
        .deleteFrom("conversations")
        .where("tenant_id", "=", tenantId)
        .where("id", "=", newConversationId)
        .execute();
    }
  });
}

/**
 * Takes a queued execution, or one left `running` by a worker that died (its run request was
 * redelivered), for a run: status running, started now. Undefined when it already finished.
 */
export async function claimExecution(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
): Promise<ExecutionRow | undefined> {
  return db
    .updateTable("executions")
    .set((eb) => ({ status: "running", started_at: new Date(), attempts: eb("attempts", "+", 1) }))
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .where("status", "in", ["queued", "running"])
    .returningAll()
    .executeTakeFirst();
}

export type ExecutionResult = Pick<
  NewExecutionRow,
  | "status"
  | "output"
  | "path"
  | "error"
  | "trace_spans"
  | "cost"
  | "cost_detail"
  | "credit_usage"
  | "ended_at"
  | "duration_ms"
>;

/** Stores a background run's result; undefined when the execution is no longer running. */
export async function finishExecution(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
  result: ExecutionResult,
): Promise<ExecutionRow | undefined> {
  const row = await db
    .updateTable("executions")
    .set(result)
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .where("status", "=", "running")
    .returningAll()
    .executeTakeFirst();
  if (row) executionsByStatus.inc({ status: row.status, trigger: row.trigger });
  return row;
}

/**
 * Ends sync runs whose process stopped mid-run (a sync row is written `running` with no attempts;
 * background rows count their claims): older than the run timeout and still running, they can only
 * be abandoned. The outbox then publishes their completion.
 */
export async function failAbandonedSyncRuns(db: ExecutorDb, startedBefore: Date): Promise<number> {
  const rows = await db
    .updateTable("executions")
    .set({ status: "error", error: "run abandoned: the executor running it stopped", ended_at: new Date() })
    .where("status", "=", "running")
    .where("attempts", "=", 0)
    .where("started_at", "<", startedBefore)
    .executeTakeFirst();
  return Number(rows.numUpdatedRows);
}

/** Cancels a queued execution without running it; undefined when it is not queued. */
export async function cancelQueuedExecution(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
  message: string,
): Promise<ExecutionRow | undefined> {
  const row = await db
    .updateTable("executions")
    .set({ status: "error", error: message, ended_at: new Date(), cancel_requested: true })
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .where("status", "=", "queued")
    .returningAll()
    .executeTakeFirst();
  if (row) executionsByStatus.inc({ status: row.status, trigger: row.trigger });
  return row;
}

/** Flags a running execution for cancellation; undefined when it is not running. */
export async function requestCancel(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
): Promise<ExecutionRow | undefined> {
  return db
    .updateTable("executions")
    .set({ cancel_requested: true })
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .where("status", "=", "running")
    .returningAll()
    .executeTakeFirst();
}

/**
 * Records that a watcher listens, for the worker that claims the run (queued, or running after its
 * worker stopped). Returns the status it has, undefined once finished or unknown.
 */
export async function markWatched(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
): Promise<ExecutionStatusText | undefined> {
  const row = await db
    .updateTable("executions")
    // true, computed by the call that turns off the wait for the WAL flush of this statement's own
    // transaction: a flag lost to a database crash only costs a watcher the block events.
    .set({ watched: sql<boolean>`set_config('synchronous_commit', 'off', true) = 'off'` })
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .where("status", "in", ["queued", "running"])
    .returning("status")
    .executeTakeFirst();
  return row?.status;
}

export async function isCancelRequested(
  db: ExecutorDb,
  tenantId: string,
  executionId: string,
): Promise<boolean> {
  const row = await db
    .selectFrom("executions")
    .select("cancel_requested")
    .where("tenant_id", "=", tenantId)
    .where("id", "=", executionId)
    .executeTakeFirst();
  return row?.cancel_requested ?? false;
}

/** A claimed background run with its workflow (undefined when the workflow is gone). */
export interface ClaimedExecution {
  row: ExecutionRow;
  workflow: WorkflowRow | undefined;
}

/**
 * claimExecution for many runs in one statement, joined with their workflows (one round trip per
 * batch instead of two per run). Result i belongs to key i; undefined when not claimable.
 */
export async function claimExecutions(
  db: ExecutorDb,
  keys: { tenantId: string; executionId: string }[],
): Promise<(ClaimedExecution | undefined)[]> {
  const { rows } = await sql<
    ExecutionRow & { workflow: (Omit<WorkflowRow, "created_at"> & { created_at: string }) | null }
  >`
    with claimed as (
      update executions e
      set status = 'running', started_at = clock_timestamp(), attempts = e.attempts + 1
      from unnest(${keys.map((k) => k.tenantId)}::text[], ${keys.map((k) => k.executionId)}::text[]) as k(tenant_id, id)
      where e.tenant_id = k.tenant_id and e.id = k.id and e.status in ('queued', 'running')
      returning e.*
    )
    select c.*, to_jsonb(w) as workflow
    from claimed c
    left join workflows w on w.tenant_id = c.tenant_id and w.id = c.workflow_id`.execute(db);
  const byKey = new Map<string, ClaimedExecution>();
  for (const { workflow, ...row } of rows) {
    byKey.set(`${row.tenant_id}/${row.id}`, {
      row,
      workflow: workflow ? { ...workflow, created_at: new Date(workflow.created_at) } : undefined,
    });
  }
  return keys.map((k) => byKey.get(`${k.tenantId}/${k.executionId}`));
}

// Columns written as JSON text by ExecutionResult: spliced into the batch's JSON as they are.
const JSONB_COLUMNS = new Set(["input", "output", "trace_spans", "cost_detail"]);

/** One row of a batch as a JSON object text, for jsonb_populate_recordset(null::executions, …). */
function rowJson(fields: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [column, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    parts.push(
      `${JSON.stringify(column)}:${JSONB_COLUMNS.has(column) && typeof value === "string" ? value : JSON.stringify(value)}`,
    );
  }
  return `{${parts.join(",")}}`;
}

/** The columns a row object sets (undefined values are left to the column default). */
function setColumns(fields: object): string[] {
  return Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([column]) => column);
}

export interface NewExecution {
  row: NewExecutionRow;
  newConversation: { id: string; createdAt: Date } | undefined;
}

/**
 * insertExecution for many rows in one statement (with asynchronous commit: the sync runs' `running`
 * rows, see executeWorkflow): their new conversations in a data-modifying CTE, the executions read
 * back from one JSON array. Rows that set different columns go in separate statements. Each row's
 * traceparent is taken from the caller's context before it is queued, as insertExecution does.
 */
export async function insertExecutionsAsync(db: ExecutorDb, items: NewExecution[]): Promise<void> {
  if (items.length === 0) return;
  for (const group of bySignature(items, (item) => setColumns(item.row))) {
    const columns = setColumns(group[0]!.row);
    const conversations = group
      .filter((item) => item.newConversation !== undefined)
      .map(({ row, newConversation }) => ({
        id: newConversation!.id,
        tenant_id: row.tenant_id,
        workflow_id: row.workflow_id,
        created_at: newConversation!.createdAt,
      }));
    const rows = `[${group.map(({ row }) => rowJson(row)).join(",")}]`;
    const cols = sql.join(columns.map((c) => sql.ref(c)));
    await sql`
      with new_conversations as (
        insert into conversations (id, tenant_id, workflow_id, created_at)
        select c.id, c.tenant_id, c.workflow_id, c.created_at
        from jsonb_populate_recordset(null::conversations, ${JSON.stringify(conversations)}::jsonb) as c
      )
      insert into executions (${cols})
      select ${sql.join(columns.map((c) => sql.ref(`r.${c}`)))}
      from jsonb_populate_recordset(null::executions, ${rows}::jsonb) as r,
        (select set_config('synchronous_commit', 'off', true)) as async_commit`.execute(db);
    for (const { row } of group) executionsByStatus.inc({ status: row.status, trigger: row.trigger });
  }
}

/** Items grouped by the column list `columnsOf` gives them, in first-seen order. */
function bySignature<T>(items: T[], columnsOf: (item: T) => string[]): T[][] {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const key = columnsOf(item).join(",");
    const group = groups.get(key);
    if (group) group.push(item);
    else groups.set(key, [item]);
  }
  return [...groups.values()];
}

/**
 * finishExecution for many runs in one statement (one commit per batch). The rows travel as one
 * JSON array read back by jsonb_populate_recordset, so every column ExecutionResult carries is
 * written without listing them here. Result i belongs to item i.
 */
export async function finishExecutions(
  db: ExecutorDb,
  items: { tenantId: string; executionId: string; result: ExecutionResult & { started_at?: Date } }[],
): Promise<(ExecutionRow | undefined)[]> {
  if (items.length === 0) return [];
  const byKey = new Map<string, ExecutionRow>();
  // A column missing from one row would be written as null: results that set other columns (a
  // sync run's start time) go in their own statement.
  for (const group of bySignature(items, (item) => setColumns(item.result))) {
    const columns = setColumns(group[0]!.result).filter((c) => c !== "tenant_id" && c !== "id");
    const json = group
      .map(({ tenantId, executionId, result }) =>
        rowJson({ tenant_id: tenantId, id: executionId, ...result }),
      )
      .join(",");
    const { rows } = await sql<ExecutionRow>`
      update executions e
      set ${sql.join(columns.map((c) => sql`${sql.ref(c)} = ${sql.ref(`r.${c}`)}`))}
      from jsonb_populate_recordset(null::executions, ${`[${json}]`}::jsonb) as r
      where e.tenant_id = r.tenant_id and e.id = r.id and e.status = 'running'
      returning e.*`.execute(db);
    for (const row of rows) byKey.set(`${row.tenant_id}/${row.id}`, row);
  }
  return items.map(({ tenantId, executionId }) => {
    const row = byKey.get(`${tenantId}/${executionId}`);
    if (row) executionsByStatus.inc({ status: row.status, trigger: row.trigger });
    return row;
  });
}
