import type { FastifyRequest } from "fastify";
import { badRequest } from "./errors.js";

/**
 * Deepest JSON nesting a request may carry. Values travel to the services as protobuf Structs
 * (two message levels per JSON level) and protobuf-es refuses to decode past 100 levels, so deeper
 * input must be refused here with a 400, not fail inside an RPC as a 500.
 */
export const MAX_JSON_DEPTH = 32;

/** The first thing in a JSON-like value the services cannot take, with where it sits. */
export function inputProblem(value: unknown, where: string, depth = 0): string | undefined {
  if (typeof value === "string") {
    // PostgreSQL cannot store U+0000 in text or jsonb.
    return value.includes("\u0000") ? `${where} must not contain NUL (\\u0000) characters` : undefined;
  }
  if (value === null || typeof value !== "object") return undefined;
  if (depth >= MAX_JSON_DEPTH) return `${where} is nested deeper than ${MAX_JSON_DEPTH} levels`;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = inputProblem(value[i], `${where}[${i}]`, depth + 1);
      if (found) return found;
    }
    return undefined;
  }
  for (const [key, item] of Object.entries(value)) {
    if (key.includes("\u0000")) return `${where} keys must not contain NUL (\\u0000) characters`;
    const found = inputProblem(item, `${where}.${key}`, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** preValidation hook: refuses NUL characters and over-deep JSON anywhere in a request with a 400. */
export async function refuseUnusableInput(request: FastifyRequest): Promise<void> {
  const problem =
    inputProblem(request.params, "params") ??
    inputProblem(request.query, "querystring") ??
    inputProblem(request.body, "body");
  if (problem) throw badRequest(problem);
}
