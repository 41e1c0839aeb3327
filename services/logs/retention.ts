import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { type Kysely, sql } from "kysely";
import type { AuthService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import type { Logger } from "../platform/log.js";
import type { Database } from "./store.js";

/** The plans of the auth service, by the lower-case names GetLimits reports in usage.plan. */
export const PLAN_NAMES = ["free", "pro", "team", "enterprise"] as const;
export type PlanName = (typeof PLAN_NAMES)[number];

export interface RetentionPolicy {
  /** Days a log is kept, per plan. */
  planDays: Record<PlanName, number>;
  /** Days a log is kept when the auth service answers that it does not know the tenant. */
  defaultDays: number;
}

/** What the auth service says about a tenant's plan. */
export type PlanAnswer = { kind: "plan"; name: string } | { kind: "unknown-tenant" };

/** Where tenants' plans come from; `planOf` throws when the answer cannot be had (auth down). */
export interface PlanDirectory {
  planOf(tenantId: string): Promise<PlanAnswer>;
}

/** Plans read from the auth service's GetLimits (which consumes nothing). */
export function authPlanDirectory(auth: Client<typeof AuthService>): PlanDirectory {
  return {
    async planOf(tenantId) {
      try {
        const { limits } = await auth.getLimits({ tenantId });
        return { kind: "plan", name: limits?.usage?.plan ?? "" };
      } catch (err) {
        // Auth answered, and the answer is that there is no such workspace.
        const code = ConnectError.from(err).code;
        if (code === Code.NotFound || code === Code.InvalidArgument) return { kind: "unknown-tenant" };
        throw err;
      }
    },
  };
}

export interface RetentionOptions {
  policy: RetentionPolicy;
  plans: PlanDirectory;
  intervalMs: number;
  batchSize: number;
  /** Pause between batches, so a large purge does not starve ingestion and queries. */
  pauseMs: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

function daysBefore(now: Date, days: number): Date {
  return new Date(now.getTime() - days * DAY_MS);
}

/**
 * Days kept when a tenant's plan cannot be learned because auth is unreachable or answers a plan
 * this service has no retention for: never less than any plan keeps (keep data when unsure).
 */
export function conservativeDays(policy: RetentionPolicy): number {
  return Math.max(policy.defaultDays, ...Object.values(policy.planDays));
}

/**
 * Periodically deletes each tenant's logs that started more than its plan's retention ago, in
 * batches. Plans come from the auth service, asked once per tenant and pass.
 */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private stopped = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
    private readonly opts: RetentionOptions,
  ) {}

  start(): void {
    // Not at once: a fleet restarting together should not all start purging in the same second.
    this.schedule(Math.min(this.opts.intervalMs, 60_000));
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.runOnce(new Date())
        .catch((err: unknown) => {
          this.log.warn({ err }, "log retention pass failed");
          return 0;
        })
        .finally(() => {
          this.running = undefined;
          this.schedule(this.opts.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass; returns how many logs it deleted (0 when another replica holds the lock). */
  async runOnce(now: Date): Promise<number> {
    const { policy } = this.opts;
    const shortest = Math.min(policy.defaultDays, ...Object.values(policy.planDays));
    // Only tenants that have something a plan could expire cost an auth call.
    const tenants = await tenantsWithLogsBefore(this.db, daysBefore(now, shortest));
    const retentionOf = this.retentionForThisPass();
    let deleted = 0;
    for (const tenantId of tenants) {
      if (this.stopped) break;
      const cutoff = daysBefore(now, await retentionOf(tenantId));
      const purged = await this.purgeTenant(tenantId, cutoff);
      deleted += purged.deleted;
      if (purged.lockHeldElsewhere) break;
    }
    if (deleted > 0) this.log.info({ deleted, tenants: tenants.length }, "deleted expired logs");
    return deleted;
  }

  /** Days to keep per tenant, with the plans cached for one pass (a plan change applies next pass). */
  private retentionForThisPass(): (tenantId: string) => Promise<number> {
    const { policy, plans } = this.opts;
    const fallback = conservativeDays(policy);
    const cache = new Map<string, number>();
    const warnedPlans = new Set<string>();
    let authDown = false;
    return async (tenantId) => {
      const cached = cache.get(tenantId);
      if (cached !== undefined) return cached;
      let days = fallback;
      if (!authDown) {
        try {
          const answer = await plans.planOf(tenantId);
          if (answer.kind === "unknown-tenant") {
            days = policy.defaultDays;
          } else if ((PLAN_NAMES as readonly string[]).includes(answer.name)) {
            days = policy.planDays[answer.name as PlanName];
          } else if (!warnedPlans.has(answer.name)) {
            warnedPlans.add(answer.name);
            this.log.warn(
              { plan: answer.name, keptDays: fallback },
              "log retention: no retention configured for this plan; keeping its logs for the longest retention",
            );
          }
        } catch (err) {
          // One refusal is enough: asking again for every tenant would only wait out more timeouts.
          authDown = true;
          this.log.warn(
            { err, keptDays: fallback },
            "log retention: auth service unreachable, plans unknown; keeping logs for the longest retention this pass",
          );
        }
      }
      cache.set(tenantId, days);
      return days;
    };
  }

  private async purgeTenant(
    tenantId: string,
    cutoff: Date,
  ): Promise<{ deleted: number; lockHeldElsewhere: boolean }> {
    let deleted = 0;
    while (!this.stopped) {
      const n = await deleteTenantBatch(this.db, tenantId, cutoff, this.opts.batchSize);
      if (n < 0) return { deleted, lockHeldElsewhere: true };
      deleted += n;
      if (n < this.opts.batchSize) break;
      await new Promise((resolve) => setTimeout(resolve, this.opts.pauseMs));
    }
    return { deleted, lockHeldElsewhere: false };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}

/**
 * Tenants with at least one log that started before `cutoff`. A skip scan over the
 * (tenant_id, started_at, id) index: one descent per tenant, however many logs each has.
 */
export async function tenantsWithLogsBefore(db: Kysely<Database>, cutoff: Date): Promise<string[]> {
  const result = await tenantsWithLogsBeforeQuery(cutoff).execute(db);
  return result.rows.map((row) => row.tenant_id);
}

export function tenantsWithLogsBeforeQuery(cutoff: Date) {
  return sql<{ tenant_id: string }>`
    with recursive tenants as (
      (select tenant_id from execution_logs order by tenant_id limit 1)
      union all
      select (
        select l.tenant_id from execution_logs l
        where l.tenant_id > tenants.tenant_id
        order by l.tenant_id limit 1
      )
      from tenants where tenants.tenant_id is not null
    )
    select tenant_id from tenants
    where tenant_id is not null
      and exists (
        select 1 from execution_logs l where l.tenant_id = tenants.tenant_id and l.started_at < ${cutoff}
      )`;
}

/**
 * Deletes up to `batch` of a tenant's logs that started before `cutoff`; -1 when another replica
 * holds the retention lock (one purger at a time).
 */
export async function deleteTenantBatch(
  db: Kysely<Database>,
  tenantId: string,
  cutoff: Date,
  batch: number,
): Promise<number> {
  return db.transaction().execute(async (tx) => {
    const locked = await sql<{ locked: boolean }>`
      select pg_try_advisory_xact_lock(hashtext('flowplane.logs'), hashtext('retention')) as locked`.execute(
      tx,
    );
    if (!locked.rows[0]?.locked) return -1;
    const result = await tx
      .deleteFrom("execution_logs")
      .where(
        "id",
        "in",
        tx
          .selectFrom("execution_logs")
          .select("id")
          .where("tenant_id", "=", tenantId)
          .where("started_at", "<", cutoff)
          .limit(batch),
      )
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  });
}
