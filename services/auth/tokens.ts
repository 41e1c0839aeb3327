import type { Kysely } from "kysely";
import {
  type DomainError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
} from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import { generateApiKey, hashApiKey, type KeyEnv, parseApiKey, visiblePrefix } from "./keys.js";
import type { PlanTable } from "./plans.js";
import { SCOPES, type Scope } from "./scopes.js";
import {
  type Database,
  findTenant,
  findToken,
  findTokenByHash,
  insertTokenEvent,
  insertTokenWithEvent,
  markTokenUsed,
  type PlanName,
  type TokenEventName,
  type TokenEventRow,
  type TokenKindName,
  type TokenRow,
  type TokenWithPlan,
} from "./store.js";

/** Who a request acts as once its key has been checked. */
export interface AuthorizedPrincipal {
  tenantId: string;
  tokenId: string;
  kind: TokenKindName;
  scopes: string[];
  workflowIds: string[];
  plan: PlanName;
  rateLimitPerMinute: number | null;
  /** When the key's row was read from the database (epoch ms): a cached lookup is older than now. */
  checkedAt: number;
  /** When this key stops working by itself: the token's expiry or the end of a rotation grace. */
  usableUntil: Date | null;
}

export interface AuthorizeInput {
  apiKey: string;
  action: Scope;
  /** The workflow the action targets; empty when none. */
  resourceId: string;
  /** A cached lookup older than this, ms, is read again (a lease wants a fresh check). */
  maxLookupAgeMs?: number;
}

export interface NewTokenInput {
  tenantId: string;
  kind: TokenKindName;
  name: string;
  purpose: string;
  scopes: Scope[];
  workflowIds: string[];
  expiresAt: Date | null;
  /** The calling token's id; empty for an operator (CLI, bootstrap). */
  createdBy: string;
  rateLimitPerMinute?: number | null;
  expiryWarningDays?: number | null;
}

/** Secrets that stopped working; the service publishes it so every replica drops cached lookups. */
export interface SecretsStopped {
  tenantId: string;
  tokenId: string;
  secretHashes: string[];
  at: Date;
  reason: "revoked" | "rotated" | "grace_ended";
}

export const OPERATOR = "operator";
export const SYSTEM = "system";

// last_used_at is informational: written at most this often per token, off the request path.
const LAST_USED_RESOLUTION_MS = 60_000;
const MAX_CACHED_TOKENS = 10_000;
export const MAX_GRACE_PERIOD_SECONDS = 30 * 24 * 3600;

function scopesHeldBy(token: Pick<TokenRow, "kind" | "scopes">): readonly string[] {
  return token.kind === "admin" ? SCOPES : token.scopes;
}

function isExpired(token: Pick<TokenRow, "expires_at">, now: Date): boolean {
  return token.expires_at !== null && token.expires_at.getTime() <= now.getTime();
}

/** What a grant (create, rotate, revoke) hands to or takes from someone. */
interface Grant {
  tenantId: string;
  kind: TokenKindName;
  scopes: readonly string[];
  workflowIds: readonly string[];
}

export interface TokensOptions {
  keyEnv: KeyEnv;
  log: Logger;
  plans: PlanTable;
  /** How long a key lookup is reused, ms (0: never). Revocations purge it at once on every replica. */
  cacheTtlMs?: number;
  onSecretsStopped?: (event: SecretsStopped) => void;
}

