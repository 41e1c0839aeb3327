/** One workflow run: input validation, then the graph with each block type's runner. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { type AgentHistory, type LlmSettings, runAgentBlock } from "./agent.js";
import { type ApiSettings, runApiBlock } from "./api.js";
import type { CompiledBody, RunBody } from "./body.js";
import { BranchError, runConditionBlock } from "./condition.js";
import type { CompiledBlock, CompiledWorkflow } from "./definition.js";
import { ExpressionError, type ExpressionVariables } from "./expressions.js";
import { FunctionBlockError, runFunctionBlock } from "./function.js";
import {
  BlockFailure,
  type BlockOutcome,
  type BlockSpan,
  type ExecutionGraph,
  type GraphRun,
  type RunGraphOptions,
  runGraph,
} from "./graph.js";
import { validateWorkflowInput } from "./input.js";
import { runLoopBlock } from "./loop.js";
import { runOutputBlock } from "./output.js";
import { runParallelBlock } from "./parallel.js";
import { runRouterBlock } from "./router.js";
import type { FunctionSandbox } from "./sandbox.js";
import { runWaitBlock } from "./wait.js";
import { type ChildRunResult, runWorkflowBlock } from "./workflow-block.js";

/**
 * Deepest a block's output may be. Outputs travel in protobuf Structs (two message levels per JSON
 * level, inside the response, the completion event and trace spans) and protobuf-es refuses to
 * decode past 100 levels: deeper output would make the run's answer and its events undecodable.
 */
export const MAX_BLOCK_OUTPUT_DEPTH = 32;

/**
 * Why a block's output cannot be kept, if it cannot: too deep, or a NUL character (PostgreSQL's
 * jsonb cannot store U+0000, so the run could never be recorded).
 */
function outputProblem(value: JsonValue, depthLeft = MAX_BLOCK_OUTPUT_DEPTH): string | undefined {
  if (typeof value === "string") {
    return value.includes("\u0000") ? "the output contains a NUL (\\u0000) character" : undefined;
  }
  if (value === null || typeof value !== "object") return undefined;
  if (depthLeft === 0) return `the output is nested deeper than ${MAX_BLOCK_OUTPUT_DEPTH} levels`;
  if (Array.isArray(value)) {
    for (const item of value) {
      const problem = outputProblem(item, depthLeft - 1);
      if (problem) return problem;
    }
    return undefined;
  }
  for (const [key, item] of Object.entries(value)) {
    if (key.includes("\u0000")) return "the output contains a NUL (\\u0000) character";
    const problem = outputProblem(item, depthLeft - 1);
    if (problem) return problem;
  }
  return undefined;
}

export interface WorkflowRunResult {
  status: "success" | "error";
  /** Output block name → value, for the output blocks that ran. */
  output: JsonObject;
  /** Block ids in start order, including loop and parallel body blocks each time they start. */
  path: string[];
  spans: BlockSpan[];
  /** "block <name>: <message>" when a block failed, the reason alone when the run was cancelled. */
  error?: string;
  /** True when the run's signal was aborted before it finished. */
  cancelled?: boolean;
}

export interface EngineSettings {
  api: ApiSettings;
  llm: LlmSettings;
  /** Longest a wait block waits. */
  maxWaitMs: number;
  /** Most iterations of one loop or parallel block. */
  maxIterations: number;
  /** Default and maximum concurrent iterations of a parallel block. */
  parallelConcurrency: number;
  /** Deepest nesting of workflow blocks. */
  maxWorkflowDepth: number;
}

export const DEFAULT_ENGINE_SETTINGS: EngineSettings = {
  api: { allowPrivate: false, timeoutMs: 10_000 },
  llm: { baseUrl: "", apiKey: "", timeoutMs: 60_000, prices: {}, historyTurns: 20 },
  maxWaitMs: 300_000,
  maxIterations: 1_000,
  parallelConcurrency: 10,
  maxWorkflowDepth: 5,
};

export interface EngineDependencies {
  sandbox: FunctionSandbox;
  settings?: EngineSettings;
  /** Aborted to cancel the run (cancellation, run timeout); running waits and requests stop at once. */
  signal?: AbortSignal;
  /** Earlier agent turns of the run's conversation. */
  history?: AgentHistory;
  /** Another workflow of the same tenant (version 0: latest), for workflow blocks; undefined when missing. */
  loadWorkflow?: (workflowId: string, version: number) => Promise<CompiledWorkflow | undefined>;
  /** Workflow blocks between the top-level run and this one (0 at the top). */
  depth?: number;
  /** Live progress of the blocks of this run (top level and loop/parallel bodies). */
  onBlockEvent?: RunGraphOptions["onBlockEvent"];
}

/** The input validated against the input block (InvalidArgument naming the field); nothing runs. */
export function checkWorkflowInput(workflow: CompiledWorkflow, input: JsonObject): JsonObject {
  return validateWorkflowInput(workflow.input.config, input);
}

/** Where a block runs: the workflow's top level, or one iteration of a loop or parallel body. */
interface Scope {
  graph: ExecutionGraph;
  /** Outputs of the blocks outside the body (empty at the top level). */
  outer: Readonly<Record<string, JsonValue>>;
  loop: JsonValue;
}

