import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import type { ConsumerConfig, ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from "nats";
import type { Logger } from "./log.js";
import { consumerMessages, consumerRedeliveries, trackQueueDepth } from "./metrics.js";
import { ensureDurableConsumer, ensureStream } from "./nats.js";
import { contextFromHeaders, inSpan, type Link, linkFromHeaders, SpanKind } from "./telemetry.js";

/** Thrown by a handler for a message that can never be processed: it is terminated, not redelivered. */
export class UnusableMessageError extends Error {}

/** Thrown by a handler to have its message redelivered after exactly `delayMs` (a scheduled retry). */
export class RetryLaterError extends Error {
  constructor(readonly delayMs: number) {
    super(`retry in ${delayMs} ms`);
    this.name = "RetryLaterError";
  }
}

/** Decodes a protobuf event, turning a decode failure into UnusableMessageError. */
export function decodeEvent<Desc extends DescMessage>(schema: Desc, m: JsMsg): MessageShape<Desc> {
  try {
    return fromBinary(schema, m.data);
  } catch (err) {
    throw new UnusableMessageError(`undecodable ${schema.typeName}: ${(err as Error).message}`);
  }
}

/** PostgreSQL data exceptions (class 22): the same statement would fail again, so retrying is pointless. */
function isPermanentDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("22");
}

export interface DurableConsumerOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  log: Logger;
  /** The stream, declared idempotently before consuming. */
  stream: Parameters<typeof ensureStream>[1];
  durable: string;
  consumerConfig?: Partial<ConsumerConfig>;
  /**
   * Processes one message. Returning acks it (so only return once the effect is committed); throwing
   * UnusableMessageError (or a permanent data error) terminates it; any other error redelivers it.
   */
  handle(m: JsMsg): Promise<void>;
  /**
   * Optional: processes several messages at once (e.g. in one transaction); returning acks them all.
   * Any error falls back to `handle` one message at a time, so a bad message is isolated and gets
   * exactly the outcome it would get alone. Batches form only from messages already delivered while
   * the previous batch was being processed: a lone message is never held back waiting for company.
   */
  handleBatch?(messages: JsMsg[]): Promise<void>;
  /** Largest batch given to handleBatch (default 64). */
  maxBatch?: number;
  redeliveryDelayMs?: number;
  maxMessages?: number;
}

export interface DurableConsumer {
  readonly durable: string;
  /** True while its loop holds a live subscription (false before it starts and while it restarts). */
  readonly active: boolean;
  /** Ends the loop after the message in flight; buffered, unprocessed messages go back to the stream. */
  stop(): Promise<void>;
}

const RESTART_DELAY_MS = 1000;

const consumersByClient = new WeakMap<JetStreamClient, Set<DurableConsumer>>();

// A stopped consumer's last pull request stays open on the server until it expires, and a message
// nak'd at once is redelivered into it: to nobody, until the ack wait (minutes) runs out. Pulls
// expire after PULL_EXPIRES_MS, and buffered messages are handed back with a delay past that, so
// another replica gets them within seconds.
const PULL_EXPIRES_MS = 5_000;
const HANDBACK_DELAY_MS = PULL_EXPIRES_MS + 1_000;

/** The consumers started on a JetStream client and not stopped yet (for readiness). */
export function consumersOf(js: JetStreamClient): DurableConsumer[] {
  return [...(consumersByClient.get(js) ?? [])];
}

/**
 * A durable pull consumer with explicit acks, processing one message at a time, or the messages
 * waiting at once through `handleBatch` when given. If the subscription fails (NATS restart,
 * consumer deleted) it is re-created after a pause.
 */
