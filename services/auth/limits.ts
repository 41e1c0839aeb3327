import type { Kysely } from "kysely";
import { FailedPreconditionError, ResourceExhaustedError, UnavailableError } from "../platform/errors.js";
import type { Logger } from "../platform/log.js";
import { type BucketState, type Consumption, peekBuckets, remainingOf, retryAtOf } from "./buckets.js";
import { BucketLeases } from "./leases.js";
import type { BucketSpec, PlanLimits, PlanTable } from "./plans.js";
import type { Database, PlanName } from "./store.js";
import { type PeriodUsage, usageOf } from "./usage.js";

export type ExecutionBucketName = "sync" | "async";
/** Which bucket refused: the tenant's API calls, the token's own limit, or an execution bucket. */
export type RefusingBucket = "api" | "token" | ExecutionBucketName;

export interface UsageState extends PeriodUsage {
  limitUsd: number;
  plan: PlanName;
  isExceeded: boolean;
}

export interface LimitsState {
  /** The API-call bucket shown in X-RateLimit-*: the narrower of the tenant's and the token's. */
  api: BucketState;
  sync?: BucketState;
  async?: BucketState;
  usage?: UsageState;
  /** Tokens taken from each consumed bucket (1 unless a lease asked for more). */
  granted?: number;
}

/** An empty bucket; the handler turns it into RESOURCE_EXHAUSTED with a RateLimitExceeded detail. */
export class RateLimitedError extends ResourceExhaustedError {
  constructor(
    readonly bucket: RefusingBucket,
    readonly state: BucketState,
    readonly api: BucketState,
  ) {
    super(
      bucket === "api" || bucket === "token"
        ? "rate limit exceeded"
        : `workflow execution rate limit exceeded (${bucket})`,
    );
  }

  get retryAt(): Date {
    return retryAtOf(this.state);
  }
}

export interface RequestIdentity {
  tenantId: string;
  tokenId: string;
  plan: PlanName;
  /** The token's own, narrower API-call limit. */
  tokenRateLimitPerMinute: number | null;
}

const bucketKey = {
  api: (tenantId: string) => `api:${tenantId}`,
  token: (tokenId: string) => `token:${tokenId}`,
  sync: (tenantId: string) => `sync:${tenantId}`,
  async: (tenantId: string) => `async:${tenantId}`,
};

function tokenSpec(perMinute: number): BucketSpec {
  return { perMinute, burst: perMinute };
}

/** Of two API buckets, the one a client hits first: fewer whole tokens left. */
function narrower(a: BucketState, b: BucketState | undefined): BucketState {
  if (!b) return a;
  return remainingOf(b) < remainingOf(a) ? b : a;
}

/**
 * Plan rate limits (token buckets in PostgreSQL) and billing-period usage. The buckets fail closed:
 * if their storage cannot be reached the request is refused as UNAVAILABLE, never let through.
 */
