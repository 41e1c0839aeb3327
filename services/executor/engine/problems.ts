import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { type CompiledExpression, compileExpression, ExpressionError } from "./expressions.js";
import { type CompiledTemplate, compileTemplate } from "./templates.js";

/** A problem in a workflow definition; surfaces as InvalidArgument with this message. */
export class DefinitionProblem extends Error {}

/** How definition problems name a block. */
export function describeBlock(block: Pick<Block, "id">): string {
  return `block ${JSON.stringify(block.id)}`;
}

/** `source` compiled as CEL; a DefinitionProblem naming the block and `field` when it does not compile. */
export function compileBlockExpression(
  block: Pick<Block, "id">,
  field: string,
  source: unknown,
): CompiledExpression {
  if (typeof source !== "string" || source.trim() === "") {
    throw new DefinitionProblem(`${describeBlock(block)}: ${field} must be a CEL expression`);
  }
  try {
    return compileExpression(source);
  } catch (err) {
    if (err instanceof ExpressionError) {
      throw new DefinitionProblem(`${describeBlock(block)}: ${field} does not compile: ${err.message}`);
    }
    throw err;
  }
}

/** `source` compiled as a `{{ … }}` template; a DefinitionProblem naming the block and `field` otherwise. */
export function compileBlockTemplate(
  block: Pick<Block, "id">,
  field: string,
  source: unknown,
): CompiledTemplate {
  if (typeof source !== "string")
    throw new DefinitionProblem(`${describeBlock(block)}: ${field} must be a string`);
  try {
    return compileTemplate(source);
  } catch (err) {
    if (err instanceof ExpressionError) {
      throw new DefinitionProblem(`${describeBlock(block)}: ${field}: ${err.message}`);
    }
    throw err;
  }
}

/** True for an object that is neither null nor an array (a JSON object). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}
