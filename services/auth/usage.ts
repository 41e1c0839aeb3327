import { type Kysely, sql } from "kysely";
import type { Database } from "./store.js";

/** The billing period holding `at`: the calendar month in UTC. */
export function billingPeriodOf(at: Date): { start: Date; end: Date } {
  const start = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
  const end = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1));
  return { start, end };
}

export interface PeriodUsage {
  periodStart: Date;
  periodEnd: Date;
  costUsd: number;
}

export async function usageOf(db: Kysely<Database>, tenantId: string, now: Date): Promise<PeriodUsage> {
  const { start, end } = billingPeriodOf(now);
  const row = await db
    .selectFrom("usage_periods")
    .select("cost")
    .where("tenant_id", "=", tenantId)
    .where("period_start", "=", start)
    .executeTakeFirst();
  return { periodStart: start, periodEnd: end, costUsd: row?.cost ?? 0 };
}

export interface CompletedExecution {
  executionId: string;
  tenantId: string;
  costUsd: number;
  /** When it ended; it counts in that period. */
  endedAt: Date;
}

/**
 * Adds an execution's cost to its period once: the marker row and the sum commit together, so a
 * redelivered completion finds the marker and adds nothing. Returns whether it was counted now.
 */
export async function recordExecutionCost(
  db: Kysely<Database>,
  execution: CompletedExecution,
): Promise<boolean> {
  const { start } = billingPeriodOf(execution.endedAt);
  return db.transaction().execute(async (trx) => {
    const marker = await trx
      .insertInto("usage_executions")
      .values({
        execution_id: execution.executionId,
        tenant_id: execution.tenantId,
        period_start: start,
        cost: execution.costUsd,
      })
      .onConflict((oc) => oc.column("execution_id").doNothing())
      .returning("execution_id")
      .executeTakeFirst();
    if (!marker) return false;
    await trx
      .insertInto("usage_periods")
      .values({ tenant_id: execution.tenantId, period_start: start, cost: execution.costUsd, executions: 1 })
      .onConflict((oc) =>
        oc.columns(["tenant_id", "period_start"]).doUpdateSet({
          cost: sql`usage_periods.cost + excluded.cost`,
          executions: sql`usage_periods.executions + 1`,
        }),
      )
      .execute();
    return true;
  });
}