export async function startDurableConsumer(opts: DurableConsumerOptions): Promise<DurableConsumer> {
  const { js, jsm, log, durable } = opts;
  const stream = opts.stream.name;
  await ensureStream(jsm, opts.stream);
  await ensureDurableConsumer(jsm, stream, durable, opts.consumerConfig);
  const untrackQueueDepth = trackQueueDepth(stream, durable, async () => {
    const info = await jsm.consumers.info(stream, durable);
    return { undelivered: info.num_pending, unacked: info.num_ack_pending };
  });
  // Spans are named after the service whose logger this is ("service" is the logger's base field).
  const service = String((log.bindings() as { service?: unknown }).service ?? "consumer");
  const spanAttributes = { "messaging.system": "nats", "messaging.consumer.group.name": durable };
  const headerOf = (m: JsMsg) => (name: string) => m.headers?.get(name);
  const countRedelivery = (m: JsMsg) => {
    if (m.info.deliveryCount > 1) consumerRedeliveries.inc({ consumer: durable });
  };

  const processMessage = async (m: JsMsg, counted = false) => {
    if (!counted) countRedelivery(m);
    try {
      // The handling continues the publisher's trace (its traceparent header).
      await inSpan(
        service,
        `${durable} process`,
        {
          kind: SpanKind.CONSUMER,
          parent: contextFromHeaders(headerOf(m)),
          attributes: { ...spanAttributes, "messaging.destination.name": m.subject },
          isFailure: (err) => !(err instanceof RetryLaterError),
        },
        () => opts.handle(m),
      );
      m.ack();
      consumerMessages.inc({ consumer: durable, outcome: "acked" });
    } catch (err) {
      if (err instanceof RetryLaterError) {
        m.nak(Math.max(0, Math.round(err.delayMs)));
        consumerMessages.inc({ consumer: durable, outcome: "redelivered" });
        return;
      }
      if (err instanceof UnusableMessageError || isPermanentDataError(err)) {
        log.error({ err, consumer: durable, subject: m.subject, seq: m.seq }, "unusable message; terminated");
        m.term();
        consumerMessages.inc({ consumer: durable, outcome: "terminated" });
      } else {
        log.warn(
          { err, consumer: durable, subject: m.subject, seq: m.seq },
          "processing failed; redelivering",
        );
        m.nak(opts.redeliveryDelayMs ?? 1000);
        consumerMessages.inc({ consumer: durable, outcome: "redelivered" });
      }
    }
  };

  const maxBatch = Math.max(1, opts.maxBatch ?? 64);
  const processBatch = async (batch: JsMsg[], handleBatch: (messages: JsMsg[]) => Promise<void>) => {
    if (batch.length === 1) return processMessage(batch[0]!);
    for (const m of batch) countRedelivery(m);
    try {
      // One span for the batch, linked to the trace of each message in it.
      const links = batch.map((m) => linkFromHeaders(headerOf(m))).filter((l): l is Link => l !== undefined);
      await inSpan(
        service,
        `${durable} process batch`,
        {
          kind: SpanKind.CONSUMER,
          links,
          attributes: { ...spanAttributes, "messaging.batch.message_count": batch.length },
        },
        () => handleBatch(batch),
      );
    } catch (err) {
      log.warn({ err, consumer: durable, size: batch.length }, "batch failed; processing one by one");
      for (const m of batch) await processMessage(m, true);
      return;
    }
    for (const m of batch) m.ack();
    consumerMessages.inc({ consumer: durable, outcome: "acked" }, batch.length);
  };

  /**
   * A reader moves delivered messages into `pending` while the processor works through them in
   * batches: whatever arrived during one batch's processing makes the next batch.
   */
  const consumeInBatches = async (
    iterator: ConsumerMessages,
    handleBatch: (messages: JsMsg[]) => Promise<void>,
  ) => {
    const pending: JsMsg[] = [];
    let ended = false;
    let failure: unknown;
    let arrived: (() => void) | undefined;
    let drained: (() => void) | undefined;
    const reader = (async () => {
      try {
        for await (const m of iterator) {
          pending.push(m);
          arrived?.();
          // Bounded: the consumer's pulls are not refilled while the processor is behind.
          if (pending.length >= maxBatch && !stopping) {
            await new Promise<void>((resolve) => {
              drained = resolve;
            });
          }
        }
      } catch (err) {
        failure = err;
      } finally {
        ended = true;
        arrived?.();
      }
    })();
    while (!stopping) {
      if (pending.length === 0) {
        if (ended) break;
        await new Promise<void>((resolve) => (arrived = resolve));
        arrived = undefined;
        continue;
      }
      const batch = pending.splice(0, maxBatch);
      drained?.();
      drained = undefined;
      await processBatch(batch, handleBatch);
    }
    // Messages already buffered when stop() came go back for another replica.
    for (const m of pending.splice(0)) m.nak(HANDBACK_DELAY_MS);
    drained?.();
    await reader;
    for (const m of pending.splice(0)) m.nak(HANDBACK_DELAY_MS);
    if (failure !== undefined && !stopping) throw failure;
  };

  let stopping = false;
  let active = false;
  let messages: ConsumerMessages | undefined;
  let wake: () => void = () => {};
  const run = async () => {
    while (!stopping) {
      try {
        const consumer = await js.consumers.get(stream, durable);
        messages = await consumer.consume({ max_messages: opts.maxMessages ?? 64, expires: PULL_EXPIRES_MS });
        if (stopping) messages.stop();
        active = true;
        if (opts.handleBatch) await consumeInBatches(messages, opts.handleBatch);
        else {
          for await (const m of messages) {
            // Messages already buffered when stop() came go back for another replica.
            if (stopping) m.nak(HANDBACK_DELAY_MS);
            else await processMessage(m);
          }
        }
      } catch (err) {
        if (!stopping) log.error({ err, consumer: durable }, "consumer failed; restarting");
      }
      active = false;
      if (!stopping) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, RESTART_DELAY_MS).unref();
        });
      }
    }
  };
  const loop = run();

  const handle: DurableConsumer = {
    durable,
    get active() {
      return active && !stopping;
    },
    async stop() {
      stopping = true;
      untrackQueueDepth();
      consumersByClient.get(js)?.delete(handle);
      messages?.stop();
      wake();
      await loop;
    },
  };
  const started = consumersByClient.get(js) ?? new Set<DurableConsumer>();
  started.add(handle);
  consumersByClient.set(js, started);
  return handle;
}
