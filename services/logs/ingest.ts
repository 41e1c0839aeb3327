import { create, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { JetStreamClient, JetStreamManager } from "nats";
import {
  type DurableConsumer,
  decodeEvent,
  startDurableConsumer,
  UnusableMessageError,
} from "../platform/consumer.js";
import {
  CostSchema,
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  TraceSpanSchema,
  WorkflowStateSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import { executionsStreamConfig, type NatsNames } from "../platform/nats.js";
import { redactWorkflowState } from "./redact.js";
import {
  type Database,
  insertExecutionLog,
  insertExecutionLogs,
  type NewExecutionLog,
  type NewSnapshot,
  storedTrigger,
} from "./store.js";

export const LOGS_CONSUMER = "logs";

export interface IngestDeps {
  db: Kysely<Database>;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: NatsNames;
  log: Logger;
}

const STATUS_NAMES: Record<ExecutionStatus, string> = {
  [ExecutionStatus.UNSPECIFIED]: "unspecified",
  [ExecutionStatus.QUEUED]: "queued",
  [ExecutionStatus.RUNNING]: "running",
  [ExecutionStatus.SUCCESS]: "success",
  [ExecutionStatus.ERROR]: "error",
};

function dateOf(ts: Timestamp | undefined, field: string): Date | undefined {
  if (!ts) return undefined;
  const date = timestampDate(ts);
  if (Number.isNaN(date.getTime())) throw new UnusableMessageError(`${field} is out of range`);
  return date;
}

/** The read-model row of a completion; throws UnusableMessageError when the event cannot be one. */
export function executionLogFromEvent(event: ExecutionCompleted): NewExecutionLog {
  for (const [field, value] of [
    ["execution_id", event.executionId],
    ["tenant_id", event.tenantId],
    ["workflow_id", event.workflowId],
  ] as const) {
    if (value === "") throw new UnusableMessageError(`${field} is empty`);
  }
  // Dates carry milliseconds only, so stored positions are exactly what a cursor can name.
  const endedAt = dateOf(event.endedAt, "ended_at");
  const startedAt = dateOf(event.startedAt, "started_at") ?? endedAt ?? new Date();
  const cost = event.cost ?? create(CostSchema);
  return {
    id: newId("log", startedAt.getTime()),
    tenant_id: event.tenantId,
    execution_id: event.executionId,
    workflow_id: event.workflowId,
    workflow_version: event.workflowVersion,
    folder_id: event.folderId,
    workflow_name: event.workflowName,
    workflow_description: event.workflowDescription,
    conversation_id: event.conversationId,
    level: event.status === ExecutionStatus.ERROR ? "error" : "info",
    trigger: storedTrigger(event.trigger),
    status: STATUS_NAMES[event.status] ?? "unspecified",
    started_at: startedAt,
    ended_at: endedAt ?? startedAt,
    total_duration_ms: Number(event.durationMs),
    cost_total: Number.isFinite(cost.total) ? cost.total : 0,
    cost: JSON.stringify(toJson(CostSchema, cost)),
    models: Object.keys(cost.models).sort(),
    final_output: event.finalOutput ? JSON.stringify(event.finalOutput) : null,
    trace_spans: JSON.stringify(event.traceSpans.map((span) => toJson(TraceSpanSchema, span))),
    error: event.error ?? null,
  };
}

/** The version's definition with secrets redacted, stored once per (tenant, workflow, version). */
export function snapshotFromEvent(event: ExecutionCompleted): NewSnapshot | undefined {
  if (!event.workflowState) return undefined;
  const state = toJson(WorkflowStateSchema, event.workflowState);
  if (state === null || typeof state !== "object" || Array.isArray(state)) return undefined;
  return {
    tenant_id: event.tenantId,
    workflow_id: event.workflowId,
    version: event.workflowVersion,
    state: JSON.stringify(redactWorkflowState(state)),
  };
}

/**
 * The (tenant, workflow, version)s whose snapshot this process has seen committed. Versions are
 * immutable and snapshots are never deleted, so a version's snapshot is converted, redacted and sent
 * once per process instead of with every completion (every completion carries the definition).
 */
class StoredSnapshots {
  private readonly keys = new Set<string>();

  constructor(private readonly max = 10_000) {}

  private static key(event: ExecutionCompleted): string {
    return JSON.stringify([event.tenantId, event.workflowId, event.workflowVersion]);
  }

  /** The snapshot to store with this completion: none when this version's is known stored. */
  snapshotFor(event: ExecutionCompleted): NewSnapshot | undefined {
    return this.keys.has(StoredSnapshots.key(event)) ? undefined : snapshotFromEvent(event);
  }

  /** Call once the transaction that stored these completions' snapshots has committed. */
  committed(events: ExecutionCompleted[]): void {
    for (const event of events) {
      if (!event.workflowState) continue;
      // Forgetting only costs a redundant (conflict-ignored) insert.
      if (this.keys.size >= this.max) this.keys.clear();
      this.keys.add(StoredSnapshots.key(event));
    }
  }
}

/** Declares the executions stream and the durable `logs` consumer, then ingests completions. */
export function startIngest(deps: IngestDeps): Promise<DurableConsumer> {
  const snapshots = new StoredSnapshots();
  return startDurableConsumer({
    js: deps.js,
    jsm: deps.jsm,
    log: deps.log,
    stream: executionsStreamConfig(deps.names),
    durable: LOGS_CONSUMER,
    consumerConfig: { filter_subject: deps.names.executionCompletedAll },
    async handle(m) {
      const event = decodeEvent(ExecutionCompletedSchema, m);
      await insertExecutionLog(deps.db, executionLogFromEvent(event), snapshots.snapshotFor(event));
      snapshots.committed([event]);
    },
    // Completions waiting together commit in one transaction; an unusable one fails the batch, which
    // then goes through `handle` one by one.
    async handleBatch(messages) {
      const events = messages.map((m) => decodeEvent(ExecutionCompletedSchema, m));
      const entries = events.map((event) => ({
        row: executionLogFromEvent(event),
        snapshot: snapshots.snapshotFor(event),
      }));
      await insertExecutionLogs(deps.db, entries);
      snapshots.committed(events);
    },
  });
}
