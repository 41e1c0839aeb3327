import type { Kysely } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // The execution a key's request started: a retry that takes over the key after its holder's lease
  // ran out answers that execution when it finished, instead of running the workflow again.
  await db.schema.alterTable("idempotency_keys").addColumn("execution_id", "text").execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("idempotency_keys").dropColumn("execution_id").execute();
}
