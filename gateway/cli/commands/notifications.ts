/** `flowplane notification create|list|deliveries` through the gateway (notifications:read/write). */
import type { paths } from "../../client/index.js";
import {
  type CliIo,
  EXIT,
  EXIT_CODES_HELP,
  expectData,
  GATEWAY_OPTIONS_HELP,
  gatewayFrom,
  note,
  onePositional,
  parseGatewayArgs,
  positiveInt,
  printJson,
  table,
  UsageError,
  writeLine,
} from "./common.js";

type Subscription =
  paths["/api/v1/notifications"]["get"]["responses"][200]["content"]["application/json"]["data"][number];
type CreateBody = paths["/api/v1/notifications"]["post"]["requestBody"]["content"]["application/json"];
type AlertType = NonNullable<CreateBody["alertRule"]>["type"];

export const NOTIFICATION_USAGE = `Usage: flowplane notification create (--webhook URL [--secret S] [--standard-webhooks] | --email ADDR... |
                                     --slack WEBHOOK_URL) [--name NAME] [--workflow WF]... [--level L]...
                                     [--trigger T]... [--alert TYPE:THRESHOLD[:WINDOW_HOURS]] [--include WHAT]...
                                     [--disabled] [--json]
       flowplane notification list [--json]
       flowplane notification deliveries SUBSCRIPTION_ID [--limit N] [--json]

Subscriptions of the key's workspace (/api/v1/notifications): create needs notifications:write,
list and deliveries notifications:read. A subscription has one channel; without --workflow it covers
every workflow. Secrets are never shown back.

Options (create):
  --webhook URL           POST signed JSON to URL (--secret signs it; --standard-webhooks adds those headers)
  --email ADDR            send mail to ADDR; repeat for up to 10
  --slack URL             a Slack incoming-webhook URL
  --name NAME             what the subscription is called
  --workflow WF           only runs of this workflow; repeat for several
  --level L               only runs of this level (info, error); repeat for both
  --trigger T             only runs with this trigger (api, webhook, schedule, manual, chat); repeatable
  --alert TYPE:THRESHOLD[:WINDOW_HOURS]
                          an alert rule instead of one notification per run: consecutiveFailures,
                          failureRate, latencyThreshold, latencySpike, costThreshold, noActivity, errorCount
  --include WHAT          add to the payload: finalOutput, traceSpans, rateLimits, usageData; repeatable
  --disabled              create it switched off
  --limit N               deliveries: how many, newest first (default 20)
${GATEWAY_OPTIONS_HELP}

${EXIT_CODES_HELP}`;

const ALERT_TYPES: AlertType[] = [
  "consecutiveFailures",
  "failureRate",
  "latencyThreshold",
  "latencySpike",
  "costThreshold",
  "noActivity",
  "errorCount",
];
const INCLUDES = {
  finalOutput: "includeFinalOutput",
  traceSpans: "includeTraceSpans",
  rateLimits: "includeRateLimits",
  usageData: "includeUsageData",
} as const;
const LEVELS = ["info", "error"] as const;
const TRIGGERS = ["api", "webhook", "schedule", "manual", "chat"] as const;

function oneOf<T extends string>(values: readonly T[], value: string, flag: string): T {
  if ((values as readonly string[]).includes(value)) return value as T;
  throw new UsageError(
    `${flag} must be one of ${values.join(", ")}, got ${JSON.stringify(value)}`,
    NOTIFICATION_USAGE,
  );
}

function target(s: Subscription): string {
  if (s.webhook) return s.webhook.url ?? "";
  if (s.email) return (s.email.to ?? []).join(",");
  if (s.slack) return "(slack webhook)";
  return "";
}

