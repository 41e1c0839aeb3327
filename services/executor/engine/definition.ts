/**
 * Workflow definitions (the seeds' `workflowState`): validation and compilation into the form the
 * graph runs. A definition is validated when it is published; versions are immutable, so a compiled
 * version can be cached for as long as the process lives.
 */
import { InvalidArgumentError } from "../../platform/errors.js";
import type {
  Block,
  Loop,
  Parallel,
  WorkflowState,
} from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { type AgentBlockConfig, readAgentConfig } from "./agent.js";
import { type ApiBlockConfig, readApiConfig } from "./api.js";
import type { CompiledBody } from "./body.js";
import { type ConditionBlockConfig, readConditionConfig } from "./condition.js";
import { type FunctionBlockConfig, readFunctionConfig } from "./function.js";
import type { ExecutionGraph } from "./graph.js";
import { type InputBlockConfig, readInputConfig } from "./input.js";
import { type LoopBlockConfig, readLoopConfig } from "./loop.js";
import { type OutputBlockConfig, readOutputConfig } from "./output.js";
import { type ParallelBlockConfig, readParallelConfig } from "./parallel.js";
import { DefinitionProblem, describeBlock } from "./problems.js";
import { type RouterBlockConfig, readRouterConfig } from "./router.js";
import { readWaitConfig, type WaitBlockConfig } from "./wait.js";
import { readWorkflowBlockConfig, type WorkflowBlockConfig } from "./workflow-block.js";

export const BLOCK_TYPES = [
  "input",
  "function",
  "output",
  "condition",
  "router",
  "api",
  "agent",
  "wait",
  "workflow",
  "loop",
  "parallel",
] as const;
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
  | (CompiledBlockBase & { type: "output"; config: OutputBlockConfig })
  | (CompiledBlockBase & { type: "condition"; config: ConditionBlockConfig })
  | (CompiledBlockBase & { type: "router"; config: RouterBlockConfig })
  | (CompiledBlockBase & { type: "api"; config: ApiBlockConfig })
  | (CompiledBlockBase & { type: "agent"; config: AgentBlockConfig })
  | (CompiledBlockBase & { type: "wait"; config: WaitBlockConfig })
  | (CompiledBlockBase & { type: "workflow"; config: WorkflowBlockConfig })
  | (CompiledBlockBase & { type: "loop"; config: LoopBlockConfig })
  | (CompiledBlockBase & { type: "parallel"; config: ParallelBlockConfig });

export type InputBlock = Extract<CompiledBlock, { type: "input" }>;
export type OutputBlock = Extract<CompiledBlock, { type: "output" }>;

/** The top-level graph (loop and parallel bodies are inside their container blocks' configs). */
export interface CompiledWorkflow extends ExecutionGraph {
  blocks: CompiledBlock[];
  input: InputBlock;
  outputs: OutputBlock[];
}

function isBlockType(value: string): value is BlockType {
  return (BLOCK_TYPES as readonly string[]).includes(value);
}

type SimpleBlockType = Exclude<BlockType, "loop" | "parallel">;

function checkBlock(key: string, block: Block): BlockType {
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
  return block.type;
}

function blockBase(block: Block): CompiledBlockBase {
  return {
    id: block.id,
    name: block.name.trim() === "" ? block.id : block.name,
    enabled: block.enabled !== false,
  };
}

