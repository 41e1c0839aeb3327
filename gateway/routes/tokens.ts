import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { FastifyInstance } from "fastify";
import { TokenKind } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest } from "../errors.js";
import { tokenJson } from "../json.js";

interface CreateTokenBody {
  name: string;
  purpose?: string;
  kind?: "app" | "admin";
  scopes?: string[];
  workflowIds?: string[];
  expiresAt?: string;
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
  },
} as const;

/**
 * POST /api/v1/tokens: an app token per integration (seed 000). The auth service checks the scopes
 * and that the caller does not grant more than it holds; the secret is in this answer only.
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
      });
      if (!token) throw new Error("auth service answered CreateToken without a token");
      return reply.code(201).send({ data: tokenJson(token, secret) });
    },
  );
}
