import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from "nats";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import type { Logger } from "../platform/log.js";
import {
  ensureDurableConsumer,
  ensureStream,
  executionsStreamConfig,
  type NatsNames,
} from "../platform/nats.js";
import { type Database, type ExecutionOutcome, recordExecutionOutcome } from "./store.js";

export const NOTIFIER_CONSUMER = "notifier";

const REDELIVERY_DELAY_MS = 1000;
const RESTART_DELAY_MS = 1000;

export interface ConsumerDeps {
  db: Kysely<Database>;
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: NatsNames;
  log: Logger;
}

export interface CompletionConsumer {
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

/** What the stats need from a completion; throws UnusableEventError when it cannot be counted. */
export function outcomeFromEvent(event: ExecutionCompleted): ExecutionOutcome {
  for (const [field, value] of [
    ["execution_id", event.executionId],
    ["tenant_id", event.tenantId],
    ["workflow_id", event.workflowId],
  ] as const) {
    if (value === "") throw new UnusableEventError(`${field} is empty`);
  }
  const at = event.endedAt ?? event.startedAt;
  const finishedAt = at ? timestampDate(at) : new Date();
  if (Number.isNaN(finishedAt.getTime())) throw new UnusableEventError("ended_at is out of range");
  return {
    executionId: event.executionId,
    tenantId: event.tenantId,
    workflowId: event.workflowId,
    status: STATUS_NAMES[event.status] ?? "unspecified",
    finishedAt,
  };
}

/** PostgreSQL data exceptions (class 22): the same statement would fail again, so retrying is pointless. */
function isPermanentDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("22");
}

async function handleMessage(deps: ConsumerDeps, m: JsMsg): Promise<void> {
  let outcome: ExecutionOutcome;
  try {
    outcome = outcomeFromEvent(fromBinary(ExecutionCompletedSchema, m.data));
  } catch (err) {
    deps.log.error({ err, subject: m.subject, seq: m.seq }, "unusable execution completion; terminated");
    m.term();
    return;
  }
  try {
    await recordExecutionOutcome(deps.db, outcome);
  } catch (err) {
    if (isPermanentDataError(err)) {
      deps.log.error(
        { err, executionId: outcome.executionId },
        "execution stats rejected by the database; terminated",
      );
      m.term();
      return;
    }
    deps.log.warn(
      { err, executionId: outcome.executionId },
      "recording execution stats failed; redelivering",
    );
    m.nak(REDELIVERY_DELAY_MS);
    return;
  }
  // Only after the commit: a crash before this point means redelivery, which the marker makes harmless.
  m.ack();
}

/** Declares the executions stream and the durable `notifier` consumer, then counts completions. */
export async function startCompletionConsumer(deps: ConsumerDeps): Promise<CompletionConsumer> {
  const { js, jsm, names, log } = deps;
  await ensureStream(jsm, executionsStreamConfig(names));
  await ensureDurableConsumer(jsm, names.executionsStream, NOTIFIER_CONSUMER, {
    filter_subject: names.executionCompletedAll,
  });

  let stopping = false;
  let messages: ConsumerMessages | undefined;
  let wake: () => void = () => {};

  const run = async () => {
    while (!stopping) {
      try {
        const consumer = await js.consumers.get(names.executionsStream, NOTIFIER_CONSUMER);
        messages = await consumer.consume({ max_messages: 64 });
        if (stopping) messages.stop();
        for await (const m of messages) {
          // Already-buffered messages after stop() go straight back for another replica.
          if (stopping) m.nak();
          else await handleMessage(deps, m);
        }
      } catch (err) {
        if (!stopping) log.error({ err }, "notifier consumer failed; restarting");
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
