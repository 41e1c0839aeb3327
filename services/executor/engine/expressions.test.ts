import { describe, expect, it } from "vitest";
import { compileExpression, ExpressionError } from "./expressions.js";

const variables = {
  input: { "First Name": "John", Age: 30, tags: ["a", "b"], nested: { ok: true } },
  blocks: { greet: { greeting: "Hello John", nextAge: 31 } },
};

const evaluate = (source: string) => compileExpression(source).evaluate(variables);

describe("CEL expressions", () => {
  it("reads input and block outputs, including keys with spaces", () => {
    expect(evaluate("blocks.greet.greeting")).toBe("Hello John");
    expect(evaluate('input["First Name"] + "!"')).toBe("John!");
    expect(evaluate("input.nested.ok && size(input.tags) == 2")).toBe(true);
  });

  it("returns plain JSON: ints as numbers, lists and maps as arrays and objects", () => {
    expect(evaluate("1 + 2")).toBe(3);
    expect(evaluate("[1, 2.5, 'x', null, {'k': [true]}]")).toEqual([1, 2.5, "x", null, { k: [true] }]);
    expect(evaluate("{'name': input['First Name'], 'next': blocks.greet.nextAge}")).toEqual({
      name: "John",
      next: 31,
    });
    expect(evaluate("{1: 'one'}")).toEqual({ "1": "one" });
    expect(evaluate("2u")).toBe(2);
    expect(evaluate("b'hi'")).toBe("aGk=");
    expect(evaluate("timestamp('2025-01-01T12:00:00Z')")).toBe("2025-01-01T12:00:00Z");
    expect(evaluate("type(1)")).toBe("int");
  });

  it("mixes JSON numbers (doubles) with integer literals", () => {
    expect(evaluate("input.Age + 1")).toBe(31);
    expect(evaluate("input.Age * 2")).toBe(60);
    expect(evaluate("100 - input.Age")).toBe(70);
    expect(evaluate("input.Age / 4")).toBe(7.5);
    expect(evaluate("input.Age > 18")).toBe(true);
  });

  it("maps non-finite doubles to null", () => {
    expect(evaluate("1.0 / 0.0")).toBeNull();
  });

  it("reports expressions that do not compile", () => {
    expect(() => compileExpression("1 +")).toThrow(ExpressionError);
    expect(() => compileExpression("blocks.greet.")).toThrow(ExpressionError);
  });

  it("reports evaluation errors such as missing fields", () => {
    expect(() => evaluate("blocks.missing.value")).toThrow(/no such key|not found/);
    expect(() => evaluate("nope")).toThrow(ExpressionError);
    expect(() => evaluate("1 / 0")).toThrow(/divi/);
  });

  it("can be evaluated many times with different variables", () => {
    const expression = compileExpression("input.n * 2");
    expect(expression.evaluate({ input: { n: 1 }, blocks: {} })).toBe(2);
    expect(expression.evaluate({ input: { n: 21 }, blocks: {} })).toBe(42);
  });
});

describe("the loop variable", () => {
  it("is `loop` in expressions although CEL reserves the word", async () => {
    const { compileExpression } = await import("./expressions.js");
    const expression = compileExpression('loop.index + 1 == 2 && loop.item == "loop" && blocks.loop == 3');
    expect(expression.evaluate({ input: {}, blocks: { loop: 3 }, loop: { index: 1, item: "loop" } })).toBe(
      true,
    );
    expect(compileExpression("loop").evaluate({ input: {}, blocks: {} })).toBeNull();
  });
});
