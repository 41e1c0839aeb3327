/**
 * The `function` block: JavaScript run in the QuickJS sandbox with `input` and `blocks` in scope (and
 * `loop` = `{index, item}` inside a loop or parallel body).
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { DefinitionProblem, describeBlock } from "./problems.js";
import type { FunctionSandbox } from "./sandbox.js";

export interface FunctionBlockConfig {
  code: string;
}

export function readFunctionConfig(block: Block): FunctionBlockConfig {
  const code = block.config?.code;
  if (typeof code !== "string" || code.trim() === "") {
    throw new DefinitionProblem(`${describeBlock(block)}: a function block needs config.code`);
  }
  return { code };
}

export class FunctionBlockError extends Error {}

/** The function's return value; throws FunctionBlockError with the sandbox's message. */
export async function runFunctionBlock(
  config: FunctionBlockConfig,
  sandbox: FunctionSandbox,
  input: JsonObject,
  blocks: Readonly<Record<string, JsonValue>>,
  loop: JsonValue = null,
): Promise<JsonValue> {
  const result = await sandbox.run(config.code, input, blocks, loop);
  if (!result.ok) throw new FunctionBlockError(result.error);
  return result.value;
}
