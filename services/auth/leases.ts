/**
 * Rate-limit buckets consumed through leases. PostgreSQL stays the one owner of every bucket (all
 * replicas share its rows), but a replica takes the tokens it is about to need in one statement and
 * hands them out from memory, so a busy bucket costs one round trip per lease instead of one per
 * request:
 *
 * - A lease takes min(wanted, whole tokens in the bucket) atomically (`leaseTokens`), so the
 *   replicas together never grant more than the bucket holds.
 * - `wanted` is what callers are waiting for right now, or a quarter second of this replica's recent
 *   rate for the key, whichever is more (at most the burst). A quiet key leases one token at a time:
 *   exactly the old one-statement-per-request behaviour.
 * - Tokens not handed out within LEASE_TTL_MS are given back to the row (refilled, capped at the
 *   burst), so a replica holds back at most a fraction of a second of its own traffic from others.
 * - A caller that finds no token here waits for the lease in flight; if that lease leaves the bucket
 *   empty it is refused with the bucket's state (retry time), never queued further.
 * - Storage failures propagate (the caller fails closed); tokens already leased are dropped with the
 *   lease, so at most one lease's worth is granted after the database goes away.
 */
import type { Kysely } from "kysely";
import type { Logger } from "../platform/log.js";
import { type Consumption, leaseTokens, returnTokens } from "./buckets.js";
import type { BucketSpec } from "./plans.js";
import type { Database } from "./store.js";

const LEASE_TTL_MS = 1_000;
/** A lease covers this much of the key's recent rate, s. */
const LEASE_WINDOW_S = 0.25;
const RATE_WINDOW_MS = 1_000;

interface Lease {
  spec: BucketSpec;
  /** Whole tokens held by this replica. */
  tokens: number;
  /** The row's level right after the last lease, and when. */
  rowLevel: number;
  at: Date;
  /** The row had at least one more whole token after the last lease. */
  more: boolean;
  fetching: Promise<void> | undefined;
  /** Tokens wanted by the callers inside takeMany() without a grant yet. */
  demand: number;
  /** Grants in the current and previous rate windows. */
  windowStart: number;
  count: number;
  previousCount: number;
  expiry: NodeJS.Timeout | undefined;
}

