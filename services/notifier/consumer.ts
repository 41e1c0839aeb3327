import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { JetStreamClient, JetStreamManager } from "nats";
import {
  type DurableConsumer,
  decodeEvent,
  startDurableConsumer,
  UnusableMessageError,
} from "../platform/consumer.js";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  ExecutionStatus,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import type { Logger } from "../platform/log.js";
import { executionsStreamConfig, type NatsNames } from "../platform/nats.js";
import { type Database, type ExecutionOutcome, recordExecutionOutcome } from "./store.js";

export const NOTIFIER_CONSUMER = "notifier";

export interface ConsumerDeps {
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

/** What the stats need from a completion; throws UnusableMessageError when it cannot be counted. */
export function outcomeFromEvent(event: ExecutionCompleted): ExecutionOutcome {
  for (const [field, value] of [
    ["execution_id", event.executionId],
    ["tenant_id", event.tenantId],
    ["workflow_id", event.workflowId],
  ] as const) {
    if (value === "") throw new UnusableMessageError(`${field} is empty`);
  }
  const at = event.endedAt ?? event.startedAt;
  const finishedAt = at ? timestampDate(at) : new Date();
  if (Number.isNaN(finishedAt.getTime())) throw new UnusableMessageError("ended_at is out of range");
  return {
    executionId: event.executionId,
    tenantId: event.tenantId,
    workflowId: event.workflowId,
    status: STATUS_NAMES[event.status] ?? "unspecified",
    finishedAt,
  };
}

/** Declares the executions stream and the durable `notifier` consumer, then counts completions. */
export function startCompletionConsumer(deps: ConsumerDeps): Promise<DurableConsumer> {
  return startDurableConsumer({
    js: deps.js,
    jsm: deps.jsm,
    log: deps.log,
    stream: executionsStreamConfig(deps.names),
    durable: NOTIFIER_CONSUMER,
    consumerConfig: { filter_subject: deps.names.executionCompletedAll },
    // The processed-executions marker commits with the stats, so a redelivery after a crash is harmless.
    async handle(m) {
      await recordExecutionOutcome(deps.db, outcomeFromEvent(decodeEvent(ExecutionCompletedSchema, m)));
    },
  });
}
