import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { InvalidArgumentError, NotFoundError } from "../platform/errors.js";
import {
  type ApiRateLimit,
  ApiRateLimitSchema,
  AuthorizeResponseSchema,
  type AuthService,
  ConsumeExecutionResponseSchema,
  CreateTenantResponseSchema,
  CreateTokenResponseSchema,
  ExecutionBucket,
  type ExecutionRateLimit,
  ExecutionRateLimitSchema,
  GetLimitsResponseSchema,
  GetTenantResponseSchema,
  GetTokenResponseSchema,
  type Limits,
  LimitsSchema,
  ListTokenEventsResponseSchema,
  ListTokensResponseSchema,
  Plan,
  PrincipalSchema,
  RateLimitExceededSchema,
  RecordRefusalResponseSchema,
  ReturnTokensResponseSchema,
  RevokeTokenResponseSchema,
  RotateTokenResponseSchema,
  TenantSchema,
  type TenantService,
  type Token,
  TokenEventSchema,
  TokenKind,
  TokenSchema,
  UsageSchema,
  WorkflowExecutionRateLimitSchema,
} from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { isId } from "../platform/ids.js";
import { type BucketState, remainingOf, resetAtOf } from "./buckets.js";
import { type LimitsState, RateLimitedError, type RateLimits, type UsageState } from "./limits.js";
import { isScope, type Scope } from "./scopes.js";
import {
  type Database,
  findTenant,
  findToken,
  type PlanName,
  type TenantRow,
  type TokenEventRow,
  type TokenKindName,
  type TokenRow,
} from "./store.js";
import { createTenant } from "./tenants.js";
import { MAX_GRACE_PERIOD_SECONDS, type Tokens } from "./tokens.js";

const PLAN_NAMES: Record<Plan, PlanName | undefined> = {
  [Plan.UNSPECIFIED]: "free",
  [Plan.FREE]: "free",
  [Plan.PRO]: "pro",
  [Plan.TEAM]: "team",
  [Plan.ENTERPRISE]: "enterprise",
};
const PLANS: Record<PlanName, Plan> = {
  free: Plan.FREE,
  pro: Plan.PRO,
  team: Plan.TEAM,
  enterprise: Plan.ENTERPRISE,
};
const KIND_NAMES: Record<TokenKind, TokenKindName | undefined> = {
  [TokenKind.UNSPECIFIED]: "app",
  [TokenKind.ADMIN]: "admin",
  [TokenKind.APP]: "app",
};
const KINDS: Record<TokenKindName, TokenKind> = { admin: TokenKind.ADMIN, app: TokenKind.APP };

const MAX_NAME_LENGTH = 100;
const MAX_PURPOSE_LENGTH = 500;

function requireName(field: string, value: string): string {
  const name = value.trim();
  const length = [...name].length;
  if (length === 0) throw new InvalidArgumentError(`${field} is required`);
  if (length > MAX_NAME_LENGTH) {
    throw new InvalidArgumentError(`${field} must be at most ${MAX_NAME_LENGTH} characters (got ${length})`);
  }
  return name;
}

function requirePlan(plan: Plan): PlanName {
  const name = PLAN_NAMES[plan];
  if (!name) throw new InvalidArgumentError(`plan ${plan} is not a known plan`);
  return name;
}

function requireKind(kind: TokenKind): TokenKindName {
  const name = KIND_NAMES[kind];
  if (!name) throw new InvalidArgumentError(`kind ${kind} is not a known token kind`);
  return name;
}

function requireScopes(values: string[], kind: TokenKindName): Scope[] {
  const scopes: Scope[] = [];
  for (const value of values) {
    if (!isScope(value)) throw new InvalidArgumentError(`scopes: unknown scope "${value}"`);
    if (!scopes.includes(value)) scopes.push(value);
  }
  if (kind === "app" && scopes.length === 0) {
    throw new InvalidArgumentError("scopes: an app token needs at least one scope");
  }
  return scopes;
}

function requireWorkflowIds(values: string[]): string[] {
  const ids: string[] = [];
  for (const [i, value] of values.entries()) {
    if (!isId("wf", value))
      throw new InvalidArgumentError(`workflow_ids[${i}] "${value}" is not a workflow id`);
    if (!ids.includes(value)) ids.push(value);
  }
  return ids;
}

