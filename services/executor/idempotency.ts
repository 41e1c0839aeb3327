/**
 * Idempotency keys of the execute RPCs (the REST Idempotency-Key header): per tenant, a key names
 * one request for 24 hours. The first request claims the key and its answer is stored; a repeat
 * with the same fingerprint gets that answer back without running anything; a repeat with another
 * fingerprint, or while the first is still being served, is refused with ALREADY_EXISTS (409).
 * A request that fails releases its key, so a retry runs again (and meets the same refusal if the
 * failure was its input's).
 */
import { createHash } from "node:crypto";
import {
  type DescMessage,
  fromBinary,
  type JsonValue,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { type Kysely, sql } from "kysely";
import { AlreadyExistsError, InvalidArgumentError } from "../platform/errors.js";
import type { Logger } from "../platform/log.js";
import type { ExecutorDb } from "./store.js";

export const IDEMPOTENCY_TTL_HOURS = 24;
const SWEEP_EVERY_MS = 60_000;
const KEY_FORMAT = /^[\x21-\x7e]{1,255}$/;

export const REUSED_MESSAGE = "Idempotency-Key reused with a different request";
export const IN_PROGRESS_MESSAGE = "request with this Idempotency-Key is in progress";

interface IdempotencyKeysTable {
  tenant_id: string;
  key: string;
  method: string;
  fingerprint: string;
  state: "running" | "done";
  response: Uint8Array | null;
  created_at: Date;
  locked_until: Date;
  expires_at: Date;
  execution_id: string | null;
}

type IdempotencyDb = Kysely<{ idempotency_keys: IdempotencyKeysTable }>;

function idempotencyDb(db: ExecutorDb): IdempotencyDb {
  return db.withTables<{ idempotency_keys: IdempotencyKeysTable }>() as unknown as IdempotencyDb;
}

/** 1 to 255 visible ASCII characters (no spaces or control characters). */
export function validIdempotencyKey(key: string): string {
  if (!KEY_FORMAT.test(key)) {
    throw new InvalidArgumentError("idempotency_key must be 1 to 255 visible ASCII characters");
  }
  return key;
}

/** JSON with object keys sorted at every depth, so equal values serialize equally. */
export function canonicalJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k] as JsonValue)}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value);
}

/** SHA-256 (hex) of a request's canonical JSON. */
export function fingerprintOf(value: JsonValue): string {
  return createHash("sha256").update(canonicalJson(value)).digest("hex");
}

export interface IdempotentCall<S extends DescMessage> {
  tenantId: string;
  key: string;
  /** Which RPC: the same key on another RPC is another request. */
  method: string;
  fingerprint: string;
  /** How long the first request may hold the key before a repeat may take over (its process died). */
  leaseMs: number;
  /** The response message, stored as protobuf binary. */
  response: S;
  /**
   * The answer of an execution an earlier holder of the key started (see `bind`), when it finished:
   * a holder whose answer was lost (its database connection died after the run was stored) never
   * released the key, and its retry must get that run, not a second one. Undefined: run again.
   */
  recover?: (executionId: string) => Promise<MessageShape<S> | undefined>;
}

/** Records on the key the execution its request started (for `recover`). */
export type BindExecution = (executionId: string) => Promise<void>;

/** Deletes the keys past their 24 hours; answers how many. */
export async function deleteExpiredIdempotencyKeys(db: ExecutorDb): Promise<number> {
  const res = await idempotencyDb(db)
    .deleteFrom("idempotency_keys")
    .where("expires_at", "<=", sql<Date>`now()`)
    .executeTakeFirst();
  return Number(res.numDeletedRows);
}

const lastSweep = new WeakMap<object, number>();

/** Sweeps expired keys at most once a minute per process; a failed sweep only costs disk. */
function sweepExpired(db: ExecutorDb, log: Logger): void {
  const now = Date.now();
  if (now - (lastSweep.get(db) ?? 0) < SWEEP_EVERY_MS) return;
  lastSweep.set(db, now);
  deleteExpiredIdempotencyKeys(db).catch((err: unknown) =>
    log.warn({ err }, "expired idempotency keys not swept"),
  );
}

/**
 * Claims the key: a new row, an expired one, or a same-request one whose holder's lease ran out.
 * Claimed: the execution an earlier holder bound to the key, if any (a takeover keeps it).
 */
