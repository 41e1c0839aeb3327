import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { type CompiledWorkflow, compileWorkflow } from "./definition.js";
import type { BlockSpan } from "./graph.js";
import { checkWorkflowInput, DEFAULT_ENGINE_SETTINGS, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 1 });
afterAll(() => sandbox.close());

function callerOf(config: JsonObject, inputs: JsonObject[] = [{ name: "x", type: "number" }]) {
  return compileWorkflow(
    graphState(
      [b.input(inputs), b.of("sub", "workflow", config), b.output("out", "Result", "blocks.sub")],
      [
        ["start", "sub"],
        ["sub", "out"],
      ],
    ),
  );
}

const child = compileWorkflow(
  graphState(
    [
      b.input([{ name: "n", type: "number", required: true }]),
      b.fn("double", 'if (input.n < 0) throw new Error("negative"); return input.n * 2;'),
      b.output("out", "Doubled", "blocks.double"),
    ],
    [
      ["start", "double"],
      ["double", "out"],
    ],
  ),
);

/** Calls itself, with nothing to stop it but the depth guard. */
const endless = callerOf({ workflowId: "endless", inputs: { x: "input.x + 1" } });

const library = new Map<string, CompiledWorkflow>([
  ["child@1", child],
  ["endless@0", endless],
]);
const loadWorkflow = async (id: string, version: number) => library.get(`${id}@${version}`);

async function run(workflow: CompiledWorkflow, input: JsonObject) {
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox, loadWorkflow });
}

describe("workflow block", () => {
  it("runs the other workflow with the mapped input and outputs its output", async () => {
    const result = await run(callerOf({ workflowId: "child", version: 1, inputs: { n: "input.x + 1" } }), {
      x: 20,
    });
    expect(result.status).toBe("success");
    expect(result.output).toEqual({ Result: { Doubled: 42 } });
    expect(result.path).toEqual(["start", "sub", "out"]);
    const span = result.spans.find((s) => s.blockId === "sub")!;
    expect(span).toMatchObject({ type: "workflow", input: { n: 21 }, output: { Doubled: 42 } });
    expect(span.children!.map((s: BlockSpan) => [s.blockId, s.output])).toEqual([
      ["start", { n: 21 }],
      ["double", 42],
      ["out", 42],
    ]);
  });

  it("fails when the child fails, its input is invalid or it does not exist", async () => {
    const failing = await run(callerOf({ workflowId: "child", version: 1, inputs: { n: "input.x" } }), {
      x: -1,
    });
    expect(failing.status).toBe("error");
    expect(failing.error).toBe("block sub: workflow child version 1: block double: negative");
    expect(failing.spans.find((s) => s.blockId === "sub")?.children?.map((s) => s.status)).toEqual([
      "success",
      "error",
    ]);
    const invalid = await run(callerOf({ workflowId: "child", version: 1 }), { x: 1 });
    expect(invalid.error).toBe('block sub: workflow child version 1: input field "n" is required');
    const missing = await run(callerOf({ workflowId: "ghost" }), { x: 1 });
    expect(missing.error).toBe("block sub: workflow ghost not found");
  });

  it("stops recursion at the configured depth", async () => {
    const shallow = await run(endless, { x: 0 });
    expect(shallow.status).toBe("error");
    expect(shallow.error).toBe(
      `block sub: workflow endless: ${"block sub: workflow endless: ".repeat(DEFAULT_ENGINE_SETTINGS.maxWorkflowDepth - 1)}block sub: workflow blocks nest deeper than ${DEFAULT_ENGINE_SETTINGS.maxWorkflowDepth} levels`,
    );
    // The nesting shows in the spans: each level's workflow span holds the next level.
    let depth = 0;
    let spans: BlockSpan[] | undefined = shallow.spans;
    while (spans) {
      const sub: BlockSpan | undefined = spans.find((s) => s.blockId === "sub");
      if (!sub?.children) break;
      depth++;
      spans = sub.children;
    }
    expect(depth).toBe(DEFAULT_ENGINE_SETTINGS.maxWorkflowDepth);
  });

  it.each([
    [{}, 'block "sub": a workflow block needs config.workflowId'],
    [{ workflowId: "w", version: -1 }, "config.version must be a version number"],
    [{ workflowId: "w", inputs: { n: "1 +" } }, 'block "sub": config.inputs."n" does not compile'],
    [{ workflowId: "w", inputs: [] }, "config.inputs must be an object"],
  ])("rejects the definition %j", (config, message) => {
    expect(() => callerOf(config as JsonObject)).toThrow(message);
  });
});
