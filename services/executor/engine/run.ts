/** One workflow run: input validation, then the graph with each block type's runner. */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { CompiledBlock, CompiledWorkflow } from "./definition.js";
import { ExpressionError } from "./expressions.js";
import { FunctionBlockError, runFunctionBlock } from "./function.js";
import { BlockFailure, type BlockOutcome, type BlockSpan, runGraph } from "./graph.js";
import { validateWorkflowInput } from "./input.js";
import { runOutputBlock } from "./output.js";
import type { FunctionSandbox } from "./sandbox.js";

export interface WorkflowRunResult {
  status: "success" | "error";
  /** Output block name → value, for the output blocks that ran. */
  output: JsonObject;
  path: string[];
  spans: BlockSpan[];
  /** "block <name>: <message>" when status is error. */
  error?: string;
}

export interface EngineDependencies {
  sandbox: FunctionSandbox;
}

/** The input validated against the input block (InvalidArgument naming the field); nothing runs. */
export function checkWorkflowInput(workflow: CompiledWorkflow, input: JsonObject): JsonObject {
  return validateWorkflowInput(workflow.input.config, input);
}

/** Runs `workflow` on an input already checked with checkWorkflowInput. Block failures never reject. */
export async function runWorkflow(
  workflow: CompiledWorkflow,
  rawInput: JsonObject,
  validatedInput: JsonObject,
  deps: EngineDependencies,
): Promise<WorkflowRunResult> {
  const predecessorOutputs = (
    block: CompiledBlock,
    outputs: Readonly<Record<string, JsonValue>>,
  ): JsonObject => {
    const seen: JsonObject = {};
    for (const id of workflow.predecessors.get(block.id) ?? []) {
      if (id in outputs) seen[id] = outputs[id]!;
    }
    return seen;
  };

  const runBlock = async (
    block: CompiledBlock,
    outputs: Readonly<Record<string, JsonValue>>,
  ): Promise<BlockOutcome> => {
    switch (block.type) {
      case "input":
        return { input: rawInput, output: validatedInput };
      case "function": {
        const input = predecessorOutputs(block, outputs);
        try {
          return {
            input,
            output: await runFunctionBlock(block.config, deps.sandbox, validatedInput, outputs),
          };
        } catch (err) {
          if (err instanceof FunctionBlockError) throw new BlockFailure(err.message, input);
          throw err;
        }
      }
      case "output": {
        const input = predecessorOutputs(block, outputs);
        try {
          return { input, output: runOutputBlock(block.config, validatedInput, outputs) };
        } catch (err) {
          if (err instanceof ExpressionError) throw new BlockFailure(err.message, input);
          throw err;
        }
      }
    }
  };

  const graph = await runGraph(workflow, runBlock);
  const output: JsonObject = {};
  for (const block of workflow.outputs) {
    if (block.id in graph.outputs) output[block.name] = graph.outputs[block.id]!;
  }
  const result: WorkflowRunResult = {
    status: graph.failure ? "error" : "success",
    output,
    path: graph.path,
    spans: graph.spans,
  };
  if (graph.failure) result.error = `block ${graph.failure.block.name}: ${graph.failure.message}`;
  return result;
}
