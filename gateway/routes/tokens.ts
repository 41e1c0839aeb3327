import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { FastifyInstance, FastifyRequest } from "fastify";
import {
  type Token,
  type TokenEvent,
  TokenKind,
} from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest } from "../errors.js";
import { isoTime, tokenKindName } from "../json.js";

interface CreateTokenBody {
  name: string;
  purpose?: string;
  kind?: "app" | "admin";
  scopes?: string[];
  workflowIds?: string[];
  expiresAt?: string;
  rateLimitPerMinute?: number;
  expiryWarningDays?: number;
}

const createTokenBodySchema = {
  type: "object",
  required: ["name"],
  additionalProperties: false,
  properties: {
    name: { type: "string", minLength: 1 },
    purpose: { type: "string" },
    kind: { type: "string", enum: ["app", "admin"] },
    scopes: { type: "array", maxItems: 100, items: { type: "string", minLength: 1, maxLength: 100 } },
    workflowIds: { type: "array", maxItems: 1000, items: { type: "string", minLength: 1, maxLength: 200 } },
    expiresAt: { type: "string", format: "date-time" },
    rateLimitPerMinute: { type: "integer", minimum: 1, maximum: 1_000_000 },
    expiryWarningDays: { type: "integer", minimum: 1, maximum: 365 },
  },
} as const;

interface RotateBody {
  gracePeriodSeconds?: number;
}

const rotateBodySchema = {
  type: "object",
  additionalProperties: false,
  properties: { gracePeriodSeconds: { type: "integer", minimum: 0, maximum: 30 * 24 * 3600 } },
} as const;

const tokenIdParamsSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", pattern: "^tok_[0-9a-z]{26}$" } },
} as const;

const pageQuerySchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    limit: { type: "string", pattern: "^[0-9]{1,4}$" },
    cursor: { type: "string", maxLength: 100 },
  },
} as const;

interface PageQuery {
  limit?: string;
  cursor?: string;
}

function pageOf(query: PageQuery): { limit: number; cursor: string } {
  const limit = query.limit === undefined ? 0 : Number(query.limit);
  if (query.limit !== undefined && (limit < 1 || limit > 1000)) {
    throw badRequest("limit must be an integer between 1 and 1000");
  }
  return { limit, cursor: query.cursor ?? "" };
}

/** The rotate body is optional: no body means the defaults. */
async function bodyDefaultsToEmpty(request: FastifyRequest): Promise<void> {
  if (request.body === undefined || request.body === null) request.body = {};
}

/** A token as the REST API shows it; `key` only in the answers that create a secret. */
export function tokenJson(token: Token, secret?: string) {
  return {
    id: token.id,
    kind: tokenKindName(token.kind),
    name: token.name,
    purpose: token.purpose,
    scopes: token.scopes,
    workflowIds: token.workflowIds,
    prefix: token.prefix,
    createdBy: token.createdBy,
    createdAt: isoTime(token.createdAt),
    expiresAt: isoTime(token.expiresAt),
    lastUsedAt: isoTime(token.lastUsedAt),
    revokedAt: isoTime(token.revokedAt),
    rotatedAt: isoTime(token.rotatedAt),
    previousKeyExpiresAt: isoTime(token.previousSecretExpiresAt),
    rateLimitPerMinute: token.rateLimitPerMinute ?? null,
    expiryWarningDays: token.expiryWarningDays ?? null,
    ...(secret !== undefined ? { key: secret } : {}),
  };
}

function tokenEventJson(event: TokenEvent) {
  return {
    id: event.id,
    tokenId: event.tokenId,
    workspaceId: event.tenantId,
    actor: event.actor,
    event: event.event,
    reason: event.reason,
    at: isoTime(event.at),
  };
}

/**
 * App tokens per integration (seed 000): create, list, read, rotate, revoke and their audit trail.
 * The auth service checks that a caller never grants or manages more than it holds; secrets appear
 * only in the create and rotate answers; another workspace's token ids answer 404.
 */
