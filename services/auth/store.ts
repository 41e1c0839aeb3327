import { type Generated, type Insertable, type Kysely, type Selectable, sql } from "kysely";

export type PlanName = "free" | "pro" | "team" | "enterprise";
export type TokenKindName = "admin" | "app";
export type TokenEventName =
  | "created"
  | "rotated"
  | "revoked"
  | "expired"
  | "grace_ended"
  | "refused_unauthenticated"
  | "refused_permission";

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
  rate_limit_per_minute: number | null;
  expiry_warning_days: number | null;
  expiry_warning_sent_at: Date | null;
  expiry_recorded_at: Date | null;
  rotated_at: Date | null;
  previous_secret_hash: string | null;
  previous_secret_expires_at: Date | null;
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

export interface RateBucketsTable {
  key: string;
  tokens: number;
  updated_at: Date;
  granted: boolean;
  /** Tokens the last lease on the row took. */
  taken: number;
}

export interface UsagePeriodsTable {
  tenant_id: string;
  /** First instant of the calendar month (UTC). */
  period_start: Date;
  /** USD. */
  cost: number;
  executions: number;
}

export interface UsageExecutionsTable {
  execution_id: string;
  tenant_id: string;
  period_start: Date;
  cost: number;
  counted_at: Generated<Date>;
}

export interface Database {
  tenants: TenantsTable;
  tokens: TokensTable;
  token_events: TokenEventsTable;
  rate_buckets: RateBucketsTable;
  usage_periods: UsagePeriodsTable;
  usage_executions: UsageExecutionsTable;
}

export type TenantRow = Selectable<TenantsTable>;
export type TokenRow = Selectable<TokensTable>;
export type NewTokenRow = Insertable<TokensTable>;
export type NewTokenEventRow = Insertable<TokenEventsTable>;
export type TokenEventRow = Selectable<TokenEventsTable>;
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

/** Authorize's lookup: the token by its current or previous (rotation grace) hash, with the plan. */
export async function findTokenByHash(
  db: Kysely<Database>,
  secretHash: string,
): Promise<TokenWithPlan | undefined> {
  return db
    .selectFrom("tokens")
    .innerJoin("tenants", "tenants.id", "tokens.tenant_id")
    .selectAll("tokens")
    .select("tenants.plan")
    .where((eb) =>
      eb.or([eb("tokens.secret_hash", "=", secretHash), eb("tokens.previous_secret_hash", "=", secretHash)]),
    )
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

/** One completion's cost, counted in the billing period starting at `periodStart`. */
export interface ExecutionCost {
  executionId: string;
  tenantId: string;
  periodStart: Date;
  costUsd: number;
}

/**
 * Adds the costs of executions not counted before to their periods, in ONE statement (atomic
 * without a transaction, one round trip for a whole batch of completions): the markers inserted
 * now are exactly the executions summed now, so a redelivered completion adds nothing. Returns how
 * many were counted.
 */
export async function recordExecutionCosts(db: Kysely<Database>, costs: ExecutionCost[]): Promise<number> {
  if (costs.length === 0) return 0;
  const { rows } = await sql<{ counted: number }>`
    with input as (
      select distinct on (execution_id) execution_id, tenant_id, period_start, cost
      from unnest(
        ${costs.map((c) => c.executionId)}::text[],
        ${costs.map((c) => c.tenantId)}::text[],
        ${costs.map((c) => c.periodStart.toISOString())}::timestamptz[],
        ${costs.map((c) => String(c.costUsd))}::numeric[]
      ) as i(execution_id, tenant_id, period_start, cost)
      order by execution_id
    ), counted as (
      insert into usage_executions (execution_id, tenant_id, period_start, cost)
      select execution_id, tenant_id, period_start, cost from input
      on conflict (execution_id) do nothing
      returning tenant_id, period_start, cost
    ), summed as (
      insert into usage_periods as p (tenant_id, period_start, cost, executions)
      select tenant_id, period_start, sum(cost), count(*) from counted group by tenant_id, period_start
      order by tenant_id, period_start
      on conflict (tenant_id, period_start) do update set
        cost = p.cost + excluded.cost,
        executions = p.executions + excluded.executions
      returning executions
    )
    select (select count(*) from counted)::int as counted`.execute(db);
  return rows[0]?.counted ?? 0;
}
