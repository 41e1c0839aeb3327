import type { Kysely } from "kysely";
import { PermissionDeniedError, UnauthenticatedError } from "../platform/errors.js";
import { newId } from "../platform/ids.js";
import {
  type Database,
  findToken,
  insertTenant,
  type PlanName,
  type TenantRow,
  type TokenRow,
} from "./store.js";
import type { Tokens } from "./tokens.js";

export interface CreatedTenant {
  tenant: TenantRow;
  admin?: { token: TokenRow; secret: string };
}

/**
 * A workspace, and optionally its first admin token in the same transaction. A calling key
 * (`createdBy`) must be a live admin key; it is recorded as the admin token's creator.
 */
export async function createTenant(
  db: Kysely<Database>,
  tokens: Tokens,
  input: { name: string; plan: PlanName; issueAdminToken: boolean; createdBy: string },
  now = new Date(),
): Promise<CreatedTenant> {
  if (input.createdBy !== "") {
    const caller = await findToken(db, input.createdBy);
    if (caller?.kind !== "admin") {
      throw new PermissionDeniedError("only an admin key may create workspaces");
    }
    if (caller.revoked_at) throw new UnauthenticatedError("API key revoked");
    if (caller.expires_at && caller.expires_at.getTime() <= now.getTime()) {
      throw new UnauthenticatedError("API key expired");
    }
  }
  return db.transaction().execute(async (trx) => {
    const tenant = await insertTenant(trx, { id: newId("ws"), name: input.name, plan: input.plan });
    if (!input.issueAdminToken) return { tenant };
    const admin = await tokens.createAdminForNewTenant(trx, tenant, input.createdBy, now);
    return { tenant, admin };
  });
}
