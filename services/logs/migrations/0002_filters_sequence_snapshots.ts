import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // Ingestion order. Rows of one tenant are inserted under a per-tenant transaction lock, so the
  // committed rows of a tenant always hold a gap-free prefix of its seq values: a poller's cursor
  // remembers the highest seq it has seen and late arrivals (seq above it) are never lost.
  await sql`alter table execution_logs add column seq bigserial not null`.execute(db);
  await db.schema
    .alterTable("execution_logs")
    .addColumn("folder_id", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("workflow_version", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("models", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .execute();

  // The definition that ran, once per version rather than once per log.
  await db.schema
    .createTable("workflow_snapshots")
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull())
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("state", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("workflow_snapshots_pk", ["tenant_id", "workflow_id", "version"])
    .execute();

  // Late arrivals of a polling cursor and the tenant's visible high-water mark.
  await db.schema
    .createIndex("logs_by_tenant_seq_idx")
    .on("execution_logs")
    .columns(["tenant_id", "seq"])
    .execute();
  // The most common narrowing filters keep keyset order: a workflow, errors only.
  await db.schema
    .createIndex("logs_by_tenant_workflow_started_at_idx")
    .on("execution_logs")
    .columns(["tenant_id", "workflow_id", "started_at", "id"])
    .execute();
  await db.schema
    .createIndex("logs_by_tenant_level_started_at_idx")
    .on("execution_logs")
    .columns(["tenant_id", "level", "started_at", "id"])
    .execute();
  // Retention deletes across tenants by age. BRIN: tiny, and rows arrive roughly in start order;
  // it also cannot hand out order, so the planner never prefers it to the keyset indexes above.
  await db.schema
    .createIndex("logs_by_started_at_brin_idx")
    .on("execution_logs")
    .using("brin")
    .column("started_at")
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("logs_by_started_at_brin_idx").execute();
  await db.schema.dropIndex("logs_by_tenant_level_started_at_idx").execute();
  await db.schema.dropIndex("logs_by_tenant_workflow_started_at_idx").execute();
  await db.schema.dropIndex("logs_by_tenant_seq_idx").execute();
  await db.schema.dropTable("workflow_snapshots").execute();
  await db.schema
    .alterTable("execution_logs")
    .dropColumn("seq")
    .dropColumn("folder_id")
    .dropColumn("workflow_version")
    .dropColumn("models")
    .execute();
}
