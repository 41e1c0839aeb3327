/**
 * The `wait` block pauses its branch for `config.durationMs` (clamped to the engine's maximum,
 * EXECUTOR_WAIT_MAX_MS). Cancelling the run (its AbortSignal) ends the wait at once with an error.
 * Output: `{waitedMs}`.
 */
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { abortMessage, BlockFailure, type BlockOutcome } from "./graph.js";
import { DefinitionProblem, describeBlock } from "./problems.js";

export interface WaitBlockConfig {
  durationMs: number;
}

export function readWaitConfig(block: Block): WaitBlockConfig {
  const durationMs = block.config?.durationMs;
  if (typeof durationMs !== "number" || !Number.isFinite(durationMs) || durationMs < 0) {
    throw new DefinitionProblem(
      `${describeBlock(block)}: a wait block needs config.durationMs (a number ≥ 0)`,
    );
  }
  return { durationMs: Math.round(durationMs) };
}

export async function runWaitBlock(
  config: WaitBlockConfig,
  maxWaitMs: number,
  signal: AbortSignal | undefined,
): Promise<BlockOutcome> {
  const waitMs = Math.min(config.durationMs, maxWaitMs);
  const input = { durationMs: config.durationMs };
  if (signal?.aborted) throw new BlockFailure(abortMessage(signal), input);
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new BlockFailure(abortMessage(signal!), input));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, waitMs);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  return { input, output: { waitedMs: waitMs } };
}
