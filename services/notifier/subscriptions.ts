import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely, Selectable } from "kysely";
import { InvalidArgumentError, NotFoundError, ResourceExhaustedError } from "../platform/errors.js";
import {
  AlertRuleSchema,
  AlertRuleType,
  type Subscription,
  SubscriptionSchema,
} from "../platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { newId } from "../platform/ids.js";
import type { SecretBox } from "./secrets.js";
import type {
  AlertRuleName,
  ChannelConfig,
  ChannelName,
  Database,
  StoredAlertRule,
  SubscriptionsTable,
} from "./store.js";

export type SubscriptionRow = Selectable<SubscriptionsTable>;

export const LEVELS = ["info", "error"] as const;
export const TRIGGERS = ["api", "webhook", "schedule", "manual", "chat"] as const;
export const MAX_EMAIL_RECIPIENTS = 10;
export const MAX_WORKFLOW_IDS = 100;
export const MAX_ALERT_WINDOW_HOURS = 168;

export const ALERT_RULE_NAMES: Record<Exclude<AlertRuleType, AlertRuleType.UNSPECIFIED>, AlertRuleName> = {
  [AlertRuleType.CONSECUTIVE_FAILURES]: "consecutiveFailures",
  [AlertRuleType.FAILURE_RATE]: "failureRate",
  [AlertRuleType.LATENCY_THRESHOLD]: "latencyThreshold",
  [AlertRuleType.LATENCY_SPIKE]: "latencySpike",
  [AlertRuleType.COST_THRESHOLD]: "costThreshold",
  [AlertRuleType.NO_ACTIVITY]: "noActivity",
  [AlertRuleType.ERROR_COUNT]: "errorCount",
};

const ALERT_RULE_TYPES = Object.fromEntries(
  Object.entries(ALERT_RULE_NAMES).map(([type, name]) => [name, Number(type) as AlertRuleType]),
) as Record<AlertRuleName, AlertRuleType>;

/** Rules whose `windowHours` matters. */
const WINDOWED_RULES: ReadonlySet<AlertRuleName> = new Set([
  "failureRate",
  "latencySpike",
  "noActivity",
  "errorCount",
]);

