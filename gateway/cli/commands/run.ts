/** `flowplane run WORKFLOW_ID …`: sync, background, and --watch (live block progress over SSE). */
import { readSse } from "../sse.js";
import {
  type CliIo,
  CommandError,
  EXIT,
  EXIT_CODES_HELP,
  expectData,
  GATEWAY_OPTIONS_HELP,
  type Gateway,
  gatewayFrom,
  note,
  onePositional,
  parseGatewayArgs,
  pause,
  positiveInt,
  printJson,
  refusal,
  UsageError,
  writeLine,
} from "./common.js";

export const RUN_USAGE = `Usage: flowplane run WORKFLOW_ID [--input NAME=VALUE]... [--input-json JSON] [--version N]
                    [--conversation ID] [--background] [--watch] [--json] [--api-key KEY] [--url URL]

Runs a workflow through the gateway, as POST /api/executeWorkflow (or, with --background,
/api/executeWorkflowBackground) does, and prints its output. With an admin key the execution is
recorded with trigger "manual"; an app key's runs are recorded as "api".

Options:
  --input NAME=VALUE  one input field; VALUE is read as JSON when it parses (30, true, {"a":1}),
                      else as a string. Repeat for several fields
  --input-json JSON   the whole input object (fields given with --input are added to it)
  --version N         the version to run (default: the latest)
  --conversation ID   continue this conversation
  --background        queue the run and print its ids instead of waiting for the output
  --watch             show each block as it starts and finishes (the SSE stream of
                      POST /api/executeWorkflow with "stream": true); with --background, follow
                      the queued run's status until it ends. With --json: one JSON event per line
${GATEWAY_OPTIONS_HELP}

${EXIT_CODES_HELP}`;

/** `NAME=VALUE` → [name, value]; the value is JSON when it parses, else the text itself. */
export function parseInputField(raw: string): [string, unknown] {
  const eq = raw.indexOf("=");
  if (eq <= 0)
    throw new UsageError(`--input must look like NAME=VALUE, got ${JSON.stringify(raw)}`, RUN_USAGE);
  const text = raw.slice(eq + 1);
  try {
    return [raw.slice(0, eq), JSON.parse(text)];
  } catch {
    return [raw.slice(0, eq), text];
  }
}

type ExecuteBody = {
  workflowId: string;
  version?: number;
  input?: Record<string, unknown>;
  conversationId?: string;
};

/** The `result` event and the JSON answer of POST /api/executeWorkflow. */
export interface RunResult {
  conversationId: string;
  executionId: string;
  output: Record<string, unknown> | null;
  creditUsage: number;
  status: string;
  error?: string;
}

export async function runCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseGatewayArgs(
    args,
    {
      input: { type: "string", multiple: true },
      "input-json": { type: "string" },
      version: { type: "string" },
      conversation: { type: "string" },
      background: { type: "boolean" },
      watch: { type: "boolean" },
    },
    RUN_USAGE,
  );
  const workflowId = onePositional(positionals, "WORKFLOW_ID", RUN_USAGE);
  let input: Record<string, unknown> = {};
  if (values["input-json"] !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(values["input-json"]);
    } catch {
      throw new UsageError("--input-json is not valid JSON", RUN_USAGE);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new UsageError("--input-json must be a JSON object", RUN_USAGE);
    }
    input = parsed as Record<string, unknown>;
  }
  for (const raw of values.input ?? []) {
    const [name, value] = parseInputField(raw);
    input[name] = value;
  }
  const version = positiveInt(values.version, "--version", RUN_USAGE);
  const gateway = await gatewayFrom(io, values, RUN_USAGE);
  const body: ExecuteBody = {
    workflowId,
    input,
    ...(version !== undefined ? { version } : {}),
    ...(values.conversation ? { conversationId: values.conversation } : {}),
  };
  const json = values.json === true;

  if (values.background) {
    const queued = await expectData(gateway, () =>
      gateway.client.POST("/api/executeWorkflowBackground", { body }),
    );
    if (!values.watch) {
      if (json) printJson(io, queued);
      else {
        writeLine(io, queued.executionId);
        note(
          io,
          `queued; conversation ${queued.conversationId} (flowplane run --background --watch follows it)`,
        );
      }
      return EXIT.ok;
    }
    if (json) printJson(io, { event: "queued", ...queued });
    else note(io, `queued ${queued.executionId}`);
    return followQueued(gateway, queued.executionId, io, json);
  }

  if (values.watch) return watchRun(gateway, body, io, json);

  const result = await expectData(gateway, () => gateway.client.POST("/api/executeWorkflow", { body }));
  // The document lists the streamed form beside JSON; without "stream" the gateway answers JSON.
  if (typeof result === "string")
    throw new CommandError("the gateway answered an event stream to a plain run");
  if (!("output" in result)) {
    // 202: still running after the gateway's sync wait; it finishes in the background.
    if (!json) note(io, `${result.executionId} is still running; following it until it ends`);
    return followQueued(gateway, result.executionId, io, json);
  }
  return printResult(io, result, json);
}

