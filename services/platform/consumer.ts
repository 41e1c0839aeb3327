import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import type { ConsumerConfig, ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from "nats";
import type { Logger } from "./log.js";
import { ensureDurableConsumer, ensureStream } from "./nats.js";

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
  redeliveryDelayMs?: number;
  maxMessages?: number;
}

export interface DurableConsumer {
  /** Ends the loop after the message in flight; buffered, unprocessed messages go back to the stream. */
  stop(): Promise<void>;
}

const RESTART_DELAY_MS = 1000;

/**
 * A durable pull consumer processing one message at a time with explicit acks. If the subscription
 * fails (NATS restart, consumer deleted) it is re-created after a pause.
 */
export async function startDurableConsumer(opts: DurableConsumerOptions): Promise<DurableConsumer> {
  const { js, jsm, log, durable } = opts;
  const stream = opts.stream.name;
  await ensureStream(jsm, opts.stream);
  await ensureDurableConsumer(jsm, stream, durable, opts.consumerConfig);

  const processMessage = async (m: JsMsg) => {
    try {
      await opts.handle(m);
      m.ack();
    } catch (err) {
      if (err instanceof RetryLaterError) {
        m.nak(Math.max(0, Math.round(err.delayMs)));
        return;
      }
      if (err instanceof UnusableMessageError || isPermanentDataError(err)) {
        log.error({ err, consumer: durable, subject: m.subject, seq: m.seq }, "unusable message; terminated");
        m.term();
      } else {
        log.warn(
          { err, consumer: durable, subject: m.subject, seq: m.seq },
          "processing failed; redelivering",
        );
        m.nak(opts.redeliveryDelayMs ?? 1000);
      }
    }
  };

  let stopping = false;
  let messages: ConsumerMessages | undefined;
  let wake: () => void = () => {};
  const run = async () => {
    while (!stopping) {
      try {
        const consumer = await js.consumers.get(stream, durable);
        messages = await consumer.consume({ max_messages: opts.maxMessages ?? 64 });
        if (stopping) messages.stop();
        for await (const m of messages) {
          // Messages already buffered when stop() came go straight back for another replica.
          if (stopping) m.nak();
          else await processMessage(m);
        }
      } catch (err) {
        if (!stopping) log.error({ err, consumer: durable }, "consumer failed; restarting");
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