function requireFutureExpiry(value: Timestamp | undefined, now: Date): Date | null {
  if (!value) return null;
  const date = timestampDate(value);
  if (Number.isNaN(date.getTime())) throw new InvalidArgumentError("expires_at is not a valid time");
  if (date.getTime() <= now.getTime()) throw new InvalidArgumentError("expires_at must be in the future");
  return date;
}

function tokenMessage(row: TokenRow): Token {
  return create(TokenSchema, {
    id: row.id,
    tenantId: row.tenant_id,
    kind: KINDS[row.kind],
    name: row.name,
    purpose: row.purpose,
    scopes: row.scopes,
    workflowIds: row.workflow_ids,
    prefix: row.prefix,
    createdBy: row.created_by,
    createdAt: timestampFromDate(row.created_at),
    expiresAt: optionalTime(row.expires_at),
    lastUsedAt: optionalTime(row.last_used_at),
    revokedAt: optionalTime(row.revoked_at),
    rateLimitPerMinute: row.rate_limit_per_minute ?? undefined,
    expiryWarningDays: row.expiry_warning_days ?? undefined,
    rotatedAt: optionalTime(row.rotated_at),
    // Shown only while the previous secret still works.
    previousSecretExpiresAt:
      !row.revoked_at &&
      row.previous_secret_expires_at &&
      row.previous_secret_expires_at.getTime() > Date.now()
        ? timestampFromDate(row.previous_secret_expires_at)
        : undefined,
  });
}

function optionalTime(value: Date | null): Timestamp | undefined {
  return value ? timestampFromDate(value) : undefined;
}

function tokenEventMessage(row: TokenEventRow) {
  return create(TokenEventSchema, {
    id: row.id,
    tenantId: row.tenant_id ?? "",
    tokenId: row.token_id ?? "",
    actor: row.actor,
    event: row.event,
    reason: row.reason,
    at: timestampFromDate(row.at),
  });
}

function apiRateLimitMessage(state: BucketState): ApiRateLimit {
  return create(ApiRateLimitSchema, {
    limitPerMinute: state.spec.perMinute,
    maxBurst: state.spec.burst,
    remaining: remainingOf(state),
    resetAt: timestampFromDate(resetAtOf(state)),
  });
}

function executionRateLimitMessage(state: BucketState | undefined): ExecutionRateLimit | undefined {
  if (!state) return undefined;
  return create(ExecutionRateLimitSchema, {
    requestsPerMinute: state.spec.perMinute,
    maxBurst: state.spec.burst,
    remaining: remainingOf(state),
    resetAt: timestampFromDate(resetAtOf(state)),
  });
}

function usageMessage(usage: UsageState | undefined) {
  if (!usage) return undefined;
  return create(UsageSchema, {
    // Sums of floats in numeric: rounded to micro-dollars for display.
    currentPeriodCost: Math.round(usage.costUsd * 1e6) / 1e6,
    limit: usage.limitUsd,
    plan: usage.plan,
    isExceeded: usage.isExceeded,
    periodStart: timestampFromDate(usage.periodStart),
    periodEnd: timestampFromDate(usage.periodEnd),
  });
}

function limitsMessage(state: LimitsState): Limits {
  const hasExecution = state.sync !== undefined || state.async !== undefined;
  return create(LimitsSchema, {
    api: apiRateLimitMessage(state.api),
    workflowExecutionRateLimit: hasExecution
      ? create(WorkflowExecutionRateLimitSchema, {
          sync: executionRateLimitMessage(state.sync),
          async: executionRateLimitMessage(state.async),
        })
      : undefined,
    usage: usageMessage(state.usage),
  });
}

/** RESOURCE_EXHAUSTED carrying when to retry, for the gateway's Retry-After (DESIGN §5b). */
function rateLimitedConnectError(err: RateLimitedError, now: Date): ConnectError {
  const retryAt = err.retryAt;
  return new ConnectError(err.message, Code.ResourceExhausted, undefined, [
    {
      desc: RateLimitExceededSchema,
      value: {
        bucket: err.bucket,
        retryAt: timestampFromDate(retryAt),
        retryAfterMs: BigInt(Math.max(0, Math.ceil(retryAt.getTime() - now.getTime()))),
        api: apiRateLimitMessage(err.api),
      },
    },
  ]);
}

