import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("workflows")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("description", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("latest_version", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex("workflows_tenant_idx").on("workflows").columns(["tenant_id", "id"]).execute();

  // Immutable: rows are only ever inserted.
  await db.schema
    .createTable("workflow_versions")
    .addColumn("workflow_id", "text", (c) => c.notNull().references("workflows.id"))
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("state", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("workflow_versions_pkey", ["workflow_id", "version"])
    .execute();

  await db.schema
    .createTable("conversations")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull().references("workflows.id"))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("executions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull().references("workflows.id"))
    .addColumn("workflow_version", "integer", (c) => c.notNull())
    .addColumn("conversation_id", "text", (c) => c.notNull().references("conversations.id"))
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("trigger", "text", (c) => c.notNull())
    .addColumn("input", "jsonb", (c) => c.notNull())
    .addColumn("output", "jsonb", (c) => c.notNull())
    .addColumn("path", sql`text[]`, (c) => c.notNull())
    .addColumn("error", "text")
    .addColumn("warnings", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'`))
    .addColumn("trace_spans", "jsonb", (c) => c.notNull())
    .addColumn("cost", "numeric", (c) => c.notNull())
    .addColumn("cost_detail", "jsonb", (c) => c.notNull())
    .addColumn("credit_usage", "integer", (c) => c.notNull())
    .addColumn("started_at", "timestamptz", (c) => c.notNull())
    .addColumn("ended_at", "timestamptz")
    .addColumn("duration_ms", "integer", (c) => c.notNull())
    // Outbox: null until the completion event is acknowledged by JetStream.
    .addColumn("published_at", "timestamptz")
    .execute();
  await db.schema
    .createIndex("executions_conversation_idx")
    .on("executions")
    .columns(["conversation_id", "started_at"])
    .execute();
  await db.schema
    .createIndex("executions_unpublished_idx")
    .on("executions")
    .column("started_at")
    .where(sql.ref("published_at"), "is", null)
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("executions").execute();
  await db.schema.dropTable("conversations").execute();
  await db.schema.dropTable("workflow_versions").execute();
  await db.schema.dropTable("workflows").execute();
}