function compileSimpleBlock(block: Block, type: SimpleBlockType): CompiledBlock {
  const base = blockBase(block);
  switch (type) {
    case "input":
      return { ...base, type, config: readInputConfig(block) };
    case "function":
      return { ...base, type, config: readFunctionConfig(block) };
    case "output":
      return { ...base, type, config: readOutputConfig(block) };
    case "condition":
      return { ...base, type, config: readConditionConfig(block) };
    case "router":
      return { ...base, type, config: readRouterConfig(block) };
    case "api":
      return { ...base, type, config: readApiConfig(block) };
    case "agent":
      return { ...base, type, config: readAgentConfig(block) };
    case "wait":
      return { ...base, type, config: readWaitConfig(block) };
    case "workflow":
      return { ...base, type, config: readWorkflowBlockConfig(block) };
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

/** The source handles a branching block's edges may use, or undefined for other blocks. */
function branchHandles(block: CompiledBlock): string[] | undefined {
  if (block.type === "condition") return block.config.branches.map((b) => b.id);
  if (block.type === "router") return block.config.routes.map((r) => r.id);
  return undefined;
}

interface Container {
  kind: "loop" | "parallel";
  id: string;
  nodes: string[];
  spec: Loop | Parallel;
}

/** The containers of `state`, checked against its blocks: nodes exist, no overlap, no nesting. */
function readContainers(state: WorkflowState): Container[] {
  const containers: Container[] = [];
  const owner = new Map<string, string>();
  const entries: Array<["loop" | "parallel", string, Loop | Parallel]> = [
    ...Object.entries(state.loops).map(([key, loop]) => ["loop", key, loop] as ["loop", string, Loop]),
    ...Object.entries(state.parallels).map(
      ([key, parallel]) => ["parallel", key, parallel] as ["parallel", string, Parallel],
    ),
  ];
  for (const [kind, key, spec] of entries) {
    const where = `${kind} ${JSON.stringify(key)}`;
    if (spec.id !== key) {
      throw new DefinitionProblem(
        `${where}: id ${JSON.stringify(spec.id)} does not match its key in ${kind}s`,
      );
    }
    const block = state.blocks[key];
    if (!block || block.type !== kind) {
      throw new DefinitionProblem(`${where} needs a block of type "${kind}" with the same id in blocks`);
    }
    if (spec.nodes.length === 0) throw new DefinitionProblem(`${where}: nodes must list the body's blocks`);
    for (const node of spec.nodes) {
      const member = state.blocks[node];
      if (!member) throw new DefinitionProblem(`${where}: node ${JSON.stringify(node)} is not a block`);
      if (member.type === "input" || member.type === "output") {
        throw new DefinitionProblem(
          `${where}: ${member.type} block ${JSON.stringify(node)} cannot be inside a ${kind}`,
        );
      }
      if (member.type === "loop" || member.type === "parallel") {
        throw new DefinitionProblem(
          `${where}: ${member.type} block ${JSON.stringify(node)} cannot be nested in a ${kind}`,
        );
      }
      const other = owner.get(node);
      if (other !== undefined) {
        throw new DefinitionProblem(`block ${JSON.stringify(node)} is in two bodies (${other} and ${where})`);
      }
      owner.set(node, where);
    }
    containers.push({ kind, id: key, nodes: [...spec.nodes], spec });
  }
  for (const [id, block] of Object.entries(state.blocks)) {
    if ((block.type === "loop" || block.type === "parallel") && !containers.some((c) => c.id === id)) {
      throw new DefinitionProblem(
        `${describeBlock(block)}: a ${block.type} block needs an entry in ${block.type}s`,
      );
    }
  }
  return containers;
}

interface GraphParts {
  blocks: CompiledBlock[];
  successors: Map<string, string[]>;
  predecessors: Map<string, string[]>;
  edgeHandles: Map<string, Map<string, string[]>>;
}

function emptyGraph(blocks: CompiledBlock[]): GraphParts {
  return {
    blocks,
    successors: new Map(blocks.map((b) => [b.id, []])),
    predecessors: new Map(blocks.map((b) => [b.id, []])),
    edgeHandles: new Map(),
  };
}

function compile(state: WorkflowState): CompiledWorkflow {
  const blockCount = Object.keys(state.blocks).length;
  if (blockCount > MAX_BLOCKS)
    throw new DefinitionProblem(`too many blocks (${blockCount}, at most ${MAX_BLOCKS})`);
  if (state.edges.length > MAX_EDGES) {
    throw new DefinitionProblem(`too many edges (${state.edges.length}, at most ${MAX_EDGES})`);
  }

  const types = new Map(Object.entries(state.blocks).map(([key, block]) => [key, checkBlock(key, block)]));
  const containers = readContainers(state);
  // Scope of each block: the container whose body holds it, or "" for the top level.
  const scopeOf = new Map<string, string>([...types.keys()].map((id) => [id, ""]));
  for (const container of containers) for (const node of container.nodes) scopeOf.set(node, container.id);

  const simple = new Map<string, CompiledBlock>();
  for (const [id, type] of types) {
    if (type !== "loop" && type !== "parallel") simple.set(id, compileSimpleBlock(state.blocks[id]!, type));
  }
  const graphs = new Map<string, GraphParts>();
  graphs.set("", emptyGraph([]));
  for (const container of containers) {
    graphs.set(container.id, emptyGraph(container.nodes.map((node) => simple.get(node)!)));
  }

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
      if (!types.has(id))
        throw new DefinitionProblem(`${where}: ${end} ${JSON.stringify(id)} is not a block`);
    }
    const scope = scopeOf.get(edge.source)!;
    const targetScope = scopeOf.get(edge.target)!;
    if (scope !== targetScope) {
      const [inside, outside, container] =
        scope !== "" ? [edge.source, edge.target, scope] : [edge.target, edge.source, targetScope];
      throw new DefinitionProblem(
        `${where} connects block ${JSON.stringify(inside)} inside ${JSON.stringify(container)} with block ${JSON.stringify(outside)} outside it; connect the container block ${JSON.stringify(container)} instead`,
      );
    }
    const source = simple.get(edge.source);
    const handles = source ? branchHandles(source) : undefined;
    if (handles) {
      if (edge.sourceHandle === undefined || !handles.includes(edge.sourceHandle)) {
        throw new DefinitionProblem(
          `${where}: sourceHandle ${JSON.stringify(edge.sourceHandle ?? null)} is not a ${source!.type === "condition" ? "branch" : "route"} of ${describeBlock(source!)} (expected one of ${handles.join(", ")})`,
        );
      }
    }
    const graph = graphs.get(scope)!;
    const next = graph.successors.get(edge.source) ?? [];
    graph.successors.set(edge.source, next);
    if (!next.includes(edge.target)) {
      next.push(edge.target);
      const previous = graph.predecessors.get(edge.target) ?? [];
      previous.push(edge.source);
      graph.predecessors.set(edge.target, previous);
    }
    const byTarget = graph.edgeHandles.get(edge.source) ?? new Map<string, string[]>();
    graph.edgeHandles.set(edge.source, byTarget);
    byTarget.set(edge.target, [...(byTarget.get(edge.target) ?? []), edge.sourceHandle ?? ""]);
  });

  for (const [scope, graph] of graphs) {
    const ids =
      scope === "" ? [...types.keys()].filter((id) => scopeOf.get(id) === "") : graph.blocks.map((b) => b.id);
    const cycle = findCycle(ids, graph.successors);
    if (cycle) {
      const inside = scope === "" ? "" : ` inside ${JSON.stringify(scope)}`;
      throw new DefinitionProblem(`the edges${inside} form a cycle: ${cycle.join(" → ")}`);
    }
  }

  const bodies = new Map<string, CompiledBody>();
  for (const container of containers) {
    const graph = graphs.get(container.id)!;
    const exits = container.nodes.filter((node) => (graph.successors.get(node) ?? []).length === 0);
    if (exits.length !== 1) {
      throw new DefinitionProblem(
        `${container.kind} ${JSON.stringify(container.id)}: the body needs exactly one last block (without successors in the body), found ${exits.length}: ${exits.join(", ")}`,
      );
    }
    bodies.set(container.id, { ...graph, exit: exits[0]! });
  }

  const blocks: CompiledBlock[] = [];
  for (const [id, type] of types) {
    if (scopeOf.get(id) !== "") continue;
    const block = state.blocks[id]!;
    if (type === "loop") {
      const config = readLoopConfig(block, state.loops[id]!, bodies.get(id)!);
      blocks.push({ ...blockBase(block), type, config });
    } else if (type === "parallel") {
      const config = readParallelConfig(block, state.parallels[id]!, bodies.get(id)!);
      blocks.push({ ...blockBase(block), type, config });
    } else {
      blocks.push(simple.get(id)!);
    }
  }

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

  const top = graphs.get("")!;
  return {
    blocks,
    successors: new Map(blocks.map((b) => [b.id, top.successors.get(b.id) ?? []])),
    predecessors: new Map(blocks.map((b) => [b.id, top.predecessors.get(b.id) ?? []])),
    edgeHandles: top.edgeHandles,
    input,
    outputs,
  };
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
