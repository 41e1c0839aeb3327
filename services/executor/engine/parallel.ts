/**
 * The `parallel` block: runs its body (see body.ts) for every item concurrently, at most
 * `config.concurrency` (on the parallel block; default and cap EXECUTOR_PARALLEL_CONCURRENCY)
 * iterations at a time. workflowState.parallels[<id>]: `parallelType` "count" with `count`, or
 * "collection" with `distribution` (a CEL expression or a literal list, as a loop's forEachItems).
 * Output: the list of iteration results in item order. The first failing iteration fails the block;
 * iterations not yet started are not started.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Block, Parallel } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
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

export type ParallelBlockConfig = (
  | { parallelType: "count"; count: number }
  | { parallelType: "collection"; items: CollectionSource }
) & { body: CompiledBody; concurrency?: number };

export function readParallelConfig(
  block: Block,
  parallel: Parallel,
  body: CompiledBody,
): ParallelBlockConfig {
  const where = `parallel ${JSON.stringify(parallel.id)}`;
  const concurrency = block.config?.concurrency;
  if (concurrency !== undefined && concurrency !== null) {
    if (typeof concurrency !== "number" || !Number.isInteger(concurrency) || concurrency < 1) {
      throw new DefinitionProblem(`${describeBlock(block)}: config.concurrency must be an integer ≥ 1`);
    }
  }
  const extra = { body, ...(typeof concurrency === "number" ? { concurrency } : {}) };
  if (parallel.parallelType === "count") {
    const count = parallel.count;
    if (count === undefined || !Number.isInteger(count) || count < 0) {
      throw new DefinitionProblem(`${where}: a "count" parallel needs count (an integer ≥ 0)`);
    }
    return { parallelType: "count", count, ...extra };
  }
  if (parallel.parallelType === "collection") {
    return {
      parallelType: "collection",
      items: readCollection(`${where}: distribution`, parallel.distribution),
      ...extra,
    };
  }
  throw new DefinitionProblem(
    `${where}: parallelType must be "count" or "collection", got ${JSON.stringify(parallel.parallelType)}`,
  );
}

/** Throws ExpressionError when the collection cannot be evaluated, BlockFailure when an iteration fails. */
export function runParallelBlock(
  block: { id: string; name: string },
  config: ParallelBlockConfig,
  variables: ExpressionVariables,
  limits: { maxIterations: number; concurrency: number; signal: AbortSignal | undefined },
  runBody: RunBody,
): Promise<BlockOutcome> {
  const items =
    config.parallelType === "count"
      ? new Array(config.count).fill(null)
      : resolveCollection(config.items, variables);
  const concurrency = Math.min(config.concurrency ?? limits.concurrency, limits.concurrency);
  const input: JsonObject =
    config.parallelType === "count" ? { count: config.count, concurrency } : { items, concurrency };
  if (items.length > limits.maxIterations) {
    throw new BlockFailure(
      `${items.length} iterations exceed the limit of ${limits.maxIterations} (EXECUTOR_LOOP_MAX_ITERATIONS)`,
      input,
    );
  }
  return runIterations({
    container: block,
    kind: "parallel",
    items,
    concurrency,
    body: config.body,
    input,
    signal: limits.signal,
    runBody,
  });
}
