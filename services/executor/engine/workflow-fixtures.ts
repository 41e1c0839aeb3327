/** Workflow definitions shared by the executor's tests. */
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import {
  type WorkflowState,
  WorkflowStateSchema,
} from "../../platform/gen/flowplane/events/v1/execution_pb.js";

/** The demo workflow of the shared product decisions, as workflowState JSON. */
export function demoStateJson(): JsonObject {
  return {
    blocks: {
      start: {
        id: "start",
        type: "input",
        name: "Input",
        config: {
          fields: [
            { name: "First Name", type: "string", required: true },
            { name: "Age", type: "number" },
          ],
        },
      },
      greet: {
        id: "greet",
        type: "function",
        name: "Greet",
        config: {
          code: 'return { greeting: "Hello " + input["First Name"], nextAge: (input.Age ?? 0) + 1 };',
        },
      },
      out_greeting: {
        id: "out_greeting",
        type: "output",
        name: "Greeting",
        config: { value: "blocks.greet.greeting" },
      },
      out_age: { id: "out_age", type: "output", name: "Next Age", config: { value: "blocks.greet.nextAge" } },
    },
    edges: [
      { id: "e1", source: "start", target: "greet" },
      { id: "e2", source: "greet", target: "out_greeting" },
      { id: "e3", source: "greet", target: "out_age" },
    ],
  };
}

export function toState(json: JsonObject): WorkflowState {
  return fromJson(WorkflowStateSchema, json);
}

export function demoState(): WorkflowState {
  return toState(demoStateJson());
}

/** input → one function block named `name` running `code` → output "Result" = blocks.fn. */
export function singleFunctionState(code: string, name = "Fn"): WorkflowState {
  return toState({
    blocks: {
      start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
      fn: { id: "fn", type: "function", name, config: { code } },
      out: { id: "out", type: "output", name: "Result", config: { value: "blocks.fn" } },
    },
    edges: [
      { id: "e1", source: "start", target: "fn" },
      { id: "e2", source: "fn", target: "out" },
    ],
  });
}

type Mutation = (state: { blocks: Record<string, JsonObject>; edges: JsonObject[] }) => void;

/** The demo definition changed by `mutate`, and the message fragment the validation error must contain. */
export const invalidDefinitions: Array<[string, Mutation, string]> = [
  [
    "a block whose key differs from its id",
    (s) => {
      s.blocks.greet!.id = "other";
    },
    'block "greet": id "other" does not match its key in blocks',
  ],
  [
    "an unknown block type",
    (s) => {
      s.blocks.greet!.type = "llm";
    },
    'block "greet": unknown block type "llm"',
  ],
  [
    "an edge to an unknown block",
    (s) => {
      s.edges.push({ id: "e4", source: "greet", target: "ghost" });
    },
    'edge "e4": target "ghost" is not a block',
  ],
  [
    "an edge from an unknown block",
    (s) => {
      s.edges.push({ id: "e4", source: "ghost", target: "greet" });
    },
    'edge "e4": source "ghost" is not a block',
  ],
  [
    "duplicate edge ids",
    (s) => {
      s.edges[2]!.id = "e1";
    },
    'duplicate edge id "e1"',
  ],
  [
    "a cycle",
    (s) => {
      s.edges.push({ id: "e4", source: "out_age", target: "greet" });
    },
    "the edges form a cycle: greet → out_age → greet",
  ],
  [
    "no input block",
    (s) => {
      delete s.blocks.start;
      s.edges.shift();
    },
    "a workflow needs exactly one input block, found 0",
  ],
  [
    "two input blocks",
    (s) => {
      s.blocks.start2 = { ...s.blocks.start!, id: "start2" };
    },
    "a workflow needs exactly one input block, found 2",
  ],
  [
    "no output block",
    (s) => {
      delete s.blocks.out_greeting;
      delete s.blocks.out_age;
      s.edges.splice(1);
    },
    "a workflow needs at least one output block",
  ],
  [
    "an input field with an unknown type",
    (s) => {
      s.blocks.start!.config = { fields: [{ name: "Age", type: "integer" }] };
    },
    'block "start": input field "Age" has unknown type "integer"',
  ],
  [
    "duplicate input field names",
    (s) => {
      s.blocks.start!.config = {
        fields: [
          { name: "Age", type: "number" },
          { name: "Age", type: "string" },
        ],
      };
    },
    'block "start": duplicate input field name "Age"',
  ],
  [
    "a function without code",
    (s) => {
      s.blocks.greet!.config = { code: "  " };
    },
    'block "greet": a function block needs config.code',
  ],
  [
    "an output without a value",
    (s) => {
      s.blocks.out_age!.config = {};
    },
    'block "out_age": an output block needs config.value',
  ],
  [
    "an output expression that does not compile",
    (s) => {
      s.blocks.out_age!.config = { value: "blocks.greet.nextAge +" };
    },
    'block "out_age": config.value does not compile',
  ],
  [
    "duplicate output names",
    (s) => {
      s.blocks.out_age!.name = "Greeting";
    },
    'duplicate output name "Greeting"',
  ],
];

export function mutatedDemoState(mutate: Mutation): WorkflowState {
  const json = demoStateJson() as { blocks: Record<string, JsonObject>; edges: JsonObject[] };
  mutate(json);
  return toState(json as unknown as JsonObject);
}

/**
 * A definition from a list of blocks (ids from `id`) and edges `[source, target, sourceHandle?]`
 * (edge ids e1, e2, … in order); `extra` adds loops and parallels.
 */
export function graphState(
  blocks: JsonObject[],
  edges: Array<[string, string, string?]>,
  extra: { loops?: JsonObject; parallels?: JsonObject } = {},
): WorkflowState {
  return toState({
    blocks: Object.fromEntries(blocks.map((b) => [b.id as string, b])),
    edges: edges.map(([source, target, sourceHandle], index) => ({
      id: `e${index + 1}`,
      source,
      target,
      ...(sourceHandle === undefined ? {} : { sourceHandle }),
    })),
    ...extra,
  });
}

/** Block JSON builders for graphState. */
export const blockJson = {
  input: (fields: JsonObject[] = [], id = "start"): JsonObject => ({
    id,
    type: "input",
    name: "Input",
    config: { fields },
  }),
  fn: (id: string, code: string, extra: JsonObject = {}): JsonObject => ({
    id,
    type: "function",
    name: id,
    config: { code },
    ...extra,
  }),
  output: (id: string, name: string, value: string): JsonObject => ({
    id,
    type: "output",
    name,
    config: { value },
  }),
  of: (id: string, type: string, config: JsonObject, extra: JsonObject = {}): JsonObject => ({
    id,
    type,
    name: id,
    config,
    ...extra,
  }),
};
