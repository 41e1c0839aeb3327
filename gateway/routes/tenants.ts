import type { FastifyInstance, FastifyRequest } from "fastify";
import { Plan, type Tenant, TokenKind } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { HttpError } from "../errors.js";
import { isoTime } from "../json.js";
import { limitsJson } from "../limits.js";
import { errorResponses, nullableTimestamp, objectOf } from "../openapi.js";
import { limitsSchema } from "./logs.js";
import { tokenJson, tokenSchema } from "./tokens.js";

const PLANS = { free: Plan.FREE, pro: Plan.PRO, team: Plan.TEAM, enterprise: Plan.ENTERPRISE } as const;
type PlanName = keyof typeof PLANS;

function planName(plan: Plan): PlanName | null {
  return (Object.keys(PLANS) as PlanName[]).find((name) => PLANS[name] === plan) ?? null;
}

interface CreateTenantBody {
  name: string;
  plan?: PlanName;
}

const createTenantBodySchema = {
  type: "object",
  required: ["name"],
  additionalProperties: false,
  properties: {
    name: { type: "string", minLength: 1, maxLength: 100 },
    plan: { type: "string", enum: Object.keys(PLANS) },
  },
} as const;

const tenantIdParamsSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", minLength: 1, maxLength: 100 } },
} as const;

const tenantProperties = {
  id: { type: "string" },
  name: { type: "string" },
  plan: { type: ["string", "null"], enum: [...Object.keys(PLANS), null] },
  createdAt: nullableTimestamp,
};

function tenantJson(tenant: Tenant) {
  return {
    id: tenant.id,
    name: tenant.name,
    plan: planName(tenant.plan),
    createdAt: isoTime(tenant.createdAt),
  };
}

/** Workspaces are administered with admin keys only; app keys get 403 whatever their scopes. */
function requireAdminKey(request: FastifyRequest): void {
  if (principalOf(request).kind !== TokenKind.ADMIN) throw new HttpError(403, "an admin key is required");
}

/**
 * POST /api/v1/tenants creates a workspace with its first admin key (shown once); GET
 * /api/v1/tenants/:id shows the caller's own workspace with its limits and usage (another
 * workspace's id answers 404, never revealing whether it exists).
 */
export function registerTenantRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: CreateTenantBody }>(
    "/api/v1/tenants",
    {
      schema: {
        summary: "Create a workspace with its first admin key",
        description: "Admin keys only. The admin key (`data.adminKey.key`) is shown only here.",
        tags: ["workspaces"],
        body: createTenantBodySchema,
        response: {
          201: objectOf(
            { data: objectOf({ ...tenantProperties, adminKey: tokenSchema }) },
            "The workspace and its admin key",
          ),
          ...errorResponses([400, 413, 415]),
        },
      },
      preValidation: requireScope(clients.auth, "tokens:write"),
    },
    async (request, reply) => {
      requireAdminKey(request);
      const res = await clients.tenants.createTenant({
        name: request.body.name,
        plan: PLANS[request.body.plan ?? "free"],
        issueAdminToken: true,
        createdBy: principalOf(request).tokenId,
      });
      if (!res.tenant || !res.adminToken)
        throw new Error("auth service answered CreateTenant without a tenant");
      return reply
        .code(201)
        .send({ data: { ...tenantJson(res.tenant), adminKey: tokenJson(res.adminToken, res.adminSecret) } });
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/tenants/:id",
    {
      schema: {
        summary: "Get the key's own workspace with its limits and usage",
        description: "Admin keys only; another workspace's id answers 404.",
        tags: ["workspaces"],
        params: tenantIdParamsSchema,
        response: {
          200: objectOf({ data: objectOf({ ...tenantProperties, limits: limitsSchema }) }, "The workspace"),
          ...errorResponses([400, 404]),
        },
      },
      preValidation: requireScope(clients.auth, "tokens:read"),
    },
    async (request) => {
      requireAdminKey(request);
      const tenantId = principalOf(request).tenantId;
      if (request.params.id !== tenantId)
        throw new HttpError(404, `workspace ${request.params.id} not found`);
      const [{ tenant }, { limits }] = await Promise.all([
        clients.tenants.getTenant({ id: tenantId }),
        clients.auth.getLimits({ tenantId }),
      ]);
      if (!tenant) throw new Error("auth service answered GetTenant without a tenant");
      return { data: { ...tenantJson(tenant), limits: limitsJson(limits) } };
    },
  );
}
