import type { Kysely } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // The W3C traceparent of the request that created the execution: the outbox sweeper republishes a
  // completion later, outside that request, and continues its trace with this.
  await db.schema.alterTable("executions").addColumn("traceparent", "text").execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("executions").dropColumn("traceparent").execute();
}
