import { type Kysely, sql } from "kysely";
import type { BucketSpec } from "./plans.js";
import type { Database } from "./store.js";

/** A bucket as it stands at `at` (the database's clock). */
export interface BucketState {
  spec: BucketSpec;
  /** Tokens available, fractional (the refill is continuous). */
  level: number;
  at: Date;
}

export interface Consumption extends BucketState {
  granted: boolean;
}

/**
 * Refill and consumption in ONE statement, so replicas sharing the database never over-grant: the
 * row lock of ON CONFLICT DO UPDATE serialises concurrent consumers of a bucket, each sees the
 * previous one's result. A bucket that does not exist yet starts full. now() is the statement's
 * start; a consumer that waited for the lock may see an earlier now() than the row's updated_at,
 * hence greatest(): no negative refill and updated_at never goes back.
 */
export async function consumeToken(
  db: Kysely<Database>,
  key: string,
  spec: BucketSpec,
): Promise<Consumption> {
  const perSecond = spec.perMinute / 60;
  const level = sql<number>`least(${spec.burst}::float8, b.tokens + greatest(0, extract(epoch from now() - b.updated_at)::float8) * ${perSecond}::float8)`;
  // Asynchronous commit, for this statement only: the row lock is released without waiting for the
  // WAL flush, so concurrent consumers of a hot bucket queue for far less. Other replicas still see
  // the new level at once (visibility is unchanged); a database crash may forget the last fraction
  // of a second of consumption, i.e. grant a few extra tokens once, which a rate limit can afford.
  const { rows } = await sql<{ tokens: number; updated_at: Date; granted: boolean }>`
    insert into rate_buckets as b (key, tokens, updated_at, granted)
    select ${key}, ${spec.burst - 1}::float8, now(), true
    from (select set_config('synchronous_commit', 'off', true)) as async_commit
    on conflict (key) do update set
      tokens = case when ${level} >= 1 then ${level} - 1 else ${level} end,
      granted = ${level} >= 1,
      updated_at = greatest(b.updated_at, now())
    returning tokens, updated_at, granted`.execute(db);
  const row = rows[0]!;
  return { spec, level: row.tokens, at: row.updated_at, granted: row.granted };
}

/**
 * consumeToken for up to `wanted` tokens at once (a lease): takes min(wanted, whole tokens there)
 * in the same single locked statement, so replicas never over-grant between them either.
 */
export async function leaseTokens(
  db: Kysely<Database>,
  key: string,
  spec: BucketSpec,
  wanted: number,
): Promise<BucketState & { taken: number }> {
  const perSecond = spec.perMinute / 60;
  const level = sql<number>`least(${spec.burst}::float8, b.tokens + greatest(0, extract(epoch from now() - b.updated_at)::float8) * ${perSecond}::float8)`;
  const first = Math.min(wanted, Math.floor(spec.burst));
  // Whole tokens only; the epsilon keeps float noise (0.9999999 after refills) from hiding one.
  const take = sql<number>`least(${wanted}::int, floor(${level} + 1e-9)::int)`;
  const { rows } = await sql<{ tokens: number; updated_at: Date; taken: number }>`
    insert into rate_buckets as b (key, tokens, updated_at, granted, taken)
    select ${key}, ${spec.burst - first}::float8, now(), ${first > 0}, ${first}::int
    from (select set_config('synchronous_commit', 'off', true)) as async_commit
    on conflict (key) do update set
      tokens = ${level} - ${take},
      taken = ${take},
      granted = ${take} > 0,
      updated_at = greatest(b.updated_at, now())
    returning tokens, updated_at, taken`.execute(db);
  const row = rows[0]!;
  return { spec, level: row.tokens, at: row.updated_at, taken: row.taken };
}

/** Gives back tokens a lease did not use (refilled first, capped at the burst). */
export async function returnTokens(
  db: Kysely<Database>,
  key: string,
  spec: BucketSpec,
  tokens: number,
): Promise<void> {
  const perSecond = spec.perMinute / 60;
  await sql`
    update rate_buckets as b set
      tokens = least(${spec.burst}::float8, b.tokens + greatest(0, extract(epoch from now() - b.updated_at)::float8) * ${perSecond}::float8 + ${tokens}::float8),
      updated_at = greatest(b.updated_at, now())
    from (select set_config('synchronous_commit', 'off', true)) as async_commit
    where b.key = ${key}`.execute(db);
}

/** The buckets' states now, without consuming; a bucket never used is full. */
export async function peekBuckets(
  db: Kysely<Database>,
  buckets: { key: string; spec: BucketSpec }[],
): Promise<BucketState[]> {
  const keys = buckets.map((b) => b.key);
  const { rows } = await sql<{
    key: string | null;
    tokens: number | null;
    updated_at: Date | null;
    now: Date;
  }>`
    select b.key, b.tokens, b.updated_at, now() as now
    from (select 1) as one left join rate_buckets b on b.key = any(${keys}::text[])`.execute(db);
  const now = rows[0]!.now;
  return buckets.map(({ key, spec }) => {
    const row = rows.find((r) => r.key === key);
    if (!row || row.tokens === null || row.updated_at === null) return { spec, level: spec.burst, at: now };
    const elapsedSeconds = Math.max(0, (now.getTime() - row.updated_at.getTime()) / 1000);
    return {
      spec,
      level: Math.min(spec.burst, row.tokens + (elapsedSeconds * spec.perMinute) / 60),
      at: now,
    };
  });
}

// Float noise (0.9999999 after refills) must not hide a whole token.
const EPSILON = 1e-9;

export function remainingOf(state: BucketState): number {
  return Math.max(0, Math.floor(state.level + EPSILON));
}

/** When the next whole token is added; `at` itself when the bucket is full. */
export function resetAtOf(state: BucketState): Date {
  if (state.level + EPSILON >= state.spec.burst) return state.at;
  const missing = Math.floor(state.level + EPSILON) + 1 - state.level;
  return new Date(state.at.getTime() + Math.ceil((missing * 60_000) / state.spec.perMinute));
}

/** When one token will be available (for Retry-After); `at` when one already is. */
export function retryAtOf(state: BucketState): Date {
  if (state.level + EPSILON >= 1) return state.at;
  return new Date(state.at.getTime() + Math.ceil(((1 - state.level) * 60_000) / state.spec.perMinute));
}
