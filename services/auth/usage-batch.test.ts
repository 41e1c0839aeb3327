import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../../test/helpers/infra.js";
import { createDatabase, migrateToLatest } from "../platform/db.js";
import { type Database, recordExecutionCosts } from "./store.js";
import { billingPeriodOf } from "./usage.js";

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
  await db.destroy();
  await testDb.drop();
});

async function periods(tenantId: string) {
  return db
    .selectFrom("usage_periods")
    .select(["period_start", "cost", "executions"])
    .where("tenant_id", "=", tenantId)
    .orderBy("period_start")
    .execute();
}

describe("recordExecutionCosts (the usage consumer's batches)", () => {
  it("sums each execution once per period, whether repeated within a batch or redelivered later", async () => {
    const tenantId = `ten_${randomBytes(4).toString("hex")}`;
    const other = `ten_${randomBytes(4).toString("hex")}`;
    const now = billingPeriodOf(new Date()).start;
    const lastMonth = billingPeriodOf(new Date(now.getTime() - 1)).start;
    const cost = (executionId: string, costUsd: number, periodStart = now, tenant = tenantId) => ({
      executionId,
      tenantId: tenant,
      costUsd,
      periodStart,
    });
    const batch = [
      cost("exec_a", 0.25),
      cost("exec_b", 0.125),
      cost("exec_a", 0.25), // the same completion delivered twice
      cost("exec_c", 1, lastMonth),
      cost("exec_d", 0.5, now, other),
    ];
    expect(await recordExecutionCosts(db, batch)).toBe(4);
    expect(await recordExecutionCosts(db, [cost("exec_b", 0.125), cost("exec_e", 0.001)])).toBe(1);
    expect(await recordExecutionCosts(db, [])).toBe(0);

    expect(await periods(tenantId)).toEqual([
      { period_start: lastMonth, cost: 1, executions: 1 },
      { period_start: now, cost: 0.376, executions: 3 },
    ]);
    expect(await periods(other)).toEqual([{ period_start: now, cost: 0.5, executions: 1 }]);
  });
});
