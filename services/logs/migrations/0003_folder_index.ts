import type { Kysely } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function up(db: Kysely<any>): Promise<void> {
  // The folderIds filter keeps keyset order too, like a workflow or a level (0002).
  await db.schema
    .createIndex("logs_by_tenant_folder_started_at_idx")
    .on("execution_logs")
    .columns(["tenant_id", "folder_id", "started_at", "id"])
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: migrations are untyped by design
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("logs_by_tenant_folder_started_at_idx").execute();
}
