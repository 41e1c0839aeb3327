import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { connect } from "nats";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../test/helpers/infra.js";
import { startEmbeddedPostgres, startNatsServer } from "./embedded.js";
import { isAlive } from "./processes.js";

let dataDir: string;

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-embedded-"));
});

afterAll(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

describe("startNatsServer", () => {
  it("serves JetStream on the port it was given, keeps its store under the data dir, and stop() ends it", async () => {
    const port = await freePort();
    const server = await startNatsServer({ dataDir, port });
    try {
      expect(server.url).toBe(`nats://127.0.0.1:${port}`);
      expect(isAlive(server.pid)).toBe(true);
      const nc = await connect({ servers: server.url });
      try {
        const jsm = await nc.jetstreamManager();
        await jsm.streams.add({ name: "CLI_TEST", subjects: ["cli.test.>"] });
        await nc.jetstream().publish("cli.test.one", new TextEncoder().encode("hello"));
        const info = await jsm.streams.info("CLI_TEST");
        expect(info.state.messages).toBe(1);
        expect((await jsm.getAccountInfo()).storage).toBeGreaterThan(0);
      } finally {
        await nc.close();
      }
    } finally {
      await server.stop();
    }
    expect(isAlive(server.pid)).toBe(false);
    await expect(connect({ servers: server.url, reconnect: false, timeout: 1_000 })).rejects.toThrow();
  });

  it("restarts on the same store and still has the stream", async () => {
    const server = await startNatsServer({ dataDir });
    try {
      const nc = await connect({ servers: server.url });
      try {
        const info = await (await nc.jetstreamManager()).streams.info("CLI_TEST");
        expect(info.state.messages).toBe(1);
      } finally {
        await nc.close();
      }
    } finally {
      await server.stop();
    }
    expect(isAlive(server.pid)).toBe(false);
  });
});

describe("startEmbeddedPostgres", () => {
  it("initialises a cluster, creates the flowplane database, answers select 1, and stops", async () => {
    const port = await freePort();
    const server = await startEmbeddedPostgres({ dataDir, port });
    try {
      expect(server.url).toMatch(new RegExp(`^postgres://.*@127\\.0\\.0\\.1:${port}/flowplane$`));
      const client = new pg.Client({ connectionString: server.url });
      await client.connect();
      try {
        const { rows } = await client.query<{ one: number; db: string }>(
          "select 1 as one, current_database() as db",
        );
        expect(rows).toEqual([{ one: 1, db: "flowplane" }]);
      } finally {
        await client.end();
      }
    } finally {
      await server.stop();
    }
    expect(isAlive(server.pid)).toBe(false);

    // Second start on the same data: no initdb, the database is still there.
    const again = await startEmbeddedPostgres({ dataDir, port });
    try {
      const client = new pg.Client({ connectionString: again.url });
      await client.connect();
      try {
        const { rows } = await client.query<{ one: number }>("select 1 as one");
        expect(rows).toEqual([{ one: 1 }]);
      } finally {
        await client.end();
      }
    } finally {
      await again.stop();
    }
    expect(isAlive(again.pid)).toBe(false);
  }, 180_000);
});
