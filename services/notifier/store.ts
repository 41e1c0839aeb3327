import { type ColumnType, type Kysely, type Selectable, sql } from "kysely";
import { PREPARED_QUERY } from "../platform/db.js";

export interface ExecutionStatsTable {
  tenant_id: string;
  workflow_id: string;
  runs: number;
  failures: number;
  consecutive_failures: number;
  last_status: string;
  last_execution_at: ColumnType<Date, Date, Date>;
  first_execution_at: ColumnType<Date | null, Date | undefined, Date>;
}

export interface ProcessedExecutionsTable {
  execution_id: string;
  processed_at: ColumnType<Date, Date | undefined, never>;
}

export interface SubscriptionsTable {
  id: string;
  tenant_id: string;
  name: string;
  channel: ChannelName;
  channel_config: ColumnType<ChannelConfig, string, string>;
  secret_box: string | null;
  all_workflows: boolean;
  workflow_ids: string[];
  level_filter: string[];
  trigger_filter: string[];
  include_final_output: boolean;
  include_trace_spans: boolean;
  include_rate_limits: boolean;
  include_usage_data: boolean;
  enabled: boolean;
  alert_rule: ColumnType<StoredAlertRule | null, string | null, string | null>;
  disabled_reason: string;
  failing_since: Date | null;
  created_at: Date;
  updated_at: Date;
}

export type ChannelName = "webhook" | "email" | "slack";

/** The channel settings that are not secret. */
export interface ChannelConfig {
  url?: string;
  to?: string[];
  standardWebhooks?: boolean;
}

export type AlertRuleName =
  | "consecutiveFailures"
  | "failureRate"
  | "latencyThreshold"
  | "latencySpike"
  | "costThreshold"
  | "noActivity"
  | "errorCount";

export interface StoredAlertRule {
  type: AlertRuleName;
  threshold: number;
  windowHours: number;
}

export type DeliveryStatus = "pending" | "delivering" | "retrying" | "succeeded" | "failed";

export interface DeliveriesTable {
  id: string;
  tenant_id: string;
  subscription_id: string;
  event_id: string;
  event_type: string;
  dedupe_key: string;
  execution_id: string;
  workflow_id: string;
  channel: ChannelName;
  payload: string;
  status: DeliveryStatus;
  round: ColumnType<number, number | undefined, number>;
  attempt_count: ColumnType<number, number | undefined, number>;
  next_attempt_at: Date | null;
  locked_until: Date | null;
  created_at: Date;
  updated_at: Date;
}

export interface DeliveryAttemptsTable {
  delivery_id: string;
  round: number;
  number: number;
  at: Date;
  status_code: number;
  latency_ms: number;
  response_snippet: string;
  error: string;
}

export interface ExecutionWindowTable {
  execution_id: string;
  tenant_id: string;
  workflow_id: string;
  status: string;
  finished_at: Date;
  duration_ms: number;
  cost: number;
}

export interface AlertCooldownsTable {
  subscription_id: string;
  rule_type: string;
  workflow_id: string;
  fired_at: Date;
}

export interface Database {
  execution_stats: ExecutionStatsTable;
  processed_executions: ProcessedExecutionsTable;
  subscriptions: SubscriptionsTable;
  deliveries: DeliveriesTable;
  delivery_attempts: DeliveryAttemptsTable;
  execution_window: ExecutionWindowTable;
  alert_cooldowns: AlertCooldownsTable;
}

export interface ExecutionOutcome {
  executionId: string;
  tenantId: string;
  workflowId: string;
  /** "success", "error", or another final status name. */
  status: string;
  finishedAt: Date;
  durationMs: number;
  /** USD. */
  cost: number;
}

/** How long the per-workflow execution window keeps runs: the longest alert window allowed. */
export const WINDOW_RETENTION_HOURS = 7 * 24;

/**
 * Counts one execution into its workflow's stats and window, once: the processed-execution marker,
 * the stats change and the window row are one statement, so a redelivered or republished completion
 * changes nothing. Returns false when the execution had already been counted.
 */