export class Tokens {
  private readonly pendingWrites = new Set<Promise<void>>();
  private readonly lastUsedWritten = new Map<string, number>();
  private readonly cache = new Map<string, { token: TokenWithPlan; until: number }>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly opts: TokensOptions,
  ) {}

  async authorize(input: AuthorizeInput, now = new Date()): Promise<AuthorizedPrincipal> {
    // The checksum refuses typos and garbage before any query.
    if (!parseApiKey(input.apiKey)) throw new UnauthenticatedError("invalid API key");
    const hash = hashApiKey(input.apiKey);
    const found = await this.lookup(hash, now, input.maxLookupAgeMs);
    const token = found?.token;
    if (!found || !token) throw new UnauthenticatedError("invalid API key");
    if (token.revoked_at) {
      throw await this.recordRefusal(token, new UnauthenticatedError("API key revoked"));
    }
    if (isExpired(token, now)) {
      throw await this.recordRefusal(token, new UnauthenticatedError("API key expired"));
    }
    let usableUntil = token.expires_at;
    if (token.secret_hash !== hash) {
      // The secret a rotation replaced: valid until its grace ends.
      const until = token.previous_secret_expires_at;
      if (token.previous_secret_hash !== hash || !until || until.getTime() <= now.getTime()) {
        throw await this.recordRefusal(token, new UnauthenticatedError("API key was rotated"));
      }
      if (!usableUntil || until.getTime() < usableUntil.getTime()) usableUntil = until;
    }
    const held = scopesHeldBy(token);
    if (!held.includes(input.action)) {
      throw await this.recordRefusal(token, new PermissionDeniedError(`API key lacks scope ${input.action}`));
    }
    if (
      input.resourceId !== "" &&
      token.workflow_ids.length > 0 &&
      !token.workflow_ids.includes(input.resourceId)
    ) {
      throw await this.recordRefusal(
        token,
        new PermissionDeniedError(`API key is not allowed to access workflow ${input.resourceId}`),
      );
    }
    this.noteUsed(token.id, token.last_used_at, now);
    return {
      tenantId: token.tenant_id,
      tokenId: token.id,
      kind: token.kind,
      scopes: [...held],
      workflowIds: token.workflow_ids,
      plan: token.plan,
      rateLimitPerMinute: token.rate_limit_per_minute,
      checkedAt: found.readAt,
      usableUntil,
    };
  }

  private async lookup(
    hash: string,
    now: Date,
    maxAgeMs = Number.POSITIVE_INFINITY,
  ): Promise<{ token: TokenWithPlan | undefined; readAt: number } | undefined> {
    const ttl = this.opts.cacheTtlMs ?? 0;
    if (ttl > 0) {
      const cached = this.cache.get(hash);
      const readAt = cached ? cached.until - ttl : 0;
      if (cached && cached.until > now.getTime() && now.getTime() - readAt <= maxAgeMs) {
        return { token: cached.token, readAt };
      }
    }
    const readAt = Date.now();
    const token = await findTokenByHash(this.db, hash);
    if (token && ttl > 0) {
      if (this.cache.size >= MAX_CACHED_TOKENS) this.cache.clear();
      this.cache.set(hash, { token, until: now.getTime() + ttl });
    }
    return { token, readAt };
  }

  /** Drops cached lookups of a token (this replica's change, or another's revocation event). */
  forget(tokenId: string, secretHashes: readonly string[] = []): void {
    for (const hash of secretHashes) this.cache.delete(hash);
    for (const [hash, entry] of this.cache) if (entry.token.id === tokenId) this.cache.delete(hash);
  }

  async create(input: NewTokenInput, now = new Date()): Promise<{ token: TokenRow; secret: string }> {
    const tenant = await findTenant(this.db, input.tenantId);
    if (!tenant) throw new NotFoundError(`workspace ${input.tenantId} not found`);
    const planApi = this.opts.plans[tenant.plan].api.perMinute;
    const rateLimit = input.rateLimitPerMinute ?? null;
    if (rateLimit !== null && rateLimit > planApi) {
      throw new InvalidArgumentError(
        `rate_limit_per_minute must be at most the ${tenant.plan} plan's ${planApi} requests per minute`,
      );
    }
    const warningDays = input.expiryWarningDays ?? null;
    if (warningDays !== null && input.expiresAt === null) {
      throw new InvalidArgumentError("expiry_warning_days needs expires_at");
    }
    // Admin tokens hold every scope; storing the full list keeps what is shown honest.
    const scopes: string[] = input.kind === "admin" ? [...SCOPES] : input.scopes;
    const actor = input.createdBy === "" ? OPERATOR : input.createdBy;
    if (input.createdBy !== "") {
      await this.checkGrant(
        input.createdBy,
        { tenantId: input.tenantId, kind: input.kind, scopes, workflowIds: input.workflowIds },
        now,
      );
    }

    const secret = generateApiKey(this.opts.keyEnv);
    const id = newId("tok");
    const token = await insertTokenWithEvent(
      this.db,
      {
        id,
        tenant_id: tenant.id,
        kind: input.kind,
        name: input.name,
        purpose: input.purpose,
        scopes,
        workflow_ids: input.workflowIds,
        prefix: visiblePrefix(secret),
        secret_hash: hashApiKey(secret),
        created_by: actor,
        expires_at: input.expiresAt,
        rate_limit_per_minute: rateLimit,
        expiry_warning_days: warningDays,
      },
      { id: newId("evt"), tenant_id: tenant.id, token_id: id, actor, event: "created", reason: "" },
    );
    return { token, secret };
  }

  /** The first admin token of a workspace being created in `trx`; its creator is the calling key. */
  async createAdminForNewTenant(
    trx: Kysely<Database>,
    tenant: { id: string },
    createdBy: string,
    now: Date,
  ): Promise<{ token: TokenRow; secret: string }> {
    const secret = generateApiKey(this.opts.keyEnv);
    const id = newId("tok");
    const actor = createdBy === "" ? OPERATOR : createdBy;
    const token = await trx
      .insertInto("tokens")
      .values({
        id,
        tenant_id: tenant.id,
        kind: "admin",
        name: "workspace admin",
        purpose: "first admin key of the workspace",
        scopes: [...SCOPES],
        workflow_ids: [],
        prefix: visiblePrefix(secret),
        secret_hash: hashApiKey(secret),
        created_by: actor,
        created_at: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await trx
      .insertInto("token_events")
      .values({ id: newId("evt"), tenant_id: tenant.id, token_id: id, actor, event: "created", reason: "" })
      .execute();
    return { token, secret };
  }

  /** A token of the tenant; another tenant's id answers as if it did not exist. */
  async get(tenantId: string, id: string): Promise<TokenRow> {
    const token = await findToken(this.db, id);
    if (!token || token.tenant_id !== tenantId) throw new NotFoundError(`token ${id} not found`);
    return token;
  }

  async list(
    tenantId: string,
    limit: number,
    cursor: string,
  ): Promise<{ tokens: TokenRow[]; nextCursor: string }> {
    let query = this.db
      .selectFrom("tokens")
      .selectAll()
      .where("tenant_id", "=", tenantId)
      .orderBy("id")
      .limit(limit + 1);
    if (cursor !== "") query = query.where("id", ">", cursor);
    const rows = await query.execute();
    const page = rows.slice(0, limit);
    return { tokens: page, nextCursor: rows.length > limit ? page.at(-1)!.id : "" };
  }

  async events(
    tenantId: string,
    tokenId: string,
    limit: number,
    cursor: string,
  ): Promise<{ events: TokenEventRow[]; nextCursor: string }> {
    await this.get(tenantId, tokenId);
    let query = this.db
      .selectFrom("token_events")
      .selectAll()
      .where("tenant_id", "=", tenantId)
      .where("token_id", "=", tokenId)
      .orderBy("id")
      .limit(limit + 1);
    if (cursor !== "") query = query.where("id", ">", cursor);
    const rows = await query.execute();
    const page = rows.slice(0, limit);
    return { events: page, nextCursor: rows.length > limit ? page.at(-1)!.id : "" };
  }

  /**
   * A new secret for the token. The caller needs what it would need to create it (else rotating
   * would hand it a key stronger than its own). The previous secret keeps working for the grace.
   */
  async rotate(
    input: { tenantId: string; id: string; graceSeconds: number; actor: string },
    now = new Date(),
  ): Promise<{ token: TokenRow; secret: string }> {
    const target = await this.get(input.tenantId, input.id);
    await this.checkManagement(input.actor, target, now);
    const secret = generateApiKey(this.opts.keyEnv);
    const actor = input.actor === "" ? OPERATOR : input.actor;
    const { token, stopped } = await this.db.transaction().execute(async (trx) => {
      const current = await trx
        .selectFrom("tokens")
        .selectAll()
        .where("id", "=", target.id)
        .forUpdate()
        .executeTakeFirstOrThrow();
      if (current.revoked_at) throw new FailedPreconditionError(`token ${current.id} is revoked`);
      if (isExpired(current, now)) throw new FailedPreconditionError(`token ${current.id} has expired`);
      const stopped: string[] = [];
      // A secret still in an earlier grace stops now: at most one previous secret works.
      if (current.previous_secret_hash) stopped.push(current.previous_secret_hash);
      const grace = input.graceSeconds > 0;
      if (!grace) stopped.push(current.secret_hash);
      const token = await trx
        .updateTable("tokens")
        .set({
          secret_hash: hashApiKey(secret),
          prefix: visiblePrefix(secret),
          rotated_at: now,
          previous_secret_hash: grace ? current.secret_hash : null,
          previous_secret_expires_at: grace ? new Date(now.getTime() + input.graceSeconds * 1000) : null,
        })
        .where("id", "=", current.id)
        .returningAll()
        .executeTakeFirstOrThrow();
      await trx
        .insertInto("token_events")
        .values({
          id: newId("evt"),
          tenant_id: token.tenant_id,
          token_id: token.id,
          actor,
          event: "rotated",
          reason: grace
            ? `previous secret works until ${token.previous_secret_expires_at!.toISOString()}`
            : "previous secret stopped at once",
        })
        .execute();
      return { token, stopped };
    });
    this.secretsStopped({
      tenantId: token.tenant_id,
      tokenId: token.id,
      secretHashes: stopped,
      at: now,
      reason: "rotated",
    });
    return { token, secret };
  }

  /** Stops the token at once; revoking a revoked token changes nothing. */
  async revoke(
    input: { tenantId: string; id: string; actor: string; reason: string },
    now = new Date(),
  ): Promise<TokenRow> {
    const target = await this.get(input.tenantId, input.id);
    await this.checkManagement(input.actor, target, now);
    const actor = input.actor === "" ? OPERATOR : input.actor;
    const revoked = await this.db.transaction().execute(async (trx) => {
      const token = await trx
        .updateTable("tokens")
        // The previous secret's hash stays so that it is refused as revoked, not as unknown.
        .set({ revoked_at: now })
        .where("id", "=", target.id)
        .where("revoked_at", "is", null)
        .returningAll()
        .executeTakeFirst();
      if (!token) return undefined;
      await trx
        .insertInto("token_events")
        .values({
          id: newId("evt"),
          tenant_id: token.tenant_id,
          token_id: token.id,
          actor,
          event: "revoked",
          reason: input.reason,
        })
        .execute();
      return token;
    });
    if (!revoked) return this.get(input.tenantId, input.id);
    const hashes = [
      target.secret_hash,
      ...(target.previous_secret_hash ? [target.previous_secret_hash] : []),
    ];
    this.secretsStopped({
      tenantId: revoked.tenant_id,
      tokenId: revoked.id,
      secretHashes: hashes,
      at: now,
      reason: "revoked",
    });
    return revoked;
  }

  private secretsStopped(event: SecretsStopped): void {
    this.forget(event.tokenId, event.secretHashes);
    this.opts.onSecretsStopped?.(event);
  }

  /** Managing (rotating, revoking) a token needs the rights that creating it would need. */
  private async checkManagement(actorId: string, target: TokenRow, now: Date): Promise<void> {
    if (actorId === "") return;
    await this.checkGrant(
      actorId,
      {
        tenantId: target.tenant_id,
        kind: target.kind,
        scopes: target.scopes,
        workflowIds: target.workflow_ids,
      },
      now,
    );
  }

  /** A calling token may only hand out (or manage) what it holds itself: no escalation. */
  private async checkGrant(actorId: string, grant: Grant, now: Date): Promise<void> {
    const caller = await findToken(this.db, actorId);
    if (!caller) {
      throw new PermissionDeniedError(
        `calling key ${actorId} does not belong to workspace ${grant.tenantId}`,
      );
    }
    const refuse = (err: DomainError) => this.recordRefusal(caller, err);
    if (caller.tenant_id !== grant.tenantId) {
      throw await refuse(
        new PermissionDeniedError(`calling key ${actorId} does not belong to workspace ${grant.tenantId}`),
      );
    }
    if (caller.revoked_at) throw await refuse(new UnauthenticatedError("API key revoked"));
    if (isExpired(caller, now)) throw await refuse(new UnauthenticatedError("API key expired"));
    if (caller.kind === "app") {
      if (!caller.scopes.includes("tokens:write")) {
        throw await refuse(new PermissionDeniedError("API key lacks scope tokens:write"));
      }
      if (grant.kind === "admin") {
        throw await refuse(new PermissionDeniedError("an app key cannot create or manage an admin key"));
      }
    }
    const held = scopesHeldBy(caller);
    for (const scope of grant.scopes) {
      if (!held.includes(scope)) {
        throw await refuse(
          new PermissionDeniedError(`cannot grant scope ${scope}: the calling key does not hold it`),
        );
      }
    }
    if (caller.workflow_ids.length > 0) {
      if (grant.workflowIds.length === 0) {
        throw await refuse(
          new PermissionDeniedError(
            "the calling key is restricted to some workflows: the new key must be restricted to a subset of them",
          ),
        );
      }
      for (const workflowId of grant.workflowIds) {
        if (!caller.workflow_ids.includes(workflowId)) {
          throw await refuse(
            new PermissionDeniedError(
              `cannot grant access to workflow ${workflowId}: the calling key is not allowed to access it`,
            ),
          );
        }
      }
    }
  }

  /**
   * Records a refusal another service decided after this token was authorized (the gateway's own
   * 401/403), so the audit trail holds every refusal wherever it was decided.
   */
  async recordExternalRefusal(tenantId: string, tokenId: string, status: 401 | 403, reason: string) {
    await this.get(tenantId, tokenId);
    await insertTokenEvent(this.db, {
      id: newId("evt"),
      tenant_id: tenantId,
      token_id: tokenId,
      actor: tokenId,
      event: status === 401 ? "refused_unauthenticated" : "refused_permission",
      reason: reason.slice(0, 500),
    });
  }

  /** Records a refusal of an identified token (the actor is the token itself); returns it to throw. */
  private async recordRefusal(
    token: Pick<TokenRow, "id" | "tenant_id">,
    err: DomainError,
  ): Promise<DomainError> {
    const event: TokenEventName =
      err instanceof UnauthenticatedError ? "refused_unauthenticated" : "refused_permission";
    try {
      await insertTokenEvent(this.db, {
        id: newId("evt"),
        tenant_id: token.tenant_id,
        token_id: token.id,
        actor: token.id,
        event,
        reason: err.message,
      });
    } catch (auditErr) {
      // A refusal stays a refusal even when the audit write fails.
      this.opts.log.error({ err: auditErr, tokenId: token.id }, "could not record token refusal");
    }
    return err;
  }

  private noteUsed(tokenId: string, storedLastUsed: Date | null, now: Date): void {
    const threshold = now.getTime() - LAST_USED_RESOLUTION_MS;
    if (storedLastUsed && storedLastUsed.getTime() > threshold) return;
    if ((this.lastUsedWritten.get(tokenId) ?? 0) > threshold) return;
    if (this.lastUsedWritten.size > 10_000) this.lastUsedWritten.clear();
    this.lastUsedWritten.set(tokenId, now.getTime());
    const write = markTokenUsed(this.db, tokenId, now)
      .catch((err) => this.opts.log.warn({ err, tokenId }, "could not record last use of token"))
      .finally(() => this.pendingWrites.delete(write));
    this.pendingWrites.add(write);
  }

  /** Waits for background writes (last_used_at) before the pool closes. */
  async flush(): Promise<void> {
    await Promise.all([...this.pendingWrites]);
  }
}
