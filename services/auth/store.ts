import type { Generated, Insertable, Kysely, Selectable } from "kysely";

export type PlanName = "free" | "pro" | "team" | "enterprise";
export type TokenKindName = "admin" | "app";
export type TokenEventName = "created" | "refused_unauthenticated" | "refused_permission";

export interface TenantsTable {
  id: string;
  name: string;
  plan: PlanName;
  created_at: Generated<Date>;
}

export interface TokensTable {
  id: string;
  tenant_id: string;
  kind: TokenKindName;
  name: string;
  purpose: string;
  scopes: string[];
  workflow_ids: string[];
  prefix: string;
  secret_hash: string;
  /** A token id, or "operator". */
  created_by: string;
  created_at: Generated<Date>;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

export interface TokenEventsTable {
  id: string;
  tenant_id: string | null;
  token_id: string | null;
  actor: string;
  event: TokenEventName;
  reason: string;
  at: Generated<Date>;
}

export interface Database {
  tenants: TenantsTable;
  tokens: TokensTable;
  token_events: TokenEventsTable;
}

export type TenantRow = Selectable<TenantsTable>;
export type TokenRow = Selectable<TokensTable>;
export type NewTokenRow = Insertable<TokensTable>;
export type NewTokenEventRow = Insertable<TokenEventsTable>;
export type TokenWithPlan = TokenRow & { plan: PlanName };

export async function insertTenant(
  db: Kysely<Database>,
  tenant: Insertable<TenantsTable>,
): Promise<TenantRow> {
  return db.insertInto("tenants").values(tenant).returningAll().executeTakeFirstOrThrow();
}

export async function findTenant(db: Kysely<Database>, id: string): Promise<TenantRow | undefined> {
  return db.selectFrom("tenants").selectAll().where("id", "=", id).executeTakeFirst();
}

/** Authorize's only query: the token by its unique hash, with its tenant's plan. */
export async function findTokenByHash(
  db: Kysely<Database>,
  secretHash: string,
): Promise<TokenWithPlan | undefined> {
  return db
    .selectFrom("tokens")
    .innerJoin("tenants", "tenants.id", "tokens.tenant_id")
    .selectAll("tokens")
    .select("tenants.plan")
    .where("tokens.secret_hash", "=", secretHash)
    .executeTakeFirst();
}

export async function findToken(db: Kysely<Database>, id: string): Promise<TokenRow | undefined> {
  return db.selectFrom("tokens").selectAll().where("id", "=", id).executeTakeFirst();
}

/** The token and its `created` audit event commit together. */
export async function insertTokenWithEvent(
  db: Kysely<Database>,
  token: NewTokenRow,
  event: NewTokenEventRow,
): Promise<TokenRow> {
  return db.transaction().execute(async (trx) => {
    const row = await trx.insertInto("tokens").values(token).returningAll().executeTakeFirstOrThrow();
    await trx.insertInto("token_events").values(event).execute();
    return row;
  });
}

export async function insertTokenEvent(db: Kysely<Database>, event: NewTokenEventRow): Promise<void> {
  await db.insertInto("token_events").values(event).execute();
}

/** Moves last_used_at forward only, so a late write never rewinds it. */
export async function markTokenUsed(db: Kysely<Database>, tokenId: string, at: Date): Promise<void> {
  await db
    .updateTable("tokens")
    .set({ last_used_at: at })
    .where("id", "=", tokenId)
    .where((eb) => eb.or([eb("last_used_at", "is", null), eb("last_used_at", "<", at)]))
    .execute();
}
