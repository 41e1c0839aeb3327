import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../test/helpers/infra.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import {
  type ExecuteBackgroundResponse,
  ExecuteBackgroundResponseSchema,
} from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { createLogger } from "../platform/log.js";
import {
  canonicalJson,
  deleteExpiredIdempotencyKeys,
  type IdempotentCall,
  IN_PROGRESS_MESSAGE,
  idempotent,
  REUSED_MESSAGE,
  validIdempotencyKey,
} from "./idempotency.js";
import type { ExecutorDb } from "./store.js";

let testDb: TestDatabase;
let db: ExecutorDb;
let raw: pg.Client;
const log = createLogger("idempotency-test", "silent");

beforeAll(async () => {
  testDb = await createTestDatabase();
  const plain = createDatabase<unknown>({ url: testDb.url, schema: "executor" });
  db = plain as unknown as ExecutorDb;
  await migrateToLatest(plain, "executor", fileURLToPath(new URL("./migrations", import.meta.url)));
  raw = new pg.Client({ connectionString: testDb.url });
  await raw.connect();
});

afterAll(async () => {
  await raw?.end();
  await db?.destroy();
  await testDb?.drop();
});

function callOf(
  key: string,
  fingerprint = "f1",
  tenantId = "t1",
): IdempotentCall<typeof ExecuteBackgroundResponseSchema> {
  return {
    tenantId,
    key,
    method: "execute_background",
    fingerprint,
    leaseMs: 60_000,
    response: ExecuteBackgroundResponseSchema,
  };
}

/** A "run" that counts its calls and answers a new execution id each time. */
function counter() {
  let runs = 0;
  return {
    get runs() {
      return runs;
    },
    run: async (): Promise<ExecuteBackgroundResponse> => {
      runs += 1;
      return create(ExecuteBackgroundResponseSchema, {
        conversationId: "conv_1",
        executionId: `exec_${runs}`,
      });
    },
  };
}

describe("idempotent", () => {
  it("runs once and replays the stored answer for the same fingerprint", async () => {
    const c = counter();
    const first = await idempotent({ db, log }, callOf("k-replay"), c.run);
    const again = await idempotent({ db, log }, callOf("k-replay"), c.run);
    expect(c.runs).toBe(1);
    expect(first.idempotentReplay).toBe(false);
    expect(again.idempotentReplay).toBe(true);
    expect(again.executionId).toBe(first.executionId);
  });

  it("refuses another fingerprint or another method with the same key", async () => {
    const c = counter();
    await idempotent({ db, log }, callOf("k-conflict"), c.run);
    await expect(idempotent({ db, log }, callOf("k-conflict", "f2"), c.run)).rejects.toThrow(REUSED_MESSAGE);
    await expect(
      idempotent({ db, log }, { ...callOf("k-conflict"), method: "execute" }, c.run),
    ).rejects.toThrow(REUSED_MESSAGE);
    expect(c.runs).toBe(1);
  });

  it("refuses a duplicate while the first is running", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started: () => void = () => {};
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const c = counter();
    const first = idempotent({ db, log }, callOf("k-busy"), async () => {
      started();
      await gate;
      return c.run();
    });
    await running;
    await expect(idempotent({ db, log }, callOf("k-busy"), c.run)).rejects.toThrow(IN_PROGRESS_MESSAGE);
    release();
    expect((await first).executionId).toBe("exec_1");
    expect((await idempotent({ db, log }, callOf("k-busy"), c.run)).idempotentReplay).toBe(true);
    expect(c.runs).toBe(1);
  });

  it("renews a live holder's short lease, so a long run keeps its key", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const c = counter();
    const shortLease = { ...callOf("k-renewed"), leaseMs: 300 };
    const first = idempotent({ db, log }, shortLease, async () => {
      await gate;
      return c.run();
    });
    // Wait until the lease has been renewed past the first one's end: the holder is alive.
    const claimedUntil = async () =>
      (
        await raw.query<{ until: Date }>(
          "select locked_until as until from executor.idempotency_keys where key = 'k-renewed'",
        )
      ).rows[0]?.until.getTime();
    let firstUntil: number | undefined;
    while (firstUntil === undefined) firstUntil = await claimedUntil();
    while (((await claimedUntil()) ?? 0) <= firstUntil) await new Promise((r) => setTimeout(r, 20));
    // Still refused once the first lease would have run out (it was renewed in time).
    while (Date.now() <= firstUntil + 50) await new Promise((r) => setTimeout(r, 20));
    await expect(idempotent({ db, log }, shortLease, c.run)).rejects.toThrow(IN_PROGRESS_MESSAGE);
    release();
    expect((await first).executionId).toBe("exec_1");
    expect(c.runs).toBe(1);
  });

  it("releases the key when the request fails, so a retry runs", async () => {
    await expect(
      idempotent({ db, log }, callOf("k-fail"), async () => {
        throw new Error("backend down");
      }),
    ).rejects.toThrow("backend down");
    const c = counter();
    const retry = await idempotent({ db, log }, callOf("k-fail"), c.run);
    expect(retry.idempotentReplay).toBe(false);
    expect(c.runs).toBe(1);
  });

  it("keeps tenants apart", async () => {
    const c = counter();
    await idempotent({ db, log }, callOf("k-shared", "f1", "tenant-a"), c.run);
    const other = await idempotent({ db, log }, callOf("k-shared", "other", "tenant-b"), c.run);
    expect(other.idempotentReplay).toBe(false);
    expect(c.runs).toBe(2);
  });

  it("ignores keys older than 24 hours, lets a dead holder's key be taken over, and sweeps", async () => {
    const c = counter();
    await idempotent({ db, log }, callOf("k-old"), c.run);
    await raw.query(
      "update executor.idempotency_keys set created_at = now() - interval '25 hours', expires_at = now() - interval '1 hour' where key = 'k-old'",
    );
    // Expired: even another request may use the key again.
    const reused = await idempotent({ db, log }, callOf("k-old", "f-new"), c.run);
    expect(reused.idempotentReplay).toBe(false);
    expect(c.runs).toBe(2);

    // A holder that never finished (its process died) blocks only until its lease runs out.
    await raw.query(
      "insert into executor.idempotency_keys (tenant_id, key, method, fingerprint, state, locked_until, expires_at) values ('t1', 'k-stale', 'execute_background', 'f1', 'running', now() - interval '1 second', now() + interval '1 hour')",
    );
    expect((await idempotent({ db, log }, callOf("k-stale"), c.run)).executionId).toBe("exec_3");

    await raw.query(
      "insert into executor.idempotency_keys (tenant_id, key, method, fingerprint, state, locked_until, expires_at) values ('t1', 'k-swept', 'execute_background', 'f1', 'done', now(), now() - interval '1 second')",
    );
    expect(await deleteExpiredIdempotencyKeys(db)).toBeGreaterThanOrEqual(1);
    const left = await raw.query("select key from executor.idempotency_keys where key = 'k-swept'");
    expect(left.rowCount).toBe(0);
  });
});

