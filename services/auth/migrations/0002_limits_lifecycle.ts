import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // Token buckets shared by every replica: `tokens` as of `updated_at`; the refill is computed from
  // the elapsed time whenever the row is touched, so nothing ticks in the background.
  await db.schema
    .createTable("rate_buckets")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("tokens", "float8", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    // Whether the last consumption was granted (read back by the statement that made it).
    .addColumn("granted", "boolean", (c) => c.notNull().defaultTo(true))
    .execute();
  // Unlogged: a consumption is a write on every request, and a crash losing the last instants of
  // bucket state (buckets come back full) costs a few extra requests, not correctness elsewhere.
  await sql`alter table rate_buckets set unlogged`.execute(db);

  await db.schema
    .createTable("usage_periods")
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("period_start", "timestamptz", (c) => c.notNull())
    .addColumn("cost", "numeric", (c) => c.notNull().defaultTo(0))
    .addColumn("executions", "int8", (c) => c.notNull().defaultTo(0))
    .addPrimaryKeyConstraint("usage_periods_pkey", ["tenant_id", "period_start"])
    .execute();

  // One row per counted execution: the idempotency marker of the usage consumer.
  await db.schema
    .createTable("usage_executions")
    .addColumn("execution_id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("period_start", "timestamptz", (c) => c.notNull())
    .addColumn("cost", "numeric", (c) => c.notNull())
    .addColumn("counted_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .alterTable("tokens")
    .addColumn("rate_limit_per_minute", "integer")
    .addColumn("expiry_warning_days", "integer")
    .addColumn("expiry_warning_sent_at", "timestamptz")
    .addColumn("expiry_recorded_at", "timestamptz")
    .addColumn("rotated_at", "timestamptz")
    // The secret replaced by the last rotation, valid until previous_secret_expires_at.
    .addColumn("previous_secret_hash", "text", (c) => c.unique())
    .addColumn("previous_secret_expires_at", "timestamptz")
    .execute();
  await db.schema
    .createIndex("tokens_expires_at_idx")
    .on("tokens")
    .column("expires_at")
    .where(sql.ref("expires_at"), "is not", null)
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("tokens_expires_at_idx").execute();
  await db.schema
    .alterTable("tokens")
    .dropColumn("rate_limit_per_minute")
    .dropColumn("expiry_warning_days")
    .dropColumn("expiry_warning_sent_at")
    .dropColumn("expiry_recorded_at")
    .dropColumn("rotated_at")
    .dropColumn("previous_secret_hash")
    .dropColumn("previous_secret_expires_at")
    .execute();
  await db.schema.dropTable("usage_executions").execute();
  await db.schema.dropTable("usage_periods").execute();
  await db.schema.dropTable("rate_buckets").execute();
}
