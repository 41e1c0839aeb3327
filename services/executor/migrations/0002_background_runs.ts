import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("workflows")
    .addColumn("folder_id", "text", (c) => c.notNull().defaultTo(""))
    .execute();
  await db.schema
    .createIndex("workflows_tenant_folder_idx")
    .on("workflows")
    .columns(["tenant_id", "folder_id", "id"])
    .execute();

  // Background runs: how many workers took the run, and whether a cancel arrived while it ran.
  await db.schema
    .alterTable("executions")
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("cancel_requested", "boolean", (c) => c.notNull().defaultTo(false))
    .execute();
  await db.schema
    .createIndex("executions_tenant_idx")
    .on("executions")
    .columns(["tenant_id", "id"])
    .execute();

  await db.schema
    .createTable("schedules")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull().references("workflows.id"))
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("cron", "text", (c) => c.notNull())
    .addColumn("timezone", "text", (c) => c.notNull())
    .addColumn("input", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex("schedules_workflow_idx")
    .on("schedules")
    .columns(["tenant_id", "workflow_id"])
    .execute();

  // One row per fired tick: the primary key is what makes exactly one replica fire it.
  await db.schema
    .createTable("schedule_ticks")
    .addColumn("schedule_id", "text", (c) => c.notNull().references("schedules.id").onDelete("cascade"))
    .addColumn("tick_at", "timestamptz", (c) => c.notNull())
    .addColumn("execution_id", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("schedule_ticks_pkey", ["schedule_id", "tick_at"])
    .execute();

  await db.schema
    .createTable("hooks")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull().references("workflows.id"))
    .addColumn("version", "integer", (c) => c.notNull())
    // SHA-256 of the secret (hex): the secret is random, so a plain hash cannot be brute-forced.
    .addColumn("secret_sha256", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("hooks").execute();
  await db.schema.dropTable("schedule_ticks").execute();
  await db.schema.dropTable("schedules").execute();
  await db.schema.dropIndex("executions_tenant_idx").execute();
  await db.schema.alterTable("executions").dropColumn("attempts").dropColumn("cancel_requested").execute();
  await db.schema.dropIndex("workflows_tenant_folder_idx").execute();
  await db.schema.alterTable("workflows").dropColumn("folder_id").execute();
}
