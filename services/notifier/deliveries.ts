import { create, type JsonObject, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, type Selectable, sql, type Transaction } from "kysely";
import type { JetStreamClient, NatsConnection } from "nats";
import { RetryLaterError } from "../platform/consumer.js";
import { InvalidArgumentError, NotFoundError } from "../platform/errors.js";
import {
  type DeliveryTask,
  DeliveryTaskSchema,
  NotificationDisabledSchema,
} from "../platform/gen/flowplane/events/v1/notification_pb.js";
import { type Delivery, DeliverySchema } from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import { notificationAttempts } from "../platform/metrics.js";
import type { NatsNames } from "../platform/nats.js";
import type { EmailSender } from "./channels/email.js";
import type { AttemptOutcome } from "./channels/outcome.js";
import { sendSlack } from "./channels/slack.js";
import { sendWebhook } from "./channels/webhook.js";
import { TEST_EVENT } from "./payload.js";
import type { SecretBox } from "./secrets.js";
import type { ChannelName, Database, DeliveriesTable } from "./store.js";
import { channelSecret, getSubscriptionRow, type SubscriptionRow } from "./subscriptions.js";

/** Seed 002: at most 5 attempts; delays 5 s, 15 s, 1 min, 3 min, 10 min plus up to 10 % jitter. */
export const MAX_ATTEMPTS = 5;
export const DEFAULT_RETRY_DELAYS_MS = [5_000, 15_000, 60_000, 180_000, 600_000] as const;
export const JITTER_FRACTION = 0.1;
/** A subscription whose deliveries have all failed for this long is disabled. */
export const FAILING_DISABLE_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * The wait before the attempt after `attemptsMade` failed ones, or undefined when none is left.
 * A Retry-After (429/503) lengthens the wait, but never beyond the schedule's last step.
 */
export function retryDelayMs(
  attemptsMade: number,
  delays: readonly number[],
  random: () => number = Math.random,
  retryAfterMs?: number,
): number | undefined {
  if (attemptsMade >= MAX_ATTEMPTS || attemptsMade < 1) return undefined;
  const base = delays[Math.min(attemptsMade - 1, delays.length - 1)]!;
  const jittered = Math.round(base * (1 + JITTER_FRACTION * random()));
  if (retryAfterMs === undefined) return jittered;
  const ceiling = delays[delays.length - 1]!;
  return Math.min(Math.max(jittered, retryAfterMs), Math.max(ceiling, jittered));
}

export interface DeliveryDeps {
  db: Kysely<Database>;
  js: JetStreamClient;
  nc: NatsConnection;
  names: NatsNames;
  log: Logger;
  box: SecretBox;
  email: EmailSender;
  retryDelaysMs: readonly number[];
  attemptTimeoutMs: number;
  allowPrivateTargets: boolean;
  now: () => number;
  random: () => number;
}

export interface NewDelivery {
  tenantId: string;
  subscriptionId: string;
  channel: ChannelName;
  dedupeKey: string;
  eventId: string;
  eventType: string;
  executionId: string;
  workflowId: string;
  payload: string;
}

/** Inserts a delivery once per (subscription, dedupe key); returns its id either way. */
export async function insertDelivery(
  db: Kysely<Database> | Transaction<Database>,
  delivery: NewDelivery,
  now: Date,
): Promise<string> {
  const inserted = await db
    .insertInto("deliveries")
    .values({
      id: newId("dlv", now.getTime()),
      tenant_id: delivery.tenantId,
      subscription_id: delivery.subscriptionId,
      event_id: delivery.eventId,
      event_type: delivery.eventType,
      dedupe_key: delivery.dedupeKey,
      execution_id: delivery.executionId,
      workflow_id: delivery.workflowId,
      channel: delivery.channel,
      payload: delivery.payload,
      status: "pending",
      next_attempt_at: now,
      created_at: now,
      updated_at: now,
    })
    .onConflict((oc) => oc.columns(["subscription_id", "dedupe_key"]).doNothing())
    .returning("id")
    .executeTakeFirst();
  if (inserted) return inserted.id;
  const existing = await db
    .selectFrom("deliveries")
    .select("id")
    .where("subscription_id", "=", delivery.subscriptionId)
    .where("dedupe_key", "=", delivery.dedupeKey)
    .executeTakeFirstOrThrow();
  return existing.id;
}

