import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteNamespaceStreams, TEST_NATS_URL, testNamespace, waitFor } from "../../test/helpers/infra.js";
import { type AdminServer, readinessReport, startAdminServer } from "./admin.js";
import { type DurableConsumer, startDurableConsumer } from "./consumer.js";
import { createLogger } from "./log.js";

/** Queue depth and redeliveries per durable consumer, read from a real /metrics after real traffic. */
let nc: NatsConnection;
let admin: AdminServer;
let consumer: DurableConsumer | undefined;
const namespace = testNamespace();
const stream = `${namespace.toUpperCase()}_METRICS`;
const durable = `metrics-${namespace}`;
const log = createLogger("unit", "silent");

beforeAll(async () => {
  nc = await connect({ servers: TEST_NATS_URL });
  admin = await startAdminServer({
    port: 0,
    host: "127.0.0.1",
    log,
    readiness: async () => readinessReport({}),
  });
});

afterAll(async () => {
  await consumer?.stop();
  await admin?.close();
  await nc?.close();
  await deleteNamespaceStreams(namespace);
});

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${admin.port}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const labelText = line.slice(name.length + 1, line.indexOf("}"));
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) {
      return Number(line.slice(line.indexOf("}") + 1).trim());
    }
  }
  return undefined;
}

describe("consumer metrics", () => {
  it("reports queue depth from JetStream and counts redeliveries", async () => {
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let failedOnce = false;
    const handled = new Set<string>();
    consumer = await startDurableConsumer({
      js,
      jsm,
      log,
      stream: { name: stream, subjects: [`${namespace}.m.>`] },
      durable,
      maxMessages: 2,
      redeliveryDelayMs: 10,
      async handle(m) {
        await gate;
        const body = new TextDecoder().decode(m.data);
        if (body === "flaky" && !failedOnce) {
          failedOnce = true;
          throw new Error("first attempt fails");
        }
        handled.add(body);
      },
    });
    await waitFor("the consumer to subscribe", () => (consumer?.active ? true : undefined));

    for (let i = 0; i < 6; i++) await js.publish(`${namespace}.m.x`, new TextEncoder().encode(`msg-${i}`));
    await js.publish(`${namespace}.m.x`, new TextEncoder().encode("flaky"));

    // Seven messages wait: some handed to the (blocked) consumer and unacked, the rest not delivered.
    const waiting = await waitFor("seven messages in the queue depth", async () => {
      const text = await scrape();
      const undelivered = sample(text, "flowplane_consumer_queue_depth", {
        stream,
        consumer: durable,
        state: "undelivered",
      });
      const unacked = sample(text, "flowplane_consumer_queue_depth", {
        stream,
        consumer: durable,
        state: "unacked",
      });
      return undelivered !== undefined && unacked !== undefined && undelivered + unacked === 7
        ? { undelivered, unacked }
        : undefined;
    });
    expect(waiting.undelivered).toBeGreaterThan(0);
    expect(waiting.unacked).toBeGreaterThan(0);

    release();
    await waitFor("every message handled", () => (handled.size === 7 ? true : undefined));
    const drained = await waitFor("an empty queue", async () => {
      const text = await scrape();
      const depth = ["undelivered", "unacked"].map((state) =>
        sample(text, "flowplane_consumer_queue_depth", { stream, consumer: durable, state }),
      );
      return depth.every((d) => d === 0) ? text : undefined;
    });
    // Only the flaky message came back a second time.
    expect(sample(drained, "flowplane_consumer_redeliveries_total", { consumer: durable })).toBe(1);
    expect(
      sample(drained, "flowplane_consumer_messages_total", { consumer: durable, outcome: "acked" }),
    ).toBe(7);
    expect(
      sample(drained, "flowplane_consumer_messages_total", { consumer: durable, outcome: "redelivered" }),
    ).toBe(1);

    // A stopped consumer is no longer reported.
    await consumer.stop();
    consumer = undefined;
    const after = await scrape();
    expect(
      sample(after, "flowplane_consumer_queue_depth", { stream, consumer: durable, state: "unacked" }),
    ).toBe(undefined);
  });
});
