/**
 * The gateway's authorization cache (issue 3, DESIGN §5): a key that keeps calling is authorized in
 * this process, without an RPC per request, while every guarantee of the plain path holds.
 *
 * - One entry per (key, action, resource, bucket) holds the principal and the limits the auth
 *   service last answered, plus rate-limit tokens it granted in advance (an Authorize lease). A
 *   request with an entry and a token spends the token in memory.
 * - A lease is sized like services/auth/leases.ts: the callers waiting now, or a quarter second of
 *   this gateway's recent rate for the entry (the auth service caps it at the bucket's burst). A
 *   quiet key leases one token at a time, which is the plain one-RPC-per-request path. A busy entry
 *   is refilled in the background before it runs dry, and callers that find none wait on the one
 *   fetch in flight.
 * - A grant is used for at most its grant_valid_ms (≤ GATEWAY_AUTH_CACHE_TTL_MS from when auth read
 *   the key, never past its expiry or rotation grace end); tokens not spent by then go back to the
 *   shared buckets (ReturnTokens) before the entry leases again, so a quiet key is never charged
 *   more than it used.
 * - A revocation or rotation event (NATS) drops the token's entries at once; an answer that was in
 *   flight across the event is used for its own request only. The TTL bounds staleness when NATS is
 *   unreachable.
 * - Refusals are never cached: a failed fetch is thrown to the caller that made it, and callers
 *   that were waiting on it make their own plain call, so 401/403/429/400/503 answers (and the
 *   auth service's refusal audit) are exactly those of the plain path. includeLimits requests always
 *   take the plain path.
 */
import { performance } from "node:perf_hooks";
import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { NatsConnection, Subscription } from "nats";
import {
  type AuthorizeRequestSchema,
  type AuthorizeResponse,
  ExecutionBucket,
} from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { TokenRevokedSchema } from "../services/platform/gen/flowplane/events/v1/token_pb.js";
import type { Logger } from "../services/platform/log.js";
import { connectNats, type NatsNames } from "../services/platform/nats.js";
import type { GatewayClients } from "./clients.js";

type AuthClient = GatewayClients["auth"];
type AuthorizeInit = MessageInitShape<typeof AuthorizeRequestSchema>;

/** Refusals that say the key may no longer be used as cached. */
const KEY_REFUSALS = new Set([Code.Unauthenticated, Code.PermissionDenied, Code.FailedPrecondition]);
/** A lease covers this much of the entry's recent rate, s (as services/auth/leases.ts). */
const LEASE_WINDOW_S = 0.25;
const RATE_WINDOW_MS = 1_000;
const DEFAULT_MAX_ENTRIES = 10_000;

interface Entry {
  key: string;
  apiKey: string;
  action: string;
  resourceId: string;
  bucket: ExecutionBucket;
  /** The last answer of the auth service for this entry; undefined when no grant is usable. */
  answer: AuthorizeResponse | undefined;
  tenantId: string;
  tokenId: string;
  /** Tokens granted and not spent yet. */
  tokens: number;
  /** Until when (performance.now()) the grant and the principal may be used. */
  until: number;
  fetching: Promise<unknown> | undefined;
  /** Tokens being given back; a new lease waits for them to be in the bucket. */
  retiring: Promise<void> | undefined;
  /** Dropped by a revocation: never used again. */
  dead: boolean;
  /** Callers inside authorize() without a token yet. */
  demand: number;
  windowStart: number;
  count: number;
  previousCount: number;
}

export interface AuthCacheOptions {
  /** How long a grant may be used, ms (GATEWAY_AUTH_CACHE_TTL_MS); 0 turns the cache off. */
  ttlMs: number;
  log: Logger;
  maxEntries?: number;
}

