/**
 * Mixed bench (DESIGN §10): the whole stack as `npm start` runs it (every service its own process,
 * an embedded PostgreSQL and a nats-server of its own) under 60 s of sync executes, background
 * executes, log polling and webhook deliveries at once. Per kind: throughput and p99; `errors5xx`
 * counts every 5xx answer; `stackRssMb` is the peak of the summed resident memory of every process
 * of the stack (services, gateway, PostgreSQL with its backends, nats-server), sampled every 250 ms,
 * as PSS: pages shared by several processes (PostgreSQL's shared buffers, mapped by every backend)
 * are split among them instead of counted once per process. `stackRssSumMb` is the plain RSS sum.
 * MIXED_SECONDS shortens the run for trying it out.
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { bootstrapDemo } from "../../gateway/cli/bootstrap.js";
import { createMixedLoad, percentile, startLoadStack } from "../chaos/load.js";

export const description =
  "mixed: sync + background executes, log polling and webhooks at once on a whole local stack (own PostgreSQL and NATS)";
export const targets: Record<string, string> = { errors5xx: "0", stackRssMb: "< 939" };

const SECONDS = Number(process.env.MIXED_SECONDS ?? 60);

/** Resident memory of one process in kB (Linux /proc): RSS, and PSS (shared pages split among sharers). */
function memoryKb(pid: number): { rss: number; pss: number } {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return { rss: field("Rss"), pss: field("Pss") };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

/** Parent → children over every process on the machine (PostgreSQL's backends are children). */
function childrenByParent(): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The command name may hold spaces and parentheses: fields start after the last ")".
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = out.get(ppid) ?? [];
      list.push(Number(entry));
      out.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * Memory in MB of each root with all its descendants: `pss` (PostgreSQL's shared buffers, mapped by
 * every backend, count once) and `rss` (plain sum, counting shared pages once per process).
 */
export function treeMemoryMb(
  roots: { name: string; pid: number }[],
): Map<string, { rss: number; pss: number }> {
  const children = childrenByParent();
  const out = new Map<string, { rss: number; pss: number }>();
  for (const root of roots) {
    const seen = new Set<number>();
    const pending = [root.pid];
    const total = { rss: 0, pss: 0 };
    while (pending.length > 0) {
      const pid = pending.pop()!;
      if (seen.has(pid)) continue;
      seen.add(pid);
      const kb = memoryKb(pid);
      total.rss += kb.rss / 1024;
      total.pss += kb.pss / 1024;
      pending.push(...(children.get(pid) ?? []));
    }
    out.set(root.name, total);
  }
  return out;
}

const round2 = (n: number) => Math.round(n * 100) / 100;

export default async function run(): Promise<Record<string, number>> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "flowplane-mixed-"));
  const load = await createMixedLoad();
  const stack = await startLoadStack({
    dataDir,
    logDir: path.join(dataDir, "logs"),
    namespace: "mixed",
    report: () => {},
  });
  let peakPssMb = 0;
  let peakRssMb = 0;
  let peakBreakdown = "";
  const sample = () => {
    const perProcess = treeMemoryMb(stack.allPids());
    const pss = [...perProcess.values()].reduce((n, m) => n + m.pss, 0);
    peakRssMb = Math.max(
      peakRssMb,
      [...perProcess.values()].reduce((n, m) => n + m.rss, 0),
    );
    if (pss > peakPssMb) {
      peakPssMb = pss;
      peakBreakdown = [...perProcess].map(([name, m]) => `${name} ${Math.round(m.pss)}`).join(", ");
    }
  };
  const sampler = setInterval(sample, 250);
  try {
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
    if (subscription.status !== 201) throw new Error(`subscription: ${subscription.status}`);
    const started = performance.now();
    load.start({
      gatewayUrl: stack.gatewayUrl,
      apiKey: dev.apiKey,
      workspaceId: dev.workspaceId,
      workflowId: dev.workflowId,
      syncConcurrency: 8,
      syncPauseMs: 0,
      backgroundConcurrency: 2,
      backgroundPauseMs: 20,
      logsPollMs: 200,
      retry: false,
      keyPrefix: `mixed${Date.now().toString(36)}`,
    });
    await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
    await load.stop();
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`  peak memory by process (PSS, MB): ${peakBreakdown}\n`);
    const webhooksInWindow = load.receiver.received.length;
    // Runs still queued finish and are delivered; their latencies count, the rate does not.
    const due = load.sync.length + load.background.length;
    const deadline = performance.now() + 60_000;
    while (load.webhooks.countByExecution.size < due && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const { stats } = load;
    const fivexx = (kind: "sync" | "background" | "logs") =>
      [...stats[kind].failures].filter(([cause]) => /^5\d\d$/.test(cause)).reduce((n, [, c]) => n + c, 0);
    const otherFailures = (["sync", "background", "logs"] as const).reduce(
      (n, kind) =>
        n +
        [...stats[kind].failures].filter(([cause]) => !/^5\d\d$/.test(cause)).reduce((m, [, c]) => m + c, 0),
      0,
    );
    return {
      seconds: Math.round(seconds),
      syncPerSec: round2(stats.sync.ok / seconds),
      syncP99Ms: round2(percentile(stats.sync.latenciesMs, 99)),
      backgroundPerSec: round2(stats.background.ok / seconds),
      backgroundP99Ms: round2(percentile(stats.background.latenciesMs, 99)),
      logsPollsPerSec: round2(stats.logs.ok / seconds),
      logsPollP99Ms: round2(percentile(stats.logs.latenciesMs, 99)),
      webhooksPerSec: round2(webhooksInWindow / seconds),
      webhookP99Ms: round2(percentile(load.webhooks.latenciesMs, 99)),
      webhooksMissing: due - load.webhooks.countByExecution.size,
      errors5xx: fivexx("sync") + fivexx("background") + fivexx("logs"),
      errorsOther: otherFailures,
      stackRssMb: Math.round(peakPssMb),
      stackRssSumMb: Math.round(peakRssMb),
    };
  } finally {
    clearInterval(sampler);
    await stack.stop();
    await load.receiver.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