describe("a key whose holder lost its answer", () => {
  it("answers the execution the holder bound to it when that finished, and runs again when not", async () => {
    const c = counter();
    const finished = new Map<string, ExecuteBackgroundResponse>();
    const call = (key: string): IdempotentCall<typeof ExecuteBackgroundResponseSchema> => ({
      ...callOf(key),
      leaseMs: 100,
      recover: async (executionId) => finished.get(executionId),
    });
    // A holder binds its execution, which gets stored finished, then its answer is lost: its run
    // throws and the key cannot be released (here: the release is made to find nothing to delete).
    for (const [key, done] of [
      ["k-lost", true],
      ["k-abandoned", false],
    ] as const) {
      await expect(
        idempotent({ db, log }, call(key), async (bind) => {
          await bind(`exec_${key}`);
          if (done)
            finished.set(
              `exec_${key}`,
              create(ExecuteBackgroundResponseSchema, { executionId: `exec_${key}` }),
            );
          await raw.query("update executor.idempotency_keys set state = 'done-elsewhere' where key = $1", [
            key,
          ]);
          throw new Error("connection terminated");
        }),
      ).rejects.toThrow("connection terminated");
      await raw.query(
        "update executor.idempotency_keys set state = 'running', locked_until = now() - interval '1 second' where key = $1",
        [key],
      );
    }
    const runsBefore = c.runs;
    // Finished: the retry gets that execution, nothing runs again.
    expect((await idempotent({ db, log }, call("k-lost"), c.run)).executionId).toBe("exec_k-lost");
    expect(c.runs).toBe(runsBefore);
    // Never finished (its executor died): the retry runs it again, by design.
    expect((await idempotent({ db, log }, call("k-abandoned"), c.run)).executionId).toMatch(/^exec_\d+$/);
    expect(c.runs).toBe(runsBefore + 1);
    // Either way the key now holds the answer given.
    expect((await idempotent({ db, log }, call("k-lost"), c.run)).idempotentReplay).toBe(true);
  });
});

describe("key format and canonical JSON", () => {
  it("accepts 1-255 visible ASCII characters only", () => {
    expect(validIdempotencyKey("a")).toBe("a");
    expect(validIdempotencyKey("x".repeat(255))).toHaveLength(255);
    for (const bad of ["", "x".repeat(256), "has space", "tab\t", "é"]) {
      expect(() => validIdempotencyKey(bad)).toThrow("1 to 255 visible ASCII characters");
    }
  });

  it("ignores key order at every depth", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } })).toBe(
      canonicalJson({ a: { c: null, d: [1, { x: 1, y: 2 }] }, b: 1 }),
    );
    expect(canonicalJson({ a: [1, 2] })).not.toBe(canonicalJson({ a: [2, 1] }));
  });
});
