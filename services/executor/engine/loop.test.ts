import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { compileWorkflow } from "./definition.js";
import type { BlockSpan } from "./graph.js";
import { checkWorkflowInput, DEFAULT_ENGINE_SETTINGS, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 2 });
afterAll(() => sandbox.close());

/** start → prep → each (forEach over input.items: double → label) → out. */
function forEachWorkflow(
  loop: JsonObject = {},
  labelCode = "return { index: loop.index, value: blocks.double, base: blocks.prep };",
) {
  return compileWorkflow(
    graphState(
      [
        b.input([{ name: "items", type: "array" }]),
        b.fn("prep", 'return "base";'),
        b.of("each", "loop", {}, { name: "Each" }),
        b.fn("double", "return loop.item * 2;"),
        b.fn("label", labelCode),
        b.output("out", "Result", "blocks.each"),
      ],
      [
        ["start", "prep"],
        ["prep", "each"],
        ["double", "label"],
        ["each", "out"],
      ],
      {
        loops: {
          each: {
            id: "each",
            nodes: ["double", "label"],
            loopType: "forEach",
            forEachItems: "input.items",
            ...loop,
          },
        },
      },
    ),
  );
}

async function run(workflow: ReturnType<typeof forEachWorkflow>, input: JsonObject) {
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox });
}

describe("loop block", () => {
  it("runs the body once per item with loop.item and loop.index in scope, and outputs the results", async () => {
    const result = await run(forEachWorkflow(), { items: [1, 2, 3] });
    expect(result.status).toBe("success");
    expect(result.output.Result).toEqual([
      { index: 0, value: 2, base: "base" },
      { index: 1, value: 4, base: "base" },
      { index: 2, value: 6, base: "base" },
    ]);
    expect(result.path).toEqual([
      "start",
      "prep",
      "each",
      "double",
      "label",
      "double",
      "label",
      "double",
      "label",
      "out",
    ]);

    const loopSpan = result.spans.find((s) => s.blockId === "each")!;
    expect(loopSpan).toMatchObject({ type: "loop", status: "success", input: { items: [1, 2, 3] } });
    expect(loopSpan.children!.map((s) => [s.type, s.loopId, s.iterationIndex, s.name])).toEqual([
      ["loop-iteration", "each", 0, "Each #0"],
      ["loop-iteration", "each", 1, "Each #1"],
      ["loop-iteration", "each", 2, "Each #2"],
    ]);
    const second = loopSpan.children![1]!;
    expect(second).toMatchObject({
      input: { index: 1, item: 2 },
      output: { index: 1, value: 4, base: "base" },
    });
    expect(second.children!.map((s: BlockSpan) => [s.blockId, s.loopId, s.iterationIndex, s.output])).toEqual(
      [
        ["double", "each", 1, 4],
        ["label", "each", 1, { index: 1, value: 4, base: "base" }],
      ],
    );
  });

  it("iterates a count, a literal list and an object's entries", async () => {
    const counted = await run(
      forEachWorkflow({ loopType: "for", iterations: 2, forEachItems: null }, "return loop;"),
      { items: [] },
    );
    expect(counted.output.Result).toEqual([
      { index: 0, item: null },
      { index: 1, item: null },
    ]);
    const literal = await run(forEachWorkflow({ forEachItems: [5] }, "return blocks.double;"), { items: [] });
    expect(literal.output.Result).toEqual([10]);
    const entries = await run(forEachWorkflow({ forEachItems: "{'a': 1}" }, "return loop.item;"), {
      items: [],
    });
    // double (item * 2) is NaN → null for an object item; the label returns the entry itself.
    expect(entries.output.Result).toEqual([{ key: "a", value: 1 }]);
    const empty = await run(forEachWorkflow(), { items: [] });
    expect(empty).toMatchObject({ status: "success", output: { Result: [] } });
  });

  it("runs conditions inside the body per iteration", async () => {
    const workflow = compileWorkflow(
      graphState(
        [
          b.input(),
          b.of("rep", "loop", {}),
          b.of("check", "condition", {
            branches: [{ id: "even", expression: "loop.index % 2 == 0" }, { id: "odd" }],
          }),
          b.fn("even", 'return "even";'),
          b.fn("odd", 'return "odd";'),
          b.fn("join", "return blocks.even ?? blocks.odd;"),
          b.output("out", "Result", "blocks.rep"),
        ],
        [
          ["start", "rep"],
          ["rep", "out"],
          ["check", "even", "even"],
          ["check", "odd", "odd"],
          ["even", "join"],
          ["odd", "join"],
        ],
        {
          loops: {
            rep: { id: "rep", nodes: ["check", "even", "odd", "join"], loopType: "for", iterations: 3 },
          },
        },
      ),
    );
    const result = await runWorkflow(workflow, {}, {}, { sandbox });
    expect(result.output.Result).toEqual(["even", "odd", "even"]);
    expect(result.path).toEqual([
      "start",
      "rep",
      "check",
      "even",
      "join",
      "check",
      "odd",
      "join",
      "check",
      "even",
      "join",
      "out",
    ]);
  });

  it("stops at the first failing iteration", async () => {
    const result = await run(
      forEachWorkflow({}, 'if (loop.item === 2) throw new Error("two is bad"); return loop.item;'),
      { items: [1, 2, 3] },
    );
    expect(result.status).toBe("error");
    expect(result.error).toBe("block Each: iteration 1: block label: two is bad");
    const loopSpan = result.spans.find((s) => s.blockId === "each")!;
    expect(loopSpan.status).toBe("error");
    expect(loopSpan.children!.map((s) => [s.iterationIndex, s.status])).toEqual([
      [0, "success"],
      [1, "error"],
    ]);
    expect(result.spans.some((s) => s.blockId === "out")).toBe(false);
  });

  it("fails when the collection is not a list or exceeds the iteration limit", async () => {
    const notList = await run(forEachWorkflow({ forEachItems: "input.items[0]" }), { items: [7] });
    expect(notList.error).toBe("block Each: the collection must be a list or an object, got 7");
    const workflow = forEachWorkflow();
    const input = { items: [1, 2, 3] };
    const tooMany = await runWorkflow(workflow, input, checkWorkflowInput(workflow, input), {
      sandbox,
      settings: { ...DEFAULT_ENGINE_SETTINGS, maxIterations: 2 },
    });
    expect(tooMany.error).toBe(
      "block Each: 3 iterations exceed the limit of 2 (EXECUTOR_LOOP_MAX_ITERATIONS)",
    );
  });
});

