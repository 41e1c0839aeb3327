/**
 * The engine's one templating rule: `{{ <CEL expression> }}` inside a string is replaced by the
 * expression's value (same variables as every expression: `input`, `blocks`, `loop`). Strings are
 * inserted as they are, null as nothing, anything else as JSON. A string that is exactly one
 * `{{ … }}` keeps the value's JSON type when it sits inside a JSON template (an api block's body).
 * The first `}}` after `{{` closes the expression.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import {
  type CompiledExpression,
  compileExpression,
  ExpressionError,
  type ExpressionVariables,
} from "./expressions.js";

type Part = string | CompiledExpression;

export interface CompiledTemplate {
  readonly source: string;
  /** The template with every expression replaced by its value as text. */
  renderText(variables: ExpressionVariables): string;
  /** Like renderText, but a lone `{{ expr }}` yields the expression's value itself. */
  renderValue(variables: ExpressionVariables): JsonValue;
}

/** Parses `source`; throws ExpressionError naming the expression that does not compile. */
export function compileTemplate(source: string): CompiledTemplate {
  const parts: Part[] = [];
  let rest = source;
  for (;;) {
    const open = rest.indexOf("{{");
    if (open < 0) break;
    const close = rest.indexOf("}}", open + 2);
    if (close < 0)
      throw new ExpressionError(`unclosed "{{" at ${JSON.stringify(rest.slice(open, open + 20))}`);
    if (open > 0) parts.push(rest.slice(0, open));
    const expression = rest.slice(open + 2, close).trim();
    if (expression === "") throw new ExpressionError('empty "{{ }}"');
    try {
      parts.push(compileExpression(expression));
    } catch (err) {
      if (err instanceof ExpressionError) {
        throw new ExpressionError(`{{ ${expression} }} does not compile: ${err.message}`);
      }
      throw err;
    }
    rest = rest.slice(close + 2);
  }
  if (rest !== "") parts.push(rest);

  const renderText = (variables: ExpressionVariables) =>
    parts.map((part) => (typeof part === "string" ? part : asText(part.evaluate(variables)))).join("");
  return {
    source,
    renderText,
    renderValue(variables) {
      const only = parts.length === 1 ? parts[0] : undefined;
      if (only !== undefined && typeof only !== "string") return only.evaluate(variables);
      return renderText(variables);
    },
  };
}

function asText(value: JsonValue): string {
  if (value === null) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

/** A JSON value whose strings (not keys) are templates. */
export interface CompiledJsonTemplate {
  render(variables: ExpressionVariables): JsonValue;
}

export function compileJsonTemplate(value: JsonValue): CompiledJsonTemplate {
  if (typeof value === "string") {
    const template = compileTemplate(value);
    return { render: (variables) => template.renderValue(variables) };
  }
  if (Array.isArray(value)) {
    const items = value.map(compileJsonTemplate);
    return { render: (variables) => items.map((item) => item.render(variables)) };
  }
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).map(([key, item]) => [key, compileJsonTemplate(item)] as const);
    return {
      render(variables) {
        const out: JsonObject = {};
        for (const [key, item] of entries) out[key] = item.render(variables);
        return out;
      },
    };
  }
  return { render: () => value };
}
