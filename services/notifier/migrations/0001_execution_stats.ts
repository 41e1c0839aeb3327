import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // Per-workflow counters the alert rules will read (consecutive failures, failure rate).
  await db.schema
    .createTable("execution_stats")
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull())
    .addColumn("runs", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("failures", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("consecutive_failures", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("last_status", "text", (c) => c.notNull())
    .addColumn("last_execution_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("execution_stats_pkey", ["tenant_id", "workflow_id"])
    .execute();

  // Completions are delivered at least once; an execution id here has already been counted.
  await db.schema
    .createTable("processed_executions")
    .addColumn("execution_id", "text", (c) => c.primaryKey())
    .addColumn("processed_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("processed_executions").execute();
  await db.schema.dropTable("execution_stats").execute();
}
