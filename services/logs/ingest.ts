import { create, fromBinary, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from "nats";
import {
  CostSchema,
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
  TraceSpanSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import {
  ensureDurableConsumer,
  ensureStream,
  executionsStreamConfig,
  type NatsNames,
} from "../platform/nats.js";
import { type Database, insertExecutionLog, type NewExecutionLog, storedTrigger } from "./store.js";

export const LOGS_CONSUMER = "logs";

const REDELIVERY_DELAY_MS = 1000;
const RESTART_DELAY_MS = 1000;

export interface IngestDeps {
  db: Kysely<Database>;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: NatsNames;
  log: Logger;
}

export interface Ingest {
  /** Ends the consume loop after the message in flight; unprocessed buffered messages go back to the stream. */
  stop(): Promise<void>;
}

const STATUS_NAMES: Record<ExecutionStatus, string> = {
  [ExecutionStatus.UNSPECIFIED]: "unspecified",
  [ExecutionStatus.QUEUED]: "queued",
  [ExecutionStatus.RUNNING]: "running",
  [ExecutionStatus.SUCCESS]: "success",
  [ExecutionStatus.ERROR]: "error",
};

class UnusableEventError extends Error {}

function dateOf(ts: Timestamp | undefined, field: string): Date | undefined {
  if (!ts) return undefined;
  const date = timestampDate(ts);
  if (Number.isNaN(date.getTime())) throw new UnusableEventError(`${field} is out of range`);
  return date;
}

/** The read-model row of a completion; throws UnusableEventError when the event cannot be one. */
export function executionLogFromEvent(event: ExecutionCompleted): NewExecutionLog {
  for (const [field, value] of [
    ["execution_id", event.executionId],
    ["tenant_id", event.tenantId],
    ["workflow_id", event.workflowId],
  ] as const) {
    if (value === "") throw new UnusableEventError(`${field} is empty`);
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
    final_output: event.finalOutput ? JSON.stringify(event.finalOutput) : null,
    trace_spans: JSON.stringify(event.traceSpans.map((span) => toJson(TraceSpanSchema, span))),
    error: event.error ?? null,
  };
}

/** PostgreSQL data exceptions (class 22): the same row would fail again, so retrying is pointless. */
function isPermanentDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("22");
}

async function handleMessage(deps: IngestDeps, m: JsMsg): Promise<void> {
  let row: NewExecutionLog;
  try {
    row = executionLogFromEvent(fromBinary(ExecutionCompletedSchema, m.data));
  } catch (err) {
    deps.log.error({ err, subject: m.subject, seq: m.seq }, "unusable execution completion; terminated");
    m.term();
    return;
  }
  try {
    await insertExecutionLog(deps.db, row);
  } catch (err) {
    if (isPermanentDataError(err)) {
      deps.log.error(
        { err, executionId: row.execution_id },
        "execution log rejected by the database; terminated",
      );
      m.term();
      return;
    }
    deps.log.warn({ err, executionId: row.execution_id }, "storing execution log failed; redelivering");
    m.nak(REDELIVERY_DELAY_MS);
    return;
  }
  m.ack();
}

/** Declares the executions stream and the durable `logs` consumer, then ingests completions. */
export async function startIngest(deps: IngestDeps): Promise<Ingest> {
  const { js, jsm, names, log } = deps;
  await ensureStream(jsm, executionsStreamConfig(names));
  await ensureDurableConsumer(jsm, names.executionsStream, LOGS_CONSUMER, {
    filter_subject: names.executionCompletedAll,
  });

  let stopping = false;
  let messages: ConsumerMessages | undefined;
  let wake: () => void = () => {};

  const run = async () => {
    while (!stopping) {
      try {
        const consumer = await js.consumers.get(names.executionsStream, LOGS_CONSUMER);
        messages = await consumer.consume({ max_messages: 64 });
        if (stopping) messages.stop();
        for await (const m of messages) {
          // Already-buffered messages after stop() go straight back for another replica.
          if (stopping) m.nak();
          else await handleMessage(deps, m);
        }
      } catch (err) {
        if (!stopping) log.error({ err }, "execution log consumer failed; restarting");
      }
      if (!stopping) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, RESTART_DELAY_MS).unref();
        });
      }
    }
  };
  const loop = run();

  return {
    async stop() {
      stopping = true;
      messages?.stop();
      wake();
      await loop;
    },
  };
}
