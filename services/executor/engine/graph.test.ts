import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { afterAll, describe, expect, it } from "vitest";
import { type CompiledBlock, compileWorkflow } from "./definition.js";
import { BlockFailure, runGraph } from "./graph.js";
import { checkWorkflowInput, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { singleFunctionState, toState } from "./workflow-fixtures.js";

/** start → a, start → b, a + b → join → out. */
function diamond(overrides: { aEnabled?: boolean } = {}) {
  const fn = (id: string, extra: JsonObject = {}) => ({
    id,
    type: "function",
    name: id.toUpperCase(),
    config: { code: "return 1;" },
    ...extra,
  });
  return compileWorkflow(
    toState({
      blocks: {
        start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
        a: fn("a", overrides.aEnabled === false ? { enabled: false } : {}),
        b: fn("b"),
        join: fn("join"),
        out: { id: "out", type: "output", name: "Out", config: { value: "blocks.join" } },
      },
      edges: [
        { id: "e1", source: "start", target: "a" },
        { id: "e2", source: "start", target: "b" },
        { id: "e3", source: "a", target: "join" },
        { id: "e4", source: "b", target: "join" },
        { id: "e5", source: "join", target: "out" },
      ],
    }),
  );
}

function deferred() {
  let resolve!: (value: { output: JsonValue }) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<{ output: JsonValue }>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A runner whose blocks finish only when the test says so; records what was running when. */
function controlledRunner() {
  const pending = new Map<string, ReturnType<typeof deferred>>();
  const started: string[] = [];
  const waiters: Array<() => void> = [];
  const run = (block: CompiledBlock) => {
    const d = deferred();
    pending.set(block.id, d);
    started.push(block.id);
    for (const wake of waiters.splice(0)) wake();
    return d.promise;
  };
  const untilStarted = async (ids: string[]) => {
    while (!ids.every((id) => started.includes(id)))
      await new Promise<void>((resolve) => waiters.push(resolve));
  };
  return { run, pending, started, untilStarted };
}

describe("graph runner", () => {
  it("starts independent blocks together and a block only after all its predecessors", async () => {
    const runner = controlledRunner();
    const done = runGraph(diamond(), runner.run);
    await runner.untilStarted(["start"]);
    runner.pending.get("start")!.resolve({ output: {} });
    await runner.untilStarted(["a", "b"]);
    // Both branches are running at once; the join waits for both.
    expect(runner.started).toEqual(["start", "a", "b"]);
    runner.pending.get("a")!.resolve({ output: "A" });
    await new Promise((resolve) => setImmediate(resolve));
    expect(runner.started).not.toContain("join");
    runner.pending.get("b")!.resolve({ output: "B" });
    await runner.untilStarted(["join"]);
    runner.pending.get("join")!.resolve({ output: "J" });
    await runner.untilStarted(["out"]);
    runner.pending.get("out")!.resolve({ output: "O" });
    const run = await done;
    expect(run.failure).toBeUndefined();
    expect(run.path).toEqual(["start", "a", "b", "join", "out"]);
    expect(run.outputs).toEqual({ start: {}, a: "A", b: "B", join: "J", out: "O" });
    expect(run.spans.map((s) => [s.blockId, s.status])).toEqual([
      ["start", "success"],
      ["a", "success"],
      ["b", "success"],
      ["join", "success"],
      ["out", "success"],
    ]);
  });

  it("skips a disabled block and still runs its successors", async () => {
    const ran: string[] = [];
    const run = await runGraph(diamond({ aEnabled: false }), async (block, outputs) => {
      ran.push(block.id);
      return { output: Object.keys(outputs).sort() };
    });
    expect(ran).toEqual(["start", "b", "join", "out"]);
    expect(run.path).toEqual(["start", "b", "join", "out"]);
    expect(run.outputs.join).toEqual(["b", "start"]);
    expect(run.spans.some((s) => s.blockId === "a")).toBe(false);
  });

  it("stops at the first failure and lets running blocks finish", async () => {
    const runner = controlledRunner();
    const done = runGraph(diamond(), runner.run);
    await runner.untilStarted(["start"]);
    runner.pending.get("start")!.resolve({ output: {} });
    await runner.untilStarted(["a", "b"]);
    runner.pending.get("a")!.reject(new BlockFailure("broke", { seen: true }));
    runner.pending.get("b")!.resolve({ output: "B" });
    const run = await done;
    expect(run.failure?.block?.id).toBe("a");
    expect(run.failure?.message).toBe("broke");
    expect(run.path).toEqual(["start", "a", "b"]);
    const span = run.spans.find((s) => s.blockId === "a")!;
    expect(span).toMatchObject({ status: "error", error: "broke", input: { seen: true } });
    expect(run.outputs).toEqual({ start: {}, b: "B" });
  });
});

describe("graph runner cancellation", () => {
  it("starts nothing after the signal is aborted and reports the run as cancelled", async () => {
    const runner = controlledRunner();
    const controller = new AbortController();
    const done = runGraph(diamond(), runner.run, { signal: controller.signal });
    await runner.untilStarted(["start"]);
    controller.abort(new Error("cancelled by the user"));
    runner.pending.get("start")!.resolve({ output: {} });
    const run = await done;
    expect(run.cancelled).toBe(true);
    expect(run.failure).toEqual({ message: "cancelled by the user" });
    expect(run.path).toEqual(["start"]);
  });
});

describe("workflow runs", () => {
  const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 2 });
  afterAll(() => sandbox.close());

  const twoBranches = compileWorkflow(
    toState({
      blocks: {
        start: {
          id: "start",
          type: "input",
          name: "Input",
          config: { fields: [{ name: "n", type: "number" }] },
        },
        double: { id: "double", type: "function", name: "Double", config: { code: "return input.n * 2;" } },
        skipped: {
          id: "skipped",
          type: "function",
          name: "Skipped",
          enabled: false,
          config: { code: "return 'ran';" },
        },
        out_double: { id: "out_double", type: "output", name: "Double", config: { value: "blocks.double" } },
        out_skipped: {
          id: "out_skipped",
          type: "output",
          name: "Skipped ran",
          config: { value: "has(blocks.skipped)" },
        },
      },
      edges: [
        { id: "e1", source: "start", target: "double" },
        { id: "e2", source: "double", target: "out_double" },
        { id: "e3", source: "start", target: "skipped" },
        { id: "e4", source: "skipped", target: "out_skipped" },
      ],
    }),
  );

  it("runs functions and outputs, skipping disabled blocks", async () => {
    const input = { n: 21 };
    const result = await runWorkflow(twoBranches, input, checkWorkflowInput(twoBranches, input), { sandbox });
    expect(result.status).toBe("success");
    expect(result.output).toEqual({ Double: 42, "Skipped ran": false });
    expect(result.path).not.toContain("skipped");
    const span = result.spans.find((s) => s.blockId === "double")!;
    expect(span).toMatchObject({ name: "Double", type: "function", input: { start: { n: 21 } }, output: 42 });
  });

  it("reports a failing output expression as that block's error", async () => {
    const workflow = compileWorkflow(singleFunctionState("return {};"));
    const broken = compileWorkflow(
      toState({
        blocks: {
          start: { id: "start", type: "input", name: "Input", config: { fields: [] } },
          fn: { id: "fn", type: "function", name: "Fn", config: { code: "return {};" } },
          out: { id: "out", type: "output", name: "Result", config: { value: "blocks.fn.missing" } },
        },
        edges: [
          { id: "e1", source: "start", target: "fn" },
          { id: "e2", source: "fn", target: "out" },
        ],
      }),
    );
    const ok = await runWorkflow(workflow, {}, {}, { sandbox });
    expect(ok).toMatchObject({ status: "success", output: { Result: {} } });
    const failed = await runWorkflow(broken, {}, {}, { sandbox });
    expect(failed.status).toBe("error");
    expect(failed.error).toMatch(/^block Result: .*missing/);
    expect(failed.output).toEqual({});
    expect(failed.spans.find((s) => s.blockId === "out")).toMatchObject({
      status: "error",
      input: { fn: {} },
    });
  });
});