export class RateLimits {
  private readonly leases: BucketLeases;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly plans: PlanTable,
    private readonly log: Logger,
  ) {
    this.leases = new BucketLeases(db, log);
  }

  /** Gives the tokens leased by this replica and not used back to the shared buckets. */
  close(): Promise<void> {
    return this.leases.close();
  }

  planLimits(plan: PlanName): PlanLimits {
    return this.plans[plan];
  }

  /**
   * Consumes one API-call token (and one of the token's own bucket), then, for an execution, checks
   * the usage limit and consumes one token of the execution bucket. With `lease` > 1 it takes up to
   * that many of each (at least one, or the same refusal as for one): every bucket ends up giving the
   * same count, the surplus of a bucket that gave more going back to this replica's lease.
   */
  async consume(
    who: RequestIdentity,
    execution: ExecutionBucketName | undefined,
    includeAll: boolean,
    now = new Date(),
    lease = 1,
  ): Promise<LimitsState> {
    const limits = this.plans[who.plan];
    const apiKey = bucketKey.api(who.tenantId);
    let tenantApi: BucketState & { granted: boolean; taken: number } = await this.guard(
      this.leases.takeMany(apiKey, limits.api, lease),
    );
    if (!tenantApi.granted) throw new RateLimitedError("api", tenantApi, tenantApi);
    let granted = tenantApi.taken;
    let tokenApi: Consumption | undefined;
    const tokenKey = bucketKey.token(who.tokenId);
    const tokenBucket =
      who.tokenRateLimitPerMinute === null ? undefined : tokenSpec(who.tokenRateLimitPerMinute);
    if (tokenBucket) {
      const taken = await this.guard(this.leases.takeMany(tokenKey, tokenBucket, granted));
      // A refusal costs the one API-call token a plain request costs, as without a lease.
      const surplus = granted - Math.max(1, taken.taken);
      await this.giveBack(apiKey, limits.api, surplus);
      tenantApi = { ...tenantApi, level: Math.min(limits.api.burst, tenantApi.level + surplus) };
      if (!taken.granted) throw new RateLimitedError("token", taken, taken);
      granted = taken.taken;
      tokenApi = taken;
    }
    const api = narrower(tenantApi, tokenApi);

    const state: LimitsState = { api };
    if (execution || includeAll) state.usage = await this.usage(who.tenantId, who.plan, now);
    if (execution && state.usage) {
      let consumed: Consumption & { taken: number };
      try {
        consumed = await this.consumeExecutionBucket(
          who.tenantId,
          who.plan,
          execution,
          state.usage,
          api,
          granted,
        );
      } catch (err) {
        // Refused: the request costs one API-call token, as without a lease; the rest go back.
        if (granted > 1) await this.giveBackLease(who, undefined, granted - 1).catch(() => undefined);
        throw err;
      }
      if (consumed.taken < granted) {
        const surplus = granted - consumed.taken;
        await this.giveBack(apiKey, limits.api, surplus);
        if (tokenBucket) await this.giveBack(tokenKey, tokenBucket, surplus);
        granted = consumed.taken;
        // X-RateLimit-Remaining counts the surplus that went back.
        const back = (s: BucketState): BucketState => ({
          ...s,
          level: Math.min(s.spec.burst, s.level + surplus),
        });
        state.api = narrower(back(tenantApi), tokenApi && back(tokenApi));
      }
      state[execution] = consumed;
    }
    if (includeAll) {
      const other: ExecutionBucketName[] = (["sync", "async"] as const).filter((b) => b !== execution);
      const peeked = await this.guard(
        peekBuckets(
          this.db,
          other.map((b) => ({ key: bucketKey[b](who.tenantId), spec: limits[b] })),
        ),
      );
      for (const [i, b] of other.entries()) state[b] = peeked[i];
    }
    state.granted = granted;
    return state;
  }

  /**
   * Tokens a caller of `consume` took with a lease and did not spend: back to the API-call buckets
   * and, when named, the execution bucket.
   */
  async giveBackLease(
    who: RequestIdentity,
    execution: ExecutionBucketName | undefined,
    tokens: number,
  ): Promise<void> {
    const limits = this.plans[who.plan];
    await this.giveBack(bucketKey.api(who.tenantId), limits.api, tokens);
    if (who.tokenRateLimitPerMinute !== null) {
      await this.giveBack(bucketKey.token(who.tokenId), tokenSpec(who.tokenRateLimitPerMinute), tokens);
    }
    if (execution) await this.giveBack(bucketKey[execution](who.tenantId), limits[execution], tokens);
  }

  private async giveBack(key: string, spec: BucketSpec, tokens: number): Promise<void> {
    if (tokens > 0) await this.guard(this.leases.giveBack(key, spec, tokens));
  }

  /**
   * One token of an execution bucket for a run no API key started (inbound hook, schedule): the
   * usage check and the bucket of `consume`, without consuming an API-call token.
   */
  async consumeExecution(
    tenantId: string,
    plan: PlanName,
    execution: ExecutionBucketName,
    now = new Date(),
  ): Promise<LimitsState> {
    const [api] = await this.guard(
      peekBuckets(this.db, [{ key: bucketKey.api(tenantId), spec: this.plans[plan].api }]),
    );
    const usage = await this.usage(tenantId, plan, now);
    const consumed = await this.consumeExecutionBucket(tenantId, plan, execution, usage, api!);
    return { api: api!, usage, [execution]: consumed };
  }

  private async consumeExecutionBucket(
    tenantId: string,
    plan: PlanName,
    execution: ExecutionBucketName,
    usage: UsageState,
    api: BucketState,
    wanted = 1,
  ): Promise<Consumption & { taken: number }> {
    if (usage.isExceeded) throw new FailedPreconditionError("insufficient credits");
    const consumed = await this.guard(
      this.leases.takeMany(bucketKey[execution](tenantId), this.plans[plan][execution], wanted),
    );
    if (!consumed.granted) throw new RateLimitedError(execution, consumed, api);
    return consumed;
  }

  /** Every bucket and the usage as they stand, consuming nothing (GetLimits). */
  async current(
    tenantId: string,
    plan: PlanName,
    now = new Date(),
  ): Promise<Required<Omit<LimitsState, "granted">>> {
    const limits = this.plans[plan];
    const [api, sync, async] = await this.guard(
      peekBuckets(this.db, [
        { key: bucketKey.api(tenantId), spec: limits.api },
        { key: bucketKey.sync(tenantId), spec: limits.sync },
        { key: bucketKey.async(tenantId), spec: limits.async },
      ]),
    );
    return { api: api!, sync: sync!, async: async!, usage: await this.usage(tenantId, plan, now) };
  }

  private async usage(tenantId: string, plan: PlanName, now: Date): Promise<UsageState> {
    const usage = await this.guard(usageOf(this.db, tenantId, now));
    const limitUsd = this.plans[plan].usageLimitUsd;
    return { ...usage, limitUsd, plan, isExceeded: usage.costUsd >= limitUsd };
  }

  private async guard<T>(work: Promise<T>): Promise<T> {
    try {
      return await work;
    } catch (err) {
      this.log.error({ err }, "rate limiter storage failed; refusing the request");
      throw new UnavailableError("rate limiter unavailable");
    }
  }
}
