/**
 * `npm run chaos`: the whole stack on its own embedded PostgreSQL and nats-server (free ports, a temp
 * data folder, so nobody else's services are touched) under steady mixed load, while the executor,
 * logs, notifier and gateway are killed with SIGKILL and restarted in turn, then nats-server and
 * PostgreSQL are crashed and restarted on the same ports and data. Afterwards it checks that nothing
 * accepted was lost or done twice and prints the faults and invariants; exit 1 on any breach.
 *
 * CHAOS_STEADY_MS (pause between faults, default 8000) and CHAOS_KEEP=1 (keep the data folder) tune it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import type { ProcessName, Stack } from "../../gateway/cli/stack.js";
import { AuthService } from "../../services/platform/gen/flowplane/auth/v1/auth_pb.js";
import { createRpcClient } from "../../services/platform/rpc.js";
import { createMixedLoad, type Kind, type MixedLoad, startLoadStack } from "./load.js";

const STEADY_MS = Number(process.env.CHAOS_STEADY_MS ?? 8_000);
const RECOVERY_TIMEOUT_MS = 60_000;
const CONVERGE_TIMEOUT_MS = 90_000;

interface Fault {
  what: string;
  atS: number;
  /** Kill → the process (or server) ready again. */
  restartMs: number;
  /** Kill → the first successful request that needs it. */
  recoveryMs: number | undefined;
  note?: string;
}

interface Invariant {
  name: string;
  expected: string | number;
  actual: string | number;
  ok: boolean;
  detail?: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (line: string) => process.stdout.write(`${line}\n`);

function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((row) => row.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? "").length)));
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [
    line(cells[0] ?? []),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...cells.slice(1).map(line),
  ].join("\n");
}

/** Which request kind shows that a process is back: the one that cannot succeed without it. */
const PROBE: Record<ProcessName | "nats" | "postgres", Kind | "webhook"> = {
  auth: "sync",
  executor: "sync",
  gateway: "sync",
  logs: "logs",
  notifier: "webhook",
  nats: "sync",
  postgres: "sync",
};

async function nextWebhook(load: MixedLoad, since: number, timeoutMs: number): Promise<number> {
  const before = load.receiver.received.length;
  const deadline = performance.now() + timeoutMs;
  // Deliveries of runs that finished before the kill may still be in flight; a new one is proof.
  const sinceWall = Date.now() - (performance.now() - since);
  while (performance.now() < deadline) {
    const fresh = load.receiver.received.slice(before).find((r) => r.receivedAt >= sinceWall);
    if (fresh) return performance.now();
    await sleep(20);
  }
  throw new Error(`no webhook within ${timeoutMs} ms`);
}

async function injectFaults(stack: Stack, load: MixedLoad, startedAt: number): Promise<Fault[]> {
  const faults: Fault[] = [];
  const steps: (ProcessName | "nats" | "postgres")[] = [
    "executor",
    "logs",
    "notifier",
    "gateway",
    "nats",
    "postgres",
  ];
  for (const what of steps) {
    await sleep(STEADY_MS);
    const t0 = performance.now();
    const atS = Math.round((t0 - startedAt) / 100) / 10;
    say(
      `  ${atS.toFixed(1)} s: ${what === "nats" || what === "postgres" ? "crash and restart" : "kill -9 and restart"} ${what}`,
    );
    const probe = PROBE[what];
    let note: string | undefined;
    let recovered: Promise<number> | undefined;
    // Fresh probe requests from the moment of the fault: the load's own loops may be waiting out an
    // Idempotency-Key that the killed process held, which says nothing about the service.
    const startProbe = () => {
      recovered =
        probe === "webhook"
          ? nextWebhook(load, t0, RECOVERY_TIMEOUT_MS)
          : load.probe(probe, RECOVERY_TIMEOUT_MS);
      recovered.catch(() => {});
    };
    if (what === "nats" || what === "postgres") {
      const restarted = stack.restartInfrastructure(what);
      startProbe();
      await restarted;
    } else {
      await stack.killProcess(what);
      startProbe();
      await stack.startProcess(what);
    }
    const restartMs = Math.round(performance.now() - t0);
    let recoveryMs: number | undefined;
    try {
      recoveryMs = Math.round((await recovered!) - t0);
    } catch (err) {
      note = (err as Error).message;
    }
    say(`    back after ${restartMs} ms, serving after ${recoveryMs ?? "—"} ms${note ? ` (${note})` : ""}`);
    faults.push({ what, atS, restartMs, recoveryMs, note });
  }
  return faults;
}

