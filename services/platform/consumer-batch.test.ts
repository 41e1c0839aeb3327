import { connect, type JetStreamClient, type JetStreamManager, type JsMsg, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteNamespaceStreams, TEST_NATS_URL, testNamespace, waitFor } from "../../test/helpers/infra.js";
import { type DurableConsumer, startDurableConsumer, UnusableMessageError } from "./consumer.js";
import { createLogger } from "./log.js";
import { ensureStream } from "./nats.js";

let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const namespace = testNamespace();
const stream = { name: `${namespace.toUpperCase()}_BATCH`, subjects: [`${namespace}.batch.>`] };
const consumers: DurableConsumer[] = [];

beforeAll(async () => {
  nc = await connect({ servers: TEST_NATS_URL });
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  await ensureStream(jsm, stream);
});

afterAll(async () => {
  for (const c of consumers) await c.stop();
  await nc.close();
  await deleteNamespaceStreams(namespace);
});

async function publish(subject: string, bodies: string[]): Promise<void> {
  await Promise.all(
    bodies.map((b) => js.publish(`${namespace}.batch.${subject}`, new TextEncoder().encode(b))),
  );
}

async function pendingOf(durable: string): Promise<{ ackPending: number; pending: number }> {
  const info = await jsm.consumers.info(stream.name, durable);
  return { ackPending: info.num_ack_pending, pending: info.num_pending };
}

const text = (m: JsMsg) => new TextDecoder().decode(m.data);

describe("durable consumer batches", () => {
  it("hands the messages waiting together to handleBatch, each once, and acks them", async () => {
    const seen: string[] = [];
    const batchSizes: number[] = [];
    const bodies = Array.from({ length: 300 }, (_, i) => `m${i}`);
    // Published before the consumer starts, so they are waiting when it begins.
    await publish("a", bodies);
    consumers.push(
      await startDurableConsumer({
        js,
        jsm,
        log: createLogger("test", "silent"),
        stream,
        durable: "batched",
        consumerConfig: { filter_subject: `${namespace}.batch.a` },
        maxBatch: 50,
        async handle(m) {
          batchSizes.push(1);
          seen.push(text(m));
        },
        async handleBatch(messages) {
          batchSizes.push(messages.length);
          // Takes a while, as a transaction does: more messages arrive meanwhile.
          await new Promise((resolve) => setTimeout(resolve, 5));
          seen.push(...messages.map(text));
        },
      }),
    );
    await waitFor("every message handled", async () => (seen.length >= bodies.length ? true : undefined));
    await waitFor("every message acked", async () => {
      const p = await pendingOf("batched");
      return p.ackPending === 0 && p.pending === 0 ? true : undefined;
    });
    expect([...seen].sort()).toEqual([...bodies].sort());
    expect(Math.max(...batchSizes)).toBeGreaterThan(1);
    expect(Math.max(...batchSizes)).toBeLessThanOrEqual(50);
  });

  it("falls back to one by one when a batch fails, terminating only the unusable message", async () => {
    const handled: string[] = [];
    let batchesFailed = 0;
    const bodies = Array.from({ length: 40 }, (_, i) => (i === 17 ? "poison" : `ok${i}`));
    await publish("b", bodies);
    consumers.push(
      await startDurableConsumer({
        js,
        jsm,
        log: createLogger("test", "silent"),
        stream,
        durable: "fallback",
        consumerConfig: { filter_subject: `${namespace}.batch.b` },
        async handle(m) {
          if (text(m) === "poison") throw new UnusableMessageError("poison");
          handled.push(text(m));
        },
        async handleBatch(messages) {
          if (messages.some((m) => text(m) === "poison")) {
            batchesFailed++;
            throw new UnusableMessageError("poison in the batch");
          }
          handled.push(...messages.map(text));
        },
      }),
    );
    await waitFor("every usable message handled", async () =>
      handled.length >= bodies.length - 1 ? true : undefined,
    );
    await waitFor("nothing left pending", async () => {
      const p = await pendingOf("fallback");
      return p.ackPending === 0 && p.pending === 0 ? true : undefined;
    });
    expect([...handled].sort()).toEqual(bodies.filter((b) => b !== "poison").sort());
    // The poison message is terminated, not redelivered: it never reaches a handler again.
    expect(batchesFailed).toBeLessThanOrEqual(1);
  });
});
