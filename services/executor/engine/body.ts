/**
 * Loop and parallel bodies. A loop (or parallel) is a block of type `loop` (`parallel`) whose id is
 * a key of workflowState.loops (parallels); the entry's `nodes` are its body. The container block
 * stands for the whole body in the workflow graph: edges into it lead into the body, edges out of it
 * leave after the last iteration. Inside, body blocks connect only to each other; an edge between a
 * body block and a block outside the body is refused. Each iteration starts at the body blocks with
 * no predecessor inside the body and its result is the output of the body's exit: the one body block
 * without a successor inside the body. A block belongs to at most one body, and bodies do not nest.
 *
 * Inside a body, `blocks` holds the outputs of the blocks outside it (finished before the container
 * started) and of this iteration's blocks, and `loop` is `{index, item}` (item null for counted runs).
 */

import { randomUUID } from "node:crypto";
import { type JsonValue, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { CompiledExpression, ExpressionVariables } from "./expressions.js";
import { compileExpression, ExpressionError } from "./expressions.js";
import {
  abortMessage,
  BlockFailure,
  type BlockOutcome,
  type BlockSpan,
  type ExecutionGraph,
  type GraphRun,
} from "./graph.js";
import { DefinitionProblem } from "./problems.js";

export interface CompiledBody extends ExecutionGraph {
  /** The body block whose output is an iteration's result. */
  exit: string;
}

/** Where a forEach loop's or collection parallel's items come from. */
export type CollectionSource = { expression: CompiledExpression } | { items: JsonValue[] };

/** A CEL expression (string) or a literal JSON list; DefinitionProblem naming `where` otherwise. */
export function readCollection(where: string, value: Value | undefined): CollectionSource {
  const json = value === undefined ? null : (toJson(ValueSchema, value) as JsonValue);
  if (Array.isArray(json)) return { items: json };
  if (typeof json === "string" && json.trim() !== "") {
    try {
      return { expression: compileExpression(json) };
    } catch (err) {
      if (err instanceof ExpressionError)
        throw new DefinitionProblem(`${where} does not compile: ${err.message}`);
      throw err;
    }
  }
  throw new DefinitionProblem(`${where} must be a CEL expression or a list`);
}

/** The items to iterate: a list as it is, an object as `{key, value}` entries. */
export function resolveCollection(source: CollectionSource, variables: ExpressionVariables): JsonValue[] {
  const value = "items" in source ? source.items : source.expression.evaluate(variables);
  if (Array.isArray(value)) return value;
  if (value !== null && typeof value === "object") {
    return Object.entries(value).map(([key, item]) => ({ key, value: item }));
  }
  throw new ExpressionError(`the collection must be a list or an object, got ${JSON.stringify(value)}`);
}

/** Runs the body once; `markSpan` tags each span of that iteration. */
export type RunBody = (
  index: number,
  item: JsonValue,
  markSpan: (span: BlockSpan) => void,
) => Promise<GraphRun>;

export interface IterationOptions {
  container: { id: string; name: string };
  kind: "loop" | "parallel";
  items: JsonValue[];
  /** Iterations running at once (1 for loops). */
  concurrency: number;
  body: CompiledBody;
  input: JsonValue;
  signal: AbortSignal | undefined;
  runBody: RunBody;
}

/**
 * Runs the iterations, at most `concurrency` at a time, stopping at the first failure. Each
 * iteration gets a span (type `<kind>-iteration`, with loopId/parallelId and iterationIndex) whose
 * children are its blocks' spans. Output: the iteration results in index order.
 */
export async function runIterations(options: IterationOptions): Promise<BlockOutcome> {
  const { container, kind, items, body } = options;
  const spans: Array<BlockSpan | undefined> = [];
  const results: JsonValue[] = new Array(items.length).fill(null);
  let failure: string | undefined;
  let next = 0;

  const tag = (span: BlockSpan, index: number) => {
    if (kind === "loop") span.loopId = container.id;
    else span.parallelId = container.id;
    span.iterationIndex = index;
  };

  const worker = async () => {
    while (failure === undefined && next < items.length) {
      if (options.signal?.aborted) {
        failure = abortMessage(options.signal);
        return;
      }
      const index = next++;
      const item = items[index]!;
      const startTime = new Date();
      const run = await options.runBody(index, item, (span) => tag(span, index));
      const endTime = new Date();
      const span: BlockSpan = {
        id: randomUUID(),
        blockId: container.id,
        name: `${container.name} #${index}`,
        type: `${kind}-iteration`,
        status: run.failure ? "error" : "success",
        startTime,
        endTime,
        durationMs: endTime.getTime() - startTime.getTime(),
        input: { index, item },
        children: run.spans,
      };
      tag(span, index);
      if (run.failure) {
        const message = run.failure.block
          ? `block ${run.failure.block.name}: ${run.failure.message}`
          : run.failure.message;
        span.error = message;
        failure ??= `iteration ${index}: ${message}`;
      } else {
        results[index] = run.outputs[body.exit] ?? null;
        span.output = results[index];
      }
      spans[index] = span;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency, items.length)) }, worker));

  const children = spans.filter((s): s is BlockSpan => s !== undefined);
  if (failure !== undefined) throw new BlockFailure(failure, options.input, { children });
  return { input: options.input, output: results, children };
}
