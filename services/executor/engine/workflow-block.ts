/**
 * The `workflow` block runs another workflow of the same tenant inside this run: `config.workflowId`,
 * `config.version` (absent or 0: the latest published version, resolved when the block runs) and
 * `config.inputs` (child input field → CEL expression over this run's `input`, `blocks`, `loop`).
 * The child's input is validated against its input block; its spans become this block's children,
 * its model usage counts toward this execution's cost, and its output object is this block's output.
 * Workflow blocks nest at most EXECUTOR_WORKFLOW_MAX_DEPTH deep (a workflow calling itself fails
 * there instead of recursing forever).
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "../../platform/errors.js";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import type { CompiledWorkflow } from "./definition.js";
import type { CompiledExpression, ExpressionVariables } from "./expressions.js";
import { BlockFailure, type BlockOutcome, type BlockSpan } from "./graph.js";
import { compileBlockExpression, DefinitionProblem, describeBlock, isPlainObject } from "./problems.js";

export interface WorkflowBlockConfig {
  workflowId: string;
  /** 0: the latest published version. */
  version: number;
  inputs: Array<[string, CompiledExpression]>;
}

export function readWorkflowBlockConfig(block: Block): WorkflowBlockConfig {
  const where = describeBlock(block);
  const config = block.config ?? {};
  if (typeof config.workflowId !== "string" || config.workflowId.trim() === "") {
    throw new DefinitionProblem(`${where}: a workflow block needs config.workflowId`);
  }
  const version = config.version ?? 0;
  if (typeof version !== "number" || !Number.isInteger(version) || version < 0) {
    throw new DefinitionProblem(
      `${where}: config.version must be a version number (0 or absent: the latest)`,
    );
  }
  const inputs: Array<[string, CompiledExpression]> = [];
  if (config.inputs !== undefined && config.inputs !== null) {
    if (!isPlainObject(config.inputs)) {
      throw new DefinitionProblem(
        `${where}: config.inputs must be an object of input field → CEL expression`,
      );
    }
    for (const [field, source] of Object.entries(config.inputs)) {
      inputs.push([field, compileBlockExpression(block, `config.inputs.${JSON.stringify(field)}`, source)]);
    }
  }
  return { workflowId: config.workflowId, version, inputs };
}

export interface ChildRunResult {
  status: "success" | "error";
  output: JsonObject;
  spans: BlockSpan[];
  error?: string;
}

export interface ChildWorkflows {
  /** Workflow blocks between the top-level run and this one. */
  depth: number;
  maxDepth: number;
  load?: (workflowId: string, version: number) => Promise<CompiledWorkflow | undefined>;
  /** Checks `input` against the child's input block (InvalidArgumentError) and runs it one level deeper. */
  run(workflow: CompiledWorkflow, input: JsonObject): Promise<ChildRunResult>;
}

/** Throws ExpressionError when an input mapping fails, BlockFailure for everything else. */
export async function runWorkflowBlock(
  config: WorkflowBlockConfig,
  variables: ExpressionVariables,
  children: ChildWorkflows,
): Promise<BlockOutcome> {
  const input: JsonObject = {};
  for (const [field, expression] of config.inputs) input[field] = expression.evaluate(variables);
  const target = `workflow ${config.workflowId}${config.version === 0 ? "" : ` version ${config.version}`}`;
  if (children.depth + 1 > children.maxDepth) {
    throw new BlockFailure(`workflow blocks nest deeper than ${children.maxDepth} levels`, input);
  }
  if (!children.load) throw new BlockFailure("workflow blocks cannot run here", input);
  const workflow = await children.load(config.workflowId, config.version);
  if (!workflow) throw new BlockFailure(`${target} not found`, input);
  let result: ChildRunResult;
  try {
    result = await children.run(workflow, input);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new BlockFailure(`${target}: ${err.message}`, input);
    throw err;
  }
  if (result.status === "error") {
    throw new BlockFailure(`${target}: ${result.error ?? "failed"}`, input, { children: result.spans });
  }
  return { input, output: result.output, children: result.spans };
}