export class AuthCache {
  private readonly entries = new Map<string, Entry>();
  /** Token id → when (performance.now()) its entries were last dropped by an event. */
  private readonly purged = new Map<string, number>();
  private purgedAllAt = -1;
  private returning = 0;
  /** Calls answered from memory, and calls that waited for an Authorize RPC (their own or one in flight). */
  readonly stats = { fromMemory: 0, waited: 0 };
  private client: AuthClient | undefined;
  private readonly sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: AuthCacheOptions) {
    if (opts.ttlMs > 0) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(20, Math.min(250, opts.ttlMs / 4)));
      this.sweeper.unref();
    }
  }

  get enabled(): boolean {
    return this.opts.ttlMs > 0;
  }

  /** The auth client the routes use: Authorize goes through this cache, everything else as is. */
  wrap(client: AuthClient): AuthClient {
    this.client = client;
    if (!this.enabled) return client;
    return { ...client, authorize: (req: AuthorizeInit) => this.authorize(req) } as AuthClient;
  }

  private rpc(): AuthClient {
    if (!this.client) throw new Error("AuthCache used before wrap()");
    return this.client;
  }

  async authorize(req: AuthorizeInit): Promise<AuthorizeResponse> {
    const apiKey = req.apiKey ?? "";
    const action = req.action ?? "";
    const resourceId = req.resourceId ?? "";
    const bucket = req.bucket ?? ExecutionBucket.UNSPECIFIED;
    if (this.closed || req.includeLimits || !this.enabled || apiKey === "") return this.rpc().authorize(req);
    const key = `${apiKey}\u0000${action}\u0000${resourceId}\u0000${bucket}`;
    let entry = this.entries.get(key);
    if (!entry) {
      if (this.entries.size >= (this.opts.maxEntries ?? DEFAULT_MAX_ENTRIES))
        return this.rpc().authorize(req);
      entry = {
        key,
        apiKey,
        action,
        resourceId,
        bucket,
        answer: undefined,
        tenantId: "",
        tokenId: "",
        tokens: 0,
        until: 0,
        fetching: undefined,
        retiring: undefined,
        dead: false,
        demand: 0,
        windowStart: performance.now(),
        count: 0,
        previousCount: 0,
      };
      this.entries.set(key, entry);
    }
    entry.demand++;
    try {
      let waitedOnFailure = false;
      let waited = false;
      for (;;) {
        if (entry.dead) {
          this.stats.waited++;
          return this.rpc().authorize(req);
        }
        const now = performance.now();
        if (entry.answer && entry.tokens >= 1 && now < entry.until) {
          entry.tokens--;
          this.count(entry, now);
          this.maybeRefill(entry, now);
          if (waited) this.stats.waited++;
          else this.stats.fromMemory++;
          return this.answerOf(entry);
        }
        if (entry.fetching) {
          waited = true;
          const failed = await entry.fetching;
          if (failed) waitedOnFailure = true;
          continue;
        }
        // The fetch we waited on was refused or failed: our own plain call, refused as before.
        if (waitedOnFailure) {
          this.stats.waited++;
          return this.rpc().authorize(req);
        }
        if (entry.answer && now >= entry.until) this.retire(entry);
        if (entry.retiring) {
          await entry.retiring;
          continue;
        }
        this.stats.waited++;
        return await this.fetchFor(entry, now);
      }
    } finally {
      entry.demand--;
    }
  }

  /** A lease fetched for a caller: it takes one token of the grant, the rest stay in the entry. */
  private async fetchFor(entry: Entry, now: number): Promise<AuthorizeResponse> {
    let result: { res?: AuthorizeResponse; err?: unknown } = {};
    const fetch = this.fetch(entry, now, Math.max(entry.demand, this.recentWanted(entry, now)), true).then(
      (r) => {
        result = r;
        return r.err !== undefined;
      },
    );
    entry.fetching = fetch;
    try {
      await fetch;
    } finally {
      if (entry.fetching === fetch) entry.fetching = undefined;
    }
    if (result.err !== undefined) throw result.err;
    this.count(entry, performance.now());
    return this.answerOf(entry, result.res);
  }

  /**
   * One Authorize call with a lease of `wanted`. With `forCaller`, one granted token is the
   * caller's; the others (all of them for a background refill) go into the entry, unless the token
   * was revoked while the call was in flight.
   */
  private async fetch(
    entry: Entry,
    startedAt: number,
    wanted: number,
    forCaller: boolean,
  ): Promise<{ res?: AuthorizeResponse; err?: unknown }> {
    let res: AuthorizeResponse;
    try {
      res = await this.rpc().authorize({
        apiKey: entry.apiKey,
        action: entry.action,
        resourceId: entry.resourceId,
        bucket: entry.bucket,
        leaseTokens: Math.max(1, wanted),
        leaseTtlMs: this.opts.ttlMs,
      });
    } catch (err) {
      return { err };
    }
    const principal = res.principal;
    if (!principal) return { err: new Error("auth service answered Authorize without a principal") };
    const granted = Math.max(1, res.grantedTokens);
    const spare = forCaller ? granted - 1 : granted;
    const purgedAt = Math.max(this.purgedAllAt, this.purged.get(principal.tokenId) ?? -1);
    if (entry.dead || purgedAt >= startedAt || this.closed) {
      // Authorized before the revocation: good for its own request, not for later ones.
      if (spare > 0) this.giveBack(principal.tenantId, principal.tokenId, entry.bucket, spare);
      return { res };
    }
    entry.tenantId = principal.tenantId;
    entry.tokenId = principal.tokenId;
    if (res.grantValidMs > 0) {
      entry.answer = res;
      entry.tokens += spare;
      // Counted from when the call started: the answer's clock ran at auth, not here.
      entry.until = startedAt + res.grantValidMs;
    } else if (spare > 0) {
      // Nothing to keep (a one-token call): only possible as a background refill of a dying grant.
      this.giveBack(principal.tenantId, principal.tokenId, entry.bucket, spare);
    }
    return { res };
  }

  /** The cached answer with X-RateLimit-Remaining counting the tokens this gateway holds unspent. */
  private answerOf(entry: Entry, fresh?: AuthorizeResponse): AuthorizeResponse {
    const base = fresh ?? entry.answer;
    if (!base) throw new Error("no authorization answer");
    const api = base.limits?.api;
    if (!api || entry.tokens <= 0 || (fresh && entry.answer !== fresh)) return base;
    const remaining = Math.min(api.maxBurst, api.remaining + entry.tokens);
    return { ...base, limits: { ...base.limits!, api: { ...api, remaining } } };
  }

  /** Refill in the background before a busy entry runs dry or its grant runs out. */
  private maybeRefill(entry: Entry, now: number): void {
    if (entry.fetching || entry.dead) return;
    const wanted = this.recentWanted(entry, now);
    if (wanted < 2) return;
    // A quarter second of traffic left: enough to cover a slow refill on a loaded machine.
    const low = entry.tokens <= wanted;
    const ending = entry.until - now < this.opts.ttlMs / 4;
    if (!low && !ending) return;
    const fetch = this.fetch(entry, now, wanted, false).then((r) => {
      if (r.err !== undefined) {
        if (r.err instanceof ConnectError && KEY_REFUSALS.has(r.err.code)) {
          // The key itself is refused now (revoked, rotated, expired, out of credits): stop using it.
          entry.dead = true;
          if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
          this.retire(entry);
        }
        // Else (429, 503) the tokens in hand stay usable; the next caller without one calls itself.
      }
      // Waiters never treat a background failure as theirs: they make their own call.
      return false;
    });
    entry.fetching = fetch;
    fetch.finally(() => {
      if (entry.fetching === fetch) entry.fetching = undefined;
    });
  }

  /**
   * A quarter second of the entry's rate: over the last full window, or the current one's count so
   * far when that is more (a key that just got busy leases more without waiting a whole window).
   */
  private recentWanted(entry: Entry, now: number): number {
    this.roll(entry, now);
    const perWindow = Math.max(entry.previousCount, entry.count);
    return Math.ceil(((perWindow * 1000) / RATE_WINDOW_MS) * LEASE_WINDOW_S);
  }

  private count(entry: Entry, now: number): void {
    this.roll(entry, now);
    entry.count++;
  }

  private roll(entry: Entry, now: number): void {
    if (now - entry.windowStart < RATE_WINDOW_MS) return;
    entry.previousCount = now - entry.windowStart < 2 * RATE_WINDOW_MS ? entry.count : 0;
    entry.count = 0;
    entry.windowStart = now;
  }

  /** Ends an entry's grant: its unspent tokens go back to the shared buckets. */
  private retire(entry: Entry): void {
    const unused = entry.tokens;
    entry.tokens = 0;
    entry.answer = undefined;
    entry.until = 0;
    if (unused <= 0 || entry.tokenId === "") return;
    const back = this.giveBack(entry.tenantId, entry.tokenId, entry.bucket, unused);
    entry.retiring = back;
    back.finally(() => {
      if (entry.retiring === back) entry.retiring = undefined;
    });
  }

  private giveBack(
    tenantId: string,
    tokenId: string,
    bucket: ExecutionBucket,
    tokens: number,
  ): Promise<void> {
    this.returning++;
    return this.rpc()
      .returnTokens({ tenantId, tokenId, bucket, tokens })
      .then(
        () => undefined,
        (err: unknown) => this.opts.log.warn({ err, tokenId, tokens }, "could not give back leased tokens"),
      )
      .finally(() => {
        this.returning--;
      });
  }

  /** Expired grants give their tokens back; idle entries are forgotten. */
  private sweep(): void {
    const now = performance.now();
    for (const entry of this.entries.values()) {
      if (entry.fetching || entry.retiring) continue;
      if (entry.answer && now >= entry.until) this.retire(entry);
      this.roll(entry, now);
      if (!entry.answer && entry.demand === 0 && entry.count === 0 && entry.previousCount === 0) {
        this.entries.delete(entry.key);
      }
    }
    for (const [tokenId, at] of this.purged)
      if (now - at > 2 * this.opts.ttlMs + 60_000) this.purged.delete(tokenId);
  }

  /** A token was revoked or rotated: its entries are dropped at once (unspent tokens go back). */
  forgetToken(tokenId: string): void {
    this.purged.set(tokenId, performance.now());
    for (const entry of this.entries.values()) {
      if (entry.tokenId !== tokenId) continue;
      entry.dead = true;
      this.entries.delete(entry.key);
      this.retire(entry);
    }
  }

  /** Drops every entry (NATS reconnected: revocation events may have been missed). */
  forgetAll(): void {
    this.purgedAllAt = performance.now();
    for (const entry of this.entries.values()) {
      entry.dead = true;
      this.retire(entry);
    }
    this.entries.clear();
  }

  /** Shutdown: no more caching, every unspent token goes back. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    const returns: Promise<void>[] = [];
    for (const entry of this.entries.values()) {
      entry.dead = true;
      this.retire(entry);
      if (entry.retiring) returns.push(entry.retiring);
    }
    this.entries.clear();
    await Promise.all(returns);
  }

  /** Entries held now (tests, metrics). */
  get size(): number {
    return this.entries.size;
  }

  /** Tokens granted to this gateway and not spent yet, and ReturnTokens calls in flight. */
  get held(): { tokens: number; returning: number } {
    let tokens = 0;
    for (const entry of this.entries.values()) tokens += entry.tokens;
    return { tokens, returning: this.returning };
  }
}

