import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { compileWorkflow } from "./definition.js";
import { checkWorkflowInput, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 2 });
afterAll(() => sandbox.close());

/** start → check (adult | minor | else) → one block per branch → join → out. */
function branching(
  conditionConfig: JsonObject = {
    branches: [
      { id: "adult", expression: "input.age >= 18.0" },
      { id: "minor", expression: "input.age < 13.0" },
      { id: "teen" },
    ],
  },
) {
  return compileWorkflow(
    graphState(
      [
        b.input([{ name: "age", type: "number" }]),
        b.of("check", "condition", conditionConfig),
        b.fn("adult", 'return "adult";'),
        b.fn("minor", 'return "minor";'),
        b.fn("teen", 'return "teen";'),
        b.fn("after_adult", 'return blocks.adult + "!";'),
        b.fn("join", "return Object.keys(blocks).sort();"),
        b.output("out", "Result", "blocks.join"),
      ],
      [
        ["start", "check"],
        ["check", "adult", "adult"],
        ["check", "minor", "minor"],
        ["check", "teen", "teen"],
        ["adult", "after_adult"],
        ["after_adult", "join"],
        ["minor", "join"],
        ["teen", "join"],
        ["join", "out"],
      ],
    ),
  );
}

async function run(workflow: ReturnType<typeof branching>, input: Record<string, number>) {
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox });
}

describe("condition block", () => {
  it("takes the first true branch, skips the others and their descendants, and still runs the join", async () => {
    const workflow = branching();
    const result = await run(workflow, { age: 40 });
    expect(result.status).toBe("success");
    expect(result.path).toEqual(["start", "check", "adult", "after_adult", "join", "out"]);
    expect(result.output.Result).toEqual(["adult", "after_adult", "check", "start"]);
    expect(result.spans.find((s) => s.blockId === "check")).toMatchObject({ output: { branch: "adult" } });
    // Skipped blocks leave no span.
    expect(result.spans.map((s) => s.blockId)).not.toContain("minor");
    expect(result.spans.map((s) => s.blockId)).not.toContain("teen");

    const minor = await run(workflow, { age: 8 });
    expect(minor.path).toEqual(["start", "check", "minor", "join", "out"]);
    expect(minor.output.Result).toEqual(["check", "minor", "start"]);
  });

  it("falls through to the else branch", async () => {
    const result = await run(branching(), { age: 15 });
    expect(result.path).toEqual(["start", "check", "teen", "join", "out"]);
    expect(result.spans.find((s) => s.blockId === "check")?.output).toEqual({ branch: "teen" });
  });

  it("skips every branch and whatever only they lead to when nothing matches and there is no else", async () => {
    const compiled = compileWorkflow(
      graphState(
        [
          b.input([{ name: "age", type: "number" }]),
          b.of("check", "condition", { branches: [{ id: "adult", expression: "input.age >= 18.0" }] }),
          b.fn("adult", 'return "adult";'),
          b.output("out", "Result", "blocks.adult"),
          b.output("always", "Always", "input.age"),
        ],
        [
          ["start", "check"],
          ["check", "adult", "adult"],
          ["adult", "out"],
          ["start", "always"],
        ],
      ),
    );
    const result = await run(compiled, { age: 3 });
    expect(result.status).toBe("success");
    expect(result.output).toEqual({ Always: 3 });
    expect(result.path).toEqual(["start", "check", "always"]);
    expect(result.spans.find((s) => s.blockId === "check")?.output).toEqual({ branch: null });
  });

  it("fails the block when an expression is not a boolean or cannot be evaluated", async () => {
    const notBoolean = await run(
      branching({
        branches: [
          { id: "adult", expression: "input.age" },
          { id: "minor", expression: "false" },
          { id: "teen" },
        ],
      }),
      {
        age: 3,
      },
    );
    expect(notBoolean.status).toBe("error");
    expect(notBoolean.error).toBe('block check: branch "adult": the expression must be true or false, got 3');
    const missing = await run(
      branching({
        branches: [
          { id: "adult", expression: "input.nope > 1.0" },
          { id: "minor", expression: "false" },
          { id: "teen" },
        ],
      }),
      {
        age: 3,
      },
    );
    expect(missing.status).toBe("error");
    expect(missing.error).toMatch(/^block check: .*nope/);
    expect(missing.spans.find((s) => s.blockId === "check")).toMatchObject({
      status: "error",
      input: { start: { age: 3 } },
    });
  });

  it.each([
    [{ branches: [] }, 'block "check": config.branches must be a non-empty list'],
    [
      { branches: [{ id: "a" }, { id: "b", expression: "true" }] },
      'branch "a" has no expression; only the last branch',
    ],
    [{ branches: [{ id: "a", expression: "true" }, { id: "a" }] }, 'duplicate branch id "a"'],
    [{ branches: [{ id: "a", expression: "1 +" }] }, 'block "check": branch "a" expression does not compile'],
  ])("rejects the definition %j", (config, message) => {
    expect(() => branching(config as never)).toThrow(message);
  });

  it("rejects edges whose sourceHandle is not one of the branches", () => {
    expect(() =>
      compileWorkflow(
        graphState(
          [
            b.input(),
            b.of("check", "condition", { branches: [{ id: "yes", expression: "true" }] }),
            b.output("out", "Out", "1"),
          ],
          [
            ["start", "check"],
            ["check", "out", "no"],
          ],
        ),
      ),
    ).toThrow('edge "e2": sourceHandle "no" is not a branch of block "check" (expected one of yes)');
    expect(() =>
      compileWorkflow(
        graphState(
          [
            b.input(),
            b.of("check", "condition", { branches: [{ id: "yes", expression: "true" }] }),
            b.output("out", "Out", "1"),
          ],
          [
            ["start", "check"],
            ["check", "out"],
          ],
        ),
      ),
    ).toThrow('edge "e2": sourceHandle null is not a branch');
  });
});
