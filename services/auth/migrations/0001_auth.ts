import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("tenants")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("plan", "text", (c) => c.notNull().check(sql`plan in ('free', 'pro', 'team', 'enterprise')`))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("tokens")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull().references("tenants.id"))
    .addColumn("kind", "text", (c) => c.notNull().check(sql`kind in ('admin', 'app')`))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("purpose", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("scopes", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'`))
    .addColumn("workflow_ids", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'`))
    .addColumn("prefix", "text", (c) => c.notNull())
    // SHA-256 hex of the full key; the unique index is Authorize's lookup path.
    .addColumn("secret_hash", "text", (c) => c.notNull().unique())
    .addColumn("created_by", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("expires_at", "timestamptz")
    .addColumn("revoked_at", "timestamptz")
    .addColumn("last_used_at", "timestamptz")
    .execute();
  await db.schema.createIndex("tokens_tenant_id_idx").on("tokens").column("tenant_id").execute();

  // Audit trail; no foreign keys so that events outlive what they mention.
  await db.schema
    .createTable("token_events")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text")
    .addColumn("token_id", "text")
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("reason", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex("token_events_token_id_idx")
    .on("token_events")
    .columns(["token_id", "at"])
    .execute();
  await db.schema
    .createIndex("token_events_tenant_id_idx")
    .on("token_events")
    .columns(["tenant_id", "at"])
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("token_events").execute();
  await db.schema.dropTable("tokens").execute();
  await db.schema.dropTable("tenants").execute();
}
