/**
 * The `router` block picks one route; the edges whose sourceHandle is that route's id are taken.
 * Two forms: `config.routes: [{id, expression}]` takes the first route whose CEL expression is true;
 * or `config.expression` (CEL returning a route id) with `config.routes: [{id}]` listing the ids.
 * No matching route, or an id that is not a route, fails the block. Output: `{route: <id>}`.
 */
import type { Block } from "../../platform/gen/flowplane/events/v1/execution_pb.js";
import { type Branch, BranchError, firstTrueBranch, readBranches } from "./condition.js";
import type { CompiledExpression, ExpressionVariables } from "./expressions.js";
import type { BlockOutcome } from "./graph.js";
import { compileBlockExpression, DefinitionProblem, describeBlock } from "./problems.js";

export interface RouterBlockConfig {
  routes: Branch[];
  /** Set in the "expression returns a route id" form. */
  expression?: CompiledExpression;
}

export function readRouterConfig(block: Block): RouterBlockConfig {
  const selector = block.config?.expression;
  if (selector === undefined || selector === null) {
    const routes = readBranches(block, "routes", "route", "all");
    const bare = routes.find((r) => r.expression === undefined);
    if (bare) {
      throw new DefinitionProblem(
        `${describeBlock(block)}: route ${JSON.stringify(bare.id)} needs an expression (or give config.expression returning a route id)`,
      );
    }
    return { routes };
  }
  const routes = readBranches(block, "routes", "route", "all");
  if (routes.some((r) => r.expression !== undefined)) {
    throw new DefinitionProblem(
      `${describeBlock(block)}: with config.expression the routes list only ids (no route expressions)`,
    );
  }
  return { routes, expression: compileBlockExpression(block, "config.expression", selector) };
}

/** Throws ExpressionError or BranchError when no route can be chosen. */
export function runRouterBlock(config: RouterBlockConfig, variables: ExpressionVariables): BlockOutcome {
  let route: string | null;
  if (config.expression) {
    const value = config.expression.evaluate(variables);
    if (typeof value !== "string" || !config.routes.some((r) => r.id === value)) {
      throw new BranchError(
        `the expression chose ${JSON.stringify(value)}, which is not a route (routes: ${config.routes.map((r) => r.id).join(", ")})`,
      );
    }
    route = value;
  } else {
    route = firstTrueBranch(config.routes, "route", variables);
    if (route === null) throw new BranchError("no route's expression is true");
  }
  return { output: { route }, handle: route };
}
