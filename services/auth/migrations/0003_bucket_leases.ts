import type { Kysely } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // How many tokens the last statement on the row handed out (a lease may take several at once).
  await db.schema
    .alterTable("rate_buckets")
    .addColumn("taken", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
}
