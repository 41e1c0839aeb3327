/**
 * The `condition` block: `config.branches` is an ordered list of `{id, expression}`; the first branch
 * whose CEL expression is true is chosen, and a last branch without an expression is the else. Only
 * the edges whose sourceHandle is the chosen branch's id are taken (see graph.ts for skipping). When
 * no branch matches and there is no else, no edge is taken. Output: `{branch: <id> | null}`.
 */
import type { JsonValue } from "@bufbuild/protobuf";
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import type { CompiledExpression, ExpressionVariables } from "./expressions.js";
import type { BlockOutcome } from "./graph.js";
import { compileBlockExpression, DefinitionProblem, describeBlock, isPlainObject } from "./problems.js";

export interface Branch {
  id: string;
  /** Undefined for the else branch. */
  expression?: CompiledExpression;
}

export interface ConditionBlockConfig {
  branches: Branch[];
}

/** `config.<field>` as a list of `{id, expression?}`; ids unique, only the last may lack an expression. */
export function readBranches(block: Block, field: string, kind: string, expressionOptional: "last" | "all") {
  const where = describeBlock(block);
  const raw = block.config?.[field];
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new DefinitionProblem(`${where}: config.${field} must be a non-empty list of {id, expression}`);
  }
  const seen = new Set<string>();
  return raw.map((item, index): Branch => {
    if (!isPlainObject(item))
      throw new DefinitionProblem(`${where}: config.${field}[${index}] must be an object`);
    const { id, expression } = item;
    if (typeof id !== "string" || id.trim() === "") {
      throw new DefinitionProblem(`${where}: config.${field}[${index}] needs an id`);
    }
    if (seen.has(id)) throw new DefinitionProblem(`${where}: duplicate ${kind} id ${JSON.stringify(id)}`);
    seen.add(id);
    if (expression === undefined || expression === null || expression === "") {
      if (expressionOptional === "last" && index !== raw.length - 1) {
        throw new DefinitionProblem(
          `${where}: ${kind} ${JSON.stringify(id)} has no expression; only the last ${kind} (the else) may omit it`,
        );
      }
      return { id };
    }
    return {
      id,
      expression: compileBlockExpression(block, `${kind} ${JSON.stringify(id)} expression`, expression),
    };
  });
}

export function readConditionConfig(block: Block): ConditionBlockConfig {
  return { branches: readBranches(block, "branches", "branch", "last") };
}

export class BranchError extends Error {}

/** The first branch whose expression is true (or the else); throws BranchError on a non-boolean. */
export function firstTrueBranch(
  branches: Branch[],
  kind: string,
  variables: ExpressionVariables,
): string | null {
  for (const branch of branches) {
    if (branch.expression === undefined) return branch.id;
    const value: JsonValue = branch.expression.evaluate(variables);
    if (typeof value !== "boolean") {
      throw new BranchError(
        `${kind} ${JSON.stringify(branch.id)}: the expression must be true or false, got ${JSON.stringify(value)}`,
      );
    }
    if (value) return branch.id;
  }
  return null;
}

/** Throws ExpressionError or BranchError when a branch cannot be evaluated. */
export function runConditionBlock(
  config: ConditionBlockConfig,
  variables: ExpressionVariables,
): BlockOutcome {
  const branch = firstTrueBranch(config.branches, "branch", variables);
  return { output: { branch }, handle: branch };
}