const MAX_PAGE = 1000;
const DEFAULT_PAGE = 100;
const MAX_WARNING_DAYS = 365;

function pageLimit(limit: number): number {
  if (limit === 0) return DEFAULT_PAGE;
  if (limit < 1 || limit > MAX_PAGE)
    throw new InvalidArgumentError(`limit must be between 1 and ${MAX_PAGE}`);
  return limit;
}

function requireId(field: string, prefix: "tok" | "ws", value: string): string {
  if (value === "") throw new InvalidArgumentError(`${field} is required`);
  if (!isId(prefix, value)) throw new InvalidArgumentError(`${field} "${value}" is not a valid id`);
  return value;
}

function requireActor(field: string, value: string): string {
  if (value !== "" && !isId("tok", value))
    throw new InvalidArgumentError(`${field} "${value}" is not a token id`);
  return value;
}

function requireCursor(value: string): string {
  if (value !== "" && !isId("tok", value) && !isId("evt", value)) {
    throw new InvalidArgumentError("cursor is not a valid cursor");
  }
  return value;
}

function tenantMessage(row: TenantRow) {
  return create(TenantSchema, {
    id: row.id,
    name: row.name,
    plan: PLANS[row.plan],
    createdAt: timestampFromDate(row.created_at),
  });
}

/** Bounds of an Authorize lease (AuthorizeRequest.lease_tokens / lease_ttl_ms). */
const MAX_LEASE_TOKENS = 100_000;
const MAX_LEASE_TTL_MS = 60_000;

/**
 * How long a lease may be used, ms: the caller's TTL counted from when the key was read (a cached
 * lookup is already that old), never past the key's expiry or its rotation grace end.
 */
function leaseValidMs(ttlMs: number, checkedAt: number, usableUntil: Date | null, now: number): number {
  let valid = ttlMs - Math.max(0, now - checkedAt);
  if (usableUntil) valid = Math.min(valid, usableUntil.getTime() - now);
  return Math.max(0, Math.floor(valid));
}

const BUCKETS: Record<ExecutionBucket, "sync" | "async" | undefined> = {
  [ExecutionBucket.UNSPECIFIED]: undefined,
  [ExecutionBucket.SYNC]: "sync",
  [ExecutionBucket.ASYNC]: "async",
};

