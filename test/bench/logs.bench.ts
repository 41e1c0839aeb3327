/**
 * Logs bench (DESIGN §10): 1,000,000 logs in one tenant and a filtered page of 100 at page 1 and at
 * page 1,000. cursorPage*: through LogsService.QueryLogs end to end (RPC, proto, the service's
 * keyset query). The depth comparison is like for like, both as SQL on the same pool, alternating
 * A/B in the same run: the keyset page as the service runs it (selectLogPage, cursorSqlPage1000*)
 * against the same query with OFFSET instead of the keyset predicate, compiled once too
 * (offsetPage1000*). cursorSpeedupAtDepth is the ratio of their medians: the p95 of
 * a 1 ms query on a shared 2-core machine measures scheduling noise more than the query, so the p95
 * ratio is reported beside it (cursorSpeedupAtDepthP95), as is the ratio against the end-to-end RPC
 * median (cursorRpcSpeedupAtDepth).
 */
import { performance } from "node:perf_hooks";
import { sql } from "kysely";
import { logsService } from "../../services/logs/service.js";
import {
  type Database,
  type LogFilters,
  logPageQuery,
  noFilters,
  selectLogPage,
} from "../../services/logs/store.js";
import { loadSyntheticLogs } from "../../services/logs/synthetic-logs.js";
import { createDatabase } from "../../services/platform/db.js";
import { Trigger } from "../../services/platform/gen/flowplane/events/v1/execution_pb.js";
import { LogsService, Order } from "../../services/platform/gen/flowplane/logs/v1/logs_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { startService } from "../../services/platform/service.js";
import {
  createTestDatabase,
  deleteNamespaceStreams,
  TEST_NATS_URL,
  testNamespace,
} from "../helpers/infra.js";

export const description =
  "logs: filtered page of 100 at page 1 and 1,000 by cursor (RPC) vs OFFSET (SQL), 1M logs in one tenant";

export const targets: Record<string, string> = {
  cursorPage1P95Ms: "< 20",
  cursorPage1000P95Ms: "< 20",
  cursorSpeedupAtDepth: "≥ 50",
};

const ROWS = Number(process.env.LOGS_BENCH_ROWS ?? 1_000_000);
const PAGE = 100;
const DEPTH = 1000;
const SAMPLES = 100;
const TENANT = "ten_bench";

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

const round = (n: number) => Math.round(n * 100) / 100;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export default async function run(): Promise<Record<string, number>> {
  const db = await createTestDatabase();
  const namespace = testNamespace();
  const service = await startService(logsService, {
    DATABASE_URL: db.url,
    NATS_URL: TEST_NATS_URL,
    FLOWPLANE_NAMESPACE: namespace,
    LOGS_PORT: "0",
    LOG_LEVEL: "silent",
    LOGS_RETENTION_DAYS_DEFAULT: "36500",
  });
  const store = createDatabase<Database>({ url: db.url, schema: "logs" });
  try {
    const loadStart = performance.now();
    // Recent enough that retention would keep them: one log every 2 s up to now.
    const from = new Date(Date.now() - ROWS * 2000);
    await loadSyntheticLogs(store, { tenantId: TENANT, count: ROWS, from, stepMs: 2000 });
    const loadMs = performance.now() - loadStart;
    await sql`vacuum analyze execution_logs`.execute(store);

    // The filtered query: successful runs started by api, webhook or schedule (54 % of the rows).
    const client = createRpcClient(LogsService, `http://127.0.0.1:${service.port}`, { timeoutMs: 60_000 });
    const request = {
      tenantId: TENANT,
      level: "info",
      triggers: [Trigger.API, Trigger.WEBHOOK, Trigger.SCHEDULE],
      limit: PAGE,
      order: Order.DESC,
    };
    const filters: LogFilters = { ...noFilters(), level: "info", triggers: ["api", "webhook", "schedule"] };

    let cursor = "";
    let firstPageIds: string[] = [];
    for (let page = 1; page < DEPTH; page++) {
      const res = await client.queryLogs({ ...request, cursor });
      if (page === 1) firstPageIds = res.data.map((l) => l.id);
      cursor = res.nextCursor;
      if (cursor === "") throw new Error(`only ${page} pages match the filter`);
    }
    const depthCursor = cursor;
    const pageQuery = {
      tenantId: TENANT,
      filters,
      ascending: false,
      fetch: PAGE,
      // What the RPC asks for: details basic (no workflow name), no output, no spans.
      withWorkflow: false,
      withFinalOutput: false,
      withTraceSpans: false,
    };
    // Compiled once, as the service compiles its keyset page once per shape (selectLogPage).
    const offsetQuery = logPageQuery(store, { ...pageQuery, after: undefined })
      .offset((DEPTH - 1) * PAGE)
      .compile();
    // The position the depth cursor names: the last row of page 999.
    const lastOf999 = (
      await logPageQuery(store, { ...pageQuery, after: undefined })
        .offset((DEPTH - 1) * PAGE - 1)
        .limit(1)
        .execute()
    )[0];
    if (!lastOf999) throw new Error("no page 999");
    const keysetPage = { ...pageQuery, after: { startedAt: lastOf999.started_at, id: lastOf999.id } };

    // Same page both ways?
    const byCursor = (await client.queryLogs({ ...request, cursor: depthCursor })).data.map((l) => l.id);
    const byOffset = (await store.executeQuery(offsetQuery)).rows.map((r) => r.id);
    const byKeyset = (await selectLogPage(store, keysetPage)).map((r) => r.id);
    if (JSON.stringify(byKeyset) !== JSON.stringify(byOffset))
      throw new Error("keyset and OFFSET pages differ");
    if (JSON.stringify(byCursor) !== JSON.stringify(byOffset))
      throw new Error("cursor and OFFSET pages differ");
    if (firstPageIds.length !== PAGE) throw new Error("page 1 is not full");

    const page1: number[] = [];
    const page1000: number[] = [];
    const offset1000: number[] = [];
    const keyset1000: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      page1.push(await timed(() => client.queryLogs(request)));
      page1000.push(await timed(() => client.queryLogs({ ...request, cursor: depthCursor })));
      keyset1000.push(await timed(() => selectLogPage(store, keysetPage)));
      offset1000.push(await timed(() => store.executeQuery(offsetQuery)));
    }
    const cursorSqlPage1000P95Ms = percentile(keyset1000, 95);
    const offsetPage1000P95Ms = percentile(offset1000, 95);
    return {
      rows: ROWS,
      loadSeconds: round(loadMs / 1000),
      cursorPage1P50Ms: round(percentile(page1, 50)),
      cursorPage1P95Ms: round(percentile(page1, 95)),
      cursorPage1000P50Ms: round(percentile(page1000, 50)),
      cursorPage1000P95Ms: round(percentile(page1000, 95)),
      cursorSqlPage1000P50Ms: round(percentile(keyset1000, 50)),
      cursorSqlPage1000P95Ms: round(cursorSqlPage1000P95Ms),
      offsetPage1000P50Ms: round(percentile(offset1000, 50)),
      offsetPage1000P95Ms: round(offsetPage1000P95Ms),
      cursorSpeedupAtDepth: round(percentile(offset1000, 50) / percentile(keyset1000, 50)),
      cursorSpeedupAtDepthP95: round(offsetPage1000P95Ms / cursorSqlPage1000P95Ms),
      cursorRpcSpeedupAtDepth: round(percentile(offset1000, 50) / percentile(page1000, 50)),
    };
  } finally {
    await service.stop();
    await store.destroy();
    await db.drop();
    await deleteNamespaceStreams(namespace);
  }
}
