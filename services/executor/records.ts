/** Conversions between stored execution rows and their protobuf shapes. */
import { create, fromJson, type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type Cost,
  CostSchema,
  ExecutionStatus,
  type TraceSpan,
  TraceSpanSchema,
  Trigger,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { type Execution, ExecutionSchema } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import type { ExecutionRow, ExecutionStatusText, TriggerText } from "./store.js";

const STATUS_BY_TEXT: Record<ExecutionStatusText, ExecutionStatus> = {
  queued: ExecutionStatus.QUEUED,
  running: ExecutionStatus.RUNNING,
  success: ExecutionStatus.SUCCESS,
  error: ExecutionStatus.ERROR,
};

const TRIGGER_BY_TEXT: Record<TriggerText, Trigger> = {
  api: Trigger.API,
  webhook: Trigger.WEBHOOK,
  schedule: Trigger.SCHEDULE,
  manual: Trigger.MANUAL,
  chat: Trigger.CHAT,
};

export function statusFromText(text: ExecutionStatusText): ExecutionStatus {
  return STATUS_BY_TEXT[text] ?? ExecutionStatus.UNSPECIFIED;
}

export function triggerFromText(text: TriggerText): Trigger {
  return TRIGGER_BY_TEXT[text] ?? Trigger.UNSPECIFIED;
}

/** Unspecified means the public API. */
export function triggerText(trigger: Trigger): TriggerText {
  for (const [text, value] of Object.entries(TRIGGER_BY_TEXT)) {
    if (value === trigger) return text as TriggerText;
  }
  return "api";
}

/** Spans as stored in executions.trace_spans. */
export function traceSpansJson(spans: TraceSpan[]): JsonValue[] {
  return spans.map((span) => toJson(TraceSpanSchema, span));
}

export function traceSpansFromJson(json: JsonValue[]): TraceSpan[] {
  return json.map((span) => fromJson(TraceSpanSchema, span));
}

export function costJson(cost: Cost): JsonObject {
  return toJson(CostSchema, cost) as JsonObject;
}

export function costFromJson(json: JsonObject): Cost {
  return fromJson(CostSchema, json);
}

export function executionMessage(row: ExecutionRow): Execution {
  return create(ExecutionSchema, {
    id: row.id,
    workflowId: row.workflow_id,
    workflowVersion: row.workflow_version,
    conversationId: row.conversation_id,
    status: statusFromText(row.status),
    trigger: triggerFromText(row.trigger),
    input: row.input,
    output: row.output,
    path: row.path,
    error: row.error ?? undefined,
    warnings: row.warnings,
    creditUsage: BigInt(row.credit_usage),
    cost: row.cost,
    startedAt: timestampFromDate(row.started_at),
    endedAt: row.ended_at ? timestampFromDate(row.ended_at) : undefined,
    durationMs: BigInt(row.duration_ms),
  });
}