/** Queues one attempt round of a delivery; the msgID makes republishing the same round harmless. */
export async function enqueueDelivery(
  js: JetStreamClient,
  names: NatsNames,
  row: Pick<DeliveriesTable, "id" | "tenant_id" | "channel"> & { round: number },
): Promise<void> {
  const task = create(DeliveryTaskSchema, { deliveryId: row.id, tenantId: row.tenant_id, round: row.round });
  await js.publish(names.delivery(row.channel), toBinary(DeliveryTaskSchema, task), {
    msgID: `${row.id}:${row.round}`,
  });
}

async function runChannel(
  deps: DeliveryDeps,
  row: Selectable<DeliveriesTable>,
  sub: SubscriptionRow | undefined,
  nowMs: number,
): Promise<AttemptOutcome> {
  if (!sub) return { verdict: "fail", statusCode: 0, responseSnippet: "", error: "subscription deleted" };
  // Test sends still go out, so an endpoint can be checked before its subscription is re-enabled.
  if (!sub.enabled && row.event_type !== TEST_EVENT) {
    return { verdict: "fail", statusCode: 0, responseSnippet: "", error: "subscription is disabled" };
  }
  const opts = { timeoutMs: deps.attemptTimeoutMs, allowPrivate: deps.allowPrivateTargets };
  // The channel of the delivery is the one it was created for; a subscription changed since then
  // sends with its current settings only if the channel is still the same.
  if (sub.channel !== row.channel) {
    return { verdict: "fail", statusCode: 0, responseSnippet: "", error: "subscription channel changed" };
  }
  let secret: string | undefined;
  try {
    secret = channelSecret(deps.box, sub);
  } catch {
    return {
      verdict: "fail",
      statusCode: 0,
      responseSnippet: "",
      error: "the channel secret cannot be decrypted (was FLOWPLANE_ENCRYPTION_KEY changed?)",
    };
  }
  switch (row.channel) {
    case "webhook":
      return sendWebhook(
        {
          url: sub.channel_config.url ?? "",
          secret,
          standardWebhooks: sub.channel_config.standardWebhooks ?? false,
        },
        { deliveryId: row.id, eventType: row.event_type, body: row.payload },
        { ...opts, nowMs },
      );
    case "slack":
      return sendSlack(secret ?? "", JSON.parse(row.payload) as JsonObject, opts);
    case "email":
      return deps.email.send(sub.channel_config.to ?? [], JSON.parse(row.payload) as JsonObject, row.id);
  }
}

async function disableSubscription(
  deps: DeliveryDeps,
  subscriptionId: string,
  reason: string,
  at: Date,
): Promise<void> {
  const disabled = await deps.db
    .updateTable("subscriptions")
    .set({ enabled: false, disabled_reason: reason, updated_at: at })
    .where("id", "=", subscriptionId)
    .where("enabled", "=", true)
    .returning(["id", "tenant_id"])
    .executeTakeFirst();
  if (!disabled) return;
  deps.log.warn({ subscriptionId, reason }, "notification disabled");
  const event = create(NotificationDisabledSchema, {
    tenantId: disabled.tenant_id,
    subscriptionId,
    reason,
    at: timestampFromDate(at),
  });
  deps.nc.publish(deps.names.notificationDisabled, toBinary(NotificationDisabledSchema, event));
}

/**
 * One attempt of a queued delivery. The attempt is claimed in the row first, so a duplicate
 * message, a stale round or a message arriving before its time never causes an extra send.
 * A retry throws RetryLaterError: the queue redelivers the message after the delay, which survives
 * a notifier restart.
 */
