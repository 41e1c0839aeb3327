import { describe, expect, it } from "vitest";
import { ExpressionError } from "./expressions.js";
import { compileJsonTemplate, compileTemplate } from "./templates.js";

const variables = { input: { name: "Ada", n: 2, tags: ["x"], none: null }, blocks: { b: { ok: true } } };

describe("{{ }} templates", () => {
  it("inserts strings as they are, null as nothing and other values as JSON", () => {
    const template = compileTemplate(
      "Hi {{ input.name }}: n={{input.n}} tags={{ input.tags }} b={{ blocks.b }} [{{ input.none }}]",
    );
    expect(template.renderText(variables)).toBe('Hi Ada: n=2 tags=["x"] b={"ok":true} []');
    expect(compileTemplate("no expressions").renderText(variables)).toBe("no expressions");
  });

  it("keeps the value's type for a lone expression inside a JSON template", () => {
    const template = compileJsonTemplate({
      n: "{{ input.n }}",
      text: "n={{ input.n }}",
      list: ["{{ input.tags }}", 3],
      keep: true,
    });
    expect(template.render(variables)).toEqual({ n: 2, text: "n=2", list: [["x"], 3], keep: true });
  });

  it("refuses unclosed, empty and non-compiling expressions", () => {
    expect(() => compileTemplate("{{ input.name")).toThrow(ExpressionError);
    expect(() => compileTemplate("{{ }}")).toThrow('empty "{{ }}"');
    expect(() => compileTemplate("{{ input. }}")).toThrow("{{ input. }} does not compile");
  });

  it("fails at render time when an expression cannot be evaluated", () => {
    expect(() => compileTemplate("{{ input.missing }}").renderText(variables)).toThrow(ExpressionError);
  });
});
