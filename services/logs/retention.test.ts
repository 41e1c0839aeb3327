import { randomBytes } from "node:crypto";
import type { Client } from "@connectrpc/connect";
import { CompiledQuery, type Kysely, sql } from "kysely";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  freePort,
  TEST_NATS_URL,
  type TestDatabase,
  testNamespace,
  waitFor,
} from "../../test/helpers/infra.js";
import { authService } from "../auth/service.js";
import { createDatabase } from "../platform/db.js";
import { AuthService, Plan, TenantService } from "../platform/gen/flowplane/auth/v1/auth_pb.js";
import { newId } from "../platform/ids.js";
import { createLogger } from "../platform/log.js";
import { createRpcClient } from "../platform/rpc.js";
import { type RunningService, startService } from "../platform/service.js";
import {
  authPlanDirectory,
  type PlanDirectory,
  RetentionJob,
  type RetentionPolicy,
  tenantsWithLogsBefore,
  tenantsWithLogsBeforeQuery,
} from "./retention.js";
import { logsService } from "./service.js";
import { type Database, insertExecutionLog } from "./store.js";

const DAY_MS = 24 * 60 * 60 * 1000;
const POLICY: RetentionPolicy = {
  planDays: { free: 7, pro: 30, team: 90, enterprise: 365 },
  defaultDays: 30,
};

let testDb: TestDatabase;
let namespace: string;
let auth: RunningService;
let logs: RunningService | undefined;
let authUrl: string;
let tenants: Client<typeof TenantService>;
let store: Kysely<Database>;

async function workspace(plan: Plan): Promise<string> {
  const { tenant } = await tenants.createTenant({ name: "retention", plan });
  return tenant!.id;
}

/** One log per age (days before `now`, plus a minute so no age sits on a cutoff). */
async function addLogs(tenantId: string, ageDays: number[], now: number): Promise<void> {
  for (const age of ageDays) {
    const startedAt = new Date(now - age * DAY_MS - 60_000);
    const suffix = randomBytes(6).toString("hex");
    await insertExecutionLog(
      store,
      {
        id: `log_${suffix}`,
        tenant_id: tenantId,
        execution_id: `exec_${suffix}`,
        workflow_id: "wf_retention",
        workflow_version: 1,
        workflow_name: "Retention",
        workflow_description: "",
        folder_id: "",
        conversation_id: "",
        level: "info",
        trigger: "api",
        status: "success",
        started_at: startedAt,
        ended_at: new Date(startedAt.getTime() + 100),
        total_duration_ms: 100,
        cost_total: 0,
        models: [],
        cost: JSON.stringify({ total: 0 }),
        final_output: null,
        trace_spans: "[]",
        error: null,
      },
      undefined,
    );
  }
}

/** Ages in whole days of the tenant's remaining logs, ascending. */
async function agesOf(tenantId: string, now: number): Promise<number[]> {
  const rows = await store
    .selectFrom("execution_logs")
    .select("started_at")
    .where("tenant_id", "=", tenantId)
    .execute();
  return rows.map((r) => Math.floor((now - r.started_at.getTime()) / DAY_MS)).sort((a, b) => a - b);
}

function job(opts: { plans: PlanDirectory; policy?: RetentionPolicy; log?: pino.Logger }): RetentionJob {
  return new RetentionJob(store, opts.log ?? createLogger("logs-test", "silent"), {
    policy: opts.policy ?? POLICY,
    plans: opts.plans,
    intervalMs: 60_000,
    batchSize: 2,
    pauseMs: 0,
  });
}

/** A logger whose warnings the test can read. */
function capturingLogger(): { log: pino.Logger; warnings: string[] } {
  const warnings: string[] = [];
  const log = pino(
    { level: "warn" },
    {
      write(line: string) {
        warnings.push((JSON.parse(line) as { msg: string }).msg);
      },
    },
  );
  return { log, warnings };
}

