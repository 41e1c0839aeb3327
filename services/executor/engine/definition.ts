/**
 * Workflow definitions (the seeds' `workflowState`): validation and compilation into the form the
 * graph runs. A definition is validated when it is published; versions are immutable, so a compiled
 * version can be cached for as long as the process lives.
 */
import { InvalidArgumentError } from "../../platform/errors.js";
import type { Block, WorkflowState } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { type FunctionBlockConfig, readFunctionConfig } from "./function.js";
import { type InputBlockConfig, readInputConfig } from "./input.js";
import { type OutputBlockConfig, readOutputConfig } from "./output.js";
import { DefinitionProblem, describeBlock } from "./problems.js";

export const BLOCK_TYPES = ["input", "function", "output"] as const;
export type BlockType = (typeof BLOCK_TYPES)[number];

interface CompiledBlockBase {
  id: string;
  /** The block's name, or its id when unnamed. */
  name: string;
  enabled: boolean;
}

export type CompiledBlock =
  | (CompiledBlockBase & { type: "input"; config: InputBlockConfig })
  | (CompiledBlockBase & { type: "function"; config: FunctionBlockConfig })
  | (CompiledBlockBase & { type: "output"; config: OutputBlockConfig });

export type InputBlock = Extract<CompiledBlock, { type: "input" }>;
export type OutputBlock = Extract<CompiledBlock, { type: "output" }>;

export interface CompiledWorkflow {
  /** In definition order. */
  blocks: CompiledBlock[];
  /** Block id → ids of the blocks its edges lead to (each once). */
  successors: ReadonlyMap<string, readonly string[]>;
  /** Block id → ids of the blocks with an edge into it (each once). */
  predecessors: ReadonlyMap<string, readonly string[]>;
  input: InputBlock;
  outputs: OutputBlock[];
}

function isBlockType(value: string): value is BlockType {
  return (BLOCK_TYPES as readonly string[]).includes(value);
}

function compileBlock(key: string, block: Block): CompiledBlock {
  if (block.id !== key) {
    throw new DefinitionProblem(
      `block ${JSON.stringify(key)}: id ${JSON.stringify(block.id)} does not match its key in blocks`,
    );
  }
  if (key.trim() === "") throw new DefinitionProblem("block ids must not be empty");
  if (!isBlockType(block.type)) {
    throw new DefinitionProblem(
      `${describeBlock(block)}: unknown block type ${JSON.stringify(block.type)} (expected ${BLOCK_TYPES.join(", ")})`,
    );
  }
  const base: CompiledBlockBase = {
    id: block.id,
    name: block.name.trim() === "" ? block.id : block.name,
    enabled: block.enabled !== false,
  };
  switch (block.type) {
    case "input":
      return { ...base, type: "input", config: readInputConfig(block) };
    case "function":
      return { ...base, type: "function", config: readFunctionConfig(block) };
    case "output":
      return { ...base, type: "output", config: readOutputConfig(block) };
  }
}

/** Block ids along one cycle (first id repeated at the end), or undefined when the graph is acyclic. */
function findCycle(ids: string[], successors: ReadonlyMap<string, readonly string[]>): string[] | undefined {
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (id: string): string[] | undefined => {
    state.set(id, "visiting");
    stack.push(id);
    for (const next of successors.get(id) ?? []) {
      const seen = state.get(next);
      if (seen === "visiting") return [...stack.slice(stack.indexOf(next)), next];
      if (seen === undefined) {
        const cycle = visit(next);
        if (cycle) return cycle;
      }
    }
    stack.pop();
    state.set(id, "done");
    return undefined;
  };
  for (const id of ids) {
    if (state.has(id)) continue;
    const cycle = visit(id);
    if (cycle) return cycle;
  }
  return undefined;
}

// Bounds on a definition's size, so validation and runs stay cheap.
const MAX_BLOCKS = 1_000;
const MAX_EDGES = 5_000;

function compile(state: WorkflowState): CompiledWorkflow {
  const blockCount = Object.keys(state.blocks).length;
  if (blockCount > MAX_BLOCKS)
    throw new DefinitionProblem(`too many blocks (${blockCount}, at most ${MAX_BLOCKS})`);
  if (state.edges.length > MAX_EDGES) {
    throw new DefinitionProblem(`too many edges (${state.edges.length}, at most ${MAX_EDGES})`);
  }
  if (Object.keys(state.loops).length > 0) throw new DefinitionProblem("loops are not supported yet");
  if (Object.keys(state.parallels).length > 0) throw new DefinitionProblem("parallels are not supported yet");

  const blocks = Object.entries(state.blocks).map(([key, block]) => compileBlock(key, block));
  const inputs = blocks.filter((b): b is InputBlock => b.type === "input");
  if (inputs.length !== 1) {
    throw new DefinitionProblem(`a workflow needs exactly one input block, found ${inputs.length}`);
  }
  const input = inputs[0]!;
  if (!input.enabled)
    throw new DefinitionProblem(`${describeBlock(input)}: the input block cannot be disabled`);
  const outputs = blocks.filter((b): b is OutputBlock => b.type === "output");
  if (outputs.length === 0) throw new DefinitionProblem("a workflow needs at least one output block");
  const outputNames = new Map<string, string>();
  for (const output of outputs) {
    const other = outputNames.get(output.name);
    if (other !== undefined) {
      throw new DefinitionProblem(
        `duplicate output name ${JSON.stringify(output.name)} (blocks ${JSON.stringify(other)} and ${JSON.stringify(output.id)})`,
      );
    }
    outputNames.set(output.name, output.id);
  }

  const ids = new Set(blocks.map((b) => b.id));
  const successors = new Map<string, string[]>(blocks.map((b) => [b.id, []]));
  const predecessors = new Map<string, string[]>(blocks.map((b) => [b.id, []]));
  const edgeIds = new Set<string>();
  state.edges.forEach((edge, index) => {
    const where = edge.id === "" ? `edge #${index + 1}` : `edge ${JSON.stringify(edge.id)}`;
    if (edge.id === "") throw new DefinitionProblem(`${where} needs an id`);
    if (edgeIds.has(edge.id)) throw new DefinitionProblem(`duplicate edge id ${JSON.stringify(edge.id)}`);
    edgeIds.add(edge.id);
    for (const [end, id] of [
      ["source", edge.source],
      ["target", edge.target],
    ] as const) {
      if (!ids.has(id)) throw new DefinitionProblem(`${where}: ${end} ${JSON.stringify(id)} is not a block`);
    }
    const next = successors.get(edge.source)!;
    if (!next.includes(edge.target)) {
      next.push(edge.target);
      predecessors.get(edge.target)!.push(edge.source);
    }
  });
  const cycle = findCycle([...ids], successors);
  if (cycle) throw new DefinitionProblem(`the edges form a cycle: ${cycle.join(" → ")}`);

  return { blocks, successors, predecessors, input, outputs };
}

/** Validates and compiles a definition; InvalidArgument naming the first problem found. */
export function compileWorkflow(state: WorkflowState): CompiledWorkflow {
  try {
    return compile(state);
  } catch (err) {
    if (err instanceof DefinitionProblem)
      throw new InvalidArgumentError(`invalid workflow state: ${err.message}`);
    throw err;
  }
}
