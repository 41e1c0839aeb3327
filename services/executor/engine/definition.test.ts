import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../platform/errors.js";
import { compileWorkflow } from "./definition.js";
import { validateWorkflowInput } from "./input.js";
import { demoState, invalidDefinitions, mutatedDemoState, toState } from "./workflow-fixtures.js";

describe("workflow definitions", () => {
  it("compiles the demo workflow", () => {
    const workflow = compileWorkflow(demoState());
    expect(workflow.blocks.map((b) => b.id)).toEqual(["start", "greet", "out_greeting", "out_age"]);
    expect(workflow.input.id).toBe("start");
    expect(workflow.outputs.map((b) => b.name)).toEqual(["Greeting", "Next Age"]);
    expect(workflow.successors.get("greet")).toEqual(["out_greeting", "out_age"]);
    expect(workflow.predecessors.get("out_age")).toEqual(["greet"]);
  });

  it.each(invalidDefinitions)("rejects %s", (_what, mutate, message) => {
    const state = mutatedDemoState(mutate);
    expect(() => compileWorkflow(state)).toThrow(InvalidArgumentError);
    expect(() => compileWorkflow(state)).toThrow(message);
  });

  it("counts parallel edges between two blocks once", () => {
    const workflow = compileWorkflow(
      mutatedDemoState((s) => {
        s.edges.push({ id: "e1b", source: "start", target: "greet" });
      }),
    );
    expect(workflow.predecessors.get("greet")).toEqual(["start"]);
  });

  it("rejects a self-loop, a disabled input block and a loop without its container block", () => {
    expect(() =>
      compileWorkflow(
        mutatedDemoState((s) => {
          s.edges.push({ id: "self", source: "greet", target: "greet" });
        }),
      ),
    ).toThrow("cycle: greet → greet");
    expect(() =>
      compileWorkflow(
        mutatedDemoState((s) => {
          s.blocks.start!.enabled = false;
        }),
      ),
    ).toThrow("the input block cannot be disabled");
    const withLoop = toState({ ...demoStateJsonWithLoop() });
    expect(() => compileWorkflow(withLoop)).toThrow(
      'loop "l1" needs a block of type "loop" with the same id in blocks',
    );
  });
});

function demoStateJsonWithLoop() {
  return {
    blocks: { start: { id: "start", type: "input", name: "Input" } },
    edges: [],
    loops: { l1: { id: "l1", nodes: ["start"], loopType: "for", iterations: 2 } },
  };
}

describe("workflow input", () => {
  const { config } = compileWorkflow(demoState()).input;

  it("accepts valid input and keeps only the declared fields that were given", () => {
    expect(validateWorkflowInput(config, { "First Name": "John", Age: 30 })).toEqual({
      "First Name": "John",
      Age: 30,
    });
    expect(validateWorkflowInput(config, { "First Name": "Ann", Age: null })).toEqual({
      "First Name": "Ann",
    });
  });

  it.each([
    [{ Age: 30 }, 'input field "First Name" is required'],
    [{ "First Name": null }, 'input field "First Name" is required'],
    [{ "First Name": "John", Age: "thirty" }, 'input field "Age" must be a number'],
    [{ "First Name": 7 }, 'input field "First Name" must be a string'],
    [{ "First Name": "John", Nickname: "Jo" }, 'input field "Nickname" is not defined by the workflow'],
  ])("rejects %j", (input, message) => {
    expect(() => validateWorkflowInput(config, input)).toThrow(InvalidArgumentError);
    expect(() => validateWorkflowInput(config, input)).toThrow(message);
  });

  it("checks object, array and boolean fields", () => {
    const typed = {
      fields: [
        { name: "o", type: "object" as const, required: false },
        { name: "a", type: "array" as const, required: false },
        { name: "b", type: "boolean" as const, required: false },
      ],
    };
    expect(validateWorkflowInput(typed, { o: { x: 1 }, a: [1], b: false })).toEqual({
      o: { x: 1 },
      a: [1],
      b: false,
    });
    expect(() => validateWorkflowInput(typed, { o: [1] })).toThrow('input field "o" must be an object');
    expect(() => validateWorkflowInput(typed, { a: {} })).toThrow('input field "a" must be an array');
    expect(() => validateWorkflowInput(typed, { b: "yes" })).toThrow('input field "b" must be a boolean');
  });
});