export async function recordExecutionOutcome(
  db: Kysely<Database>,
  outcome: ExecutionOutcome,
): Promise<boolean> {
  const { rows } = await sql<{ fresh: number }>`
    ${recordingCtes(outcome)}
    select (select count(*) from marked)::int as fresh, (select count(*) from stats) as s, (select count(*) from recent) as w
  `.execute(db);
  return (rows[0]?.fresh ?? 0) > 0;
}

/**
 * recordExecutionOutcome and the tenant's enabled subscriptions watching the workflow, in one
 * prepared statement: a completion nobody subscribed to costs one round trip. The CTEs' writes run
 * to completion whether or not the select reads them (PostgreSQL runs data-modifying CTEs once).
 */
export async function recordOutcomeAndWatchers(
  db: Kysely<Database>,
  outcome: ExecutionOutcome,
): Promise<Array<Selectable<SubscriptionsTable>>> {
  const { rows } = await sql<Selectable<SubscriptionsTable>>`${sql.raw(PREPARED_QUERY)}
    ${recordingCtes(outcome)}
    select sub.* from subscriptions sub
    where sub.tenant_id = ${outcome.tenantId} and sub.enabled
      and (sub.all_workflows or ${outcome.workflowId} = any(sub.workflow_ids))
    order by sub.id
  `.execute(db);
  return rows;
}

/** `marked`, `stats` and `recent`: the once-per-execution writes of an outcome. */
function recordingCtes(outcome: ExecutionOutcome) {
  const failed = outcome.status === "error";
  const succeeded = outcome.status === "success";
  return sql`
    with marked as (
      insert into processed_executions (execution_id) values (${outcome.executionId})
      on conflict (execution_id) do nothing
      returning execution_id
    ), stats as (
      insert into execution_stats
        (tenant_id, workflow_id, runs, failures, consecutive_failures, last_status, last_execution_at, first_execution_at)
      select ${outcome.tenantId}, ${outcome.workflowId}, 1, ${failed ? 1 : 0}, ${failed ? 1 : 0}, ${outcome.status},
        ${outcome.finishedAt}::timestamptz, ${outcome.finishedAt}::timestamptz
      from marked
      on conflict (tenant_id, workflow_id) do update set
        runs = execution_stats.runs + 1,
        failures = execution_stats.failures + excluded.failures,
        consecutive_failures = case
          when ${failed} then execution_stats.consecutive_failures + 1
          when ${succeeded} then 0
          else execution_stats.consecutive_failures end,
        -- Completions can arrive out of order; "last" follows the execution's own time.
        last_status = case when excluded.last_execution_at >= execution_stats.last_execution_at
          then excluded.last_status else execution_stats.last_status end,
        last_execution_at = greatest(execution_stats.last_execution_at, excluded.last_execution_at),
        first_execution_at = least(execution_stats.first_execution_at, excluded.first_execution_at)
      returning 1
    ), recent as (
      insert into execution_window (execution_id, tenant_id, workflow_id, status, finished_at, duration_ms, cost)
      select execution_id, ${outcome.tenantId}, ${outcome.workflowId}, ${outcome.status},
        ${outcome.finishedAt}::timestamptz, ${outcome.durationMs}, ${outcome.cost}
      from marked
      on conflict (execution_id) do nothing
      returning 1
    )`;
}

/** What recordOutcomesAndWatchers found for one outcome of a batch. */
export interface BatchedOutcome {
  /**
   * True when an enabled alert rule watches the workflow: the outcome was not recorded, because a
   * rule is evaluated right after its own run is counted, so it goes through recordOutcomeAndWatchers.
   */
  deferred: boolean;
  /** The tenant's enabled subscriptions watching the workflow (none when deferred). */
  watchers: Array<Selectable<SubscriptionsTable>>;
}

/**
 * recordOutcomeAndWatchers for the completions of one pull in one statement (one round trip and one
 * commit for all). The stats end as if the outcomes had been recorded one by one in array order: per
 * workflow, the runs and failures add up, the failure streak restarts at the batch's last success, and
 * "last" is the latest execution time (a tie goes to the later one). An outcome already counted, or
 * repeated in the batch, is counted once.
 */
