import type { JsonObject } from "@bufbuild/protobuf";
import { type Kysely, sql, type Transaction } from "kysely";
import type { Database, ExecutionOutcome, StoredAlertRule } from "./store.js";

/**
 * Alert rules (seed 002 "Reglas de alerta"), evaluated from the notifier's own per-workflow stats and
 * execution window after the completion has been recorded. Each returns what it observed when it
 * fires, undefined when it does not.
 */

export const ALERT_COOLDOWN_MS = 60 * 60 * 1000;
/** Failure rate and latency spike need this many runs in the window. */
export const MIN_WINDOW_RUNS = 5;

const HOUR_MS = 60 * 60 * 1000;

export interface AlertFinding {
  /** The measured value compared with the threshold. */
  observed: number;
  message: string;
}

type Db = Kysely<Database> | Transaction<Database>;

async function windowRuns(db: Db, outcome: ExecutionOutcome, since: Date, now: Date) {
  return db
    .selectFrom("execution_window")
    .select(["execution_id", "status", "duration_ms"])
    .where("tenant_id", "=", outcome.tenantId)
    .where("workflow_id", "=", outcome.workflowId)
    .where("finished_at", ">", since)
    .where("finished_at", "<=", now)
    .execute();
}

export async function evaluateRule(
  db: Db,
  rule: StoredAlertRule,
  outcome: ExecutionOutcome,
  now: Date,
): Promise<AlertFinding | undefined> {
  const failed = outcome.status === "error";
  const since = new Date(now.getTime() - rule.windowHours * HOUR_MS);
  switch (rule.type) {
    case "consecutiveFailures": {
      if (!failed) return undefined;
      // Counted from the window by execution time, so completions handled out of order (several
      // consumers or replicas) still give the streak as it happened.
      const row = await db
        .selectFrom("execution_window")
        .select((eb) => eb.fn.countAll<number>().as("streak"))
        .where("tenant_id", "=", outcome.tenantId)
        .where("workflow_id", "=", outcome.workflowId)
        .where("status", "=", "error")
        .where(
          "finished_at",
          ">",
          sql<Date>`coalesce((select max(finished_at) from execution_window
            where tenant_id = ${outcome.tenantId} and workflow_id = ${outcome.workflowId}
            and status = 'success'), '-infinity'::timestamptz)`,
        )
        .executeTakeFirst();
      const streak = Number(row?.streak ?? 0);
      return streak >= rule.threshold
        ? { observed: streak, message: `${streak} consecutive failures of workflow ${outcome.workflowId}` }
        : undefined;
    }
    case "failureRate": {
      const stats = await db
        .selectFrom("execution_stats")
        .select("first_execution_at")
        .where("tenant_id", "=", outcome.tenantId)
        .where("workflow_id", "=", outcome.workflowId)
        .executeTakeFirst();
      // Only once the whole window has been observed.
      if (!stats?.first_execution_at || stats.first_execution_at > since) return undefined;
      const runs = await windowRuns(db, outcome, since, now);
      if (runs.length < MIN_WINDOW_RUNS) return undefined;
      const rate = (runs.filter((r) => r.status === "error").length / runs.length) * 100;
      return rate > rule.threshold
        ? {
            observed: Math.round(rate * 100) / 100,
            message: `failure rate of workflow ${outcome.workflowId} is ${rate.toFixed(1)}% over the last ${rule.windowHours} h`,
          }
        : undefined;
    }
    case "latencyThreshold": {
      const seconds = outcome.durationMs / 1000;
      return seconds > rule.threshold
        ? {
            observed: seconds,
            message: `workflow ${outcome.workflowId} took ${seconds} s (over ${rule.threshold} s)`,
          }
        : undefined;
    }
    case "latencySpike": {
      const previous = (await windowRuns(db, outcome, since, now)).filter(
        (r) => r.execution_id !== outcome.executionId,
      );
      if (previous.length < MIN_WINDOW_RUNS) return undefined;
      const average = previous.reduce((sum, r) => sum + r.duration_ms, 0) / previous.length;
      const slowerPercent = average === 0 ? 0 : ((outcome.durationMs - average) / average) * 100;
      return slowerPercent > rule.threshold
        ? {
            observed: Math.round(slowerPercent * 100) / 100,
            message: `workflow ${outcome.workflowId} ran ${slowerPercent.toFixed(0)}% slower than its ${rule.windowHours} h average (${Math.round(average)} ms)`,
          }
        : undefined;
    }
    case "costThreshold":
      return outcome.cost > rule.threshold
        ? {
            observed: outcome.cost,
            message: `workflow ${outcome.workflowId} run cost $${outcome.cost} (over $${rule.threshold})`,
          }
        : undefined;
    case "errorCount": {
      if (!failed) return undefined;
      const errors = (await windowRuns(db, outcome, since, now)).filter((r) => r.status === "error").length;
      return errors > rule.threshold
        ? {
            observed: errors,
            message: `${errors} errors of workflow ${outcome.workflowId} in the last ${rule.windowHours} h`,
          }
        : undefined;
    }
    case "noActivity":
      // Checked periodically, not per run.
      return undefined;
  }
}

