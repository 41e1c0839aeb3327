/**
 * The `loop` block: runs its body (see body.ts) once per iteration, one iteration after another.
 * workflowState.loops[<id>]: `loopType` "for" with `iterations` (a count), or "forEach" with
 * `forEachItems` (a CEL expression over `input`/`blocks`, or a literal list; an object iterates as
 * `{key, value}` entries). Output: the list of iteration results.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Block, Loop } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type CollectionSource,
  type CompiledBody,
  type RunBody,
  readCollection,
  resolveCollection,
  runIterations,
} from "./body.js";
import type { ExpressionVariables } from "./expressions.js";
import { BlockFailure, type BlockOutcome } from "./graph.js";
import { DefinitionProblem, describeBlock } from "./problems.js";

export type LoopBlockConfig =
  | { loopType: "for"; iterations: number; body: CompiledBody }
  | { loopType: "forEach"; items: CollectionSource; body: CompiledBody };

export function readLoopConfig(block: Block, loop: Loop, body: CompiledBody): LoopBlockConfig {
  const where = `loop ${JSON.stringify(loop.id)}`;
  if (loop.loopType === "for") {
    const iterations = loop.iterations;
    if (iterations === undefined || !Number.isInteger(iterations) || iterations < 0) {
      throw new DefinitionProblem(`${where}: a "for" loop needs iterations (an integer ≥ 0)`);
    }
    return { loopType: "for", iterations, body };
  }
  if (loop.loopType === "forEach") {
    return { loopType: "forEach", items: readCollection(`${where}: forEachItems`, loop.forEachItems), body };
  }
  throw new DefinitionProblem(
    `${where} (${describeBlock(block)}): loopType must be "for" or "forEach", got ${JSON.stringify(loop.loopType)}`,
  );
}

/** Throws ExpressionError when the collection cannot be evaluated, BlockFailure when an iteration fails. */
export function runLoopBlock(
  block: { id: string; name: string },
  config: LoopBlockConfig,
  variables: ExpressionVariables,
  limits: { maxIterations: number; signal: AbortSignal | undefined },
  runBody: RunBody,
): Promise<BlockOutcome> {
  const items =
    config.loopType === "for"
      ? new Array(config.iterations).fill(null)
      : resolveCollection(config.items, variables);
  const input: JsonObject = config.loopType === "for" ? { iterations: config.iterations } : { items };
  if (items.length > limits.maxIterations) {
    throw new BlockFailure(
      `${items.length} iterations exceed the limit of ${limits.maxIterations} (EXECUTOR_LOOP_MAX_ITERATIONS)`,
      input,
    );
  }
  return runIterations({
    container: block,
    kind: "loop",
    items,
    concurrency: 1,
    body: config.body,
    input,
    signal: limits.signal,
    runBody,
  });
}
