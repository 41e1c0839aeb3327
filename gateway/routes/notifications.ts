import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { FastifyInstance } from "fastify";
import {
  type AlertRule,
  AlertRuleType,
  type Delivery,
  type Subscription,
  SubscriptionSchema,
} from "../../services/platform/gen/flowplane/notifier/v1/notifier_pb.js";
import { principalOf, requireScope } from "../auth.js";
import type { GatewayClients } from "../clients.js";
import { badRequest } from "../errors.js";
import { isoTime } from "../json.js";
import { errorResponses, nullableTimestamp, objectOf } from "../openapi.js";

/**
 * Notifications (seed 002): a workspace's subscriptions over webhook, email or Slack, their alert
 * rules and delivery log. Secrets go in and never come back out (`hasSecret`).
 */

const ALERT_TYPES: Record<string, AlertRuleType> = {
  consecutiveFailures: AlertRuleType.CONSECUTIVE_FAILURES,
  failureRate: AlertRuleType.FAILURE_RATE,
  latencyThreshold: AlertRuleType.LATENCY_THRESHOLD,
  latencySpike: AlertRuleType.LATENCY_SPIKE,
  costThreshold: AlertRuleType.COST_THRESHOLD,
  noActivity: AlertRuleType.NO_ACTIVITY,
  errorCount: AlertRuleType.ERROR_COUNT,
};
const ALERT_NAMES = new Map(Object.entries(ALERT_TYPES).map(([name, type]) => [type, name]));

interface AlertRuleBody {
  type: string;
  threshold: number;
  windowHours?: number;
}

interface SubscriptionBody {
  name?: string;
  webhook?: { url: string; secret?: string; standardWebhooks?: boolean };
  email?: { to: string[] };
  slack?: { webhookUrl: string };
  allWorkflows?: boolean;
  workflowIds?: string[];
  levelFilter?: string[];
  triggerFilter?: string[];
  includeFinalOutput?: boolean;
  includeTraceSpans?: boolean;
  includeRateLimits?: boolean;
  includeUsageData?: boolean;
  enabled?: boolean;
  alertRule?: AlertRuleBody | null;
}

const idString = { type: "string", minLength: 1, maxLength: 200 } as const;

const subscriptionProperties = {
  name: { type: "string", maxLength: 200 },
  webhook: {
    type: "object",
    required: ["url"],
    additionalProperties: false,
    properties: {
      url: { type: "string", minLength: 1, maxLength: 2048 },
      secret: { type: "string", maxLength: 256 },
      standardWebhooks: { type: "boolean" },
    },
  },
  email: {
    type: "object",
    required: ["to"],
    additionalProperties: false,
    properties: {
      to: {
        type: "array",
        minItems: 1,
        maxItems: 10,
        items: { type: "string", minLength: 3, maxLength: 254 },
      },
    },
  },
  slack: {
    type: "object",
    required: ["webhookUrl"],
    additionalProperties: false,
    properties: { webhookUrl: { type: "string", minLength: 1, maxLength: 2048 } },
  },
  allWorkflows: { type: "boolean" },
  workflowIds: { type: "array", maxItems: 100, items: idString },
  levelFilter: { type: "array", maxItems: 2, items: { type: "string", enum: ["info", "error"] } },
  triggerFilter: {
    type: "array",
    maxItems: 5,
    items: { type: "string", enum: ["api", "webhook", "schedule", "manual", "chat"] },
  },
  includeFinalOutput: { type: "boolean" },
  includeTraceSpans: { type: "boolean" },
  includeRateLimits: { type: "boolean" },
  includeUsageData: { type: "boolean" },
  enabled: { type: "boolean" },
  alertRule: {
    type: ["object", "null"],
    required: ["type", "threshold"],
    additionalProperties: false,
    properties: {
      type: { type: "string", enum: Object.keys(ALERT_TYPES) },
      threshold: { type: "number", minimum: 0 },
      windowHours: { type: "integer", minimum: 1, maximum: 168 },
    },
  },
} as const;

const createBodySchema = {
  type: "object",
  additionalProperties: false,
  properties: subscriptionProperties,
} as const;

const patchBodySchema = {
  type: "object",
  additionalProperties: false,
  minProperties: 1,
  properties: subscriptionProperties,
} as const;

const idParams = {
  type: "object",
  required: ["id"],
  properties: { id: idString },
} as const;