describe("loop and parallel definitions", () => {
  const blocks = [
    b.input(),
    b.of("each", "loop", {}),
    b.fn("inner", "return 1;"),
    b.fn("inner2", "return 2;"),
    b.fn("outside", "return 3;"),
    b.output("out", "Out", "1"),
  ];
  const edges: Array<[string, string, string?]> = [
    ["start", "each"],
    ["each", "outside"],
    ["outside", "out"],
    ["inner", "inner2"],
  ];
  const loop = { id: "each", nodes: ["inner", "inner2"], loopType: "for", iterations: 1 };
  const compile = (change: {
    blocks?: JsonObject[];
    edges?: Array<[string, string, string?]>;
    loops?: JsonObject;
    parallels?: JsonObject;
  }) =>
    compileWorkflow(
      graphState(change.blocks ?? blocks, change.edges ?? edges, {
        loops: change.loops ?? { each: loop },
        ...(change.parallels ? { parallels: change.parallels } : {}),
      }),
    );

  it("compiles a loop: the container stands in the top-level graph, its body inside it", () => {
    const workflow = compile({});
    expect(workflow.blocks.map((block) => block.id)).toEqual(["start", "each", "outside", "out"]);
    const each = workflow.blocks.find((block) => block.id === "each")!;
    expect(each.type === "loop" && each.config.body.exit).toBe("inner2");
  });

  it.each([
    [
      "a node that is not a block",
      { loops: { each: { ...loop, nodes: ["inner", "ghost"] } } },
      'loop "each": node "ghost" is not a block',
    ],
    ["an empty body", { loops: { each: { ...loop, nodes: [] } } }, 'loop "each": nodes must list the body'],
    [
      "a loop entry without its block",
      { loops: { other: { ...loop, id: "other" } } },
      'loop "other" needs a block of type "loop"',
    ],
    ["a loop block without an entry", { loops: {} }, 'block "each": a loop block needs an entry in loops'],
    [
      "a missing iteration count",
      { loops: { each: { id: "each", nodes: ["inner", "inner2"], loopType: "for" } } },
      'a "for" loop needs iterations',
    ],
    [
      "an unknown loop type",
      { loops: { each: { ...loop, loopType: "while" } } },
      'loopType must be "for" or "forEach"',
    ],
    [
      "forEachItems that do not compile",
      { loops: { each: { ...loop, loopType: "forEach", forEachItems: "[1," } } },
      "forEachItems does not compile",
    ],
    [
      "an edge into the body from outside",
      { edges: [...edges, ["start", "inner"]] },
      'edge "e5" connects block "inner" inside "each" with block "start" outside it; connect the container block "each" instead',
    ],
    [
      "an edge out of the body",
      { edges: [...edges, ["inner2", "out"]] },
      'edge "e5" connects block "inner2" inside "each"',
    ],
    [
      "a body with two last blocks",
      { edges: edges.slice(0, 3) },
      'loop "each": the body needs exactly one last block (without successors in the body), found 2: inner, inner2',
    ],
    [
      "a cycle inside the body",
      { edges: [...edges, ["inner2", "inner"]] },
      'the edges inside "each" form a cycle',
    ],
    [
      "a block in two bodies",
      {
        blocks: [...blocks, b.of("par", "parallel", {})],
        parallels: { par: { id: "par", nodes: ["inner"], parallelType: "count", count: 2 } },
      },
      'block "inner" is in two bodies',
    ],
    [
      "a nested container",
      {
        blocks: [...blocks, b.of("par", "parallel", {})],
        loops: { each: { ...loop, nodes: ["inner", "inner2", "par"] } },
        parallels: { par: { id: "par", nodes: ["outside"], parallelType: "count", count: 2 } },
      },
      'parallel block "par" cannot be nested in a loop',
    ],
    [
      "an output inside a body",
      { loops: { each: { ...loop, nodes: ["inner", "inner2", "out"] } } },
      'output block "out" cannot be inside a loop',
    ],
  ])("rejects %s", (_what, change, message) => {
    expect(() => compile(change as never)).toThrow(message);
  });
});
