/** The batched claim and finish statements the background workers share, and their coalescer. */
import { fileURLToPath } from "node:url";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../test/helpers/infra.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import { newId } from "../platform/ids.js";
import { Coalescer } from "./coalesce.js";
import {
  claimExecutions,
  type Database,
  type ExecutorDb,
  findExecution,
  finishExecutions,
  insertExecution,
  insertExecutionsAsync,
  insertWorkflow,
  listConversationExecutions,
  type NewExecutionRow,
} from "./store.js";

describe("Coalescer", () => {
  it("hands calls made in the same turn to one batch, in order, and later calls to the next", async () => {
    const batches: number[][] = [];
    const doubler = new Coalescer<number, number>(async (items) => {
      batches.push(items);
      return items.map((i) => i * 2);
    });
    const first = await Promise.all([1, 2, 3].map((i) => doubler.call(i)));
    const second = await doubler.call(4);
    expect(first).toEqual([2, 4, 6]);
    expect(second).toBe(8);
    expect(batches).toEqual([[1, 2, 3], [4]]);
  });

  it("fails every call of a failed batch, and splits batches at maxBatch", async () => {
    const sizes: number[] = [];
    const failing = new Coalescer<number, number>(async (items) => {
      sizes.push(items.length);
      throw new Error("down");
    }, 2);
    const results = await Promise.allSettled([1, 2, 3].map((i) => failing.call(i)));
    expect(results.every((r) => r.status === "rejected")).toBe(true);
    expect(sizes).toEqual([2, 1]);
  });
});

