import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../test/helpers/infra.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import { type Database, insertExecutionLogs, type NewExecutionLog } from "./store.js";

let testDb: TestDatabase;
let db: Kysely<Database>;

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = createDatabase<Database>({ url: testDb.url, schema: "logs" });
  await migrateToLatest(
    db as unknown as Kysely<unknown>,
    "logs",
    fileURLToPath(new URL("./migrations", import.meta.url)),
  );
});

afterAll(async () => {
  await db.destroy();
  await testDb.drop();
});

function logRow(tenantId: string, executionId: string, startedAt: Date): NewExecutionLog {
  return {
    id: `log_${randomBytes(6).toString("hex")}`,
    tenant_id: tenantId,
    execution_id: executionId,
    workflow_id: "wf_batch",
    workflow_version: 1,
    workflow_name: "Batch",
    workflow_description: "",
    folder_id: "",
    conversation_id: "",
    level: "info",
    trigger: "api",
    status: "success",
    started_at: startedAt,
    ended_at: new Date(startedAt.getTime() + 10),
    total_duration_ms: 10,
    cost_total: 0.001,
    models: [],
    cost: JSON.stringify({ total: 0.001 }),
    final_output: null,
    trace_spans: "[]",
    error: null,
  };
}

const snapshot = (tenantId: string) => ({
  tenant_id: tenantId,
  workflow_id: "wf_batch",
  version: 1,
  state: JSON.stringify({ blocks: {}, edges: [] }),
});

describe("insertExecutionLogs (the ingest consumer's batches)", () => {
  it("stores a batch of several tenants once each, seqs in batch order, one snapshot per version", async () => {
    const [a, b] = ["ten_a", "ten_b"].map((t) => `${t}_${randomBytes(4).toString("hex")}`) as [
      string,
      string,
    ];
    const at = new Date(Date.UTC(2025, 0, 1));
    const entries = ["e1", "e2", "e3", "e4"].map((e, i) => ({
      row: logRow(i % 2 === 0 ? a : b, `${a}_${e}`, new Date(at.getTime() + i)),
      snapshot: snapshot(i % 2 === 0 ? a : b),
    }));
    // A completion delivered twice within one batch counts once.
    const duplicate = { row: { ...entries[0]!.row, id: "log_dup" }, snapshot: snapshot(a) };
    expect(await insertExecutionLogs(db, [...entries, duplicate])).toBe(4);
    // And a redelivered batch adds nothing.
    expect(await insertExecutionLogs(db, entries)).toBe(0);

    const rows = await db
      .selectFrom("execution_logs")
      .select(["execution_id", "tenant_id", "seq"])
      .where("tenant_id", "in", [a, b])
      .orderBy("seq")
      .execute();
    expect(rows.map((r) => r.execution_id)).toEqual(entries.map((e) => e.row.execution_id));
    const snapshots = await db
      .selectFrom("workflow_snapshots")
      .select("tenant_id")
      .where("tenant_id", "in", [a, b])
      .execute();
    expect(snapshots.map((s) => s.tenant_id).sort()).toEqual([a, b].sort());
  });

  it("commits concurrent batches over the same tenants without deadlocking", async () => {
    const tenants = ["x", "y", "z"].map((t) => `ten_${t}_${randomBytes(4).toString("hex")}`);
    const batch = (order: string[], n: number) =>
      order.map((t, i) => ({
        row: logRow(t, `exec_${n}_${i}_${randomBytes(4).toString("hex")}`, new Date()),
        snapshot: undefined,
      }));
    const counts = await Promise.all([
      insertExecutionLogs(db, batch(tenants, 1)),
      insertExecutionLogs(db, batch([...tenants].reverse(), 2)),
      insertExecutionLogs(db, batch([tenants[1]!, tenants[0]!, tenants[2]!], 3)),
    ]);
    expect(counts).toEqual([3, 3, 3]);
  });
});