export function registerTokenRoutes(app: FastifyInstance, clients: GatewayClients): void {
  app.post<{ Body: CreateTokenBody }>(
    "/api/v1/tokens",
    { schema: { body: createTokenBodySchema }, preValidation: requireScope(clients.auth, "tokens:write") },
    async (request, reply) => {
      const body = request.body;
      // Admin tokens hold every scope; an app token is exactly its listed scopes (at least one,
      // which the auth service enforces).
      const kind = body.kind ?? "app";
      const expiresAt = body.expiresAt === undefined ? undefined : new Date(body.expiresAt);
      // The format check admits a leap second, which Date cannot represent.
      if (expiresAt && Number.isNaN(expiresAt.getTime()))
        throw badRequest("body.expiresAt is not a valid date");
      const principal = principalOf(request);
      const { token, secret } = await clients.auth.createToken({
        tenantId: principal.tenantId,
        createdBy: principal.tokenId,
        kind: kind === "admin" ? TokenKind.ADMIN : TokenKind.APP,
        name: body.name,
        purpose: body.purpose ?? "",
        scopes: body.scopes ?? [],
        workflowIds: body.workflowIds ?? [],
        expiresAt: expiresAt && timestampFromDate(expiresAt),
        rateLimitPerMinute: body.rateLimitPerMinute,
        expiryWarningDays: body.expiryWarningDays,
      });
      if (!token) throw new Error("auth service answered CreateToken without a token");
      return reply.code(201).send({ data: tokenJson(token, secret) });
    },
  );

  app.get<{ Querystring: PageQuery }>(
    "/api/v1/tokens",
    { schema: { querystring: pageQuerySchema }, preValidation: requireScope(clients.auth, "tokens:read") },
    async (request) => {
      const { limit, cursor } = pageOf(request.query);
      const res = await clients.auth.listTokens({ tenantId: principalOf(request).tenantId, limit, cursor });
      return {
        data: res.tokens.map((t) => tokenJson(t)),
        nextCursor: res.nextCursor === "" ? null : res.nextCursor,
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/tokens/:id",
    { schema: { params: tokenIdParamsSchema }, preValidation: requireScope(clients.auth, "tokens:read") },
    async (request) => {
      const { token } = await clients.auth.getToken({
        tenantId: principalOf(request).tenantId,
        id: request.params.id,
      });
      if (!token) throw new Error("auth service answered GetToken without a token");
      return { data: tokenJson(token) };
    },
  );

  app.post<{ Params: { id: string }; Body: RotateBody | undefined }>(
    "/api/v1/tokens/:id/rotate",
    {
      schema: { params: tokenIdParamsSchema, body: rotateBodySchema },
      preValidation: [requireScope(clients.auth, "tokens:write"), bodyDefaultsToEmpty],
    },
    async (request) => {
      const principal = principalOf(request);
      const { token, secret } = await clients.auth.rotateToken({
        tenantId: principal.tenantId,
        id: request.params.id,
        gracePeriodSeconds: request.body?.gracePeriodSeconds ?? 0,
        actor: principal.tokenId,
      });
      if (!token) throw new Error("auth service answered RotateToken without a token");
      return { data: tokenJson(token, secret) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/tokens/:id",
    { schema: { params: tokenIdParamsSchema }, preValidation: requireScope(clients.auth, "tokens:write") },
    async (request) => {
      const principal = principalOf(request);
      const { token } = await clients.auth.revokeToken({
        tenantId: principal.tenantId,
        id: request.params.id,
        actor: principal.tokenId,
        reason: "revoked through the API",
      });
      if (!token) throw new Error("auth service answered RevokeToken without a token");
      return { data: tokenJson(token) };
    },
  );

  app.get<{ Params: { id: string }; Querystring: PageQuery }>(
    "/api/v1/tokens/:id/events",
    {
      schema: { params: tokenIdParamsSchema, querystring: pageQuerySchema },
      preValidation: requireScope(clients.auth, "tokens:read"),
    },
    async (request) => {
      const { limit, cursor } = pageOf(request.query);
      const res = await clients.auth.listTokenEvents({
        tenantId: principalOf(request).tenantId,
        tokenId: request.params.id,
        limit,
        cursor,
      });
      return {
        data: res.events.map(tokenEventJson),
        nextCursor: res.nextCursor === "" ? null : res.nextCursor,
      };
    },
  );
}