export function authServiceHandlers(
  tokens: Tokens,
  limits: RateLimits,
  db: Kysely<Database>,
): ServiceImpl<typeof AuthService> {
  return {
    async authorize(req) {
      if (req.action === "") throw new InvalidArgumentError("action is required");
      if (!isScope(req.action)) throw new InvalidArgumentError(`action "${req.action}" is not a known scope`);
      if (!(req.bucket in BUCKETS))
        throw new InvalidArgumentError(`bucket ${req.bucket} is not a known bucket`);
      if (req.leaseTokens < 0 || req.leaseTokens > MAX_LEASE_TOKENS) {
        throw new InvalidArgumentError(`lease_tokens must be between 0 and ${MAX_LEASE_TOKENS}`);
      }
      if (req.leaseTtlMs < 0 || req.leaseTtlMs > MAX_LEASE_TTL_MS) {
        throw new InvalidArgumentError(`lease_ttl_ms must be between 0 and ${MAX_LEASE_TTL_MS}`);
      }
      const now = new Date();
      const leasing = req.leaseTokens > 1 && !req.includeLimits;
      const principal = await tokens.authorize(
        {
          apiKey: req.apiKey,
          action: req.action,
          resourceId: req.resourceId,
          // A lease counts its validity from the key's read: a lookup past half of it is read again,
          // so a grant is always good for at least half the TTL asked.
          maxLookupAgeMs: leasing ? req.leaseTtlMs / 2 : undefined,
        },
        now,
      );
      // A lease only when it can be used for a while: else the plain one-token call.
      let validMs = 0;
      let lease = 1;
      if (leasing) {
        validMs = leaseValidMs(req.leaseTtlMs, principal.checkedAt, principal.usableUntil, now.getTime());
        if (validMs > 0) lease = req.leaseTokens;
      }
      let state: LimitsState;
      try {
        state = await limits.consume(
          {
            tenantId: principal.tenantId,
            tokenId: principal.tokenId,
            plan: principal.plan,
            tokenRateLimitPerMinute: principal.rateLimitPerMinute,
          },
          BUCKETS[req.bucket],
          req.includeLimits,
          now,
          lease,
        );
      } catch (err) {
        if (err instanceof RateLimitedError) throw rateLimitedConnectError(err, new Date());
        throw err;
      }
      const granted = state.granted ?? 1;
      return create(AuthorizeResponseSchema, {
        grantedTokens: granted,
        grantValidMs: lease > 1 ? validMs : 0,
        limits: limitsMessage(state),
        principal: create(PrincipalSchema, {
          tenantId: principal.tenantId,
          tokenId: principal.tokenId,
          kind: KINDS[principal.kind],
          scopes: principal.scopes,
          workflowIds: principal.workflowIds,
          plan: PLANS[principal.plan],
        }),
      });
    },

    async returnTokens(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const tokenId = requireId("token_id", "tok", req.tokenId);
      if (!(req.bucket in BUCKETS))
        throw new InvalidArgumentError(`bucket ${req.bucket} is not a known bucket`);
      if (req.tokens < 0 || req.tokens > MAX_LEASE_TOKENS) {
        throw new InvalidArgumentError(`tokens must be between 0 and ${MAX_LEASE_TOKENS}`);
      }
      const token = await findToken(db, tokenId);
      if (!token || token.tenant_id !== tenantId) throw new NotFoundError(`token ${tokenId} not found`);
      const tenant = await findTenant(db, tenantId);
      if (!tenant) throw new NotFoundError(`workspace ${tenantId} not found`);
      await limits.giveBackLease(
        {
          tenantId,
          tokenId,
          plan: tenant.plan,
          tokenRateLimitPerMinute: token.rate_limit_per_minute,
        },
        BUCKETS[req.bucket],
        req.tokens,
      );
      return create(ReturnTokensResponseSchema, {});
    },

    async createToken(req) {
      const now = new Date();
      if (req.tenantId === "") throw new InvalidArgumentError("tenant_id is required");
      const kind = requireKind(req.kind);
      const name = requireName("name", req.name);
      const purpose = req.purpose.trim();
      if ([...purpose].length > MAX_PURPOSE_LENGTH) {
        throw new InvalidArgumentError(`purpose must be at most ${MAX_PURPOSE_LENGTH} characters`);
      }
      const scopes = requireScopes(req.scopes, kind);
      const workflowIds = requireWorkflowIds(req.workflowIds);
      const expiresAt = requireFutureExpiry(req.expiresAt, now);
      if (req.createdBy !== "" && !isId("tok", req.createdBy)) {
        throw new InvalidArgumentError(`created_by "${req.createdBy}" is not a token id`);
      }
      if (req.rateLimitPerMinute !== undefined && req.rateLimitPerMinute < 1) {
        throw new InvalidArgumentError("rate_limit_per_minute must be at least 1");
      }
      if (
        req.expiryWarningDays !== undefined &&
        (req.expiryWarningDays < 1 || req.expiryWarningDays > MAX_WARNING_DAYS)
      ) {
        throw new InvalidArgumentError(`expiry_warning_days must be between 1 and ${MAX_WARNING_DAYS}`);
      }
      const { token, secret } = await tokens.create(
        {
          tenantId: req.tenantId,
          kind,
          name,
          purpose,
          scopes,
          workflowIds,
          expiresAt,
          createdBy: req.createdBy,
          rateLimitPerMinute: req.rateLimitPerMinute ?? null,
          expiryWarningDays: req.expiryWarningDays ?? null,
        },
        now,
      );
      return create(CreateTokenResponseSchema, { token: tokenMessage(token), secret });
    },

    async getLimits(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const tenant = await findTenant(db, tenantId);
      if (!tenant) throw new NotFoundError(`workspace ${tenantId} not found`);
      return create(GetLimitsResponseSchema, {
        limits: limitsMessage(await limits.current(tenant.id, tenant.plan)),
      });
    },

    async consumeExecution(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const bucket = BUCKETS[req.bucket];
      if (bucket === undefined) throw new InvalidArgumentError("bucket must be SYNC or ASYNC");
      const tenant = await findTenant(db, tenantId);
      if (!tenant) throw new NotFoundError(`workspace ${tenantId} not found`);
      let state: LimitsState;
      try {
        state = await limits.consumeExecution(tenant.id, tenant.plan, bucket);
      } catch (err) {
        if (err instanceof RateLimitedError) throw rateLimitedConnectError(err, new Date());
        throw err;
      }
      return create(ConsumeExecutionResponseSchema, { limits: limitsMessage(state) });
    },

    async listTokens(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const page = await tokens.list(tenantId, pageLimit(req.limit), requireCursor(req.cursor));
      return create(ListTokensResponseSchema, {
        tokens: page.tokens.map(tokenMessage),
        nextCursor: page.nextCursor,
      });
    },

    async getToken(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const token = await tokens.get(tenantId, requireId("id", "tok", req.id));
      return create(GetTokenResponseSchema, { token: tokenMessage(token) });
    },

    async rotateToken(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const id = requireId("id", "tok", req.id);
      if (req.gracePeriodSeconds < 0 || req.gracePeriodSeconds > MAX_GRACE_PERIOD_SECONDS) {
        throw new InvalidArgumentError(
          `grace_period_seconds must be between 0 and ${MAX_GRACE_PERIOD_SECONDS} (30 days)`,
        );
      }
      const { token, secret } = await tokens.rotate({
        tenantId,
        id,
        graceSeconds: req.gracePeriodSeconds,
        actor: requireActor("actor", req.actor),
      });
      return create(RotateTokenResponseSchema, { token: tokenMessage(token), secret });
    },

    async revokeToken(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const id = requireId("id", "tok", req.id);
      const reason = req.reason.trim();
      if ([...reason].length > MAX_PURPOSE_LENGTH) {
        throw new InvalidArgumentError(`reason must be at most ${MAX_PURPOSE_LENGTH} characters`);
      }
      const token = await tokens.revoke({ tenantId, id, actor: requireActor("actor", req.actor), reason });
      return create(RevokeTokenResponseSchema, { token: tokenMessage(token) });
    },

    async listTokenEvents(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const tokenId = requireId("token_id", "tok", req.tokenId);
      const page = await tokens.events(tenantId, tokenId, pageLimit(req.limit), requireCursor(req.cursor));
      return create(ListTokenEventsResponseSchema, {
        events: page.events.map(tokenEventMessage),
        nextCursor: page.nextCursor,
      });
    },

    async recordRefusal(req) {
      const tenantId = requireId("tenant_id", "ws", req.tenantId);
      const tokenId = requireId("token_id", "tok", req.tokenId);
      if (req.status !== 401 && req.status !== 403) {
        throw new InvalidArgumentError("status must be 401 or 403");
      }
      await tokens.recordExternalRefusal(tenantId, tokenId, req.status, req.reason);
      return create(RecordRefusalResponseSchema, {});
    },
  };
}

export function tenantServiceHandlers(
  db: Kysely<Database>,
  tokens: Tokens,
): ServiceImpl<typeof TenantService> {
  return {
    async createTenant(req) {
      const name = requireName("name", req.name);
      const plan = requirePlan(req.plan);
      const createdBy = requireActor("created_by", req.createdBy);
      const created = await createTenant(db, tokens, {
        name,
        plan,
        issueAdminToken: req.issueAdminToken,
        createdBy,
      });
      return create(CreateTenantResponseSchema, {
        tenant: tenantMessage(created.tenant),
        adminToken: created.admin ? tokenMessage(created.admin.token) : undefined,
        adminSecret: created.admin?.secret ?? "",
      });
    },

    async getTenant(req) {
      const id = requireId("id", "ws", req.id);
      const tenant = await findTenant(db, id);
      if (!tenant) throw new NotFoundError(`workspace ${id} not found`);
      return create(GetTenantResponseSchema, { tenant: tenantMessage(tenant) });
    },
  };
}
