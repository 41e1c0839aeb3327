import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  AckPolicy,
  type JetStreamClient,
  type JetStreamManager,
  nanos,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "nats";
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
import { DeliveryTaskSchema } from "../platform/gen/flowplane/events/v1/notification_pb.js";
import type { Logger } from "../platform/log.js";
import { executionsStreamConfig, type NatsNames } from "../platform/nats.js";
import { type DeliveryDeps, processDeliveryTask } from "./deliveries.js";
import { handleCompletion, type MatchingDeps } from "./matching.js";
import type { ExecutionOutcome } from "./store.js";

export const NOTIFIER_CONSUMER = "notifier";
export const DELIVERY_CONSUMER = "notifier-delivery";

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
  const durationMs = Number(event.durationMs);
  return {
    executionId: event.executionId,
    tenantId: event.tenantId,
    workflowId: event.workflowId,
    status: STATUS_NAMES[event.status] ?? "unspecified",
    finishedAt,
    durationMs: Number.isSafeInteger(durationMs) && durationMs >= 0 ? durationMs : 0,
    cost: Number.isFinite(event.cost?.total) ? (event.cost?.total ?? 0) : 0,
  };
}

/**
 * Declares the executions stream and the durable `notifier` consumer, then handles completions with
 * `concurrency` loops (as replicas would: the stats and alert state are updated atomically in SQL).
 */
export async function startCompletionConsumers(
  deps: MatchingDeps & { jsm: JetStreamManager; js: JetStreamClient },
  concurrency: number,
): Promise<DurableConsumer[]> {
  const consumers: DurableConsumer[] = [];
  for (let i = 0; i < concurrency; i++) consumers.push(await startCompletionConsumer(deps));
  return consumers;
}

function startCompletionConsumer(
  deps: MatchingDeps & { jsm: JetStreamManager; js: JetStreamClient },
): Promise<DurableConsumer> {
  return startDurableConsumer({
    js: deps.js,
    jsm: deps.jsm,
    log: deps.log,
    stream: executionsStreamConfig(deps.names),
    durable: NOTIFIER_CONSUMER,
    consumerConfig: { filter_subject: deps.names.executionCompletedAll, max_ack_pending: 20_000 },
    maxMessages: 16,
    // Every step is idempotent by execution id, so a redelivery after a crash is harmless.
    async handle(m) {
      const event = decodeEvent(ExecutionCompletedSchema, m);
      await handleCompletion(deps, event, outcomeFromEvent(event));
    },
  });
}

/** The delivery work queue (DESIGN §4): retries wait in the stream as nak(delay) redeliveries. */
export function deliveriesStreamConfig(names: NatsNames): Partial<StreamConfig> & { name: string } {
  return {
    name: names.deliveriesStream,
    subjects: [names.deliverySubjects],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(2 * 60 * 1000),
  };
}

/**
 * `concurrency` pull loops on the durable `notifier-delivery` consumer, so one slow endpoint does not
 * hold up the others. The ack wait covers a whole attempt (its timeout) with room to spare.
 */
export async function startDeliveryConsumers(
  deps: DeliveryDeps & { jsm: JetStreamManager },
  concurrency: number,
): Promise<DurableConsumer[]> {
  const consumers: DurableConsumer[] = [];
  for (let i = 0; i < concurrency; i++) {
    consumers.push(
      await startDurableConsumer({
        js: deps.js,
        jsm: deps.jsm,
        log: deps.log as Logger,
        stream: deliveriesStreamConfig(deps.names),
        durable: DELIVERY_CONSUMER,
        consumerConfig: {
          filter_subject: deps.names.deliverySubjects,
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(deps.attemptTimeoutMs + 60_000),
          max_ack_pending: 20_000,
        },
        maxMessages: 4,
        async handle(m) {
          await processDeliveryTask(deps, decodeEvent(DeliveryTaskSchema, m));
        },
      }),
    );
  }
  return consumers;
}