const deliveryParams = {
  type: "object",
  required: ["id", "deliveryId"],
  properties: { id: idString, deliveryId: idString },
} as const;

const deliveriesQuery = {
  type: "object",
  additionalProperties: false,
  properties: {
    limit: { type: "string", pattern: "^[0-9]{1,3}$" },
    cursor: { type: "string", maxLength: 200 },
  },
} as const;

const subscriptionSchema = {
  type: "object",
  required: ["id", "name", "channel", "allWorkflows", "enabled", "createdAt", "updatedAt"],
  properties: {
    id: { type: "string" },
    name: { type: "string" },
    channel: { type: ["string", "null"], enum: ["webhook", "email", "slack", null] },
    webhook: {
      type: "object",
      properties: {
        url: { type: "string" },
        hasSecret: { type: "boolean" },
        standardWebhooks: { type: "boolean" },
      },
    },
    email: { type: "object", properties: { to: { type: "array", items: { type: "string" } } } },
    slack: { type: "object", properties: { hasSecret: { type: "boolean" } } },
    allWorkflows: { type: "boolean" },
    workflowIds: { type: "array", items: { type: "string" } },
    levelFilter: { type: "array", items: { type: "string" } },
    triggerFilter: { type: "array", items: { type: "string" } },
    includeFinalOutput: { type: "boolean" },
    includeTraceSpans: { type: "boolean" },
    includeRateLimits: { type: "boolean" },
    includeUsageData: { type: "boolean" },
    enabled: { type: "boolean" },
    alertRule: {
      type: ["object", "null"],
      properties: {
        type: { type: ["string", "null"] },
        threshold: { type: "number" },
        windowHours: { type: "integer" },
      },
    },
    disabledReason: { type: ["string", "null"] },
    createdAt: nullableTimestamp,
    updatedAt: nullableTimestamp,
  },
} as const;

const deliverySchema = {
  type: "object",
  required: ["id", "eventId", "eventType", "channel", "status", "createdAt", "attempts"],
  properties: {
    id: { type: "string" },
    eventId: { type: "string" },
    eventType: { type: "string" },
    executionId: { type: ["string", "null"] },
    workflowId: { type: ["string", "null"] },
    channel: { type: "string" },
    status: { type: "string" },
    createdAt: nullableTimestamp,
    nextAttemptAt: nullableTimestamp,
    attempts: {
      type: "array",
      items: {
        type: "object",
        properties: {
          number: { type: "integer" },
          at: nullableTimestamp,
          statusCode: { type: ["integer", "null"] },
          latencyMs: { type: "integer" },
          responseSnippet: { type: "string" },
          error: { type: ["string", "null"] },
        },
      },
    },
  },
} as const;

const oneSubscription = (description: string) => objectOf({ data: subscriptionSchema }, description);
const oneDelivery = (description: string) => objectOf({ data: deliverySchema }, description);

function alertRuleMessage(rule: AlertRuleBody | null | undefined) {
  if (!rule) return undefined;
  return {
    type: ALERT_TYPES[rule.type] ?? AlertRuleType.UNSPECIFIED,
    threshold: rule.threshold,
    windowHours: rule.windowHours ?? 0,
  };
}

function subscriptionInput(body: SubscriptionBody, defaults: boolean): Subscription {
  const channel: MessageInitShape<typeof SubscriptionSchema>["channel"] = body.webhook
    ? {
        case: "webhook",
        value: {
          url: body.webhook.url,
          secret: body.webhook.secret ?? "",
          standardWebhooks: body.webhook.standardWebhooks ?? false,
        },
      }
    : body.email
      ? { case: "email", value: { to: body.email.to } }
      : body.slack
        ? { case: "slack", value: { webhookUrl: body.slack.webhookUrl } }
        : undefined;
  return create(SubscriptionSchema, {
    name: body.name ?? "",
    channel,
    allWorkflows: body.allWorkflows ?? false,
    workflowIds: body.workflowIds ?? [],
    levelFilter: body.levelFilter ?? [],
    triggerFilter: body.triggerFilter ?? [],
    includeFinalOutput: body.includeFinalOutput ?? false,
    includeTraceSpans: body.includeTraceSpans ?? false,
    includeRateLimits: body.includeRateLimits ?? false,
    includeUsageData: body.includeUsageData ?? false,
    enabled: body.enabled ?? defaults,
    alertRule: alertRuleMessage(body.alertRule),
  });
}

