/** The `output` block: a CEL expression whose value becomes the response's `<block name>` key. */
import type { JsonValue } from "@bufbuild/protobuf";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type CompiledExpression,
  compileExpression,
  ExpressionError,
  type ExpressionVariables,
} from "./expressions.js";
import { DefinitionProblem, describeBlock } from "./problems.js";

export interface OutputBlockConfig {
  expression: CompiledExpression;
}

export function readOutputConfig(block: Block): OutputBlockConfig {
  const where = describeBlock(block);
  if (block.name.trim() === "") {
    throw new DefinitionProblem(`${where}: an output block needs a name (its key in the output)`);
  }
  const value = block.config?.value;
  if (typeof value !== "string" || value.trim() === "") {
    throw new DefinitionProblem(`${where}: an output block needs config.value (a CEL expression)`);
  }
  try {
    return { expression: compileExpression(value) };
  } catch (err) {
    if (err instanceof ExpressionError) {
      throw new DefinitionProblem(`${where}: config.value does not compile: ${err.message}`);
    }
    throw err;
  }
}

/** The expression's value; throws ExpressionError when evaluation fails. */
export function runOutputBlock(config: OutputBlockConfig, variables: ExpressionVariables): JsonValue {
  return config.expression.evaluate(variables);
}
