/** `flowplane logs …`: one page of logs, or --follow (seed 002's polling loop) until Ctrl-C. */
import {
  type CliIo,
  EXIT,
  EXIT_CODES_HELP,
  expectData,
  GATEWAY_OPTIONS_HELP,
  gatewayFrom,
  isoDate,
  parseGatewayArgs,
  pause,
  positiveInt,
  printJson,
  table,
  UsageError,
  writeLine,
} from "./common.js";

export const LOGS_USAGE = `Usage: flowplane logs [--workflow ID]... [--level info|error] [--trigger T]... [--since ISO]
                     [--limit N] [--follow [--interval MS]] [--workspace WS] [--json] [--api-key KEY] [--url URL]

Lists execution logs (GET /api/v1/logs), newest first; the key needs logs:read.
With --follow, prints logs as they arrive, oldest first, until Ctrl-C: the polling loop of seed 002
(order=asc from --since, default now, keeping the last nextCursor), so none is skipped or repeated.

Options:
  --workflow ID       only this workflow; repeat for several
  --level LEVEL       info or error
  --trigger T         api, webhook, schedule, manual or chat; repeat for several
  --since ISO         only logs started at or after this time
  --limit N           page size, 1-1000 (default 20; with --follow 100 per poll)
  --follow            keep polling for new logs until Ctrl-C
  --interval MS       --follow's pause between polls (default 2000)
  --workspace WS      the key's workspace (default: FLOWPLANE_WORKSPACE, else workspaceId in dev.json)
${GATEWAY_OPTIONS_HELP}

With --json every log is printed as one JSON line (the API's list item).

${EXIT_CODES_HELP}`;

const LEVELS = ["info", "error"] as const;
const TRIGGERS = ["api", "webhook", "schedule", "manual", "chat"];

interface LogItem {
  id: string;
  workflowId: string;
  executionId: string;
  level: string;
  trigger: string | null;
  startedAt: string | null;
  totalDurationMs: number;
  cost: { total: number };
}

function rowOf(log: LogItem): Array<string | number | null> {
  return [
    log.startedAt,
    log.level,
    log.trigger,
    log.workflowId,
    log.executionId,
    `${log.totalDurationMs} ms`,
    `$${log.cost.total.toFixed(6)}`,
  ];
}

const HEADERS = ["STARTED", "LEVEL", "TRIGGER", "WORKFLOW", "EXECUTION", "DURATION", "COST"];

export async function logsCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(
    args,
    {
      workflow: { type: "string", multiple: true },
      level: { type: "string" },
      trigger: { type: "string", multiple: true },
      since: { type: "string" },
      limit: { type: "string" },
      follow: { type: "boolean" },
      interval: { type: "string" },
      workspace: { type: "string" },
    },
    LOGS_USAGE,
  );
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`, LOGS_USAGE);
  const level = values.level;
  if (level !== undefined && !(LEVELS as readonly string[]).includes(level)) {
    throw new UsageError("--level must be info or error", LOGS_USAGE);
  }
  const triggers = (values.trigger ?? []).flatMap((t) => t.split(",")).map((t) => t.trim());
  for (const t of triggers) {
    if (!TRIGGERS.includes(t))
      throw new UsageError(`--trigger must be one of ${TRIGGERS.join(", ")}`, LOGS_USAGE);
  }
  const limit = positiveInt(values.limit, "--limit", LOGS_USAGE, 1000);
  const interval = positiveInt(values.interval, "--interval", LOGS_USAGE, 3_600_000) ?? 2000;
  if (values.interval !== undefined && !values.follow)
    throw new UsageError("--interval applies to --follow", LOGS_USAGE);
  const since = isoDate(values.since, "--since", LOGS_USAGE);
  const gateway = await gatewayFrom(io, values, LOGS_USAGE);
  const workspaceId = gateway.workspaceId;
  if (!workspaceId) {
    throw new UsageError(
      "no workspace: pass --workspace, set FLOWPLANE_WORKSPACE, or run `flowplane dev` first",
      LOGS_USAGE,
    );
  }
  const filters = {
    workspaceId,
    ...(values.workflow?.length ? { workflowIds: values.workflow.join(",") } : {}),
    ...(level ? { level: level as (typeof LEVELS)[number] } : {}),
    ...(triggers.length ? { triggers: triggers.join(",") } : {}),
  };
  const json = values.json === true;

  if (!values.follow) {
    const page = await expectData(gateway, () =>
      gateway.client.GET("/api/v1/logs", {
        params: { query: { ...filters, limit: limit ?? 20, ...(since ? { startDate: since } : {}) } },
      }),
    );
    if (json) printJson(io, page);
    else if (page.data.length === 0) writeLine(io, "no logs");
    else writeLine(io, table(HEADERS, page.data.map(rowOf)));
    return EXIT.ok;
  }

  // Seed 002's loop: a fixed startDate, order asc, and the latest non-empty nextCursor.
  const startDate = since ?? new Date().toISOString();
  let cursor: string | undefined;
  let printedHeader = false;
  // On stderr even with --json: scripts read stdout, and tests wait for this line.
  io.stderr.write(`flowplane: following logs since ${startDate} (Ctrl-C stops)\n`);
  while (!io.signal?.aborted) {
    const page = await expectData(gateway, () =>
      gateway.client.GET("/api/v1/logs", {
        params: {
          query: { ...filters, startDate, order: "asc", limit: limit ?? 100, ...(cursor ? { cursor } : {}) },
        },
      }),
    ).catch((err: unknown) => {
      // Ctrl-C while a poll is in flight is a normal stop.
      if (io.signal?.aborted) return undefined;
      throw err;
    });
    if (!page) break;
    for (const log of page.data) {
      if (json) printJson(io, log);
      else {
        // Aligned columns need every row up front; followed rows are tab-separated instead.
        if (!printedHeader) writeLine(io, HEADERS.join("\t"));
        printedHeader = true;
        writeLine(
          io,
          rowOf(log)
            .map((c) => c ?? "-")
            .join("\t"),
        );
      }
    }
    if (page.nextCursor) cursor = page.nextCursor;
    // A full page means more are waiting: ask again at once.
    if (page.data.length < (limit ?? 100)) await pause(interval, io.signal);
  }
  return EXIT.ok;
}