interface Snapshot {
  executions: Map<string, { status: string; cost: number; key: string; error: string }>;
  logRows: Map<string, number>;
  usage: number;
}

async function snapshot(db: pg.Client, stack: Stack, tenantId: string): Promise<Snapshot> {
  const executions: Snapshot["executions"] = new Map();
  const { rows } = await db.query<{ id: string; status: string; cost: string; key: string; error: string }>(
    `select id, status, cost::text as cost, coalesce(input->>'First Name', '') as key,
            coalesce(error, '') as error
       from executor.executions where tenant_id = $1`,
    [tenantId],
  );
  for (const row of rows) {
    executions.set(row.id, { status: row.status, cost: Number(row.cost), key: row.key, error: row.error });
  }
  const logRows = new Map<string, number>();
  const logs = await db.query<{ execution_id: string; n: string }>(
    "select execution_id, count(*)::text as n from logs.execution_logs where tenant_id = $1 group by 1",
    [tenantId],
  );
  for (const row of logs.rows) logRows.set(row.execution_id, Number(row.n));
  const { limits } = await createRpcClient(AuthService, stack.serviceUrls.auth).getLimits({ tenantId });
  return { executions, logRows, usage: limits?.usage?.currentPeriodCost ?? Number.NaN };
}

const FINAL = new Set(["success", "error"]);