beforeAll(async () => {
  testDb = await createTestDatabase();
  namespace = testNamespace();
  const common = { DATABASE_URL: testDb.url, NATS_URL: TEST_NATS_URL, FLOWPLANE_NAMESPACE: namespace };
  auth = await startService(authService, {
    ...common,
    AUTH_PORT: "0",
    AUTH_KEY_ENV: "test",
    LOG_LEVEL: "silent",
  });
  authUrl = `http://127.0.0.1:${auth.port}`;
  tenants = createRpcClient(TenantService, authUrl);
  // The service's own job runs every second here; the tests after the first stop it and drive passes.
  logs = await startService(logsService, {
    ...common,
    LOGS_PORT: "0",
    LOG_LEVEL: "silent",
    AUTH_URL: authUrl,
    LOGS_RETENTION_INTERVAL_MS: "1000",
    LOGS_RETENTION_BATCH_SIZE: "2",
    LOGS_RETENTION_PAUSE_MS: "0",
  });
  store = createDatabase<Database>({ url: testDb.url, schema: "logs", maxConnections: 4 });
}, 60_000);

afterAll(async () => {
  await logs?.stop();
  await auth?.stop();
  await store?.destroy();
  await testDb?.drop();
  if (namespace) await deleteNamespaceStreams(namespace);
});

