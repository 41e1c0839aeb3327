import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { InvalidArgumentError } from "../platform/errors.js";
import {
  AuthorizeResponseSchema,
  type AuthService,
  CreateTenantResponseSchema,
  CreateTokenResponseSchema,
  Plan,
  PrincipalSchema,
  TenantSchema,
  type TenantService,
  type Token,
  TokenKind,
  TokenSchema,
} from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { isId } from "../platform/ids.js";
import { isScope, type Scope } from "./scopes.js";
import type { Database, PlanName, TenantRow, TokenKindName, TokenRow } from "./store.js";
import { createTenant } from "./tenants.js";
import type { Tokens } from "./tokens.js";

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
    expiresAt: row.expires_at ? timestampFromDate(row.expires_at) : undefined,
    lastUsedAt: row.last_used_at ? timestampFromDate(row.last_used_at) : undefined,
  });
}

function tenantMessage(row: TenantRow) {
  return create(TenantSchema, {
    id: row.id,
    name: row.name,
    plan: PLANS[row.plan],
    createdAt: timestampFromDate(row.created_at),
  });
}

export function authServiceHandlers(tokens: Tokens): ServiceImpl<typeof AuthService> {
  return {
    async authorize(req) {
      if (req.action === "") throw new InvalidArgumentError("action is required");
      if (!isScope(req.action)) throw new InvalidArgumentError(`action "${req.action}" is not a known scope`);
      const principal = await tokens.authorize({
        apiKey: req.apiKey,
        action: req.action,
        resourceId: req.resourceId,
      });
      return create(AuthorizeResponseSchema, {
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
        },
        now,
      );
      return create(CreateTokenResponseSchema, { token: tokenMessage(token), secret });
    },
  };
}

export function tenantServiceHandlers(db: Kysely<Database>): ServiceImpl<typeof TenantService> {
  return {
    async createTenant(req) {
      const name = requireName("name", req.name);
      const plan = requirePlan(req.plan);
      const tenant = await createTenant(db, { name, plan });
      return create(CreateTenantResponseSchema, { tenant: tenantMessage(tenant) });
    },
  };
}