/** Runs `workflow` on an input already checked with checkWorkflowInput. Block failures never reject. */
export async function runWorkflow(
  workflow: CompiledWorkflow,
  rawInput: JsonObject,
  validatedInput: JsonObject,
  deps: EngineDependencies,
): Promise<WorkflowRunResult> {
  const settings = deps.settings ?? DEFAULT_ENGINE_SETTINGS;
  const history: AgentHistory = deps.history ?? new Map();
  const signal = deps.signal;
  const depth = deps.depth ?? 0;
  const path: string[] = [];

  const runChild = async (child: CompiledWorkflow, input: JsonObject): Promise<ChildRunResult> => {
    const validated = checkWorkflowInput(child, input);
    // A child workflow has no conversation of its own.
    return runWorkflow(child, input, validated, {
      ...deps,
      history: new Map(),
      depth: depth + 1,
      onBlockEvent: undefined,
    });
  };

  const blockRunner = (scope: Scope) => {
    const predecessorOutputs = (
      block: CompiledBlock,
      outputs: Readonly<Record<string, JsonValue>>,
    ): JsonObject => {
      const seen: JsonObject = {};
      for (const id of scope.graph.predecessors.get(block.id) ?? []) {
        if (id in outputs) seen[id] = outputs[id]!;
      }
      return seen;
    };

    const bodyRunner =
      (body: CompiledBody, outer: Readonly<Record<string, JsonValue>>): RunBody =>
      (index, item, markSpan) =>
        runScope({ graph: body, outer, loop: { index, item } }, markSpan);

    const runBlock = async (
      block: CompiledBlock,
      outputs: Readonly<Record<string, JsonValue>>,
    ): Promise<BlockOutcome> => {
      const blocks = scope.outer === EMPTY ? outputs : { ...scope.outer, ...outputs };
      const variables: ExpressionVariables = { input: validatedInput, blocks, loop: scope.loop };
      const input = () => predecessorOutputs(block, outputs);
      try {
        switch (block.type) {
          case "input":
            return { input: rawInput, output: validatedInput };
          case "function":
            return {
              input: input(),
              output: await runFunctionBlock(block.config, deps.sandbox, validatedInput, blocks, scope.loop),
            };
          case "output":
            return { input: input(), output: runOutputBlock(block.config, variables) };
          case "condition":
            return { input: input(), ...runConditionBlock(block.config, variables) };
          case "router":
            return { input: input(), ...runRouterBlock(block.config, variables) };
          case "api":
            return await runApiBlock(block.config, settings.api, variables, signal);
          case "agent":
            return await runAgentBlock(block.id, block.config, settings.llm, history, variables, signal);
          case "wait":
            return await runWaitBlock(block.config, settings.maxWaitMs, signal);
          case "workflow":
            return await runWorkflowBlock(block.config, variables, {
              depth,
              maxDepth: settings.maxWorkflowDepth,
              load: deps.loadWorkflow,
              run: runChild,
            });
          case "loop":
            return await runLoopBlock(
              block,
              block.config,
              variables,
              { maxIterations: settings.maxIterations, signal },
              bodyRunner(block.config.body, blocks),
            );
          case "parallel":
            return await runParallelBlock(
              block,
              block.config,
              variables,
              { maxIterations: settings.maxIterations, concurrency: settings.parallelConcurrency, signal },
              bodyRunner(block.config.body, blocks),
            );
        }
      } catch (err) {
        if (
          err instanceof FunctionBlockError ||
          err instanceof ExpressionError ||
          err instanceof BranchError
        ) {
          throw new BlockFailure(err.message, input());
        }
        throw err;
      }
    };

    return async (
      block: CompiledBlock,
      outputs: Readonly<Record<string, JsonValue>>,
    ): Promise<BlockOutcome> => {
      const outcome = await runBlock(block, outputs);
      const problem = outputProblem(outcome.output);
      if (problem) throw new BlockFailure(problem, outcome.input);
      return outcome;
    };
  };

  const runScope = (scope: Scope, markSpan?: (span: BlockSpan) => void): Promise<GraphRun> =>
    runGraph(scope.graph, blockRunner(scope), { signal, path, markSpan, onBlockEvent: deps.onBlockEvent });

  const graph = await runScope({ graph: workflow, outer: EMPTY, loop: null });
  const output: JsonObject = {};
  for (const block of workflow.outputs) {
    if (block.id in graph.outputs) output[block.name] = graph.outputs[block.id]!;
  }
  const result: WorkflowRunResult = {
    status: graph.failure ? "error" : "success",
    output,
    path: graph.path,
    spans: graph.spans,
    cancelled: graph.cancelled || (graph.failure !== undefined && signal?.aborted === true),
  };
  if (graph.failure) {
    result.error = graph.failure.block
      ? `block ${graph.failure.block.name}: ${graph.failure.message}`
      : graph.failure.message;
  }
  return result;
}

const EMPTY: Readonly<Record<string, JsonValue>> = Object.freeze({});