async function claim<S extends DescMessage>(
  db: IdempotencyDb,
  call: IdempotentCall<S>,
): Promise<{ previousExecutionId: string | null } | undefined> {
  const claimed = await db
    .insertInto("idempotency_keys")
    .values({
      tenant_id: call.tenantId,
      key: call.key,
      method: call.method,
      fingerprint: call.fingerprint,
      state: "running",
      response: null,
      created_at: sql<Date>`now()`,
      locked_until: sql<Date>`now() + ${call.leaseMs} * interval '1 millisecond'`,
      expires_at: sql<Date>`now() + ${IDEMPOTENCY_TTL_HOURS} * interval '1 hour'`,
    })
    .onConflict((oc) =>
      oc
        .columns(["tenant_id", "key"])
        .doUpdateSet((eb) => ({
          method: eb.ref("excluded.method"),
          fingerprint: eb.ref("excluded.fingerprint"),
          state: eb.ref("excluded.state"),
          response: eb.ref("excluded.response"),
          created_at: eb.ref("excluded.created_at"),
          locked_until: eb.ref("excluded.locked_until"),
          expires_at: eb.ref("excluded.expires_at"),
          // Kept for a same-request takeover (see recover); an expired key starts afresh.
          execution_id: sql<
            string | null
          >`case when idempotency_keys.expires_at <= now() then null else idempotency_keys.execution_id end`,
        }))
        .where((eb) =>
          eb.or([
            eb("idempotency_keys.expires_at", "<=", sql<Date>`now()`),
            eb.and([
              eb("idempotency_keys.state", "=", "running"),
              eb("idempotency_keys.locked_until", "<=", sql<Date>`now()`),
              eb("idempotency_keys.method", "=", call.method),
              eb("idempotency_keys.fingerprint", "=", call.fingerprint),
            ]),
          ]),
        ),
    )
    .returning("execution_id")
    .executeTakeFirst();
  return claimed && { previousExecutionId: claimed.execution_id };
}

/**
 * Runs `run` once per (tenant, key) within 24 h: the first call runs it and stores its answer; a
 * repeat with the same fingerprint gets that answer (with `idempotentReplay` set) without running.
 */
export async function idempotent<S extends DescMessage>(
  deps: { db: ExecutorDb; log: Logger },
  call: IdempotentCall<S>,
  run: (bind: BindExecution) => Promise<MessageShape<S>>,
): Promise<MessageShape<S>> {
  const db = idempotencyDb(deps.db);
  sweepExpired(deps.db, deps.log);
  // A row can expire or be released between the claim and the read; a few rounds settle it.
  for (let round = 0; round < 3; round++) {
    const claimed = await claim(db, call);
    if (claimed) return runAndStore(db, deps.log, call, run, claimed.previousExecutionId);
    const row = await db
      .selectFrom("idempotency_keys")
      .select(["method", "fingerprint", "state", "response"])
      .where("tenant_id", "=", call.tenantId)
      .where("key", "=", call.key)
      .where("expires_at", ">", sql<Date>`now()`)
      .executeTakeFirst();
    if (!row) continue;
    if (row.method !== call.method || row.fingerprint !== call.fingerprint) {
      throw new AlreadyExistsError(REUSED_MESSAGE);
    }
    if (row.state !== "done" || !row.response) throw new AlreadyExistsError(IN_PROGRESS_MESSAGE);
    const stored = fromBinary(call.response, row.response) as MessageShape<S> & {
      idempotentReplay?: boolean;
    };
    if ("idempotentReplay" in stored) stored.idempotentReplay = true;
    return stored;
  }
  throw new AlreadyExistsError(IN_PROGRESS_MESSAGE);
}

async function renewLease<S extends DescMessage>(db: IdempotencyDb, call: IdempotentCall<S>): Promise<void> {
  await db
    .updateTable("idempotency_keys")
    .set({ locked_until: sql<Date>`now() + ${call.leaseMs} * interval '1 millisecond'` })
    .where("tenant_id", "=", call.tenantId)
    .where("key", "=", call.key)
    .where("fingerprint", "=", call.fingerprint)
    .where("state", "=", "running")
    .execute();
}

async function runAndStore<S extends DescMessage>(
  db: IdempotencyDb,
  log: Logger,
  call: IdempotentCall<S>,
  run: (bind: BindExecution) => Promise<MessageShape<S>>,
  previousExecutionId: string | null,
): Promise<MessageShape<S>> {
  let response: MessageShape<S>;
  // The lease is short and renewed while the request is served: a holder that dies (kill -9, crash)
  // stops renewing, and a retry may claim the key once the lease runs out.
  const renewal = setInterval(
    () => {
      renewLease(db, call).catch((err: unknown) => log.warn({ err }, "idempotency lease not renewed"));
    },
    Math.max(50, Math.floor(call.leaseMs / 3)),
  );
  renewal.unref();
  const bind: BindExecution = async (executionId) => {
    await db
      .updateTable("idempotency_keys")
      .set({ execution_id: executionId })
      .where("tenant_id", "=", call.tenantId)
      .where("key", "=", call.key)
      .where("fingerprint", "=", call.fingerprint)
      .where("state", "=", "running")
      .execute();
  };
  try {
    const recovered =
      previousExecutionId !== null && call.recover ? await call.recover(previousExecutionId) : undefined;
    response = recovered ?? (await run(bind));
  } catch (err) {
    clearInterval(renewal);
    await db
      .deleteFrom("idempotency_keys")
      .where("tenant_id", "=", call.tenantId)
      .where("key", "=", call.key)
      .where("fingerprint", "=", call.fingerprint)
      .where("state", "=", "running")
      .execute()
      // Not released: a retry waits for the lease to run out instead.
      .catch((releaseErr: unknown) => log.warn({ err: releaseErr }, "idempotency key not released"));
    throw err;
  }
  clearInterval(renewal);
  await db
    .updateTable("idempotency_keys")
    .set({ state: "done", response: toBinary(call.response, response) })
    .where("tenant_id", "=", call.tenantId)
    .where("key", "=", call.key)
    .where("fingerprint", "=", call.fingerprint)
    .where("state", "=", "running")
    .execute();
  return response;
}