export async function processDeliveryTask(deps: DeliveryDeps, task: DeliveryTask): Promise<void> {
  const nowMs = deps.now();
  const now = new Date(nowMs);
  const claimed = await deps.db
    .updateTable("deliveries")
    .set({
      status: "delivering",
      attempt_count: sql<number>`attempt_count + 1`,
      locked_until: new Date(nowMs + deps.attemptTimeoutMs + 30_000),
      updated_at: now,
    })
    .where("id", "=", task.deliveryId)
    .where("round", "=", task.round)
    .where((eb) =>
      eb.or([
        eb("status", "in", ["pending", "retrying"]),
        eb.and([eb("status", "=", "delivering"), eb("locked_until", "<", now)]),
      ]),
    )
    .where((eb) => eb.or([eb("next_attempt_at", "is", null), eb("next_attempt_at", "<=", now)]))
    .returningAll()
    .executeTakeFirst();
  if (!claimed) {
    const row = await deps.db
      .selectFrom("deliveries")
      .select(["status", "round", "next_attempt_at", "locked_until"])
      .where("id", "=", task.deliveryId)
      .executeTakeFirst();
    const early =
      row?.round === task.round &&
      (row.status === "pending" || row.status === "retrying") &&
      row.next_attempt_at !== null &&
      row.next_attempt_at.getTime() > nowMs;
    if (early) throw new RetryLaterError(row.next_attempt_at!.getTime() - nowMs);
    // Claimed by an attempt that may have died with its process (or whose claim committed while the
    // connection broke): come back when its lock runs out, or the delivery would never be sent.
    const held =
      row?.round === task.round &&
      row.status === "delivering" &&
      row.locked_until !== null &&
      row.locked_until.getTime() > nowMs;
    if (held) throw new RetryLaterError(row.locked_until!.getTime() - nowMs + 100);
    return;
  }

  const sub = await deps.db
    .selectFrom("subscriptions")
    .selectAll()
    .where("id", "=", claimed.subscription_id)
    .executeTakeFirst();
  const failingSince = sub?.failing_since ?? null;
  const started = Date.now();
  const outcome = await runChannel(deps, claimed, sub, nowMs);
  const latencyMs = Date.now() - started;
  notificationAttempts.inc({ channel: claimed.channel, outcome: outcome.verdict });
  const attempt = claimed.attempt_count;
  const delay =
    outcome.verdict === "retry"
      ? retryDelayMs(attempt, deps.retryDelaysMs, deps.random, outcome.retryAfterMs)
      : undefined;
  const finishedAt = new Date(deps.now());
  const status = outcome.verdict === "success" ? "succeeded" : delay !== undefined ? "retrying" : "failed";
  // The attempt row and the delivery's new state in one statement.
  const recordAttempt = (db: Kysely<Database> | Transaction<Database>) =>
    db
      .with("attempt", (q) =>
        q
          .insertInto("delivery_attempts")
          .values({
            delivery_id: claimed.id,
            round: claimed.round,
            number: attempt,
            at: now,
            status_code: outcome.statusCode,
            latency_ms: latencyMs,
            response_snippet: outcome.responseSnippet,
            error: outcome.error,
          })
          .onConflict((oc) => oc.columns(["delivery_id", "round", "number"]).doNothing()),
      )
      .updateTable("deliveries")
      .set({
        status,
        next_attempt_at: delay !== undefined ? new Date(finishedAt.getTime() + delay) : null,
        locked_until: null,
        updated_at: finishedAt,
      })
      .where("id", "=", claimed.id)
      .where("round", "=", claimed.round)
      .execute();
  const failingChanges = status === "failed" || (status === "succeeded" && failingSince !== null);
  if (!failingChanges) {
    await recordAttempt(deps.db);
  } else {
    await deps.db.transaction().execute(async (trx) => {
      await recordAttempt(trx);
      await trx
        .updateTable("subscriptions")
        .set({
          failing_since:
            status === "failed" ? sql<Date>`coalesce(failing_since, ${claimed.created_at})` : null,
        })
        .where("id", "=", claimed.subscription_id)
        .execute();
    });
  }

  if (outcome.verdict === "gone") {
    await disableSubscription(deps, claimed.subscription_id, "endpoint answered 410 Gone", finishedAt);
  } else if (status === "failed") {
    const sub = await deps.db
      .selectFrom("subscriptions")
      .select(["failing_since"])
      .where("id", "=", claimed.subscription_id)
      .executeTakeFirst();
    if (
      sub?.failing_since &&
      finishedAt.getTime() - sub.failing_since.getTime() >= FAILING_DISABLE_AFTER_MS
    ) {
      await disableSubscription(
        deps,
        claimed.subscription_id,
        "every delivery failed for 24 hours",
        finishedAt,
      );
    }
  }
  if (delay !== undefined) throw new RetryLaterError(delay);
}

// --- reading the log --------------------------------------------------------------------------------

type DeliveryRow = Pick<
  Selectable<DeliveriesTable>,
  | "id"
  | "subscription_id"
  | "event_id"
  | "event_type"
  | "execution_id"
  | "workflow_id"
  | "channel"
  | "status"
  | "round"
  | "created_at"
  | "next_attempt_at"
>;