export interface RevocationFeed {
  /** Settles once the subscription is in place on the NATS server (the first time). */
  ready: Promise<void>;
  close(): Promise<void>;
}

/**
 * Subscribes the cache to the auth service's revocation/rotation events on NATS. NATS being down
 * never fails a request: the feed retries in the background, logs a warning, and the cache's TTL
 * bounds staleness meanwhile; after a reconnect every entry is dropped (events may have been missed).
 */
export function startRevocationFeed(opts: {
  cache: AuthCache;
  natsUrl: string;
  names: Pick<NatsNames, "tokenRevoked">;
  log: Logger;
  retryMs?: number;
}): RevocationFeed {
  const { cache, log } = opts;
  let nc: NatsConnection | undefined;
  let sub: Subscription | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  let markReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });

  const attach = (conn: NatsConnection) => {
    sub = conn.subscribe(opts.names.tokenRevoked, {
      callback(err, msg) {
        if (err) return;
        try {
          cache.forgetToken(fromBinary(TokenRevokedSchema, msg.data).tokenId);
        } catch (decodeErr) {
          log.warn({ err: decodeErr }, "undecodable token revocation");
        }
      },
    });
    conn.flush().then(markReady, () => undefined);
    void (async () => {
      for await (const status of conn.status()) {
        if (status.type === "disconnect") {
          log.warn("NATS disconnected: revocations reach this gateway only through the cache TTL");
        } else if (status.type === "reconnect") {
          cache.forgetAll();
          log.info("NATS reconnected: authorization cache dropped");
        }
      }
    })();
  };

  const connect = () => {
    if (stopped) return;
    connectNats(opts.natsUrl, "gateway").then(
      (conn) => {
        if (stopped) {
          void conn.close();
          return;
        }
        nc = conn;
        // Entries made while no event could arrive are not trusted past this point.
        cache.forgetAll();
        attach(conn);
      },
      (err: unknown) => {
        log.warn({ err }, "cannot reach NATS: revocations reach this gateway only through the cache TTL");
        retry = setTimeout(connect, opts.retryMs ?? 2_000);
        retry.unref();
      },
    );
  };
  connect();

  return {
    ready,
    async close() {
      stopped = true;
      clearTimeout(retry);
      sub?.unsubscribe();
      await nc?.drain().catch(() => undefined);
    },
  };
}
