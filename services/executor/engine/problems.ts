import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";

/** A problem in a workflow definition; surfaces as InvalidArgument with this message. */
export class DefinitionProblem extends Error {}

/** How definition problems name a block. */
export function describeBlock(block: Pick<Block, "id">): string {
  return `block ${JSON.stringify(block.id)}`;
}
