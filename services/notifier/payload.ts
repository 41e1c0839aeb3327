import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Limits } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  type Cost,
  type ExecutionCompleted,
  ExecutionStatus,
  type Tokens,
  type TraceSpan,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";

/**
 * The seed's "Estructura de carga útil", built once per delivery and stored as compact JSON: the
 * bytes sent (and signed) are exactly JSON.stringify of this object, so a receiver that re-serialises
 * the parsed body with JSON.stringify (the seed's Node example) gets the same string back.
 */

export const EXECUTION_COMPLETED = "workflow.execution.completed";
export const NO_ACTIVITY_ALERT = "workflow.alert.no_activity";
export const TEST_EVENT = "notification.test";

export interface PayloadOptions {
  includeFinalOutput: boolean;
  includeTraceSpans: boolean;
  includeRateLimits: boolean;
  includeUsageData: boolean;
}

const TRIGGERS: Record<Trigger, string | null> = {
  [Trigger.UNSPECIFIED]: null,
  [Trigger.API]: "api",
  [Trigger.WEBHOOK]: "webhook",
  [Trigger.SCHEDULE]: "schedule",
  [Trigger.MANUAL]: "manual",
  [Trigger.CHAT]: "chat",
};

export function triggerName(trigger: Trigger): string | null {
  return TRIGGERS[trigger] ?? null;
}

export function statusName(status: ExecutionStatus): string {
  return status === ExecutionStatus.SUCCESS
    ? "success"
    : status === ExecutionStatus.ERROR
      ? "error"
      : status === ExecutionStatus.RUNNING
        ? "running"
        : status === ExecutionStatus.QUEUED
          ? "queued"
          : "unspecified";
}

export function levelOf(status: ExecutionStatus): string {
  return status === ExecutionStatus.ERROR ? "error" : "info";
}

function iso(ts: Timestamp | undefined): string | null {
  return ts ? timestampDate(ts).toISOString() : null;
}

function tokensJson(tokens: Tokens | undefined): JsonObject {
  return {
    prompt: Number(tokens?.prompt ?? 0n),
    completion: Number(tokens?.completion ?? 0n),
    total: Number(tokens?.total ?? 0n),
  };
}

export function costJson(cost: Cost | undefined): JsonObject {
  const models: JsonObject = {};
  for (const [model, c] of Object.entries(cost?.models ?? {})) {
    models[model] = { input: c.input, output: c.output, total: c.total, tokens: tokensJson(c.tokens) };
  }
  return { total: cost?.total ?? 0, tokens: tokensJson(cost?.tokens), models };
}

/** A trace span in the wire shape of DESIGN §5b; absent optional parts are left out. */
export function traceSpanJson(span: TraceSpan): JsonObject {
  const out: JsonObject = {
    id: span.id,
    blockId: span.blockId,
    name: span.name,
    type: span.type,
    status: span.status,
    startTime: iso(span.startTime),
    endTime: iso(span.endTime),
    duration: Number(span.duration),
  };
  if (span.input) out.input = toJson(ValueSchema, span.input);
  if (span.output) out.output = toJson(ValueSchema, span.output);
  if (span.error !== undefined) out.error = span.error;
  if (span.model !== undefined) out.model = span.model;
  if (span.tokens) out.tokens = tokensJson(span.tokens);
  if (span.cost) out.cost = { input: span.cost.input, output: span.cost.output, total: span.cost.total };
  if (span.loopId !== undefined) out.loopId = span.loopId;
  if (span.parallelId !== undefined) out.parallelId = span.parallelId;
  if (span.iterationIndex !== undefined) out.iterationIndex = span.iterationIndex;
  if (span.children.length > 0) out.children = span.children.map(traceSpanJson);
  return out;
}

/** seed 002 limits.workflowExecutionRateLimit. */
export function rateLimitsJson(limits: Limits | undefined): JsonValue {
  const bucket = (
    b: { requestsPerMinute: number; maxBurst: number; remaining: number; resetAt?: Timestamp } | undefined,
  ) =>
    b
      ? {
          requestsPerMinute: b.requestsPerMinute,
          maxBurst: b.maxBurst,
          remaining: b.remaining,
          resetAt: iso(b.resetAt),
        }
      : null;
  const rl = limits?.workflowExecutionRateLimit;
  if (!rl) return null;
  return { sync: bucket(rl.sync), async: bucket(rl.async) };
}

/** seed 002 limits.usage. */
export function usageJson(limits: Limits | undefined): JsonValue {
  const usage = limits?.usage;
  if (!usage) return null;
  return {
    currentPeriodCost: usage.currentPeriodCost,
    limit: usage.limit,
    plan: usage.plan,
    isExceeded: usage.isExceeded,
  };
}

/**
 * links.log: the notifier never learns the log id (the logs service assigns it when it ingests the
 * same completion), so the link is the log list filtered to this execution, which returns exactly
 * that log.
 */
export function executionLinks(executionId: string): JsonObject {
  const id = encodeURIComponent(executionId);
  return { log: `/v1/logs?executionId=${id}`, execution: `/v1/logs/executions/${id}` };
}

/** The data object of a workflow.execution.completed event, optional parts per `options`. */
export function executionData(
  event: ExecutionCompleted,
  options: PayloadOptions,
  limits: Limits | undefined,
): JsonObject {
  const data: JsonObject = {
    workflowId: event.workflowId,
    executionId: event.executionId,
    status: statusName(event.status),
    level: levelOf(event.status),
    trigger: triggerName(event.trigger),
    startedAt: iso(event.startedAt),
    endedAt: iso(event.endedAt),
    totalDurationMs: Number(event.durationMs),
    cost: costJson(event.cost),
    files: null,
  };
  if (options.includeFinalOutput) data.finalOutput = event.finalOutput ?? null;
  if (options.includeTraceSpans) data.traceSpans = event.traceSpans.map(traceSpanJson);
  if (options.includeRateLimits) data.rateLimits = rateLimitsJson(limits);
  if (options.includeUsageData) data.usage = usageJson(limits);
  return data;
}

export interface EventEnvelope {
  id: string;
  type: string;
  timestamp: number;
  data: JsonObject;
  links?: JsonObject;
  alert?: JsonObject;
}

/** The compact JSON body (key order: id, type, timestamp, data, links, alert). */
export function serializeEvent(envelope: EventEnvelope): string {
  const ordered: JsonObject = {
    id: envelope.id,
    type: envelope.type,
    timestamp: envelope.timestamp,
    data: envelope.data,
  };
  if (envelope.links) ordered.links = envelope.links;
  if (envelope.alert) ordered.alert = envelope.alert;
  return JSON.stringify(ordered);
}