describe("log retention per plan", () => {
  it("the logs service's periodic job keeps each workspace's logs for its plan's days", async () => {
    const now = Date.now();
    const free = await workspace(Plan.FREE);
    const pro = await workspace(Plan.PRO);
    const enterprise = await workspace(Plan.ENTERPRISE);
    // A well-formed workspace id auth has never heard of: the default retention (30 days).
    const unknown = newId("ws");
    await addLogs(free, [2, 10, 40], now);
    await addLogs(pro, [10, 40], now);
    await addLogs(enterprise, [2, 10, 40, 400], now);
    await addLogs(unknown, [10, 40], now);

    const expected = { free: [2], pro: [10], enterprise: [2, 10, 40], unknown: [10] };
    try {
      await waitFor(
        "the retention job to expire what each plan no longer keeps",
        async () => {
          const remaining = {
            free: await agesOf(free, now),
            pro: await agesOf(pro, now),
            enterprise: await agesOf(enterprise, now),
            unknown: await agesOf(unknown, now),
          };
          return JSON.stringify(remaining) === JSON.stringify(expected) ? remaining : undefined;
        },
        60_000,
        200,
      ).catch(() => undefined); // the assertions below show what is left
    } finally {
      await logs?.stop();
      logs = undefined;
    }

    expect(await agesOf(free, now)).toEqual([2]); // free: 7 days, the 10-day-old log is gone
    expect(await agesOf(pro, now)).toEqual([10]);
    expect(await agesOf(enterprise, now)).toEqual([2, 10, 40]); // enterprise: 365 days
    expect(await agesOf(unknown, now)).toEqual([10]);
  }, 90_000);

  it("one pass deletes in batches, counts what it deleted, and a second pass finds nothing", async () => {
    const now = Date.now();
    const free = await workspace(Plan.FREE);
    const team = await workspace(Plan.TEAM);
    await addLogs(free, [1, 8, 9, 10, 11, 12], now); // five to delete: several batches of 2
    await addLogs(team, [10, 89, 91, 120], now);
    const pass = job({ plans: authPlanDirectory(createRpcClient(AuthService, authUrl)) });

    expect(await pass.runOnce(new Date(now))).toBe(7);
    expect(await agesOf(free, now)).toEqual([1]);
    expect(await agesOf(team, now)).toEqual([10, 89]);
    expect(await pass.runOnce(new Date(now))).toBe(0);
    await pass.stop();
  });

  it("with auth unreachable, keeps logs for the longest configured retention and warns once", async () => {
    const now = Date.now();
    const free = await workspace(Plan.FREE);
    const pro = await workspace(Plan.PRO);
    await addLogs(free, [2, 10, 40, 400], now);
    await addLogs(pro, [10, 40, 400], now);
    const down = authPlanDirectory(createRpcClient(AuthService, `http://127.0.0.1:${await freePort()}`));
    let asked = 0;
    const counting: PlanDirectory = {
      planOf(tenantId) {
        asked++;
        return down.planOf(tenantId);
      },
    };

    // A default longer than every plan is safe, so it is what applies: nothing here is that old.
    const keepAll = job({ plans: counting, policy: { ...POLICY, defaultDays: 500 } });
    expect(await keepAll.runOnce(new Date(now))).toBe(0);
    expect(await agesOf(free, now)).toEqual([2, 10, 40, 400]);

    // The default (30) is shorter than enterprise's 365: unsure of the plan, keep 365 days.
    const { log, warnings } = capturingLogger();
    asked = 0;
    const pass = job({ plans: counting, log });
    expect(await pass.runOnce(new Date(now))).toBe(2);
    expect(await agesOf(free, now)).toEqual([2, 10, 40]);
    expect(await agesOf(pro, now)).toEqual([10, 40]);
    // After the first refusal the pass stops asking, and says so once.
    expect(asked).toBe(1);
    expect(warnings.filter((w) => w.includes("auth service unreachable"))).toHaveLength(1);

    // Auth back: the plans apply again.
    const back = job({ plans: authPlanDirectory(createRpcClient(AuthService, authUrl)) });
    expect(await back.runOnce(new Date(now))).toBe(3);
    expect(await agesOf(free, now)).toEqual([2]);
    expect(await agesOf(pro, now)).toEqual([10]);
    await Promise.all([keepAll.stop(), pass.stop(), back.stop()]);
  });

  it("deletes nothing while another replica holds the retention lock", async () => {
    const now = Date.now();
    const free = await workspace(Plan.FREE);
    await addLogs(free, [1, 30], now);
    const pass = job({ plans: authPlanDirectory(createRpcClient(AuthService, authUrl)) });
    await store.connection().execute(async (other) => {
      await sql`select pg_advisory_lock(hashtext('flowplane.logs'), hashtext('retention'))`.execute(other);
      try {
        expect(await pass.runOnce(new Date(now))).toBe(0);
        expect(await agesOf(free, now)).toEqual([1, 30]);
      } finally {
        await sql`select pg_advisory_unlock(hashtext('flowplane.logs'), hashtext('retention'))`.execute(
          other,
        );
      }
    });
    expect(await pass.runOnce(new Date(now))).toBe(1);
    expect(await agesOf(free, now)).toEqual([1]);
    await pass.stop();
  });

  it("finds the workspaces with old logs by one index skip scan, not by reading every log", async () => {
    const now = Date.now();
    const recentOnly = `ws_${randomBytes(6).toString("hex")}`;
    const withOld = `ws_${randomBytes(6).toString("hex")}`;
    await addLogs(recentOnly, [1, 2], now);
    await addLogs(withOld, [1, 20], now);
    const cutoff = new Date(now - 7 * DAY_MS);
    const found = await tenantsWithLogsBefore(store, cutoff);
    expect(found).toContain(withOld);
    expect(found).not.toContain(recentOnly);

    // Enough rows that reading them all would show in the plan.
    await sql`
      insert into execution_logs (id, tenant_id, execution_id, workflow_id, level, trigger, status,
        started_at, ended_at, total_duration_ms, cost_total, cost)
      select 'log_bulk_' || g, 'ws_bulk_' || (g % 50), 'exec_bulk_' || g, 'wf', 'info', 'api', 'success',
        now() - (g % 100) * interval '1 day', now(), 0, 0, '{}'::jsonb
      from generate_series(1, 50000) as g`.execute(store);
    await sql`analyze execution_logs`.execute(store);
    const compiled = tenantsWithLogsBeforeQuery(cutoff).compile(store);
    const explained = await store.executeQuery(
      CompiledQuery.raw(`explain (format json) ${compiled.sql}`, [...compiled.parameters]),
    );
    const plan = JSON.stringify(explained.rows);
    expect(plan).toMatch(/"Node Type":"Index (Only )?Scan"/);
    expect(plan).not.toMatch(/"Node Type":"Seq Scan"/);
    expect((await tenantsWithLogsBefore(store, cutoff)).filter((t) => t.startsWith("ws_bulk_"))).toHaveLength(
      50,
    );
  }, 60_000);
});
