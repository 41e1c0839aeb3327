import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteNamespaceStreams, TEST_NATS_URL, testNamespace, waitFor } from "../../test/helpers/infra.js";
import { startDurableConsumer } from "./consumer.js";
import { createLogger } from "./log.js";

/**
 * Stopping a consumer hands every message it pulled but did not handle back at once, so another
 * replica takes it now, not after the ack wait (found by the notifier's SIGTERM drain test).
 */
let nc: NatsConnection;
const namespace = testNamespace();
const stream = `${namespace.toUpperCase()}_STOP`;
const durable = `stop-${namespace}`;
const log = createLogger("unit", "silent");

beforeAll(async () => {
  nc = await connect({ servers: TEST_NATS_URL });
});

afterAll(async () => {
  await nc?.close();
  await deleteNamespaceStreams(namespace);
});

describe("stopping a durable consumer", () => {
  it("naks the messages it pulled while a handler was busy, leaving none waiting for the ack wait", async () => {
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const handled: string[] = [];
    const consumer = await startDurableConsumer({
      js,
      jsm,
      log,
      stream: { name: stream, subjects: [`${namespace}.s.>`] },
      durable,
      // An hour: a message left un-acked would come back long after this test.
      consumerConfig: { ack_wait: 3_600_000_000_000 },
      maxMessages: 8,
      async handle(m) {
        handled.push(new TextDecoder().decode(m.data));
        await gate;
      },
    });
    await waitFor("the consumer to subscribe", () => (consumer.active ? true : undefined));
    await js.publish(`${namespace}.s.1`, new TextEncoder().encode("first"));
    await waitFor("the first message to be in its handler", () => (handled.length === 1 ? true : undefined));
    // Pulled while the handler is busy: buffered in the client, not yet handed to the loop.
    for (let i = 0; i < 5; i++) await js.publish(`${namespace}.s.1`, new TextEncoder().encode(`later-${i}`));
    await waitFor("the later messages to be delivered to the client", async () => {
      const info = await jsm.consumers.info(stream, durable);
      return info.num_ack_pending === 6 ? true : undefined;
    });
    const stopped = consumer.stop();
    release();
    await stopped;
    expect(handled).toEqual(["first"]);
    // Another replica takes them within seconds, not after the hour-long ack wait.
    const takenOver: string[] = [];
    const replica = await startDurableConsumer({
      js,
      jsm,
      log,
      stream: { name: stream, subjects: [`${namespace}.s.>`] },
      durable,
      consumerConfig: { ack_wait: 3_600_000_000_000 },
      async handle(m) {
        takenOver.push(new TextDecoder().decode(m.data));
      },
    });
    try {
      await waitFor(
        "another replica to take the handed-back messages",
        () => (takenOver.length === 5 ? true : undefined),
        20_000,
      );
      expect([...takenOver].sort()).toEqual(["later-0", "later-1", "later-2", "later-3", "later-4"]);
    } finally {
      await replica.stop();
    }
  });
});