describe("batched claims and finishes", () => {
  let testDb: TestDatabase;
  let db: ExecutorDb;
  const tenantId = newId("ws");

  beforeAll(async () => {
    testDb = await createTestDatabase();
    db = createDatabase<Database>({ url: testDb.url, schema: "executor" });
    await migrateToLatest(
      db as unknown as Kysely<unknown>,
      "executor",
      fileURLToPath(new URL("./migrations", import.meta.url)),
    );
  });

  afterAll(async () => {
    await db?.destroy();
    await testDb?.drop();
  });

  async function queued(workflowId: string, status: "queued" | "success" = "queued"): Promise<string> {
    const id = newId("exec");
    const conversationId = newId("conv");
    await insertExecution(
      db,
      {
        id,
        tenant_id: tenantId,
        workflow_id: workflowId,
        workflow_version: 1,
        conversation_id: conversationId,
        status,
        trigger: "api",
        input: JSON.stringify({ name: "x" }),
        output: "{}",
        path: [],
        error: null,
        warnings: [],
        trace_spans: "[]",
        cost: 0,
        cost_detail: "{}",
        credit_usage: 0,
        started_at: new Date(),
        ended_at: null,
        duration_ms: 0,
        published_at: null,
      },
      { id: conversationId, createdAt: new Date() },
    );
    return id;
  }

  it("claims what is claimable with its workflow, stores every result column, and only once", async () => {
    const { workflow } = await insertWorkflow(
      db,
      { id: newId("wf"), tenantId, name: "Batch", description: "d", folderId: "fld_1" },
      undefined,
    );
    const a = await queued(workflow.id);
    const b = await queued(workflow.id);
    const done = await queued(workflow.id, "success");
    const keys = [a, done, b, "exec_missing"].map((executionId) => ({ tenantId, executionId }));
    const claimed = await claimExecutions(db, keys);
    expect(claimed.map((c) => c?.row.id)).toEqual([a, undefined, b, undefined]);
    expect(claimed[0]!.row.status).toBe("running");
    expect(claimed[0]!.row.attempts).toBe(1);
    expect(claimed[0]!.workflow).toMatchObject({ id: workflow.id, name: "Batch", folder_id: "fld_1" });
    expect(claimed[0]!.workflow!.created_at).toBeInstanceOf(Date);

    const endedAt = new Date();
    const result = (status: "success" | "error", output: object) => ({
      status,
      output: JSON.stringify(output),
      path: ["start", 'it\'s "quoted"'],
      error: status === "error" ? "boom" : null,
      trace_spans: JSON.stringify([{ blockId: "start" }]),
      cost: 0.0005,
      cost_detail: JSON.stringify({ total: 0.0005 }),
      credit_usage: 1,
      ended_at: endedAt,
      duration_ms: 7,
    });
    const finished = await finishExecutions(db, [
      { tenantId, executionId: a, result: result("success", { Greeting: "Hi ü" }) },
      { tenantId, executionId: b, result: result("error", {}) },
      { tenantId, executionId: done, result: result("success", {}) },
    ]);
    expect(finished.map((r) => r?.id)).toEqual([a, b, undefined]);
    const stored = await findExecution(db, tenantId, a);
    expect(stored).toMatchObject({
      status: "success",
      output: { Greeting: "Hi ü" },
      path: ["start", 'it\'s "quoted"'],
      error: null,
      trace_spans: [{ blockId: "start" }],
      cost_detail: { total: 0.0005 },
      credit_usage: 1,
      duration_ms: 7,
    });
    expect(stored!.ended_at!.getTime()).toBe(endedAt.getTime());
    expect((await findExecution(db, tenantId, b))!.error).toBe("boom");
    // A finished run is neither claimed nor finished again.
    expect(await claimExecutions(db, [{ tenantId, executionId: a }])).toEqual([undefined]);
    expect(await finishExecutions(db, [{ tenantId, executionId: a, result: result("error", {}) }])).toEqual([
      undefined,
    ]);
  });

  it("inserts running rows together with their new conversations, and finishes rows that set other columns", async () => {
    const { workflow } = await insertWorkflow(
      db,
      { id: newId("wf"), tenantId, name: "Sync batch", description: "", folderId: "" },
      undefined,
    );
    const existing = newId("conv");
    await db
      .insertInto("conversations")
      .values({ id: existing, tenant_id: tenantId, workflow_id: workflow.id })
      .execute();
    const running = (conversationId: string): NewExecutionRow => ({
      id: newId("exec"),
      tenant_id: tenantId,
      workflow_id: workflow.id,
      workflow_version: 1,
      conversation_id: conversationId,
      status: "running",
      trigger: "api",
      input: JSON.stringify({ name: 'é "q"' }),
      output: "{}",
      path: [],
      error: null,
      warnings: [],
      trace_spans: "[]",
      cost: 0,
      cost_detail: "{}",
      credit_usage: 0,
      started_at: new Date(),
      ended_at: null,
      duration_ms: 0,
      published_at: null,
      traceparent: null,
    });
    const fresh = newId("conv");
    const a = running(fresh);
    const b = running(existing);
    await insertExecutionsAsync(db, [
      { row: a, newConversation: { id: fresh, createdAt: new Date() } },
      { row: b, newConversation: undefined },
    ]);
    expect((await listConversationExecutions(db, tenantId, fresh)).map((r) => r.id)).toEqual([a.id]);
    const stored = await findExecution(db, tenantId, b.id);
    expect(stored).toMatchObject({
      status: "running",
      input: { name: 'é "q"' },
      attempts: 0,
      watched: false,
    });

    // A sync result also sets started_at; a worker's does not and must keep the row's.
    const startedAt = new Date(Date.now() - 1_000);
    const base = {
      status: "success" as const,
      output: "{}",
      path: ["start"],
      error: null,
      trace_spans: "[]",
      cost: 0,
      cost_detail: "{}",
      credit_usage: 1,
      ended_at: new Date(),
      duration_ms: 3,
    };
    const finished = await finishExecutions(db, [
      { tenantId, executionId: a.id, result: { ...base, started_at: startedAt } },
      { tenantId, executionId: b.id, result: base },
    ]);
    expect(finished.map((r) => r?.id)).toEqual([a.id, b.id]);
    expect(finished[0]!.started_at.getTime()).toBe(startedAt.getTime());
    expect(finished[1]!.started_at.getTime()).toBe((b.started_at as Date).getTime());
  });
});