export async function recordOutcomesAndWatchers(
  db: Kysely<Database>,
  outcomes: ExecutionOutcome[],
): Promise<BatchedOutcome[]> {
  const { rows } = await sql<Selectable<SubscriptionsTable> & { batch_ord: number; deferred: boolean }>`
    ${sql.raw(PREPARED_QUERY)}
    with input as (
      select * from unnest(
        ${outcomes.map((o) => o.executionId)}::text[], ${outcomes.map((o) => o.tenantId)}::text[],
        ${outcomes.map((o) => o.workflowId)}::text[], ${outcomes.map((o) => o.status)}::text[],
        ${outcomes.map((o) => o.finishedAt)}::timestamptz[], ${outcomes.map((o) => o.durationMs)}::bigint[],
        ${outcomes.map((o) => o.cost)}::float8[]
      ) with ordinality as i(execution_id, tenant_id, workflow_id, status, finished_at, duration_ms, cost, ord)
    ), alerted as (
      select distinct i.tenant_id, i.workflow_id from input i
      join subscriptions s on s.tenant_id = i.tenant_id and s.enabled and s.alert_rule is not null
        and (s.all_workflows or i.workflow_id = any(s.workflow_ids))
    ), todo as (
      select distinct on (i.execution_id) i.* from input i
      where not exists (select 1 from alerted a where a.tenant_id = i.tenant_id and a.workflow_id = i.workflow_id)
      order by i.execution_id, i.ord
    ), marked as (
      insert into processed_executions (execution_id) select execution_id from todo
      on conflict (execution_id) do nothing
      returning execution_id
    ), fresh as (
      select t.*, max(t.ord) filter (where t.status = 'success')
        over (partition by t.tenant_id, t.workflow_id) as last_success
      from todo t join marked m on m.execution_id = t.execution_id
    ), agg as (
      select tenant_id, workflow_id, count(*)::int as runs,
        (count(*) filter (where status = 'error'))::int as failures,
        (count(*) filter (where status = 'error' and ord > coalesce(last_success, 0)))::int as streak,
        bool_or(last_success is not null) as reset,
        (array_agg(status order by finished_at desc, ord desc))[1] as last_status,
        max(finished_at) as last_at, min(finished_at) as first_at
      from fresh group by tenant_id, workflow_id
    ), stats as (
      insert into execution_stats
        (tenant_id, workflow_id, runs, failures, consecutive_failures, last_status, last_execution_at, first_execution_at)
      select tenant_id, workflow_id, runs, failures, streak, last_status, last_at, first_at from agg
      on conflict (tenant_id, workflow_id) do update set
        runs = execution_stats.runs + excluded.runs,
        failures = execution_stats.failures + excluded.failures,
        consecutive_failures = case
          when (select reset from agg where agg.tenant_id = excluded.tenant_id and agg.workflow_id = excluded.workflow_id)
          then excluded.consecutive_failures
          else execution_stats.consecutive_failures + excluded.consecutive_failures end,
        last_status = case when excluded.last_execution_at >= execution_stats.last_execution_at
          then excluded.last_status else execution_stats.last_status end,
        last_execution_at = greatest(execution_stats.last_execution_at, excluded.last_execution_at),
        first_execution_at = least(execution_stats.first_execution_at, excluded.first_execution_at)
      returning 1
    ), recent as (
      insert into execution_window (execution_id, tenant_id, workflow_id, status, finished_at, duration_ms, cost)
      select execution_id, tenant_id, workflow_id, status, finished_at, duration_ms, cost from fresh
      on conflict (execution_id) do nothing
      returning 1
    )
    select i.ord::int as batch_ord, a.tenant_id is not null as deferred, sub.*
    from input i
    left join alerted a on a.tenant_id = i.tenant_id and a.workflow_id = i.workflow_id
    left join subscriptions sub on a.tenant_id is null and sub.tenant_id = i.tenant_id and sub.enabled
      and (sub.all_workflows or i.workflow_id = any(sub.workflow_ids))
    order by i.ord, sub.id
  `.execute(db);
  const found: BatchedOutcome[] = outcomes.map(() => ({ deferred: false, watchers: [] }));
  for (const { batch_ord, deferred, ...sub } of rows) {
    const entry = found[batch_ord - 1]!;
    entry.deferred = deferred;
    // A left join without a match gives null columns.
    if (sub.id !== null) entry.watchers.push(sub);
  }
  return found;
}
