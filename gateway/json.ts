import { type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { TokenKind } from "../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import {
  type Cost,
  ExecutionStatus,
  type ModelCost,
  type Tokens as TokenCounts,
  type TraceSpan,
  Trigger,
} from "../services/platform/gen/flowplane/events/v1/execution_pb.js";
import type {
  Conversation,
  ExecuteResponse,
  Execution,
} from "../services/platform/gen/flowplane/executor/v1/executor_pb.js";
import type { LogEntry, WorkflowSummary } from "../services/platform/gen/flowplane/logs/v1/logs_pb.js";

/**
 * Proto messages → the REST JSON shapes of the seeds (DESIGN §5b): ISO-8601 UTC timestamps with
 * milliseconds, enums as lower-case strings, durations in ms and money in USD as JSON numbers.
 */

export function isoTime(ts: Timestamp | undefined): string | null {
  return ts ? timestampDate(ts).toISOString() : null;
}

const triggerNames: Record<Trigger, string | null> = {
  [Trigger.UNSPECIFIED]: null,
  [Trigger.API]: "api",
  [Trigger.WEBHOOK]: "webhook",
  [Trigger.SCHEDULE]: "schedule",
  [Trigger.MANUAL]: "manual",
  [Trigger.CHAT]: "chat",
};

export function triggerName(trigger: Trigger): string | null {
  return triggerNames[trigger] ?? null;
}

const statusNames: Record<ExecutionStatus, string | null> = {
  [ExecutionStatus.UNSPECIFIED]: null,
  [ExecutionStatus.QUEUED]: "queued",
  [ExecutionStatus.RUNNING]: "running",
  [ExecutionStatus.SUCCESS]: "success",
  [ExecutionStatus.ERROR]: "error",
};

export function statusName(status: ExecutionStatus): string | null {
  return statusNames[status] ?? null;
}

export function tokenKindName(kind: TokenKind): string | null {
  if (kind === TokenKind.ADMIN) return "admin";
  if (kind === TokenKind.APP) return "app";
  return null;
}

function valueJson(value: Value | undefined): JsonValue | undefined {
  return value === undefined ? undefined : toJson(ValueSchema, value);
}

function tokenCountsJson(tokens: TokenCounts | undefined) {
  return {
    prompt: Number(tokens?.prompt ?? 0n),
    completion: Number(tokens?.completion ?? 0n),
    total: Number(tokens?.total ?? 0n),
  };
}

function modelCostJson(cost: ModelCost) {
  return { input: cost.input, output: cost.output, total: cost.total, tokens: tokenCountsJson(cost.tokens) };
}

export function costJson(cost: Cost | undefined) {
  const models: Record<string, ReturnType<typeof modelCostJson>> = {};
  for (const [model, modelCost] of Object.entries(cost?.models ?? {}))
    models[model] = modelCostJson(modelCost);
  return { total: cost?.total ?? 0, tokens: tokenCountsJson(cost?.tokens), models };
}

export interface TraceSpanJson {
  id: string;
  blockId: string;
  name: string;
  type: string;
  status: string;
  startTime: string | null;
  endTime: string | null;
  duration: number;
  input?: JsonValue;
  output?: JsonValue;
  error?: string;
  model?: string;
  tokens?: { prompt: number; completion: number; total: number };
  cost?: { input: number; output: number; total: number };
  loopId?: string;
  parallelId?: string;
  iterationIndex?: number;
  children?: TraceSpanJson[];
}

export function traceSpanJson(span: TraceSpan): TraceSpanJson {
  const out: TraceSpanJson = {
    id: span.id,
    blockId: span.blockId,
    name: span.name,
    type: span.type,
    status: span.status,
    startTime: isoTime(span.startTime),
    endTime: isoTime(span.endTime),
    duration: Number(span.duration),
  };
  const input = valueJson(span.input);
  if (input !== undefined) out.input = input;
  const output = valueJson(span.output);
  if (output !== undefined) out.output = output;
  if (span.error !== undefined) out.error = span.error;
  if (span.model !== undefined) out.model = span.model;
  if (span.tokens) out.tokens = tokenCountsJson(span.tokens);
  if (span.cost) out.cost = { input: span.cost.input, output: span.cost.output, total: span.cost.total };
  if (span.loopId !== undefined) out.loopId = span.loopId;
  if (span.parallelId !== undefined) out.parallelId = span.parallelId;
  if (span.iterationIndex !== undefined) out.iterationIndex = span.iterationIndex;
  if (span.children.length > 0) out.children = span.children.map(traceSpanJson);
  return out;
}

export function executeResponseJson(res: ExecuteResponse) {
  return {
    conversationId: res.conversationId,
    executionId: res.executionId,
    output: res.output ?? {},
    creditUsage: Number(res.creditUsage),
    status: statusName(res.status),
    ...(res.error !== undefined ? { error: res.error } : {}),
  };
}

export function executionJson(execution: Execution) {
  return {
    executionId: execution.id,
    workflowVersion: execution.workflowVersion,
    status: statusName(execution.status),
    trigger: triggerName(execution.trigger),
    input: execution.input ?? {},
    output: execution.output ?? null,
    path: execution.path,
    error: execution.error ?? null,
    warnings: execution.warnings,
    creditUsage: Number(execution.creditUsage),
    cost: execution.cost,
    startedAt: isoTime(execution.startedAt),
    endedAt: isoTime(execution.endedAt),
    durationMs: Number(execution.durationMs),
  };
}

export function conversationJson(conversation: Conversation) {
  return {
    conversationId: conversation.id,
    workflowId: conversation.workflowId,
    createdAt: isoTime(conversation.createdAt),
    executions: conversation.executions.map(executionJson),
  };
}

function workflowSummaryJson(workflow: WorkflowSummary | undefined) {
  return workflow ? { id: workflow.id, name: workflow.name, description: workflow.description } : null;
}

function logHeaderJson(entry: LogEntry) {
  return {
    id: entry.id,
    workflowId: entry.workflowId,
    executionId: entry.executionId,
    level: entry.level,
    trigger: triggerName(entry.trigger),
    startedAt: isoTime(entry.startedAt),
    endedAt: isoTime(entry.endedAt),
    totalDurationMs: Number(entry.totalDurationMs),
  };
}

export interface LogListShape {
  full: boolean;
  includeFinalOutput: boolean;
  includeTraceSpans: boolean;
}

/** A list item: basic fields, plus what `details` and the include flags ask for. */
export function logListItemJson(entry: LogEntry, shape: LogListShape) {
  return {
    ...logHeaderJson(entry),
    cost: { total: entry.cost?.total ?? 0 },
    files: null,
    ...(shape.full ? { workflow: workflowSummaryJson(entry.workflow) } : {}),
    ...(shape.includeFinalOutput ? { finalOutput: (entry.finalOutput ?? null) as JsonObject | null } : {}),
    ...(shape.includeTraceSpans ? { traceSpans: entry.traceSpans.map(traceSpanJson) } : {}),
  };
}

export function logDetailJson(entry: LogEntry) {
  return {
    ...logHeaderJson(entry),
    workflow: workflowSummaryJson(entry.workflow),
    executionData: {
      traceSpans: entry.traceSpans.map(traceSpanJson),
      finalOutput: entry.finalOutput ?? null,
    },
    cost: costJson(entry.cost),
  };
}
