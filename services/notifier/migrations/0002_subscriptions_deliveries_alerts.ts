import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("subscriptions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("channel", "text", (c) => c.notNull())
    // Non-secret channel settings (webhook url, email recipients, standard-webhooks flag).
    .addColumn("channel_config", "jsonb", (c) => c.notNull())
    // AES-256-GCM box of the channel's secret (webhook secret or Slack URL); null when none.
    .addColumn("secret_box", "text")
    .addColumn("all_workflows", "boolean", (c) => c.notNull())
    .addColumn("workflow_ids", sql`text[]`, (c) => c.notNull())
    .addColumn("level_filter", sql`text[]`, (c) => c.notNull())
    .addColumn("trigger_filter", sql`text[]`, (c) => c.notNull())
    .addColumn("include_final_output", "boolean", (c) => c.notNull())
    .addColumn("include_trace_spans", "boolean", (c) => c.notNull())
    .addColumn("include_rate_limits", "boolean", (c) => c.notNull())
    .addColumn("include_usage_data", "boolean", (c) => c.notNull())
    .addColumn("enabled", "boolean", (c) => c.notNull())
    .addColumn("alert_rule", "jsonb")
    .addColumn("disabled_reason", "text", (c) => c.notNull().defaultTo(""))
    // Since when every finished delivery failed; cleared by a success (24 h → disabled).
    .addColumn("failing_since", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("subscriptions_tenant")
    .on("subscriptions")
    .columns(["tenant_id", "id"])
    .execute();

  await db.schema
    .createTable("deliveries")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("subscription_id", "text", (c) =>
      c.notNull().references("subscriptions.id").onDelete("cascade"),
    )
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("event_type", "text", (c) => c.notNull())
    // What the delivery is for: an execution id, "alert:<rule>:<workflow>:<ms>", or "test:<id>".
    .addColumn("dedupe_key", "text", (c) => c.notNull())
    .addColumn("execution_id", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("workflow_id", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("channel", "text", (c) => c.notNull())
    // The compact JSON body, fixed at creation: every attempt sends (and signs) these exact bytes.
    .addColumn("payload", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("round", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("attempt_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("next_attempt_at", "timestamptz")
    .addColumn("locked_until", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .addUniqueConstraint("deliveries_subscription_dedupe", ["subscription_id", "dedupe_key"])
    .execute();
  await db.schema
    .createIndex("deliveries_subscription_recent")
    .on("deliveries")
    .columns(["subscription_id", "id"])
    .execute();
  await db.schema.createIndex("deliveries_execution").on("deliveries").column("execution_id").execute();

  await db.schema
    .createTable("delivery_attempts")
    .addColumn("delivery_id", "text", (c) => c.notNull().references("deliveries.id").onDelete("cascade"))
    .addColumn("round", "integer", (c) => c.notNull())
    .addColumn("number", "integer", (c) => c.notNull())
    .addColumn("at", "timestamptz", (c) => c.notNull())
    .addColumn("status_code", "integer", (c) => c.notNull())
    .addColumn("latency_ms", "integer", (c) => c.notNull())
    .addColumn("response_snippet", "text", (c) => c.notNull())
    .addColumn("error", "text", (c) => c.notNull())
    .addPrimaryKeyConstraint("delivery_attempts_pkey", ["delivery_id", "round", "number"])
    .execute();

  // Recent executions per workflow, the window the alert rules read.
  await db.schema
    .createTable("execution_window")
    .addColumn("execution_id", "text", (c) => c.primaryKey())
    .addColumn("tenant_id", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("finished_at", "timestamptz", (c) => c.notNull())
    .addColumn("duration_ms", "bigint", (c) => c.notNull())
    .addColumn("cost", sql`double precision`, (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("execution_window_workflow")
    .on("execution_window")
    .columns(["tenant_id", "workflow_id", "finished_at"])
    .execute();

  await db.schema.alterTable("execution_stats").addColumn("first_execution_at", "timestamptz").execute();
  await sql`update execution_stats set first_execution_at = last_execution_at`.execute(db);

  // Last time each (subscription, rule, workflow) alert fired: the cooldown is claimed on this row.
  await db.schema
    .createTable("alert_cooldowns")
    .addColumn("subscription_id", "text", (c) =>
      c.notNull().references("subscriptions.id").onDelete("cascade"),
    )
    .addColumn("rule_type", "text", (c) => c.notNull())
    .addColumn("workflow_id", "text", (c) => c.notNull())
    .addColumn("fired_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("alert_cooldowns_pkey", ["subscription_id", "rule_type", "workflow_id"])
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("alert_cooldowns").execute();
  await db.schema.alterTable("execution_stats").dropColumn("first_execution_at").execute();
  await db.schema.dropTable("execution_window").execute();
  await db.schema.dropTable("delivery_attempts").execute();
  await db.schema.dropTable("deliveries").execute();
  await db.schema.dropTable("subscriptions").execute();
}