/**
 * Claims the cooldown of (subscription, rule, workflow) at `now`: true when the last firing is an
 * hour old or more (or there was none). One statement, so of two replicas only one gets true.
 */
export async function claimCooldown(
  db: Db,
  subscriptionId: string,
  ruleType: string,
  workflowId: string,
  now: Date,
): Promise<boolean> {
  const claimed = await db
    .insertInto("alert_cooldowns")
    .values({ subscription_id: subscriptionId, rule_type: ruleType, workflow_id: workflowId, fired_at: now })
    .onConflict((oc) =>
      oc
        .columns(["subscription_id", "rule_type", "workflow_id"])
        .doUpdateSet({ fired_at: now })
        .where("alert_cooldowns.fired_at", "<=", new Date(now.getTime() - ALERT_COOLDOWN_MS)),
    )
    .returning("fired_at")
    .executeTakeFirst();
  return claimed !== undefined;
}

export function alertJson(rule: StoredAlertRule, finding: AlertFinding): JsonObject {
  return {
    rule: rule.type,
    threshold: rule.threshold,
    ...(rule.windowHours > 0 ? { windowHours: rule.windowHours } : {}),
    observed: finding.observed,
    message: finding.message,
  };
}

/** Workflows a no-activity rule watches: the listed ones, or every workflow the notifier has seen. */
export async function inactiveWorkflows(
  db: Db,
  sub: { tenant_id: string; all_workflows: boolean; workflow_ids: string[]; created_at: Date },
  rule: StoredAlertRule,
  now: Date,
): Promise<Array<{ workflowId: string; lastExecutionAt: Date | null }>> {
  const cutoff = now.getTime() - rule.windowHours * HOUR_MS;
  let query = db
    .selectFrom("execution_stats")
    .select(["workflow_id", "last_execution_at"])
    .where("tenant_id", "=", sub.tenant_id);
  if (!sub.all_workflows) query = query.where("workflow_id", "=", sql<string>`any(${sub.workflow_ids})`);
  const seen = await query.execute();
  const last = new Map(seen.map((s) => [s.workflow_id, s.last_execution_at]));
  const watched = sub.all_workflows ? [...last.keys()] : sub.workflow_ids;
  const inactive: Array<{ workflowId: string; lastExecutionAt: Date | null }> = [];
  for (const workflowId of watched) {
    const lastAt = last.get(workflowId) ?? null;
    // A workflow that never ran is watched from the subscription's creation.
    const reference = lastAt ?? sub.created_at;
    if (reference.getTime() <= cutoff) inactive.push({ workflowId, lastExecutionAt: lastAt });
  }
  return inactive;
}