export class BucketLeases {
  private readonly leases = new Map<string, Lease>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
  ) {}

  /** One token of `key`, granted or refused with the bucket's state (consumeToken's contract). */
  async take(key: string, spec: BucketSpec): Promise<Consumption> {
    const { taken: _, ...consumption } = await this.takeMany(key, spec, 1);
    return consumption;
  }

  /**
   * Up to `wanted` tokens of `key` (a caller's own lease, e.g. a gateway's cache): granted with at
   * least one, or refused with the bucket's state exactly as `take` refuses. Takes from this
   * replica's lease first; a lease fetched for it is sized for all the callers waiting.
   */
  async takeMany(key: string, spec: BucketSpec, wanted: number): Promise<Consumption & { taken: number }> {
    const want = Math.max(1, Math.min(Math.floor(wanted), Math.floor(spec.burst)));
    let lease = this.leases.get(key);
    if (!lease || lease.spec.perMinute !== spec.perMinute || lease.spec.burst !== spec.burst) {
      // A new key, or its plan changed: start from the row.
      if (lease) this.expire(key, lease);
      lease = {
        spec,
        tokens: 0,
        rowLevel: spec.burst,
        at: new Date(),
        more: true,
        fetching: undefined,
        demand: 0,
        windowStart: Date.now(),
        count: 0,
        previousCount: 0,
        expiry: undefined,
      };
      this.leases.set(key, lease);
    }
    lease.demand += want;
    try {
      let waited = false;
      for (;;) {
        // After a lease was fetched for us, whatever it brought is granted (at least one token).
        if (lease.tokens >= want || (waited && lease.tokens >= 1)) {
          const taken = Math.min(want, Math.floor(lease.tokens));
          lease.tokens -= taken;
          this.count(lease, taken);
          return {
            spec,
            level: Math.min(spec.burst, lease.rowLevel + lease.tokens),
            at: lease.at,
            granted: true,
            taken,
          };
        }
        if (lease.fetching) {
          await lease.fetching;
          waited = true;
          continue;
        }
        // The lease we waited for emptied the bucket: refuse now rather than queue.
        if (waited && !lease.more) {
          return { spec, level: lease.rowLevel, at: lease.at, granted: false, taken: 0 };
        }
        const fetch = this.fetch(key, lease);
        lease.fetching = fetch;
        try {
          await fetch;
        } finally {
          lease.fetching = undefined;
        }
        waited = true;
      }
    } finally {
      lease.demand -= want;
    }
  }

  /**
   * Tokens a caller took and did not use: into this replica's lease when it holds one for the same
   * bucket shape (it goes back to the row when the lease ends), else straight back to the row.
   */
  async giveBack(key: string, spec: BucketSpec, tokens: number): Promise<void> {
    if (tokens <= 0) return;
    const lease = this.leases.get(key);
    if (lease && lease.spec.perMinute === spec.perMinute && lease.spec.burst === spec.burst) {
      lease.tokens += tokens;
      if (!lease.expiry) this.arm(key, lease);
      return;
    }
    await returnTokens(this.db, key, spec, tokens);
  }

  private async fetch(key: string, lease: Lease): Promise<void> {
    const recent = Math.ceil(this.rate(lease) * LEASE_WINDOW_S);
    // Demand is counted in tokens; what this lease already holds covers part of it.
    const needed = lease.demand - Math.floor(lease.tokens);
    const wanted = Math.max(1, Math.min(Math.floor(lease.spec.burst), Math.max(needed, recent)));
    const got = await leaseTokens(this.db, key, lease.spec, wanted);
    lease.tokens += got.taken;
    lease.rowLevel = got.level;
    lease.at = got.at;
    lease.more = got.level >= 1 - 1e-9;
    if (!lease.expiry) this.arm(key, lease);
  }

  private arm(key: string, lease: Lease): void {
    lease.expiry = setTimeout(() => this.expire(key, lease), LEASE_TTL_MS);
    lease.expiry.unref();
  }

  /** Grants per second of this key in this replica, over the last full window. */
  private rate(lease: Lease): number {
    this.roll(lease);
    return (lease.previousCount * 1000) / RATE_WINDOW_MS;
  }

  private count(lease: Lease, tokens = 1): void {
    this.roll(lease);
    lease.count += tokens;
  }

  private roll(lease: Lease): void {
    const now = Date.now();
    if (now - lease.windowStart < RATE_WINDOW_MS) return;
    lease.previousCount = now - lease.windowStart < 2 * RATE_WINDOW_MS ? lease.count : 0;
    lease.count = 0;
    lease.windowStart = now;
  }

  /** Ends a lease: its unused tokens go back to the row. */
  private expire(key: string, lease: Lease): void {
    clearTimeout(lease.expiry);
    lease.expiry = undefined;
    const unused = lease.tokens;
    lease.tokens = 0;
    // Keep the entry (its rate) while the key is busy, looking again later; a quiet key is forgotten.
    this.roll(lease);
    if (lease.demand === 0 && lease.previousCount === 0 && lease.count === 0) {
      if (this.leases.get(key) === lease) this.leases.delete(key);
    } else if (this.leases.get(key) === lease) this.arm(key, lease);
    if (unused > 0) {
      returnTokens(this.db, key, lease.spec, unused).catch((err: unknown) => {
        this.log.warn({ err, key, unused }, "could not give back leased rate-limit tokens");
      });
    }
  }

  /** Gives every unused token back (shutdown). */
  async close(): Promise<void> {
    const returns: Promise<void>[] = [];
    for (const [key, lease] of this.leases) {
      clearTimeout(lease.expiry);
      if (lease.tokens > 0) {
        returns.push(
          returnTokens(this.db, key, lease.spec, lease.tokens).catch((err: unknown) => {
            this.log.warn({ err, key }, "could not give back leased rate-limit tokens");
          }),
        );
      }
      lease.tokens = 0;
    }
    this.leases.clear();
    await Promise.all(returns);
  }
}