function invariants(load: MixedLoad, snap: Snapshot): Invariant[] {
  const accepted = [...load.sync, ...load.background];
  const oneLog = accepted.filter((a) => snap.logRows.get(a.executionId) === 1);
  const missingLogs = accepted
    .filter((a) => (snap.logRows.get(a.executionId) ?? 0) === 0)
    .map((a) => a.executionId);
  const finished = [...snap.executions].filter(([, e]) => FINAL.has(e.status));
  const unfinished = [...snap.executions]
    .filter(([, e]) => !FINAL.has(e.status))
    .map(([id, e]) => `${id}:${e.status}`);
  const finishedWithOneLog = finished.filter(([id]) => snap.logRows.get(id) === 1).length;
  const duplicateLogs = [...snap.logRows].filter(([, n]) => n > 1).length;
  const bgFinal = load.background.filter((a) => FINAL.has(snap.executions.get(a.executionId)?.status ?? ""));
  const bgStuck = load.background
    .filter((a) => !FINAL.has(snap.executions.get(a.executionId)?.status ?? ""))
    .map((a) => `${a.executionId}:${snap.executions.get(a.executionId)?.status ?? "missing"}`);
  const syncStored = load.sync.filter((a) => FINAL.has(snap.executions.get(a.executionId)?.status ?? ""));
  // A run whose executor died (ended "run abandoned") gave no answer; the key's retry runs it again
  // once the key's lease is over, by design. Two runs that both got to the end is a breach.
  const keys = new Map<string, number>();
  const rerunAfterAbandoned = new Set<string>();
  for (const [, e] of snap.executions) {
    if (e.error.startsWith("run abandoned")) rerunAfterAbandoned.add(e.key);
    else keys.set(e.key, (keys.get(e.key) ?? 0) + 1);
  }
  const keysRunTwice = [...keys].filter(([, n]) => n > 1).map(([k]) => k);
  const webhooked = finished.filter(([id]) => (load.webhooks.countByExecution.get(id) ?? 0) >= 1).length;
  const noWebhook = finished.filter(([id]) => !load.webhooks.countByExecution.has(id)).map(([id]) => id);
  const unstableKeys = [...load.webhooks.keysByExecution].filter(([, set]) => set.size > 1).map(([id]) => id);
  const duplicates = [...load.webhooks.countByExecution.values()].reduce((n, c) => n + c - 1, 0);
  const costSum = finished.reduce((sum, [, e]) => sum + e.cost, 0);
  const internalErrors =
    (load.stats.sync.failures.get("500") ?? 0) +
    (load.stats.background.failures.get("500") ?? 0) +
    (load.stats.logs.failures.get("500") ?? 0);
  const sample = (ids: string[]) =>
    ids.length ? ids.slice(0, 5).join(", ") + (ids.length > 5 ? " …" : "") : undefined;
  return [
    {
      name: "accepted sync answers stored as finished",
      expected: load.sync.length,
      actual: syncStored.length,
      ok: syncStored.length === load.sync.length,
    },
    {
      name: "accepted executions with exactly one log row",
      expected: accepted.length,
      actual: oneLog.length,
      ok: oneLog.length === accepted.length,
      detail: sample(missingLogs),
    },
    {
      name: "finished executions (all) with exactly one log row",
      expected: finished.length,
      actual: finishedWithOneLog,
      ok: finishedWithOneLog === finished.length,
    },
    {
      name: "executions with more than one log row",
      expected: 0,
      actual: duplicateLogs,
      ok: duplicateLogs === 0,
    },
    {
      name: "executions left queued or running (all)",
      expected: 0,
      actual: unfinished.length,
      ok: unfinished.length === 0,
      detail: sample(unfinished),
    },
    {
      name: "accepted background runs in a final state",
      expected: load.background.length,
      actual: bgFinal.length,
      ok: bgFinal.length === load.background.length,
      detail: sample(bgStuck),
    },
    {
      name: "Idempotency-Keys run to the end more than once",
      expected: 0,
      actual: keysRunTwice.length,
      ok: keysRunTwice.length === 0,
      detail:
        sample(keysRunTwice) ??
        `${rerunAfterAbandoned.size} keys ran again after their first run was abandoned by a killed executor`,
    },
    {
      name: "finished executions with a webhook received",
      expected: finished.length,
      actual: webhooked,
      ok: webhooked === finished.length,
      detail: sample(noWebhook),
    },
    {
      name: "webhook duplicates with a different Idempotency-Key",
      expected: 0,
      actual: unstableKeys.length,
      ok: unstableKeys.length === 0,
      detail: `${duplicates} duplicate deliveries in all (allowed: at least once)${unstableKeys.length ? `; ${sample(unstableKeys)}` : ""}`,
    },
    {
      name: "malformed webhooks",
      expected: 0,
      actual: load.webhooks.malformed,
      ok: load.webhooks.malformed === 0,
    },
    {
      name: "usage (auth) = sum of execution costs, USD",
      expected: Number(costSum.toFixed(9)),
      actual: Number(snap.usage.toFixed(9)),
      ok: Math.abs(costSum - snap.usage) < 1e-9,
    },
    {
      name: "logs polling: no log served twice",
      expected: 0,
      actual: load.polledRepeats,
      ok: load.polledRepeats === 0,
    },
    { name: "500 (internal error) answers", expected: 0, actual: internalErrors, ok: internalErrors === 0 },
  ];
}

/** Polls until every invariant holds or the deadline passes; the last evaluation either way. */
async function converge(
  db: pg.Client,
  stack: Stack,
  tenantId: string,
  load: MixedLoad,
): Promise<Invariant[]> {
  const deadline = performance.now() + CONVERGE_TIMEOUT_MS;
  for (;;) {
    let result: Invariant[];
    try {
      result = invariants(load, await snapshot(db, stack, tenantId));
    } catch (err) {
      result = [{ name: "state readable", expected: "yes", actual: (err as Error).message, ok: false }];
    }
    if (result.every((i) => i.ok) || performance.now() > deadline) return result;
    await sleep(1_000);
  }
}

