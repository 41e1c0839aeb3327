import { type ColumnType, type Kysely, sql } from "kysely";

export interface ExecutionStatsTable {
  tenant_id: string;
  workflow_id: string;
  runs: number;
  failures: number;
  consecutive_failures: number;
  last_status: string;
  last_execution_at: ColumnType<Date, Date, Date>;
}

export interface ProcessedExecutionsTable {
  execution_id: string;
  processed_at: ColumnType<Date, Date | undefined, never>;
}

export interface Database {
  execution_stats: ExecutionStatsTable;
  processed_executions: ProcessedExecutionsTable;
}

export interface ExecutionOutcome {
  executionId: string;
  tenantId: string;
  workflowId: string;
  /** "success", "error", or another final status name. */
  status: string;
  finishedAt: Date;
}

/**
 * Counts one execution into its workflow's stats, once: the processed-execution marker and the stats
 * change commit together, so a redelivered or republished completion changes nothing.
 * Returns false when the execution had already been counted.
 */
export async function recordExecutionOutcome(
  db: Kysely<Database>,
  outcome: ExecutionOutcome,
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const marked = await trx
      .insertInto("processed_executions")
      .values({ execution_id: outcome.executionId })
      .onConflict((oc) => oc.column("execution_id").doNothing())
      .returning("execution_id")
      .executeTakeFirst();
    if (!marked) return false;

    const failed = outcome.status === "error";
    const succeeded = outcome.status === "success";
    await trx
      .insertInto("execution_stats")
      .values({
        tenant_id: outcome.tenantId,
        workflow_id: outcome.workflowId,
        runs: 1,
        failures: failed ? 1 : 0,
        consecutive_failures: failed ? 1 : 0,
        last_status: outcome.status,
        last_execution_at: outcome.finishedAt,
      })
      .onConflict((oc) =>
        oc.columns(["tenant_id", "workflow_id"]).doUpdateSet((eb) => ({
          runs: sql<number>`execution_stats.runs + 1`,
          failures: sql<number>`execution_stats.failures + ${failed ? 1 : 0}`,
          consecutive_failures: failed
            ? sql<number>`execution_stats.consecutive_failures + 1`
            : succeeded
              ? 0
              : sql<number>`execution_stats.consecutive_failures`,
          // Completions can arrive out of order; "last" follows the execution's own time.
          last_status: sql<string>`case when ${eb.ref("excluded.last_execution_at")} >= execution_stats.last_execution_at
            then ${eb.ref("excluded.last_status")} else execution_stats.last_status end`,
          last_execution_at: sql<Date>`greatest(execution_stats.last_execution_at, ${eb.ref("excluded.last_execution_at")})`,
        })),
      )
      .execute();
    return true;
  });
}
