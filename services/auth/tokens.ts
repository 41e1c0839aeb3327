import type { Kysely } from "kysely";
import {
  type DomainError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
} from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import { generateApiKey, hashApiKey, type KeyEnv, parseApiKey, visiblePrefix } from "./keys.js";
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
  type TokenKindName,
  type TokenRow,
} from "./store.js";

/** Who a request acts as once its key has been checked. */
export interface AuthorizedPrincipal {
  tenantId: string;
  tokenId: string;
  kind: TokenKindName;
  scopes: string[];
  workflowIds: string[];
  plan: PlanName;
}

export interface AuthorizeInput {
  apiKey: string;
  action: Scope;
  /** The workflow the action targets; empty when none. */
  resourceId: string;
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
}

export const OPERATOR = "operator";

// last_used_at is informational: written at most this often per token, off the request path.
const LAST_USED_RESOLUTION_MS = 60_000;

function scopesHeldBy(token: Pick<TokenRow, "kind" | "scopes">): readonly string[] {
  return token.kind === "admin" ? SCOPES : token.scopes;
}

export class Tokens {
  private readonly pendingWrites = new Set<Promise<void>>();
  private readonly lastUsedWritten = new Map<string, number>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly opts: { keyEnv: KeyEnv; log: Logger },
  ) {}

  async authorize(input: AuthorizeInput, now = new Date()): Promise<AuthorizedPrincipal> {
    // The checksum refuses typos and garbage before any query.
    if (!parseApiKey(input.apiKey)) throw new UnauthenticatedError("invalid API key");
    const token = await findTokenByHash(this.db, hashApiKey(input.apiKey));
    if (!token) throw new UnauthenticatedError("invalid API key");
    if (token.revoked_at) {
      throw await this.recordRefusal(token, new UnauthenticatedError("API key revoked"));
    }
    if (token.expires_at && token.expires_at.getTime() <= now.getTime()) {
      throw await this.recordRefusal(token, new UnauthenticatedError("API key expired"));
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
    };
  }

  async create(input: NewTokenInput, now = new Date()): Promise<{ token: TokenRow; secret: string }> {
    const tenant = await findTenant(this.db, input.tenantId);
    if (!tenant) throw new NotFoundError(`workspace ${input.tenantId} not found`);
    // Admin tokens hold every scope; storing the full list keeps what is shown honest.
    const scopes: string[] = input.kind === "admin" ? [...SCOPES] : input.scopes;
    if (input.createdBy !== "") await this.checkCreator(input, scopes, now);

    const secret = generateApiKey(this.opts.keyEnv);
    const id = newId("tok");
    const actor = input.createdBy === "" ? OPERATOR : input.createdBy;
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
      },
      { id: newId("evt"), tenant_id: tenant.id, token_id: id, actor, event: "created", reason: "" },
    );
    return { token, secret };
  }

  /** A calling token may only hand out what it holds itself (no escalation). */
  private async checkCreator(input: NewTokenInput, scopes: string[], now: Date): Promise<void> {
    const creator = await findToken(this.db, input.createdBy);
    if (!creator) {
      throw new PermissionDeniedError(
        `calling key ${input.createdBy} does not belong to workspace ${input.tenantId}`,
      );
    }
    const refuse = (err: DomainError) => this.recordRefusal(creator, err);
    if (creator.tenant_id !== input.tenantId) {
      throw await refuse(
        new PermissionDeniedError(
          `calling key ${input.createdBy} does not belong to workspace ${input.tenantId}`,
        ),
      );
    }
    if (creator.revoked_at) throw await refuse(new UnauthenticatedError("API key revoked"));
    if (creator.expires_at && creator.expires_at.getTime() <= now.getTime()) {
      throw await refuse(new UnauthenticatedError("API key expired"));
    }
    if (creator.kind === "app") {
      if (!creator.scopes.includes("tokens:write")) {
        throw await refuse(new PermissionDeniedError("API key lacks scope tokens:write"));
      }
      if (input.kind === "admin")
        throw await refuse(new PermissionDeniedError("an app key cannot create an admin key"));
    }
    const held = scopesHeldBy(creator);
    for (const scope of scopes) {
      if (!held.includes(scope)) {
        throw await refuse(
          new PermissionDeniedError(`cannot grant scope ${scope}: the calling key does not hold it`),
        );
      }
    }
    if (creator.workflow_ids.length > 0) {
      if (input.workflowIds.length === 0) {
        throw await refuse(
          new PermissionDeniedError(
            "the calling key is restricted to some workflows: the new key must be restricted to a subset of them",
          ),
        );
      }
      for (const workflowId of input.workflowIds) {
        if (!creator.workflow_ids.includes(workflowId)) {
          throw await refuse(
            new PermissionDeniedError(
              `cannot grant access to workflow ${workflowId}: the calling key is not allowed to access it`,
            ),
          );
        }
      }
    }
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
