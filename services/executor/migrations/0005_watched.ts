import type { Kysely } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // Set by a WatchExecution of a run not yet claimed (or left by a stopped worker): the worker that
  // claims it reads it in the claim and publishes the run's live events (see LiveEvents).
  await db.schema
    .alterTable("executions")
    .addColumn("watched", "boolean", (c) => c.notNull().defaultTo(false))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("executions").dropColumn("watched").execute();
}