function printResult(io: CliIo, result: RunResult, json: boolean): number {
  if (json) printJson(io, result);
  else {
    writeLine(io, JSON.stringify(result.output ?? {}, null, 2));
    note(
      io,
      `${result.status}; execution ${result.executionId}, conversation ${result.conversationId}, ${result.creditUsage} credit(s)`,
    );
    if (result.status === "error") note(io, `the run failed: ${String(result.error)}`);
  }
  return result.status === "error" ? EXIT.failed : EXIT.ok;
}

/** --background --watch: polls the execution until it leaves queued/running. */
async function followQueued(
  gateway: Gateway,
  executionId: string,
  io: CliIo,
  json: boolean,
): Promise<number> {
  let last = "queued";
  for (;;) {
    if (io.signal?.aborted) return EXIT.ok;
    const execution = await expectData(gateway, () =>
      gateway.client.GET("/api/v1/executions/{id}", { params: { path: { id: executionId } } }),
    );
    if (execution.status !== last) {
      last = execution.status;
      if (json) printJson(io, { event: "status", executionId, status: last });
      else note(io, `${executionId} ${last}`);
    }
    if (execution.status === "success" || execution.status === "error") {
      return printResult(
        io,
        {
          conversationId: execution.conversationId,
          executionId: execution.executionId,
          output: execution.output,
          creditUsage: execution.creditUsage,
          status: execution.status,
          ...(execution.error ? { error: execution.error } : {}),
        },
        json,
      );
    }
    await pause(300, io.signal);
  }
}

/** One block's latest state, from the stream's `block` events. */
export interface BlockEvent {
  blockId: string;
  name: string;
  type: string;
  status: string;
  startedAt?: string;
  endedAt?: string;
  durationMs?: number;
  error?: string;
}

const MARK: Record<string, string> = { running: "…", success: "✓", error: "✗", skipped: "-" };

function blockLine(block: BlockEvent): string {
  const mark = MARK[block.status] ?? "·";
  const took = block.durationMs !== undefined ? ` ${block.durationMs} ms` : "";
  const why = block.error ? `: ${block.error}` : "";
  return `  ${mark} ${block.name || block.blockId} (${block.type}) ${block.status}${took}${why}`;
}

/**
 * The live view, on stderr (stdout keeps only the output): on a terminal the block list is redrawn in place as states change; otherwise (a
 * pipe, a CI log) one line per block event.
 */
export class BlockProgress {
  private readonly blocks = new Map<string, BlockEvent>();
  private drawn = 0;

  constructor(private readonly io: CliIo) {}

