/**
 * Runs a compiled workflow's blocks as a dependency graph: a block starts once every predecessor has
 * finished, independent ready blocks run concurrently, and a disabled block is skipped (its
 * successors still run once their other inputs are done). The first block failure stops the run:
 * nothing new starts, blocks already running finish.
 */
import { randomUUID } from "node:crypto";
import type { JsonValue } from "@bufbuild/protobuf";
import type { CompiledBlock, CompiledWorkflow } from "./definition.js";

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
}

export interface BlockOutcome {
  /** What the block consumed, for its trace span. */
  input?: JsonValue;
  output: JsonValue;
}

/** A block's own failure; `input` still goes into its span. */
export class BlockFailure extends Error {
  constructor(
    message: string,
    readonly input?: JsonValue,
  ) {
    super(message);
  }
}

/** Runs one block given the outputs of the blocks finished so far (block id → output). */
export type RunBlock = (
  block: CompiledBlock,
  outputs: Readonly<Record<string, JsonValue>>,
) => Promise<BlockOutcome>;

export interface GraphRun {
  /** One per block run, in start order. */
  spans: BlockSpan[];
  /** Block ids in start order. */
  path: string[];
  /** Block id → output of each block that succeeded. */
  outputs: Record<string, JsonValue>;
  failure?: { block: CompiledBlock; message: string };
}

export function runGraph(workflow: CompiledWorkflow, runBlock: RunBlock): Promise<GraphRun> {
  const byId = new Map(workflow.blocks.map((b) => [b.id, b]));
  const waitingOn = new Map(workflow.blocks.map((b) => [b.id, workflow.predecessors.get(b.id)?.length ?? 0]));
  const run: GraphRun = { spans: [], path: [], outputs: {} };
  let running = 0;

  return new Promise((resolve) => {
    const finished = (block: CompiledBlock) => {
      for (const next of workflow.successors.get(block.id) ?? []) {
        const remaining = waitingOn.get(next)! - 1;
        waitingOn.set(next, remaining);
        if (remaining === 0) launch(byId.get(next)!);
      }
    };

    const launch = (block: CompiledBlock) => {
      if (run.failure) return;
      if (!block.enabled) {
        finished(block);
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
      run.spans.push(span);
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
            };
            finished(block);
          },
          (err: unknown) => {
            const message = err instanceof Error ? err.message : String(err);
            const input = err instanceof BlockFailure ? err.input : undefined;
            run.spans[spanIndex] = {
              ...span,
              ...closeSpan(startTime),
              status: "error",
              input,
              error: message,
            };
            run.failure ??= { block, message };
          },
        )
        .finally(() => {
          running--;
          if (running === 0) resolve(run);
        });
    };

    for (const block of workflow.blocks) {
      if (waitingOn.get(block.id) === 0) launch(block);
    }
    // Every block was disabled, or there was nothing to run.
    if (running === 0) resolve(run);
  });
}

function closeSpan(startTime: Date): Pick<BlockSpan, "endTime" | "durationMs"> {
  const endTime = new Date();
  return { endTime, durationMs: endTime.getTime() - startTime.getTime() };
}
