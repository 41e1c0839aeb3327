import type { Client } from "@connectrpc/connect";
import { type Kysely, sql } from "kysely";
import type { AuthService, Limits } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import type { ExecutionCompleted } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import { alertJson, claimCooldown, evaluateRule, inactiveWorkflows } from "./alerts.js";
import { type DeliveryDeps, enqueueDelivery, insertDelivery } from "./deliveries.js";
import {
  EXECUTION_COMPLETED,
  executionData,
  executionLinks,
  levelOf,
  NO_ACTIVITY_ALERT,
  serializeEvent,
  triggerName,
} from "./payload.js";
import {
  type Database,
  type DeliveriesTable,
  type ExecutionOutcome,
  recordExecutionOutcome,
} from "./store.js";
import type { SubscriptionRow } from "./subscriptions.js";

export type AuthClient = Pick<Client<typeof AuthService>, "getLimits">;

type QueuedDelivery = Pick<DeliveriesTable, "id" | "tenant_id" | "channel"> & { round: number };

export interface MatchingDeps extends Pick<DeliveryDeps, "db" | "js" | "names" | "now"> {
  log: Logger;
  auth: AuthClient;
}

/** Enabled subscriptions of the tenant that watch this workflow and let this run's level and trigger through. */
export async function matchingSubscriptions(
  db: Kysely<Database>,
  event: ExecutionCompleted,
): Promise<SubscriptionRow[]> {
  const rows = await db
    .selectFrom("subscriptions")
    .selectAll()
    .where("tenant_id", "=", event.tenantId)
    .where("enabled", "=", true)
    .where((eb) =>
      eb.or([
        eb("all_workflows", "=", true),
        eb(sql.val(event.workflowId), "=", sql<string>`any(workflow_ids)`),
      ]),
    )
    .orderBy("id")
    .execute();
  const level = levelOf(event.status);
  const trigger = triggerName(event.trigger);
  return rows.filter(
    (row) =>
      (row.level_filter.length === 0 || row.level_filter.includes(level)) &&
      (row.trigger_filter.length === 0 || (trigger !== null && row.trigger_filter.includes(trigger))),
  );
}

async function limitsFor(deps: MatchingDeps, tenantId: string): Promise<Limits | undefined> {
  try {
    return (await deps.auth.getLimits({ tenantId })).limits;
  } catch (err) {
    // Notifications go out without the numbers rather than not at all; the fields read null.
    deps.log.warn({ err, tenantId }, "could not read limits for a notification payload");
    return undefined;
  }
}

/**
 * Everything a completion causes in the notifier: the stats and window (once per execution), one
 * delivery per matching per-run subscription, and alerts of the rules it trips. Deliveries are
 * unique per (subscription, execution), and queueing happens after the commit and again on a
 * redelivered completion, so a crash anywhere loses nothing and duplicates nothing.
 */
export async function handleCompletion(
  deps: MatchingDeps,
  event: ExecutionCompleted,
  outcome: ExecutionOutcome,
): Promise<void> {
  await recordExecutionOutcome(deps.db, outcome);
  const subscriptions = await matchingSubscriptions(deps.db, event);
  const queued: QueuedDelivery[] = [];
  if (subscriptions.length > 0) {
    const needsLimits = subscriptions.some(
      (s) => s.alert_rule === null && (s.include_rate_limits || s.include_usage_data),
    );
    const limits = needsLimits ? await limitsFor(deps, event.tenantId) : undefined;
    const now = new Date(deps.now());
    for (const sub of subscriptions) {
      if (sub.alert_rule === null) {
        const eventId = newId("evt", now.getTime());
        const payload = serializeEvent({
          id: eventId,
          type: EXECUTION_COMPLETED,
          timestamp: now.getTime(),
          data: executionData(
            event,
            {
              includeFinalOutput: sub.include_final_output,
              includeTraceSpans: sub.include_trace_spans,
              includeRateLimits: sub.include_rate_limits,
              includeUsageData: sub.include_usage_data,
            },
            limits,
          ),
          links: executionLinks(event.executionId),
        });
        const id = await insertDelivery(
          deps.db,
          {
            tenantId: sub.tenant_id,
            subscriptionId: sub.id,
            channel: sub.channel,
            dedupeKey: event.executionId,
            eventId,
            eventType: EXECUTION_COMPLETED,
            executionId: event.executionId,
            workflowId: event.workflowId,
            payload,
          },
          now,
        );
        queued.push({ id, tenant_id: sub.tenant_id, channel: sub.channel, round: 0 });
      } else {
        // Also on a redelivered completion: the delivery's unique key and the cooldown keep it single.
        const alert = await raiseExecutionAlert(deps, sub, event, outcome, now);
        if (alert) queued.push(alert);
      }
    }
  }
  // Queued after the commit, and again when the completion is redelivered: the msgID and the
  // claim in processDeliveryTask make a repeated message harmless.
  await Promise.all(queued.map((row) => enqueueDelivery(deps.js, deps.names, row)));
}