const MASK_PATHS: Record<keyof SubscriptionBody, string> = {
  name: "name",
  webhook: "webhook",
  email: "email",
  slack: "slack",
  allWorkflows: "all_workflows",
  workflowIds: "workflow_ids",
  levelFilter: "level_filter",
  triggerFilter: "trigger_filter",
  includeFinalOutput: "include_final_output",
  includeTraceSpans: "include_trace_spans",
  includeRateLimits: "include_rate_limits",
  includeUsageData: "include_usage_data",
  enabled: "enabled",
  alertRule: "alert_rule",
};

function alertRuleJson(rule: AlertRule | undefined) {
  if (!rule) return null;
  return {
    type: ALERT_NAMES.get(rule.type) ?? null,
    threshold: rule.threshold,
    ...(rule.windowHours > 0 ? { windowHours: rule.windowHours } : {}),
  };
}

export function subscriptionJson(sub: Subscription) {
  const channel = sub.channel;
  return {
    id: sub.id,
    name: sub.name,
    channel: channel.case ?? null,
    ...(channel.case === "webhook"
      ? {
          webhook: {
            url: channel.value.url,
            hasSecret: channel.value.hasSecret,
            standardWebhooks: channel.value.standardWebhooks,
          },
        }
      : {}),
    ...(channel.case === "email" ? { email: { to: channel.value.to } } : {}),
    ...(channel.case === "slack" ? { slack: { hasSecret: channel.value.hasWebhookUrl } } : {}),
    allWorkflows: sub.allWorkflows,
    workflowIds: sub.workflowIds,
    levelFilter: sub.levelFilter,
    triggerFilter: sub.triggerFilter,
    includeFinalOutput: sub.includeFinalOutput,
    includeTraceSpans: sub.includeTraceSpans,
    includeRateLimits: sub.includeRateLimits,
    includeUsageData: sub.includeUsageData,
    enabled: sub.enabled,
    alertRule: alertRuleJson(sub.alertRule),
    disabledReason: sub.disabledReason === "" ? null : sub.disabledReason,
    createdAt: isoTime(sub.createdAt),
    updatedAt: isoTime(sub.updatedAt),
  };
}

export function deliveryJson(d: Delivery) {
  return {
    id: d.id,
    eventId: d.eventId,
    eventType: d.eventType,
    executionId: d.executionId === "" ? null : d.executionId,
    workflowId: d.workflowId === "" ? null : d.workflowId,
    channel: d.channel,
    status: d.status,
    createdAt: isoTime(d.createdAt),
    nextAttemptAt: isoTime(d.nextAttemptAt),
    attempts: d.attempts.map((a) => ({
      number: a.number,
      at: isoTime(a.at),
      statusCode: a.statusCode === 0 ? null : a.statusCode,
      latencyMs: Number(a.latencyMs),
      responseSnippet: a.responseSnippet,
      error: a.error === "" ? null : a.error,
    })),
  };
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`notifier answered without a ${what}`);
  return value;
}

