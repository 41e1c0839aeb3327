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
import { errorResponses, nullableTimestamp, objectOf } from "../openapi.js";

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

export const tokenSchema = {
  type: "object",
  required: ["id", "kind", "name", "scopes", "prefix", "createdAt"],
  properties: {
    id: { type: "string" },
    kind: { type: ["string", "null"], enum: ["app", "admin", null] },
    name: { type: "string" },
    purpose: { type: "string" },
    scopes: { type: "array", items: { type: "string" } },
    workflowIds: { type: "array", items: { type: "string" } },
    prefix: { type: "string", description: "the key's visible start, to recognise it" },
    createdBy: { type: "string" },
    createdAt: nullableTimestamp,
    expiresAt: nullableTimestamp,
    lastUsedAt: nullableTimestamp,
    revokedAt: nullableTimestamp,
    rotatedAt: nullableTimestamp,
    previousKeyExpiresAt: nullableTimestamp,
    rateLimitPerMinute: { type: ["integer", "null"] },
    expiryWarningDays: { type: ["integer", "null"] },
    key: { type: "string", description: "the secret: only in create and rotate answers" },
  },
} as const;

const tokenEventSchema = objectOf({
  id: { type: "string" },
  tokenId: { type: "string" },
  workspaceId: { type: "string" },
  actor: { type: "string" },
  event: { type: "string" },
  reason: { type: "string" },
  at: nullableTimestamp,
});

const oneToken = (description: string) => objectOf({ data: tokenSchema }, description);
const tokenPage = (items: object, description: string) =>
  objectOf({ data: { type: "array", items }, nextCursor: { type: ["string", "null"] } }, description);

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
    {
      schema: {
        summary: "Create an API key",
        description: "The key (`data.key`) is shown only in this answer.",
        tags: ["tokens"],
        body: createTokenBodySchema,
        response: { 201: oneToken("The token with its key"), ...errorResponses([400, 413, 415]) },
      },
      preValidation: requireScope(clients.auth, "tokens:write"),
    },
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
    {
      schema: {
        summary: "List the workspace's API keys",
        tags: ["tokens"],
        querystring: pageQuerySchema,
        response: { 200: tokenPage(tokenSchema, "One page of tokens"), ...errorResponses([400]) },
      },
      preValidation: requireScope(clients.auth, "tokens:read"),
    },
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
    {
      schema: {
        summary: "Get an API key (never its secret)",
        tags: ["tokens"],
        params: tokenIdParamsSchema,
        response: { 200: oneToken("The token"), ...errorResponses([400, 404]) },
      },
      preValidation: requireScope(clients.auth, "tokens:read"),
    },
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
      schema: {
        summary: "Rotate an API key",
        description: "A new key is returned once; the old one keeps working for gracePeriodSeconds.",
        tags: ["tokens"],
        params: tokenIdParamsSchema,
        body: rotateBodySchema,
        response: { 200: oneToken("The token with its new key"), ...errorResponses([400, 404, 415]) },
      },
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
    {
      schema: {
        summary: "Revoke an API key",
        description: "Effective on every gateway within a second.",
        tags: ["tokens"],
        params: tokenIdParamsSchema,
        response: { 200: oneToken("The revoked token"), ...errorResponses([400, 404]) },
      },
      preValidation: requireScope(clients.auth, "tokens:write"),
    },
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
      schema: {
        summary: "An API key's audit trail",
        tags: ["tokens"],
        params: tokenIdParamsSchema,
        querystring: pageQuerySchema,
        response: { 200: tokenPage(tokenEventSchema, "One page of events"), ...errorResponses([400, 404]) },
      },
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
