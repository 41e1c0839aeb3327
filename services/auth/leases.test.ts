import { fileURLToPath } from "node:url";
import { type Kysely, sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, freePort, type TestDatabase, waitFor } from "../../test/helpers/infra.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import { newId } from "../platform/ids.js";
import { createLogger } from "../platform/log.js";
import { remainingOf } from "./buckets.js";
import { BucketLeases } from "./leases.js";
import type { Database } from "./store.js";

const log = createLogger("leases-test", "silent");
// Refills one token a minute: the tests' counts are not blurred by refill.
const slow = (burst: number) => ({ perMinute: 1, burst });

describe("bucket leases", () => {
  let testDb: TestDatabase;
  let db: Kysely<Database>;

  beforeAll(async () => {
    testDb = await createTestDatabase();
    db = createDatabase<Database>({ url: testDb.url, schema: "auth" });
    await migrateToLatest(
      db as unknown as Kysely<unknown>,
      "auth",
      fileURLToPath(new URL("./migrations", import.meta.url)),
    );
  });

  afterAll(async () => {
    await db?.destroy();
    await testDb?.drop();
  });

  async function rowLevel(key: string): Promise<number> {
    const { rows } = await sql<{
      tokens: number;
    }>`select tokens from rate_buckets where key = ${key}`.execute(db);
    return rows[0]!.tokens;
  }

  it("never grants more than the bucket holds across two replicas under concurrency", async () => {
    const key = `test:${newId("evt")}`;
    const replicas = [new BucketLeases(db, log), new BucketLeases(db, log)];
    try {
      const results = await Promise.all(
        Array.from({ length: 300 }, (_, i) => replicas[i % 2]!.take(key, slow(120))),
      );
      expect(results.filter((r) => r.granted)).toHaveLength(120);
      for (const refused of results.filter((r) => !r.granted)) expect(remainingOf(refused)).toBe(0);
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it("leases several tokens per round trip for a busy key and gives back what it did not use", async () => {
    const key = `test:${newId("evt")}`;
    const leases = new BucketLeases(db, log);
    const spec = slow(100_000);
    let granted = 0;
    // Over a second of steady traffic, so the rate estimate sizes the next leases.
    const until = Date.now() + 1_300;
    while (Date.now() < until) {
      const taken = await leases.take(key, spec);
      expect(taken.granted).toBe(true);
      // What a client is told stays the bucket's level, leased tokens included.
      expect(remainingOf(taken)).toBeGreaterThanOrEqual(100_000 - granted - 2);
      granted++;
    }
    const { rows } = await sql<{ taken: number }>`select taken from rate_buckets where key = ${key}`.execute(
      db,
    );
    expect(rows[0]!.taken).toBeGreaterThan(1);
    // The row is short of more than what was granted: the rest is held by this replica...
    expect(await rowLevel(key)).toBeLessThan(100_000 - granted);
    // ...until the lease ends and the unused tokens go back.
    await waitFor("unused tokens given back", async () =>
      Math.floor((await rowLevel(key)) + 1e-9) >= 100_000 - granted ? true : undefined,
    );
    expect(await rowLevel(key)).toBeLessThan(100_000 - granted + 1);
    await leases.close();
  });

  it("takes several tokens at once, never more than the bucket holds, and takes back what is returned", async () => {
    const key = `test:${newId("evt")}`;
    const replicas = [new BucketLeases(db, log), new BucketLeases(db, log)];
    try {
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) => replicas[i % 2]!.takeMany(key, slow(120), 1 + (i % 7))),
      );
      // Every grant is at least one token and at most what was asked; together exactly the bucket.
      for (const [i, r] of results.entries()) {
        if (r.granted) expect(r.taken).toBeGreaterThanOrEqual(1);
        expect(r.taken).toBeLessThanOrEqual(1 + (i % 7));
      }
      expect(results.reduce((sum, r) => sum + r.taken, 0)).toBe(120);
      // Tokens a caller gives back are granted again (from the replica's lease, then the row).
      await replicas[0]!.giveBack(key, slow(120), 5);
      const again = await replicas[0]!.takeMany(key, slow(120), 10);
      expect(again.taken).toBe(5);
      expect((await replicas[1]!.takeMany(key, slow(120), 10)).granted).toBe(false);
    } finally {
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  it("leases one token at a time for a quiet key, so the row is exact after each request", async () => {
    const key = `test:${newId("evt")}`;
    const leases = new BucketLeases(db, log);
    try {
      for (let i = 1; i <= 3; i++) {
        const taken = await leases.take(key, slow(10));
        expect(remainingOf(taken)).toBe(10 - i);
        expect(Math.floor(await rowLevel(key))).toBe(10 - i);
      }
    } finally {
      await leases.close();
    }
  });

  it("fails when the buckets' storage cannot be reached (the caller fails closed)", async () => {
    const unreachable = createDatabase<Database>({
      url: `postgres://postgres@127.0.0.1:${await freePort()}/nowhere`,
      schema: "auth",
    });
    const leases = new BucketLeases(unreachable, log);
    try {
      await expect(leases.take("test:down", slow(10))).rejects.toThrow();
    } finally {
      await leases.close();
      await unreachable.destroy();
    }
  });
});
