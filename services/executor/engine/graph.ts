/**
 * Runs a graph of blocks (a workflow, or one iteration of a loop or parallel body): a block starts
 * once every predecessor has been resolved, and independent ready blocks run concurrently.
 *
 * Edges are taken or not: a branching block (condition, router) takes only the edges whose
 * sourceHandle is the branch it chose; every other finished block takes all its edges. A block runs
 * when at least one incoming edge was taken; when none was (everything leading to it sat on branches
 * that were not chosen) it is skipped: it gets no span and no place in the path, and its own edges
 * are not taken either, so a join after a condition runs as soon as each predecessor either finished
 * or was skipped. A disabled block passes through: it does not run, its edges are taken.
 *
 * The first block failure stops the run: nothing new starts, blocks already running finish. An
 * aborted signal (cancellation, run timeout) stops the run the same way.
 */
import { randomUUID } from "node:crypto";
import type { JsonValue } from "@bufbuild/protobuf";
import type { CompiledBlock } from "./definition.js";

export interface TokenCounts {
  prompt: number;
  completion: number;
  total: number;
}

/** USD. */
export interface SpanCost {
  input: number;
  output: number;
  total: number;
}

export interface BlockSpan {
  id: string;
  blockId: string;
  name: string;
  type: string;
  status: "success" | "error";
  startTime: Date;
  endTime: Date;
  durationMs: number;
  input?: JsonValue;
  output?: JsonValue;
  error?: string;
  model?: string;
  tokens?: TokenCounts;
  cost?: SpanCost;
  loopId?: string;
  parallelId?: string;
  iterationIndex?: number;
  children?: BlockSpan[];
}

/** What a block run adds to its span besides input and output. */
export interface SpanDetails {
  children?: BlockSpan[];
  model?: string;
  tokens?: TokenCounts;
  cost?: SpanCost;
}

export interface BlockOutcome extends SpanDetails {
  /** What the block consumed, for its trace span. */
  input?: JsonValue;
  output: JsonValue;
  /**
   * Branching blocks only: the source handle whose edges are taken (null: none is). Undefined
   * takes every outgoing edge.
   */
  handle?: string | null;
}

/** A block's own failure; `input` and the details still go into its span. */
export class BlockFailure extends Error {
  constructor(
    message: string,
    readonly input?: JsonValue,
    readonly details: SpanDetails = {},
  ) {
    super(message);
  }
}

/** Runs one block given the outputs of the blocks finished so far (block id → output). */
export type RunBlock = (
  block: CompiledBlock,
  outputs: Readonly<Record<string, JsonValue>>,
) => Promise<BlockOutcome>;

/** The part of a compiled workflow (or loop/parallel body) the runner walks. */
export interface ExecutionGraph {
  /** In definition order. */
  blocks: readonly CompiledBlock[];
  /** Block id → ids of the blocks its edges lead to (each once). */
  successors: ReadonlyMap<string, readonly string[]>;
  /** Block id → ids of the blocks with an edge into it (each once). */
  predecessors: ReadonlyMap<string, readonly string[]>;
  /** Source id → target id → sourceHandles of the edges between them ("" for an edge without one). */
  edgeHandles: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>;
}

/** A block starting or finishing, for live progress (background runs publish these). */
export interface BlockProgress {
  kind: "started" | "finished";
  block: { id: string; name: string; type: string };
  at: Date;
  /** Finished only. */
  span?: { status: string; output?: JsonValue; error?: string };
}

export interface RunGraphOptions {
  signal?: AbortSignal;
  /** Live progress (WatchExecution): called synchronously as each block starts and finishes. */
  onBlockEvent?: (progress: BlockProgress) => void;
  /** Block ids are appended here as they start (shared by nested runs); a new list by default. */
  path?: string[];
  /** Adds fields to each span when it is created (loop and parallel iterations mark theirs). */
  markSpan?: (span: BlockSpan) => void;
}

export interface GraphRun {
  /** One per block run, in start order. */
  spans: BlockSpan[];
  /** Block ids in start order. */
  path: string[];
  /** Block id → output of each block that succeeded. */
  outputs: Record<string, JsonValue>;
  /** Ids of the blocks skipped because no edge into them was taken. */
  skipped: string[];
  /** The failing block, or no block when the run was cancelled. */
  failure?: { block?: CompiledBlock; message: string };
  cancelled: boolean;
}

/** Why `signal` was aborted, as an error message. */
export function abortMessage(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name !== "AbortError") return reason.message;
  if (typeof reason === "string" && reason !== "") return reason;
  return "execution cancelled";
}