export function registerNotificationRoutes(app: FastifyInstance, clients: GatewayClients): void {
  const read = requireScope(clients.auth, "notifications:read");
  const write = requireScope(clients.auth, "notifications:write");
  const notifier = clients.notifications;

  app.post<{ Body: SubscriptionBody }>(
    "/api/v1/notifications",
    {
      schema: {
        summary: "Create a subscription (exactly one of webhook, email or slack)",
        tags: ["notifications"],
        body: createBodySchema,
        response: { 201: oneSubscription("The subscription"), ...errorResponses([400, 413, 415]) },
      },
      preValidation: write,
    },
    async (request, reply) => {
      const channels = ["webhook", "email", "slack"].filter((c) => c in request.body);
      if (channels.length !== 1) throw badRequest("body must have exactly one of webhook, email or slack");
      const { subscription } = await notifier.createSubscription({
        tenantId: principalOf(request).tenantId,
        subscription: subscriptionInput(request.body, true),
      });
      return reply.code(201).send({ data: subscriptionJson(required(subscription, "subscription")) });
    },
  );

  app.get(
    "/api/v1/notifications",
    {
      schema: {
        summary: "List the workspace's subscriptions",
        tags: ["notifications"],
        response: {
          200: objectOf({ data: { type: "array", items: subscriptionSchema } }, "The subscriptions"),
          ...errorResponses([]),
        },
      },
      preValidation: read,
    },
    async (request) => {
      const { subscriptions } = await notifier.listSubscriptions({
        tenantId: principalOf(request).tenantId,
      });
      return { data: subscriptions.map(subscriptionJson) };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/notifications/:id",
    {
      schema: {
        summary: "Get a subscription",
        tags: ["notifications"],
        params: idParams,
        response: { 200: oneSubscription("The subscription"), ...errorResponses([400, 404]) },
      },
      preValidation: read,
    },
    async (request) => {
      const { subscription } = await notifier.getSubscription({
        tenantId: principalOf(request).tenantId,
        id: request.params.id,
      });
      return { data: subscriptionJson(required(subscription, "subscription")) };
    },
  );

  app.patch<{ Params: { id: string }; Body: SubscriptionBody }>(
    "/api/v1/notifications/:id",
    {
      schema: {
        summary: "Change some fields of a subscription",
        tags: ["notifications"],
        params: idParams,
        body: patchBodySchema,
        response: { 200: oneSubscription("The subscription"), ...errorResponses([400, 404, 413, 415]) },
      },
      preValidation: write,
    },
    async (request) => {
      const paths = Object.keys(request.body).map((key) => MASK_PATHS[key as keyof SubscriptionBody]);
      const { subscription } = await notifier.updateSubscription({
        tenantId: principalOf(request).tenantId,
        id: request.params.id,
        subscription: subscriptionInput(request.body, false),
        updateMask: { paths },
      });
      return { data: subscriptionJson(required(subscription, "subscription")) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/notifications/:id",
    {
      schema: {
        summary: "Delete a subscription",
        tags: ["notifications"],
        params: idParams,
        response: { 204: { type: "null", description: "Deleted" }, ...errorResponses([400, 404]) },
      },
      preValidation: write,
    },
    async (request, reply) => {
      await notifier.deleteSubscription({ tenantId: principalOf(request).tenantId, id: request.params.id });
      return reply.code(204).send();
    },
  );

  app.get<{ Params: { id: string }; Querystring: { limit?: string; cursor?: string } }>(
    "/api/v1/notifications/:id/deliveries",
    {
      schema: {
        summary: "List a subscription's deliveries with their attempts",
        tags: ["notifications"],
        params: idParams,
        querystring: deliveriesQuery,
        response: {
          200: objectOf(
            { data: { type: "array", items: deliverySchema }, nextCursor: { type: ["string", "null"] } },
            "One page of deliveries",
          ),
          ...errorResponses([400, 404]),
        },
      },
      preValidation: read,
    },
    async (request) => {
      const limit = request.query.limit === undefined ? 0 : Number(request.query.limit);
      const { deliveries, nextCursor } = await notifier.listDeliveries({
        tenantId: principalOf(request).tenantId,
        subscriptionId: request.params.id,
        limit: limit === 0 && request.query.limit !== undefined ? -1 : limit,
        cursor: request.query.cursor ?? "",
      });
      return { data: deliveries.map(deliveryJson), nextCursor: nextCursor === "" ? null : nextCursor };
    },
  );

  app.post<{ Params: { id: string; deliveryId: string } }>(
    "/api/v1/notifications/:id/deliveries/:deliveryId/redeliver",
    {
      schema: {
        summary: "Send a delivery again",
        tags: ["notifications"],
        params: deliveryParams,
        response: { 202: oneDelivery("The delivery, queued again"), ...errorResponses([400, 404]) },
      },
      preValidation: write,
    },
    async (request, reply) => {
      const { delivery } = await notifier.redeliver({
        tenantId: principalOf(request).tenantId,
        subscriptionId: request.params.id,
        deliveryId: request.params.deliveryId,
      });
      return reply.code(202).send({ data: deliveryJson(required(delivery, "delivery")) });
    },
  );

  app.post<{ Params: { id: string } }>(
    "/api/v1/notifications/:id/test",
    {
      schema: {
        summary: "Send a test event to a subscription",
        tags: ["notifications"],
        params: idParams,
        response: { 202: oneDelivery("The test delivery, queued"), ...errorResponses([400, 404]) },
      },
      preValidation: write,
    },
    async (request, reply) => {
      const { delivery } = await notifier.testSubscription({
        tenantId: principalOf(request).tenantId,
        id: request.params.id,
      });
      return reply.code(202).send({ data: deliveryJson(required(delivery, "delivery")) });
    },
  );
}