export async function notificationCreate(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(
    args,
    {
      webhook: { type: "string" },
      secret: { type: "string" },
      "standard-webhooks": { type: "boolean" },
      email: { type: "string", multiple: true },
      slack: { type: "string" },
      name: { type: "string" },
      workflow: { type: "string", multiple: true },
      level: { type: "string", multiple: true },
      trigger: { type: "string", multiple: true },
      alert: { type: "string" },
      include: { type: "string", multiple: true },
      disabled: { type: "boolean" },
    },
    NOTIFICATION_USAGE,
  );
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, NOTIFICATION_USAGE);
  }
  const channels = [values.webhook, values.email?.length ? values.email : undefined, values.slack].filter(
    (c) => c !== undefined,
  );
  if (channels.length !== 1) {
    throw new UsageError(
      "give exactly one channel: --webhook URL, --email ADDR or --slack URL",
      NOTIFICATION_USAGE,
    );
  }
  if ((values.secret !== undefined || values["standard-webhooks"]) && values.webhook === undefined) {
    throw new UsageError("--secret and --standard-webhooks apply to --webhook", NOTIFICATION_USAGE);
  }
  const body: CreateBody = {
    ...(values.name ? { name: values.name } : {}),
    ...(values.webhook !== undefined
      ? {
          webhook: {
            url: values.webhook,
            ...(values.secret !== undefined ? { secret: values.secret } : {}),
            ...(values["standard-webhooks"] ? { standardWebhooks: true } : {}),
          },
        }
      : {}),
    ...(values.email?.length ? { email: { to: values.email } } : {}),
    ...(values.slack !== undefined ? { slack: { webhookUrl: values.slack } } : {}),
    ...(values.workflow?.length
      ? { allWorkflows: false, workflowIds: values.workflow }
      : { allWorkflows: true }),
    ...(values.level?.length ? { levelFilter: values.level.map((l) => oneOf(LEVELS, l, "--level")) } : {}),
    ...(values.trigger?.length
      ? { triggerFilter: values.trigger.map((t) => oneOf(TRIGGERS, t, "--trigger")) }
      : {}),
    ...(values.disabled ? { enabled: false } : {}),
  };
  for (const what of values.include ?? []) {
    const field = INCLUDES[oneOf(Object.keys(INCLUDES) as Array<keyof typeof INCLUDES>, what, "--include")];
    body[field] = true;
  }
  if (values.alert !== undefined) {
    const [type = "", threshold = "", windowHours, ...rest] = values.alert.split(":");
    const t = Number(threshold);
    const w = windowHours === undefined ? undefined : Number(windowHours);
    if (
      rest.length > 0 ||
      threshold === "" ||
      !Number.isFinite(t) ||
      (w !== undefined && !Number.isFinite(w))
    ) {
      throw new UsageError(
        "--alert must look like TYPE:THRESHOLD[:WINDOW_HOURS], e.g. failureRate:50:24",
        NOTIFICATION_USAGE,
      );
    }
    body.alertRule = {
      type: oneOf(ALERT_TYPES, type, "--alert type"),
      threshold: t,
      ...(w !== undefined ? { windowHours: w } : {}),
    };
  }
  const gateway = await gatewayFrom(io, values, NOTIFICATION_USAGE);
  const { data } = await expectData(gateway, () => gateway.client.POST("/api/v1/notifications", { body }));
  if (values.json) printJson(io, data);
  else {
    writeLine(io, data.id);
    note(io, `${data.channel} subscription ${data.id} created${data.enabled ? "" : " (disabled)"}`);
  }
  return EXIT.ok;
}

export async function notificationList(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(args, {}, NOTIFICATION_USAGE);
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, NOTIFICATION_USAGE);
  }
  const gateway = await gatewayFrom(io, values, NOTIFICATION_USAGE);
  const page = await expectData(gateway, () => gateway.client.GET("/api/v1/notifications"));
  if (values.json) printJson(io, page);
  else if (page.data.length === 0) writeLine(io, "no subscriptions");
  else {
    writeLine(
      io,
      table(
        ["ID", "NAME", "CHANNEL", "TARGET", "WORKFLOWS", "ALERT", "ENABLED"],
        page.data.map((s) => [
          s.id,
          s.name,
          s.channel,
          target(s),
          s.allWorkflows ? "(all)" : (s.workflowIds ?? []).join(","),
          s.alertRule?.type ? `${s.alertRule.type}:${s.alertRule.threshold}` : null,
          s.enabled ? "yes" : `no${s.disabledReason ? ` (${s.disabledReason})` : ""}`,
        ]),
      ),
    );
  }
  return EXIT.ok;
}

export async function notificationDeliveries(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(args, { limit: { type: "string" } }, NOTIFICATION_USAGE);
  const id = onePositional(positionals, "SUBSCRIPTION_ID", NOTIFICATION_USAGE);
  const limit = positiveInt(values.limit, "--limit", NOTIFICATION_USAGE, 100) ?? 20;
  const gateway = await gatewayFrom(io, values, NOTIFICATION_USAGE);
  const page = await expectData(gateway, () =>
    gateway.client.GET("/api/v1/notifications/{id}/deliveries", {
      params: { path: { id }, query: { limit: String(limit) } },
    }),
  );
  if (values.json) printJson(io, page);
  else if (page.data.length === 0) writeLine(io, "no deliveries");
  else {
    writeLine(
      io,
      table(
        ["ID", "CREATED", "EVENT", "EXECUTION", "STATUS", "ATTEMPTS", "LAST"],
        page.data.map((d) => {
          const last = d.attempts[d.attempts.length - 1];
          const lastText = last ? (last.statusCode ? `HTTP ${last.statusCode}` : (last.error ?? null)) : null;
          return [d.id, d.createdAt, d.eventType, d.executionId, d.status, d.attempts.length, lastText];
        }),
      ),
    );
  }
  return EXIT.ok;
}
