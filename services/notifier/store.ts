import { type ColumnType, type Kysely, sql } from "kysely";

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
  const failed = outcome.status === "error";
  const succeeded = outcome.status === "success";
  const { rows } = await sql<{ fresh: number }>`
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
    )
    select (select count(*) from marked)::int as fresh, (select count(*) from stats) as s, (select count(*) from recent) as w
  `.execute(db);
  return (rows[0]?.fresh ?? 0) > 0;
}
