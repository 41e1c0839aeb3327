/**
 * Benchmark runner (DESIGN §10): `npm run bench` runs every test/bench/<NAME>.bench.ts,
 * `npm run bench -- NAME [NAME…]` the named ones. Each module exports `description`, `targets`
 * (metric → target text) and a default `run()` returning flat metrics; the runner writes
 * test/bench/results/<NAME>.json ({...metrics, machine}) and regenerates the README table between
 * `<!-- bench:start -->` and `<!-- bench:end -->` from every result file present (`--no-readme`
 * leaves README.md alone, for trying a bench out).
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

interface BenchModule {
  description: string;
  targets: Record<string, string>;
  default: () => Promise<Record<string, number>>;
}

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const resultsDir = path.join(benchDir, "results");
const readmePath = path.join(benchDir, "..", "..", "README.md");
const SUFFIX = ".bench.ts";
const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";

async function availableBenches(): Promise<string[]> {
  const files = await fs.readdir(benchDir);
  return files
    .filter((f) => f.endsWith(SUFFIX))
    .map((f) => f.slice(0, -SUFFIX.length))
    .sort();
}

async function loadBench(name: string): Promise<BenchModule> {
  const mod = (await import(
    pathToFileURL(path.join(benchDir, `${name}${SUFFIX}`)).href
  )) as Partial<BenchModule>;
  if (
    typeof mod.default !== "function" ||
    typeof mod.description !== "string" ||
    typeof mod.targets !== "object"
  ) {
    throw new Error(`${name}${SUFFIX} must export description, targets and a default run()`);
  }
  return mod as BenchModule;
}

function machine() {
  return {
    cores: os.cpus().length,
    memoryGb: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
  };
}

function formatValue(value: unknown): string {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return value >= 100 ? value.toFixed(0) : value >= 1 ? value.toFixed(2) : value.toPrecision(3);
}

/** The README table from every result file, with each bench's targets. */
async function readmeTable(): Promise<string> {
  const names = (await fs.readdir(resultsDir).catch(() => [] as string[]))
    .filter((f) => f.endsWith(".json"))
    .map((f) => f.slice(0, -".json".length))
    .sort();
  const rows = ["| bench | metric | value | target |", "|---|---|---|---|"];
  for (const name of names) {
    const result = JSON.parse(await fs.readFile(path.join(resultsDir, `${name}.json`), "utf8")) as Record<
      string,
      unknown
    >;
    let targets: Record<string, string> = {};
    try {
      targets = (await loadBench(name)).targets;
    } catch {
      // A result without its module (renamed bench) is still shown.
    }
    for (const [metric, value] of Object.entries(result)) {
      if (metric === "machine") continue;
      rows.push(`| ${name} | \`${metric}\` | ${formatValue(value)} | ${targets[metric] ?? ""} |`);
    }
    const m = result.machine as { cores?: number; memoryGb?: number; node?: string } | undefined;
    if (m) rows.push(`| ${name} | machine | ${m.cores} cores, ${m.memoryGb} GB, Node ${m.node} | |`);
  }
  return rows.join("\n");
}

async function updateReadme(): Promise<void> {
  let readme: string;
  try {
    readme = await fs.readFile(readmePath, "utf8");
  } catch {
    return;
  }
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) {
    process.stdout.write(`README.md has no ${START} … ${END} section; table not written\n`);
    return;
  }
  const table = await readmeTable();
  await fs.writeFile(readmePath, `${readme.slice(0, start + START.length)}\n${table}\n${readme.slice(end)}`);
  process.stdout.write("README.md benchmark table updated\n");
}

async function main(): Promise<number> {
  const available = await availableBenches();
  const args = process.argv.slice(2).filter((a) => a !== "--");
  const writeReadme = !args.includes("--no-readme");
  const requested = args.filter((a) => a !== "--no-readme");
  for (const name of requested) {
    if (!available.includes(name)) {
      process.stderr.write(`unknown bench "${name}"; available: ${available.join(", ")}\n`);
      return 2;
    }
  }
  const names = requested.length > 0 ? requested : available;
  await fs.mkdir(resultsDir, { recursive: true });
  let failures = 0;
  for (const name of names) {
    process.stdout.write(`\n▶ ${name}\n`);
    try {
      const bench = await loadBench(name);
      process.stdout.write(`  ${bench.description}\n`);
      const started = Date.now();
      const metrics = await bench.default();
      const result = { ...metrics, machine: machine() };
      await fs.writeFile(path.join(resultsDir, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
      for (const [metric, value] of Object.entries(metrics)) {
        const target = bench.targets[metric];
        process.stdout.write(
          `  ${metric.padEnd(32)} ${formatValue(value).padStart(12)}${target ? `   target ${target}` : ""}\n`,
        );
      }
      process.stdout.write(`  (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
    } catch (err) {
      failures++;
      process.stderr.write(`  ${name} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    }
  }
  if (writeReadme) await updateReadme();
  return failures > 0 ? 1 : 0;
}

// Benches may leave pools or timers behind; the runner's exit ends them.
main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