async function main(): Promise<number> {
  const started = performance.now();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-chaos-"));
  const logDir = path.join(dataDir, "logs");
  say(`chaos: data and logs in ${dataDir}`);
  const load = await createMixedLoad();
  let stack: Stack | undefined;
  let db: pg.Client | undefined;
  let breach = true;
  try {
    stack = await startLoadStack({
      dataDir,
      logDir,
      namespace: "chaos",
      env: {
        // Faster recovery than production defaults, so the run fits in minutes.
        NOTIFIER_RETRY_DELAYS_MS: "1000,2000,4000,8000,16000",
        NOTIFIER_DELIVERY_TIMEOUT_MS: "5000",
        EXECUTOR_RUN_ACK_WAIT_MS: "5000",
        EXECUTOR_OUTBOX_INTERVAL_MS: "1000",
        EXECUTOR_RUN_TIMEOUT_MS: "20000",
        SHUTDOWN_TIMEOUT_MS: "3000",
      },
      report: (line) => say(`  ${line}`),
    });
    say(`chaos: stack up in ${Math.round(performance.now() - started)} ms, gateway ${stack.gatewayUrl}`);
    const dev = await bootstrapDemo({
      serviceUrls: stack.serviceUrls,
      gatewayUrl: stack.gatewayUrl,
      dataDir,
    });
    const subscription = await fetch(`${stack.gatewayUrl}/api/v1/notifications`, {
      method: "POST",
      headers: { "x-api-key": dev.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ webhook: { url: load.receiver.url }, allWorkflows: true, enabled: true }),
    });
    if (subscription.status !== 201)
      throw new Error(`subscription: ${subscription.status} ${await subscription.text()}`);

    const loadStarted = performance.now();
    load.start({
      gatewayUrl: stack.gatewayUrl,
      apiKey: dev.apiKey,
      workspaceId: dev.workspaceId,
      workflowId: dev.workflowId,
      syncConcurrency: 3,
      syncPauseMs: 50,
      backgroundConcurrency: 1,
      backgroundPauseMs: 100,
      logsPollMs: 500,
      retry: true,
      settleMs: 60_000,
      requestTimeoutMs: 30_000,
      keyPrefix: `chaos${Date.now().toString(36)}`,
    });
    const faults = await injectFaults(stack, load, loadStarted);
    await sleep(STEADY_MS);
    say("chaos: stopping the load, retrying unanswered keys, waiting for the stack to settle");
    await load.stop();

    const dbUrl = stack.databaseUrl;
    db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    const checks = await converge(db, stack, dev.workspaceId, load);

    say("\nFaults injected");
    say(
      table(
        ["fault", "at (s)", "restart (ms)", "serving again (ms)", "note"],
        faults.map((f) => [
          f.what === "nats" || f.what === "postgres" ? `crash+restart ${f.what}` : `kill -9 ${f.what}`,
          f.atS.toFixed(1),
          f.restartMs,
          f.recoveryMs ?? "—",
          f.note ?? "",
        ]),
      ),
    );
    say("\nLoad");
    say(
      table(
        ["kind", "2xx", "failed attempts (not accepted)", "abandoned keys"],
        (["sync", "background", "logs"] as const).map((kind) => [
          kind,
          load.stats[kind].ok,
          [...load.stats[kind].failures].map(([cause, n]) => `${cause}×${n}`).join(" ") || "0",
          load.stats[kind].abandoned.length,
        ]),
      ),
    );
    const retried = [...load.sync, ...load.background].filter((a) => a.attempts > 1).length;
    say(
      `webhooks received: ${load.receiver.received.length}; executes answered only after a retry: ${retried}`,
    );
    say("\nInvariants");
    say(
      table(
        ["invariant", "expected", "actual", "ok", "detail"],
        checks.map((c) => [c.name, c.expected, c.actual, c.ok ? "ok" : "BREACH", c.detail ?? ""]),
      ),
    );
    breach = checks.some((c) => !c.ok) || faults.some((f) => f.recoveryMs === undefined);
    say(
      `\nchaos: ${breach ? "BREACH" : "no breach"} in ${((performance.now() - started) / 1000).toFixed(0)} s${breach ? `; logs in ${logDir}` : ""}`,
    );
  } finally {
    await db?.end().catch(() => {});
    await stack?.stop().catch((err: unknown) => say(`stack stop: ${String(err)}`));
    await load.receiver.close();
    if (!breach && process.env.CHAOS_KEEP !== "1") await rm(dataDir, { recursive: true, force: true });
  }
  return breach ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
