import { type Kysely, sql } from "kysely";
import { newId } from "../platform/ids.js";
import type { Database, TokenRow } from "./store.js";
import type { SecretsStopped } from "./tokens.js";

export interface SweepHooks {
  secretsStopped(event: SecretsStopped): void;
  /** Publishes token.expiring; resolves once the server has it (the claim commits after). */
  expiring(token: TokenRow): Promise<void>;
}

/**
 * Periodic token housekeeping. Each step claims its rows with one UPDATE … RETURNING, so replicas
 * running it together never handle a row twice:
 * - an `expired` audit event once per token whose expires_at passed;
 * - the end of a rotation grace: the previous secret is cleared and announced as stopped;
 * - `token.expiring` once per token, expiry_warning_days before expires_at.
 */
export async function sweepTokens(db: Kysely<Database>, hooks: SweepHooks, now = new Date()): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const expired = await trx
      .updateTable("tokens")
      .set({ expiry_recorded_at: now })
      .where("expires_at", "<=", now)
      .where("expiry_recorded_at", "is", null)
      .where("revoked_at", "is", null)
      .returning(["id", "tenant_id", "expires_at"])
      .execute();
    if (expired.length > 0) {
      await trx
        .insertInto("token_events")
        .values(
          expired.map((t) => ({
            id: newId("evt"),
            tenant_id: t.tenant_id,
            token_id: t.id,
            actor: "system",
            event: "expired" as const,
            reason: `expired at ${t.expires_at!.toISOString()}`,
          })),
        )
        .execute();
    }
  });

  const graceEnded = await db.transaction().execute(async (trx) => {
    const rows = await sql<{ id: string; tenant_id: string; hash: string; until: Date }>`
      update tokens t set previous_secret_hash = null, previous_secret_expires_at = null
      from (select id, previous_secret_hash as hash, previous_secret_expires_at as until from tokens
            where previous_secret_expires_at <= ${now} and revoked_at is null for update) old
      where t.id = old.id
      returning t.id, t.tenant_id, old.hash, old.until`.execute(trx);
    if (rows.rows.length > 0) {
      await trx
        .insertInto("token_events")
        .values(
          rows.rows.map((t) => ({
            id: newId("evt"),
            tenant_id: t.tenant_id,
            token_id: t.id,
            actor: "system",
            event: "grace_ended" as const,
            reason: `previous secret stopped at ${t.until.toISOString()}`,
          })),
        )
        .execute();
    }
    return rows.rows;
  });
  for (const t of graceEnded) {
    hooks.secretsStopped({
      tenantId: t.tenant_id,
      tokenId: t.id,
      secretHashes: [t.hash],
      at: now,
      reason: "grace_ended",
    });
  }

  await db.transaction().execute(async (trx) => {
    const due = await trx
      .updateTable("tokens")
      .set({ expiry_warning_sent_at: now })
      .where("expiry_warning_days", "is not", null)
      .where("expiry_warning_sent_at", "is", null)
      .where("revoked_at", "is", null)
      .where("expires_at", ">", now)
      .where(sql<boolean>`expires_at - make_interval(days => expiry_warning_days) <= ${now}`)
      .returningAll()
      .execute();
    // Published before the claim commits: a failure rolls the claim back and the next sweep retries.
    for (const token of due) await hooks.expiring(token);
  });
}