const EMAIL = /^[^\s@<>,;"]+@[^\s@<>,;"]+\.[^\s@<>,;"]+$/;

function checkHttpUrl(field: string, value: string): void {
  if (value.length > 2048) throw new InvalidArgumentError(`${field} must be at most 2048 characters`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(`${field} must be an absolute http(s) URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError(`${field} must use http or https`);
  }
  if (url.username || url.password) throw new InvalidArgumentError(`${field} must not contain credentials`);
}

function checkStandardWebhooksSecret(secret: string): void {
  const raw = secret.startsWith("whsec_") ? secret.slice(6) : "";
  if (raw === "" || !/^[A-Za-z0-9+/]+={0,2}$/.test(raw) || Buffer.from(raw, "base64").length < 24) {
    throw new InvalidArgumentError(
      'webhook.secret must be a Standard Webhooks secret ("whsec_" + base64 of 24 to 64 bytes) when standardWebhooks is on',
    );
  }
}

/** The channel part of a row, checked; `keepSecret` is the stored box reused when none is given. */
interface ChannelUpdate {
  channel: ChannelName;
  config: ChannelConfig;
  /** New plaintext secret, null to clear, undefined to keep the stored one. */
  secret: string | null | undefined;
}

function channelFrom(sub: Subscription, current: SubscriptionRow | undefined): ChannelUpdate {
  const ch = sub.channel;
  switch (ch.case) {
    case "webhook": {
      checkHttpUrl("webhook.url", ch.value.url);
      if (ch.value.secret.length > 256)
        throw new InvalidArgumentError("webhook.secret must be at most 256 characters");
      const keep = current?.channel === "webhook" && ch.value.secret === "";
      if (ch.value.standardWebhooks) {
        if (ch.value.secret !== "") checkStandardWebhooksSecret(ch.value.secret);
        else if (!keep || !current?.secret_box) {
          throw new InvalidArgumentError("webhook.secret is required when standardWebhooks is on");
        }
      }
      return {
        channel: "webhook",
        config: { url: ch.value.url, standardWebhooks: ch.value.standardWebhooks },
        secret: ch.value.secret !== "" ? ch.value.secret : keep ? undefined : null,
      };
    }
    case "email": {
      const to = ch.value.to;
      if (to.length === 0) throw new InvalidArgumentError("email.to must list at least one address");
      if (to.length > MAX_EMAIL_RECIPIENTS) {
        throw new InvalidArgumentError(`email.to must list at most ${MAX_EMAIL_RECIPIENTS} addresses`);
      }
      for (const address of to) {
        if (address.length > 254 || !EMAIL.test(address)) {
          throw new InvalidArgumentError(`email.to contains an invalid address: ${JSON.stringify(address)}`);
        }
      }
      return { channel: "email", config: { to: [...new Set(to)] }, secret: null };
    }
    case "slack": {
      if (ch.value.webhookUrl === "") {
        if (current?.channel === "slack" && current.secret_box)
          return { channel: "slack", config: {}, secret: undefined };
        throw new InvalidArgumentError("slack.webhookUrl is required");
      }
      checkHttpUrl("slack.webhookUrl", ch.value.webhookUrl);
      return { channel: "slack", config: {}, secret: ch.value.webhookUrl };
    }
    default:
      throw new InvalidArgumentError("one channel is required: webhook, email or slack");
  }
}

function alertRuleFrom(sub: Subscription): StoredAlertRule | null {
  const rule = sub.alertRule;
  if (!rule) return null;
  const type = ALERT_RULE_NAMES[rule.type as Exclude<AlertRuleType, AlertRuleType.UNSPECIFIED>];
  if (!type) {
    throw new InvalidArgumentError(
      `alertRule.type must be one of ${Object.values(ALERT_RULE_NAMES).join(", ")}`,
    );
  }
  const { threshold, windowHours } = rule;
  if (!Number.isFinite(threshold) || threshold < 0) {
    throw new InvalidArgumentError("alertRule.threshold must be a number ≥ 0");
  }
  if (type !== "noActivity" && type !== "errorCount" && threshold === 0) {
    throw new InvalidArgumentError("alertRule.threshold must be greater than 0");
  }
  if ((type === "consecutiveFailures" || type === "errorCount") && !Number.isInteger(threshold)) {
    throw new InvalidArgumentError("alertRule.threshold must be a whole number for this rule");
  }
  if (type === "failureRate" && threshold >= 100) {
    throw new InvalidArgumentError("alertRule.threshold is a percentage below 100 for failureRate");
  }
  if (WINDOWED_RULES.has(type)) {
    if (!Number.isInteger(windowHours) || windowHours < 1 || windowHours > MAX_ALERT_WINDOW_HOURS) {
      throw new InvalidArgumentError(
        `alertRule.windowHours must be a whole number from 1 to ${MAX_ALERT_WINDOW_HOURS}`,
      );
    }
  }
  return { type, threshold, windowHours: WINDOWED_RULES.has(type) ? windowHours : 0 };
}

function checkSelection(sub: Subscription): void {
  if (sub.name.length > 200) throw new InvalidArgumentError("name must be at most 200 characters");
  if (sub.allWorkflows && sub.workflowIds.length > 0) {
    throw new InvalidArgumentError("workflowIds must be empty when allWorkflows is true");
  }
  if (!sub.allWorkflows && sub.workflowIds.length === 0) {
    throw new InvalidArgumentError("workflowIds must list at least one workflow, or set allWorkflows");
  }
  if (sub.workflowIds.length > MAX_WORKFLOW_IDS) {
    throw new InvalidArgumentError(`workflowIds must list at most ${MAX_WORKFLOW_IDS} workflows`);
  }
  for (const id of sub.workflowIds) {
    if (id === "" || id.length > 200) throw new InvalidArgumentError("workflowIds contains an invalid id");
  }
  for (const level of sub.levelFilter) {
    if (!(LEVELS as readonly string[]).includes(level)) {
      throw new InvalidArgumentError(`levelFilter values must be one of ${LEVELS.join(", ")}`);
    }
  }
  for (const trigger of sub.triggerFilter) {
    if (!(TRIGGERS as readonly string[]).includes(trigger)) {
      throw new InvalidArgumentError(`triggerFilter values must be one of ${TRIGGERS.join(", ")}`);
    }
  }
}

/** The REST/RPC view of a row: secrets are never included, only whether one is set. */
export function subscriptionMessage(row: SubscriptionRow): Subscription {
  const config = row.channel_config;
  const hasSecret = row.secret_box !== null;
  const channel: Subscription["channel"] =
    row.channel === "webhook"
      ? {
          case: "webhook",
          value: {
            $typeName: "flowplane.notifier.v1.WebhookChannel",
            url: config.url ?? "",
            secret: "",
            hasSecret,
            standardWebhooks: config.standardWebhooks ?? false,
          },
        }
      : row.channel === "email"
        ? { case: "email", value: { $typeName: "flowplane.notifier.v1.EmailChannel", to: config.to ?? [] } }
        : {
            case: "slack",
            value: {
              $typeName: "flowplane.notifier.v1.SlackChannel",
              webhookUrl: "",
              hasWebhookUrl: hasSecret,
            },
          };
  return create(SubscriptionSchema, {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    channel,
    allWorkflows: row.all_workflows,
    workflowIds: row.workflow_ids,
    levelFilter: row.level_filter,
    triggerFilter: row.trigger_filter,
    includeFinalOutput: row.include_final_output,
    includeTraceSpans: row.include_trace_spans,
    includeRateLimits: row.include_rate_limits,
    includeUsageData: row.include_usage_data,
    enabled: row.enabled,
    alertRule: row.alert_rule
      ? create(AlertRuleSchema, {
          type: ALERT_RULE_TYPES[row.alert_rule.type],
          threshold: row.alert_rule.threshold,
          windowHours: row.alert_rule.windowHours,
        })
      : undefined,
    disabledReason: row.disabled_reason,
    createdAt: timestampFromDate(row.created_at),
    updatedAt: timestampFromDate(row.updated_at),
  });
}

export interface SubscriptionDeps {
  db: Kysely<Database>;
  box: SecretBox;
  maxPerTenant: number;
}

export async function getSubscriptionRow(
  db: Kysely<Database>,
  tenantId: string,
  id: string,
): Promise<SubscriptionRow> {
  const row = await db
    .selectFrom("subscriptions")
    .selectAll()
    .where("tenant_id", "=", tenantId)
    .where("id", "=", id)
    .executeTakeFirst();
  if (!row) throw new NotFoundError(`notification ${id} not found`);
  return row;
}

function requireTenant(tenantId: string): void {
  if (tenantId === "") throw new InvalidArgumentError("tenant_id is required");
}

export async function createSubscription(
  deps: SubscriptionDeps,
  tenantId: string,
  input: Subscription | undefined,
  now = new Date(),
): Promise<SubscriptionRow> {
  requireTenant(tenantId);
  if (!input) throw new InvalidArgumentError("subscription is required");
  const channel = channelFrom(input, undefined);
  const alertRule = alertRuleFrom(input);
  checkSelection(input);
  const id = newId("sub", now.getTime());
  return deps.db.transaction().execute(async (trx) => {
    // Serialises creations per tenant so the cap holds under concurrent requests.
    await trx
      .selectFrom("subscriptions")
      .select("id")
      .where("tenant_id", "=", tenantId)
      .forUpdate()
      .execute();
    const { count } = await trx
      .selectFrom("subscriptions")
      .select((eb) => eb.fn.countAll<number>().as("count"))
      .where("tenant_id", "=", tenantId)
      .executeTakeFirstOrThrow();
    if (Number(count) >= deps.maxPerTenant) {
      throw new ResourceExhaustedError(`a workspace can have at most ${deps.maxPerTenant} notifications`);
    }
    return trx
      .insertInto("subscriptions")
      .values({
        id,
        tenant_id: tenantId,
        name: input.name,
        channel: channel.channel,
        channel_config: JSON.stringify(channel.config),
        secret_box: channel.secret ? deps.box.seal(channel.secret, id) : null,
        all_workflows: input.allWorkflows,
        workflow_ids: input.workflowIds,
        level_filter: input.levelFilter,
        trigger_filter: input.triggerFilter,
        include_final_output: input.includeFinalOutput,
        include_trace_spans: input.includeTraceSpans,
        include_rate_limits: input.includeRateLimits,
        include_usage_data: input.includeUsageData,
        enabled: input.enabled,
        alert_rule: alertRule ? JSON.stringify(alertRule) : null,
        disabled_reason: "",
        failing_since: null,
        created_at: now,
        updated_at: now,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

const UPDATABLE_PATHS = new Set([
  "name",
  "webhook",
  "email",
  "slack",
  "all_workflows",
  "workflow_ids",
  "level_filter",
  "trigger_filter",
  "include_final_output",
  "include_trace_spans",
  "include_rate_limits",
  "include_usage_data",
  "enabled",
  "alert_rule",
]);

export async function updateSubscription(
  deps: SubscriptionDeps,
  tenantId: string,
  id: string,
  patch: Subscription | undefined,
  paths: string[],
  now = new Date(),
): Promise<SubscriptionRow> {
  requireTenant(tenantId);
  if (!patch) throw new InvalidArgumentError("subscription is required");
  for (const path of paths) {
    if (!UPDATABLE_PATHS.has(path))
      throw new InvalidArgumentError(`update_mask path ${path} is not updatable`);
  }
  const current = await getSubscriptionRow(deps.db, tenantId, id);
  const merged = subscriptionMessage(current);
  const has = (p: string) => paths.includes(p);
  if (has("name")) merged.name = patch.name;
  const channelPaths = ["webhook", "email", "slack"].filter(has);
  if (channelPaths.length > 1) throw new InvalidArgumentError("only one channel may be given");
  if (channelPaths.length === 1) {
    if (patch.channel.case !== channelPaths[0])
      throw new InvalidArgumentError(`${channelPaths[0]} is required`);
    merged.channel = patch.channel;
  }
  if (has("all_workflows")) merged.allWorkflows = patch.allWorkflows;
  if (has("workflow_ids")) merged.workflowIds = patch.workflowIds;
  if (has("all_workflows") && patch.allWorkflows && !has("workflow_ids")) merged.workflowIds = [];
  if (has("workflow_ids") && patch.workflowIds.length > 0 && !has("all_workflows"))
    merged.allWorkflows = false;
  if (has("level_filter")) merged.levelFilter = patch.levelFilter;
  if (has("trigger_filter")) merged.triggerFilter = patch.triggerFilter;
  if (has("include_final_output")) merged.includeFinalOutput = patch.includeFinalOutput;
  if (has("include_trace_spans")) merged.includeTraceSpans = patch.includeTraceSpans;
  if (has("include_rate_limits")) merged.includeRateLimits = patch.includeRateLimits;
  if (has("include_usage_data")) merged.includeUsageData = patch.includeUsageData;
  if (has("enabled")) merged.enabled = patch.enabled;
  if (has("alert_rule")) merged.alertRule = patch.alertRule;

  const channel = channelPaths.length === 1 ? channelFrom(merged, current) : undefined;
  const alertRule = alertRuleFrom(merged);
  checkSelection(merged);
  const reEnabled = has("enabled") && patch.enabled;
  const updated = await deps.db
    .updateTable("subscriptions")
    .set({
      name: merged.name,
      ...(channel
        ? {
            channel: channel.channel,
            channel_config: JSON.stringify(channel.config),
            ...(channel.secret !== undefined
              ? { secret_box: channel.secret ? deps.box.seal(channel.secret, id) : null }
              : {}),
          }
        : {}),
      all_workflows: merged.allWorkflows,
      workflow_ids: merged.workflowIds,
      level_filter: merged.levelFilter,
      trigger_filter: merged.triggerFilter,
      include_final_output: merged.includeFinalOutput,
      include_trace_spans: merged.includeTraceSpans,
      include_rate_limits: merged.includeRateLimits,
      include_usage_data: merged.includeUsageData,
      enabled: merged.enabled,
      alert_rule: alertRule ? JSON.stringify(alertRule) : null,
      ...(reEnabled ? { disabled_reason: "", failing_since: null } : {}),
      updated_at: now,
    })
    .where("tenant_id", "=", tenantId)
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  if (!updated) throw new NotFoundError(`notification ${id} not found`);
  return updated;
}

export async function listSubscriptions(db: Kysely<Database>, tenantId: string): Promise<SubscriptionRow[]> {
  requireTenant(tenantId);
  return db.selectFrom("subscriptions").selectAll().where("tenant_id", "=", tenantId).orderBy("id").execute();
}

export async function deleteSubscription(db: Kysely<Database>, tenantId: string, id: string): Promise<void> {
  requireTenant(tenantId);
  const deleted = await db
    .deleteFrom("subscriptions")
    .where("tenant_id", "=", tenantId)
    .where("id", "=", id)
    .returning("id")
    .executeTakeFirst();
  if (!deleted) throw new NotFoundError(`notification ${id} not found`);
}

/** The plaintext channel secret of a row (webhook secret or Slack URL), or undefined. */
export function channelSecret(
  box: SecretBox,
  row: Pick<SubscriptionRow, "id" | "secret_box">,
): string | undefined {
  return row.secret_box ? box.open(row.secret_box, row.id) : undefined;
}
