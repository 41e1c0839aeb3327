/**
 * What the gateway commands share: where output goes, exit codes, errors, the key and URL, the
 * typed client and aligned tables.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { createFlowplaneClient, type FlowplaneClient } from "../../client/index.js";

/** Exit codes that scripts can rely on (`flowplane help` lists them). */
export const EXIT = {
  ok: 0,
  /** the run finished with status error, or the gateway refused the request as invalid (400, 409, …) */
  failed: 1,
  usage: 2,
  /** 401 or 403: missing, wrong, revoked or expired key, or a scope it lacks */
  auth: 3,
  notFound: 4,
  /** 5xx, or the gateway could not be reached */
  unavailable: 5,
  rateLimited: 6,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0  ok
  1  the run finished with status "error", or the request was refused as invalid (400, 409, …)
  2  usage error (unknown command or option, missing argument)
  3  authentication or permission: 401 (no/unknown/revoked/expired key) or 403 (scope, workspace)
  4  not found (404)
  5  the gateway or a service behind it is unavailable (5xx) or could not be reached
  6  rate limited (429; retry after the time shown)`;

/** Where a command writes, and what it reads from its surroundings; tests pass their own. */
export interface CliIo {
  stdout: { write(text: string): unknown };
  /** Notes and the live block view; isTTY decides whether the view redraws in place. */
  stderr: { write(text: string): unknown; isTTY?: boolean };
  env: Record<string, string | undefined>;
  /** Aborted on Ctrl-C: long-running commands (logs --follow, run --watch) end with exit code 0. */
  signal?: AbortSignal;
  /** The working directory dev.json is looked up from. */
  cwd?: string;
}

export function processIo(signal?: AbortSignal): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, signal };
}

/** Wrong invocation: the message and the command's usage go to stderr, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
  }
}

/** `--help` on a gateway command: its usage goes to stdout and the command exits 0. */
export class HelpRequested extends Error {
  constructor(readonly usage: string) {
    super("help requested");
  }
}

/** An expected failure: only its message is shown, with its exit code. */
export class CommandError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

/** The exit code for an HTTP status the gateway answered with. */
export function exitCodeForStatus(status: number): number {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 429) return EXIT.rateLimited;
  if (status >= 500) return EXIT.unavailable;
  return EXIT.failed;
}

/** Runs a parseArgs call; its complaints (unknown option, missing value) are usage errors. */
export function parseOrUsage<T>(parseCall: () => T, usage: string): T {
  try {
    return parseCall();
  } catch (err) {
    throw new UsageError((err as Error).message, usage);
  }
}

/** The options every gateway command takes. */
export const GATEWAY_OPTIONS = {
  json: { type: "boolean" },
  "api-key": { type: "string" },
  url: { type: "string" },
  "data-dir": { type: "string" },
  help: { type: "boolean" },
} as const;

export const GATEWAY_OPTIONS_HELP = `  --json              machine-readable output (the gateway's JSON)
  --api-key KEY       the key (default: FLOWPLANE_API_KEY, else apiKey in <data-dir>/dev.json)
  --url URL           the gateway (default: FLOWPLANE_URL, else gatewayUrl in <data-dir>/dev.json,
                      else http://127.0.0.1:8080)
  --data-dir DIR      where \`flowplane dev\` saved dev.json (default: .flowplane)`;

/** parseArgs with the gateway options added; positionals allowed. */
export function parseGatewayArgs<
  O extends Record<string, { type: "string" | "boolean"; multiple?: boolean }>,
>(args: string[], options: O, usage: string) {
  const parsed = parseOrUsage(
    () =>
      parseArgs({ args, strict: true, allowPositionals: true, options: { ...GATEWAY_OPTIONS, ...options } }),
    usage,
  );
  if ((parsed.values as { help?: boolean }).help) throw new HelpRequested(usage);
  return parsed;
}

interface DevJson {
  apiKey?: string;
  gatewayUrl?: string;
  workspaceId?: string;
}

async function devJson(io: CliIo, dataDir: string): Promise<DevJson> {
  try {
    const file = path.resolve(io.cwd ?? process.cwd(), dataDir, "dev.json");
    const saved = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    const text = (v: unknown) => (typeof v === "string" && v ? v : undefined);
    return {
      apiKey: text(saved.apiKey),
      gatewayUrl: text(saved.gatewayUrl),
      workspaceId: text(saved.workspaceId),
    };
  } catch {
    return {};
  }
}

export function checkUrl(value: string, flag: string, usage: string): string {
  try {
    const url = new URL(value);
    if (url.protocol === "http:" || url.protocol === "https:") return value;
  } catch {
    // reported below
  }
  throw new UsageError(`${flag} must be an http(s) URL, got ${JSON.stringify(value)}`, usage);
}

export interface Gateway {
  baseUrl: string;
  apiKey: string;
  /** From --workspace, FLOWPLANE_WORKSPACE or dev.json; only the logs command needs it. */
  workspaceId?: string;
  client: FlowplaneClient;
}

/** The gateway and key: flags, else FLOWPLANE_URL / FLOWPLANE_API_KEY, else `flowplane dev`'s dev.json. */
export async function gatewayFrom(
  io: CliIo,
  values: { "api-key"?: string; url?: string; "data-dir"?: string; workspace?: string },
  usage: string,
): Promise<Gateway> {
  const saved = await devJson(io, values["data-dir"] ?? ".flowplane");
  const apiKey = values["api-key"] ?? (io.env.FLOWPLANE_API_KEY?.trim() || saved.apiKey);
  if (!apiKey) {
    throw new UsageError(
      "no API key: pass --api-key, set FLOWPLANE_API_KEY, or run `flowplane dev` first (it saves one in dev.json)",
      usage,
    );
  }
  const baseUrl = checkUrl(
    values.url ?? (io.env.FLOWPLANE_URL?.trim() || saved.gatewayUrl || "http://127.0.0.1:8080"),
    "--url",
    usage,
  ).replace(/\/+$/, "");
  const workspaceId = values.workspace ?? (io.env.FLOWPLANE_WORKSPACE?.trim() || saved.workspaceId);
  return {
    baseUrl,
    apiKey,
    workspaceId,
    // Runs started from the CLI are recorded as started by a person (admin keys only; see execute.ts).
    client: createFlowplaneClient({ baseUrl, apiKey, headers: { "x-flowplane-trigger": "manual" } }),
  };
}

/** What openapi-fetch answers: data on 2xx, error (the gateway's {"error"}) otherwise. */
export interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/**
 * The answer's data, or a CommandError with the gateway's message and the status's exit code.
 * A network failure (openapi-fetch rethrows fetch's TypeError) becomes exit code 5.
 */
export async function expectData<T>(gateway: Gateway, call: () => Promise<Answer<T>>): Promise<T> {
  let answer: Answer<T>;
  try {
    answer = await call();
  } catch (err) {
    if (err instanceof CommandError) throw err;
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new CommandError(
      `the gateway (${gateway.baseUrl}) could not be reached: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
      EXIT.unavailable,
    );
  }
  const { data, error, response } = answer;
  if (response.ok && data !== undefined) return data;
  throw refusal(response, error);
}

/** The gateway's refusal as a CommandError: "<status>: <error>", with the status's exit code. */
export function refusal(response: Response, error: unknown): CommandError {
  const body = error as { error?: unknown; retryAfter?: unknown } | undefined;
  const message = typeof body?.error === "string" ? body.error : `HTTP ${response.status}`;
  const retry = response.headers.get("retry-after");
  const hint = response.status === 429 && retry ? ` (retry in ${retry} s)` : "";
  return new CommandError(`${response.status}: ${message}${hint}`, exitCodeForStatus(response.status));
}

export function writeLine(io: CliIo, line = ""): void {
  io.stdout.write(`${line}\n`);
}

export function note(io: CliIo, line: string): void {
  io.stderr.write(`flowplane: ${line}\n`);
}

export function printJson(io: CliIo, value: unknown): void {
  writeLine(io, JSON.stringify(value));
}

/** Rows as an aligned table with a header; empty cells show as "-". */
export function table(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const cells = rows.map((row) =>
    row.map((cell) => (cell === null || cell === undefined || cell === "" ? "-" : String(cell))),
  );
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const line = (row: string[]) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...cells.map(line)].join("\n");
}

/** A positive integer option, or a usage error naming it. */
export function positiveInt(
  value: string | undefined,
  flag: string,
  usage: string,
  max = 1_000_000_000,
): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\d{1,10}$/.test(value) ? Number(value) : 0;
  if (n < 1 || n > max) throw new UsageError(`${flag} must be an integer from 1 to ${max}`, usage);
  return n;
}

/** An ISO-8601 date or time option, or a usage error naming it. */
export function isoDate(value: string | undefined, flag: string, usage: string): string | undefined {
  if (value === undefined) return undefined;
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) {
    throw new UsageError(`${flag} must be an ISO-8601 date or time, got ${JSON.stringify(value)}`, usage);
  }
  return date.toISOString();
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** One positional argument, or a usage error. */
export function onePositional(positionals: string[], name: string, usage: string): string {
  const [value, ...extra] = positionals;
  if (!value) throw new UsageError(`missing ${name}`, usage);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`, usage);
  return value;
}