async function deliveryMessages(db: Kysely<Database>, rows: DeliveryRow[]): Promise<Delivery[]> {
  const attempts =
    rows.length === 0
      ? []
      : await db
          .selectFrom("delivery_attempts")
          .selectAll()
          .where(
            "delivery_id",
            "in",
            rows.map((r) => r.id),
          )
          .orderBy("round")
          .orderBy("number")
          .execute();
  return rows.map((row) => {
    const mine = attempts.filter((a) => a.delivery_id === row.id);
    return create(DeliverySchema, {
      id: row.id,
      subscriptionId: row.subscription_id,
      eventId: row.event_id,
      eventType: row.event_type,
      executionId: row.execution_id,
      workflowId: row.workflow_id,
      channel: row.channel,
      status: row.status,
      createdAt: timestampFromDate(row.created_at),
      nextAttemptAt:
        row.next_attempt_at && (row.status === "retrying" || row.status === "pending")
          ? timestampFromDate(row.next_attempt_at)
          : undefined,
      // Numbered across redelivery rounds so the log reads as one sequence.
      attempts: mine.map((a, index) => ({
        number: index + 1,
        at: timestampFromDate(a.at),
        statusCode: a.status_code,
        latencyMs: BigInt(a.latency_ms),
        responseSnippet: a.response_snippet,
        error: a.error,
      })),
    });
  });
}

const DELIVERY_COLUMNS = [
  "id",
  "subscription_id",
  "event_id",
  "event_type",
  "execution_id",
  "workflow_id",
  "channel",
  "status",
  "round",
  "created_at",
  "next_attempt_at",
] as const;

export async function listDeliveries(
  db: Kysely<Database>,
  tenantId: string,
  subscriptionId: string,
  limit: number,
  cursor: string,
): Promise<{ deliveries: Delivery[]; nextCursor: string }> {
  if (limit < 0 || limit > 100) throw new InvalidArgumentError("limit must be from 1 to 100");
  await getSubscriptionRow(db, tenantId, subscriptionId);
  const size = limit === 0 ? 50 : limit;
  let after: string | undefined;
  if (cursor !== "") {
    after = Buffer.from(cursor, "base64url").toString("utf8");
    if (!/^dlv_[0-9a-z]{26}$/.test(after)) throw new InvalidArgumentError("cursor is invalid");
  }
  let query = db
    .selectFrom("deliveries")
    .select(DELIVERY_COLUMNS)
    .where("tenant_id", "=", tenantId)
    .where("subscription_id", "=", subscriptionId);
  if (after) query = query.where("id", "<", after);
  const rows = await query
    .orderBy("id", "desc")
    .limit(size + 1)
    .execute();
  const page = rows.slice(0, size);
  return {
    deliveries: await deliveryMessages(db, page),
    nextCursor: rows.length > size ? Buffer.from(page.at(-1)!.id).toString("base64url") : "",
  };
}

export async function getDelivery(db: Kysely<Database>, tenantId: string, id: string): Promise<Delivery> {
  const row = await db
    .selectFrom("deliveries")
    .select(DELIVERY_COLUMNS)
    .where("tenant_id", "=", tenantId)
    .where("id", "=", id)
    .executeTakeFirst();
  if (!row) throw new NotFoundError(`delivery ${id} not found`);
  return (await deliveryMessages(db, [row]))[0]!;
}

/** Starts a new round for a delivery: same ids and body, a fresh attempt budget. */
export async function redeliver(
  deps: Pick<DeliveryDeps, "db" | "js" | "names" | "now">,
  tenantId: string,
  subscriptionId: string,
  deliveryId: string,
): Promise<Delivery> {
  await getSubscriptionRow(deps.db, tenantId, subscriptionId);
  const now = new Date(deps.now());
  const row = await deps.db
    .updateTable("deliveries")
    .set({
      round: sql<number>`round + 1`,
      status: "pending",
      attempt_count: 0,
      next_attempt_at: now,
      locked_until: null,
      updated_at: now,
    })
    .where("tenant_id", "=", tenantId)
    .where("subscription_id", "=", subscriptionId)
    .where("id", "=", deliveryId)
    .returning(["id", "tenant_id", "channel", "round"])
    .executeTakeFirst();
  if (!row) throw new NotFoundError(`delivery ${deliveryId} not found`);
  await enqueueDelivery(deps.js, deps.names, row);
  return getDelivery(deps.db, tenantId, deliveryId);
}
