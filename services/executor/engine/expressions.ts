/**
 * CEL expressions, the engine's one expression language (output, condition, router, templates, loop
 * collections, workflow input mappings), over plain JSON variables `input`, `blocks` and `loop`
 * (`{index, item}` inside a loop or parallel body, null elsewhere). Compiled once per workflow
 * version; evaluation results are converted back to plain JSON.
 */

import {
  CelScalar,
  type CelValue,
  celEnv,
  celFunc,
  isCelError,
  isCelList,
  isCelMap,
  isCelType,
  isCelUint,
  parse,
  plan,
} from "@bufbuild/cel";
import { type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { isReflectMessage } from "@bufbuild/protobuf/reflect";

export class ExpressionError extends Error {}

export interface ExpressionVariables {
  input: JsonObject;
  blocks: Readonly<Record<string, JsonValue>>;
  /** `{index, item}` inside a loop or parallel body. */
  loop?: JsonValue;
}

export interface CompiledExpression {
  readonly source: string;
  /** The value as plain JSON; throws ExpressionError when evaluation fails. */
  evaluate(variables: ExpressionVariables): JsonValue;
}

/*
 * JSON numbers arrive as CEL doubles while literals like `1` are CEL ints, and standard CEL has no
 * mixed arithmetic (`input.Age + 1` would fail). These overloads compute such operations as doubles.
 */
const DOUBLE = CelScalar.DOUBLE;
const INT = CelScalar.INT;
const arithmetic: Array<[string, (a: number, b: number) => number]> = [
  ["_+_", (a, b) => a + b],
  ["_-_", (a, b) => a - b],
  ["_*_", (a, b) => a * b],
  ["_/_", (a, b) => a / b],
];
const mixedArithmetic = [
  ...arithmetic.flatMap(([operator, apply]) => [
    celFunc(operator, [DOUBLE, INT], DOUBLE, (a, b) => apply(a, Number(b))),
    celFunc(operator, [INT, DOUBLE], DOUBLE, (a, b) => apply(Number(a), b)),
  ]),
  // JSON numbers (loop.index, input fields) are doubles, and standard CEL has no double remainder.
  celFunc("_%_", [DOUBLE, DOUBLE], DOUBLE, (a, b) => a % b),
  celFunc("_%_", [DOUBLE, INT], DOUBLE, (a, b) => a % Number(b)),
  celFunc("_%_", [INT, DOUBLE], DOUBLE, (a, b) => Number(a) % b),
];

/*
 * `loop` is a reserved word in CEL, so the variable is declared under another name and the
 * identifier `loop` in an expression (outside string literals, not after a `.`) is renamed to it.
 */
const LOOP_VARIABLE = "_loop";

function renameLoopIdentifier(source: string): string {
  let out = "";
  let i = 0;
  while (i < source.length) {
    const ch = source[i]!;
    if (ch === '"' || ch === "'") {
      const quote = source.startsWith(ch.repeat(3), i) ? ch.repeat(3) : ch;
      let end = i + quote.length;
      while (end < source.length && !source.startsWith(quote, end)) end += source[end] === "\\" ? 2 : 1;
      end = Math.min(source.length, end + quote.length);
      out += source.slice(i, end);
      i = end;
      continue;
    }
    if (/[A-Za-z_]/.test(ch)) {
      let end = i + 1;
      while (end < source.length && /[A-Za-z0-9_]/.test(source[end]!)) end++;
      const word = source.slice(i, end);
      const afterDot = /\.\s*$/.test(out);
      out += word === "loop" && !afterDot ? LOOP_VARIABLE : word;
      i = end;
      continue;
    }
    out += ch;
    i++;
  }
  return out;
}

const env = celEnv({
  variables: { input: CelScalar.DYN, blocks: CelScalar.DYN, [LOOP_VARIABLE]: CelScalar.DYN },
  funcs: mixedArithmetic,
});

/** Parses and plans `source`; throws ExpressionError with the parser's message when it does not compile. */
export function compileExpression(source: string): CompiledExpression {
  const program = planExpression(source);
  return {
    source,
    evaluate(variables) {
      // Evaluation reports failures as CelError values; the try only guards against surprises.
      let result: CelValue;
      try {
        const evaluated = program({
          input: variables.input,
          blocks: variables.blocks as JsonObject,
          [LOOP_VARIABLE]: variables.loop ?? null,
        });
        if (isCelError(evaluated)) throw new ExpressionError(evaluated.message);
        result = evaluated;
      } catch (err) {
        if (err instanceof ExpressionError) throw err;
        throw new ExpressionError(err instanceof Error ? err.message : String(err));
      }
      return celToJson(result);
    },
  };
}

function planExpression(source: string) {
  try {
    return plan(env, parse(renameLoopIdentifier(source)));
  } catch (err) {
    throw new ExpressionError(err instanceof Error ? err.message : String(err));
  }
}

/** A CEL value as plain JSON: ints become numbers, bytes base64, timestamps and durations their JSON form. */
export function celToJson(value: CelValue): JsonValue {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  // JSON has no NaN or Infinity; JSON.stringify makes them null too.
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "bigint") return Number(value);
  if (isCelUint(value)) return Number(value.value);
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (isCelList(value)) return Array.from(value, celToJson);
  if (isCelMap(value)) {
    const out: JsonObject = {};
    for (const [key, item] of value) {
      out[isCelUint(key) ? String(key.value) : String(key)] = celToJson(item);
    }
    return out;
  }
  if (isCelType(value)) return value.name;
  if (isReflectMessage(value)) return toJson(value.desc, value.message);
  throw new ExpressionError("the expression's result cannot be represented as JSON");
}