async function raiseExecutionAlert(
  deps: MatchingDeps,
  sub: SubscriptionRow,
  event: ExecutionCompleted,
  outcome: ExecutionOutcome,
  now: Date,
): Promise<QueuedDelivery | undefined> {
  const rule = sub.alert_rule!;
  const dedupeKey = `alert:${rule.type}:${event.executionId}`;
  const finding = await evaluateRule(deps.db, rule, outcome, now);
  if (!finding) return undefined;
  const id = await deps.db.transaction().execute(async (trx) => {
    // The cooldown claim and the delivery commit together: a crash cannot use the claim up unsent.
    if (!(await claimCooldown(trx, sub.id, rule.type, outcome.workflowId, now))) {
      // Already raised for this very execution by an earlier, interrupted handling: queue it again.
      const existing = await trx
        .selectFrom("deliveries")
        .select("id")
        .where("subscription_id", "=", sub.id)
        .where("dedupe_key", "=", dedupeKey)
        .executeTakeFirst();
      return existing?.id;
    }
    const eventId = newId("evt", now.getTime());
    const options = {
      includeFinalOutput: sub.include_final_output,
      includeTraceSpans: sub.include_trace_spans,
      includeRateLimits: false,
      includeUsageData: false,
    };
    return insertDelivery(
      trx,
      {
        tenantId: sub.tenant_id,
        subscriptionId: sub.id,
        channel: sub.channel,
        dedupeKey,
        eventId,
        eventType: EXECUTION_COMPLETED,
        executionId: event.executionId,
        workflowId: event.workflowId,
        payload: serializeEvent({
          id: eventId,
          type: EXECUTION_COMPLETED,
          timestamp: now.getTime(),
          data: executionData(event, options, undefined),
          links: executionLinks(event.executionId),
          alert: alertJson(rule, finding),
        }),
      },
      now,
    );
  });
  return id === undefined ? undefined : { id, tenant_id: sub.tenant_id, channel: sub.channel, round: 0 };
}

/**
 * The periodic no-activity check. Any number of replicas may run it: the cooldown claim lets one
 * of them fire per (subscription, workflow) per hour.
 */
export async function checkNoActivity(deps: MatchingDeps): Promise<number> {
  const now = new Date(deps.now());
  const subs = await deps.db
    .selectFrom("subscriptions")
    .selectAll()
    .where("enabled", "=", true)
    .where(sql<string>`alert_rule->>'type'`, "=", "noActivity")
    .execute();
  let fired = 0;
  for (const sub of subs) {
    const rule = sub.alert_rule!;
    for (const { workflowId, lastExecutionAt } of await inactiveWorkflows(deps.db, sub, rule, now)) {
      const queued = await deps.db.transaction().execute(async (trx) => {
        if (!(await claimCooldown(trx, sub.id, rule.type, workflowId, now))) return undefined;
        const eventId = newId("evt", now.getTime());
        const id = await insertDelivery(
          trx,
          {
            tenantId: sub.tenant_id,
            subscriptionId: sub.id,
            channel: sub.channel,
            dedupeKey: `alert:noActivity:${workflowId}:${now.getTime()}`,
            eventId,
            eventType: NO_ACTIVITY_ALERT,
            executionId: "",
            workflowId,
            payload: serializeEvent({
              id: eventId,
              type: NO_ACTIVITY_ALERT,
              timestamp: now.getTime(),
              data: {
                workflowId,
                lastExecutionAt: lastExecutionAt?.toISOString() ?? null,
                inactivityHours: rule.windowHours,
              },
              alert: alertJson(rule, {
                observed: rule.windowHours,
                message: `no runs of workflow ${workflowId} in the last ${rule.windowHours} h`,
              }),
            }),
          },
          now,
        );
        return { id, tenant_id: sub.tenant_id, channel: sub.channel, round: 0 };
      });
      if (queued) {
        fired += 1;
        await enqueueDelivery(deps.js, deps.names, queued);
      }
    }
  }
  // Deliveries committed by a process that died before queueing them.
  const stuck = await deps.db
    .selectFrom("deliveries")
    .select(["id", "tenant_id", "channel", "round"])
    .where("status", "=", "pending")
    .where("attempt_count", "=", 0)
    .where("created_at", "<", new Date(now.getTime() - 60_000))
    .limit(1000)
    .execute();
  for (const row of stuck) await enqueueDelivery(deps.js, deps.names, row);
  // The window only needs the longest alert window.
  await deps.db
    .deleteFrom("execution_window")
    .where("finished_at", "<", new Date(now.getTime() - 7 * 24 * 60 * 60 * 1000))
    .execute();
  return fired;
}