  update(block: BlockEvent): void {
    this.blocks.set(block.blockId, block);
    if (!this.io.stderr.isTTY) {
      this.io.stderr.write(`${blockLine(block)}\n`);
      return;
    }
    // Move up over the previous drawing, clear it, draw every block again.
    let text = this.drawn > 0 ? `\x1b[${this.drawn}A` : "";
    for (const b of this.blocks.values()) text += `\x1b[2K${blockLine(b)}\n`;
    this.drawn = this.blocks.size;
    this.io.stderr.write(text);
  }
}

const CODE_EXITS: Record<string, number> = {
  unauthenticated: EXIT.auth,
  permission_denied: EXIT.auth,
  not_found: EXIT.notFound,
  resource_exhausted: EXIT.rateLimited,
  rate_limited: EXIT.rateLimited,
  unavailable: EXIT.unavailable,
  deadline_exceeded: EXIT.unavailable,
  internal: EXIT.unavailable,
};

/** `run --watch`: POST /api/executeWorkflow {"stream": true}, rendering events as they arrive. */
export async function watchRun(
  gateway: Gateway,
  body: ExecuteBody,
  io: CliIo,
  json: boolean,
): Promise<number> {
  let response: Response;
  try {
    response = await fetch(`${gateway.baseUrl}/api/executeWorkflow`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "text/event-stream",
        "x-api-key": gateway.apiKey,
        "x-flowplane-trigger": "manual",
      },
      body: JSON.stringify({ ...body, stream: true }),
      signal: io.signal,
    });
  } catch (err) {
    if (io.signal?.aborted) return EXIT.ok;
    throw new CommandError(
      `the gateway (${gateway.baseUrl}) could not be reached: ${(err as Error).message}`,
      EXIT.unavailable,
    );
  }
  const type = response.headers.get("content-type") ?? "";
  if (!type.startsWith("text/event-stream")) {
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (!response.ok) throw refusal(response, parsed);
    const answer = parsed as Partial<RunResult> | undefined;
    if (response.status === 202 && typeof answer?.executionId === "string") {
      return followQueued(gateway, answer.executionId, io, json);
    }
    // 200 JSON (a gateway that does not stream) or 202 (still running past the sync ceiling).
    if (response.status === 200 && parsed && typeof parsed === "object" && "status" in parsed) {
      return printResult(io, parsed as RunResult, json);
    }
    throw new CommandError(
      `the gateway answered ${response.status} without an event stream: ${text.slice(0, 200)}`,
    );
  }
  if (!response.body) throw new CommandError("the gateway sent an empty event stream", EXIT.unavailable);

  const progress = new BlockProgress(io);
  try {
    for await (const message of readSse(response.body)) {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(message.data) as Record<string, unknown>;
      } catch {
        throw new CommandError(`the gateway sent an event that is not JSON: ${message.data.slice(0, 200)}`);
      }
      if (json) printJson(io, { event: message.event, ...data });
      switch (message.event) {
        case "started":
          if (!json)
            note(io, `running ${String(data.executionId)} (conversation ${String(data.conversationId)})`);
          break;
        case "block":
          if (!json) progress.update(data as unknown as BlockEvent);
          break;
        case "result":
          return json
            ? exitOf(data as unknown as RunResult)
            : printResult(io, data as unknown as RunResult, false);
        case "error": {
          const code = typeof data.code === "string" ? data.code : "";
          throw new CommandError(String(data.error ?? "the run failed"), CODE_EXITS[code] ?? EXIT.failed);
        }
        default:
          break; // events added later are skipped, not fatal
      }
    }
  } catch (err) {
    if (io.signal?.aborted) return EXIT.ok;
    if (err instanceof CommandError) throw err;
    throw new CommandError(`the event stream broke: ${(err as Error).message}`, EXIT.unavailable);
  }
  if (io.signal?.aborted) return EXIT.ok;
  throw new CommandError("the event stream ended before the result", EXIT.unavailable);
}

function exitOf(result: RunResult): number {
  return result.status === "error" ? EXIT.failed : EXIT.ok;
}