export function runGraph(
  graph: ExecutionGraph,
  runBlock: RunBlock,
  options: RunGraphOptions = {},
): Promise<GraphRun> {
  const byId = new Map(graph.blocks.map((b) => [b.id, b]));
  const waitingOn = new Map(graph.blocks.map((b) => [b.id, graph.predecessors.get(b.id)?.length ?? 0]));
  const reached = new Set<string>();
  const run: GraphRun = { spans: [], path: options.path ?? [], outputs: {}, skipped: [], cancelled: false };
  let running = 0;

  return new Promise((resolve) => {
    /** Resolves `block`'s outgoing edges; `handle` as in BlockOutcome, false when none is taken. */
    const resolved = (block: CompiledBlock, handle: string | null | undefined | false) => {
      for (const next of graph.successors.get(block.id) ?? []) {
        const taken =
          handle === undefined ||
          (typeof handle === "string" && (graph.edgeHandles.get(block.id)?.get(next) ?? []).includes(handle));
        if (taken) reached.add(next);
        const remaining = waitingOn.get(next)! - 1;
        waitingOn.set(next, remaining);
        if (remaining === 0) {
          const target = byId.get(next)!;
          if (reached.has(next)) launch(target);
          else skip(target);
        }
      }
    };

    const report = (block: BlockProgress["block"], span: BlockSpan) => {
      if (!options.onBlockEvent) return;
      const done: NonNullable<BlockProgress["span"]> = { status: span.status };
      if (span.output !== undefined) done.output = span.output;
      if (span.error !== undefined) done.error = span.error;
      // A listener's failure must not change the run.
      try {
        options.onBlockEvent({ kind: "finished", block, at: span.endTime, span: done });
      } catch {}
    };

    const skip = (block: CompiledBlock) => {
      run.skipped.push(block.id);
      resolved(block, false);
    };

    const launch = (block: CompiledBlock) => {
      if (run.failure) return;
      if (options.signal?.aborted) {
        run.failure = { message: abortMessage(options.signal) };
        run.cancelled = true;
        return;
      }
      if (!block.enabled) {
        resolved(block, undefined);
        return;
      }
      running++;
      run.path.push(block.id);
      const spanIndex = run.spans.length;
      const startTime = new Date();
      const span: BlockSpan = {
        id: randomUUID(),
        blockId: block.id,
        name: block.name,
        type: block.type,
        status: "success",
        startTime,
        endTime: startTime,
        durationMs: 0,
      };
      options.markSpan?.(span);
      run.spans.push(span);
      const described = { id: block.id, name: block.name, type: block.type };
      try {
        options.onBlockEvent?.({ kind: "started", block: described, at: startTime });
      } catch {}
      Promise.resolve()
        .then(() => runBlock(block, run.outputs))
        .then(
          (outcome) => {
            run.outputs[block.id] = outcome.output;
            run.spans[spanIndex] = {
              ...span,
              ...closeSpan(startTime),
              input: outcome.input,
              output: outcome.output,
              ...spanDetails(outcome),
            };
            report(described, run.spans[spanIndex]!);
            resolved(block, outcome.handle);
          },
          (err: unknown) => {
            // Messages can carry user text (a thrown string, a response excerpt); PostgreSQL cannot
            // store U+0000, so it is written out as an escape.
            const message = (err instanceof Error ? err.message : String(err)).replaceAll(
              "\u0000",
              "\\u0000",
            );
            const failure = err instanceof BlockFailure ? err : undefined;
            run.spans[spanIndex] = {
              ...span,
              ...closeSpan(startTime),
              status: "error",
              input: failure?.input,
              error: message,
              ...spanDetails(failure?.details ?? {}),
            };
            report(described, run.spans[spanIndex]!);
            run.failure ??= { block, message };
          },
        )
        .finally(() => {
          running--;
          if (running === 0) resolve(run);
        });
    };

    for (const block of graph.blocks) {
      if (waitingOn.get(block.id) === 0) launch(block);
    }
    // Every block was disabled or skipped, or there was nothing to run.
    if (running === 0) resolve(run);
  });
}

function spanDetails(details: SpanDetails): SpanDetails {
  const out: SpanDetails = {};
  if (details.children !== undefined) out.children = details.children;
  if (details.model !== undefined) out.model = details.model;
  if (details.tokens !== undefined) out.tokens = details.tokens;
  if (details.cost !== undefined) out.cost = details.cost;
  return out;
}

function closeSpan(startTime: Date): Pick<BlockSpan, "endTime" | "durationMs"> {
  const endTime = new Date();
  return { endTime, durationMs: endTime.getTime() - startTime.getTime() };
}
