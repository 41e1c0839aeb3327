import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("execution_logs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("execution_id", "text", (c) => c.notNull().unique())
    .addColumn("workflow_id", "text", (c) => c.notNull())
    .addColumn("workflow_name", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("workflow_description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("conversation_id", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("level", "text", (c) => c.notNull())
    .addColumn("trigger", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("started_at", "timestamptz", (c) => c.notNull())
    .addColumn("ended_at", "timestamptz", (c) => c.notNull())
    .addColumn("total_duration_ms", "bigint", (c) => c.notNull())
    .addColumn("cost_total", "numeric", (c) => c.notNull())
    .addColumn("cost", "jsonb", (c) => c.notNull())
    .addColumn("final_output", "jsonb")
    .addColumn("trace_spans", "jsonb", (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn("error", "text")
    .addColumn("ingested_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Keyset pagination walks this index in either direction (DESIGN §5, §7).
  await db.schema
    .createIndex("logs_by_tenant_started_at_idx")
    .on("execution_logs")
    .columns(["tenant_id", "started_at", "id"])
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("execution_logs").execute();
}
