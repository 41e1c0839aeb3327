import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { compileWorkflow } from "./definition.js";
import { checkWorkflowInput, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 1 });
afterAll(() => sandbox.close());

function routed(config: JsonObject) {
  return compileWorkflow(
    graphState(
      [
        b.input([{ name: "kind", type: "string" }]),
        b.of("route", "router", config),
        b.output("to_sales", "Sales", '"sales"'),
        b.output("to_support", "Support", '"support"'),
      ],
      [
        ["start", "route"],
        ["route", "to_sales", "sales"],
        ["route", "to_support", "support"],
      ],
    ),
  );
}

async function run(workflow: ReturnType<typeof routed>, kind: string) {
  const input = { kind };
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox });
}

describe("router block", () => {
  const byRoutes = routed({
    routes: [
      { id: "sales", expression: 'input.kind == "buy"' },
      { id: "support", expression: 'input.kind.startsWith("help")' },
    ],
  });
  const bySelector = routed({
    expression: 'input.kind == "buy" ? "sales" : input.kind',
    routes: [{ id: "sales" }, { id: "support" }],
  });

  it("takes the first route whose expression is true", async () => {
    const result = await run(byRoutes, "help me");
    expect(result.status).toBe("success");
    expect(result.output).toEqual({ Support: "support" });
    expect(result.path).toEqual(["start", "route", "to_support"]);
    expect(result.spans.find((s) => s.blockId === "route")?.output).toEqual({ route: "support" });
  });

  it("takes the route an expression names", async () => {
    expect((await run(bySelector, "buy")).output).toEqual({ Sales: "sales" });
    expect((await run(bySelector, "support")).output).toEqual({ Support: "support" });
  });

  it("fails when no route matches or the expression names no route", async () => {
    const none = await run(byRoutes, "other");
    expect(none).toMatchObject({ status: "error", error: "block route: no route's expression is true" });
    const unknown = await run(bySelector, "billing");
    expect(unknown.status).toBe("error");
    expect(unknown.error).toBe(
      'block route: the expression chose "billing", which is not a route (routes: sales, support)',
    );
    expect(unknown.output).toEqual({});
  });

  it.each([
    [{ routes: [{ id: "sales" }, { id: "support" }] }, 'route "sales" needs an expression'],
    [
      { expression: "1 +", routes: [{ id: "sales" }, { id: "support" }] },
      "config.expression does not compile",
    ],
    [
      { expression: '"sales"', routes: [{ id: "sales", expression: "true" }, { id: "support" }] },
      "with config.expression the routes list only ids",
    ],
    [
      { routes: [{ id: "sales", expression: "true" }] },
      'edge "e3": sourceHandle "support" is not a route of block "route"',
    ],
  ])("rejects the definition %j", (config, message) => {
    expect(() => routed(config as JsonObject)).toThrow(message);
  });
});
