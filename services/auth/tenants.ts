import type { Kysely } from "kysely";
import { newId } from "../platform/ids.js";
import { type Database, insertTenant, type PlanName, type TenantRow } from "./store.js";

export async function createTenant(
  db: Kysely<Database>,
  input: { name: string; plan: PlanName },
): Promise<TenantRow> {
  return insertTenant(db, { id: newId("ws"), name: input.name, plan: input.plan });
}
