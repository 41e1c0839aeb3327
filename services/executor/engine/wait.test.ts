import { afterAll, describe, expect, it } from "vitest";
import { compileWorkflow } from "./definition.js";
import { DEFAULT_ENGINE_SETTINGS, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 1 });
afterAll(() => sandbox.close());

function waiting(durationMs: number) {
  return compileWorkflow(
    graphState(
      [
        b.input(),
        b.of("pause", "wait", { durationMs }),
        b.fn("after", 'return "done";'),
        b.output("out", "Out", "blocks.after"),
      ],
      [
        ["start", "pause"],
        ["pause", "after"],
        ["after", "out"],
      ],
    ),
  );
}

describe("wait block", () => {
  it("waits, then lets its successors run", async () => {
    const started = Date.now();
    const result = await runWorkflow(waiting(50), {}, {}, { sandbox });
    expect(result.status).toBe("success");
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(result.output).toEqual({ Out: "done" });
    expect(result.spans.find((s) => s.blockId === "pause")).toMatchObject({
      input: { durationMs: 50 },
      output: { waitedMs: 50 },
    });
  });

  it("clamps the duration to the configured maximum", async () => {
    const result = await runWorkflow(
      waiting(3_600_000),
      {},
      {},
      {
        sandbox,
        settings: { ...DEFAULT_ENGINE_SETTINGS, maxWaitMs: 10 },
      },
    );
    expect(result.status).toBe("success");
    expect(result.spans.find((s) => s.blockId === "pause")?.output).toEqual({ waitedMs: 10 });
  });

  it("ends at once when the run is cancelled, and nothing after it starts", async () => {
    const controller = new AbortController();
    const run = runWorkflow(
      waiting(600_000),
      {},
      {},
      {
        sandbox,
        signal: controller.signal,
        onBlockEvent: (event) => {
          if (event.kind === "started" && event.block.id === "pause")
            controller.abort(new Error("cancelled"));
        },
      },
    );
    const result = await run;
    expect(result).toMatchObject({ status: "error", error: "block pause: cancelled", cancelled: true });
    expect(result.path).toEqual(["start", "pause"]);
  });

  it("rejects a missing or negative duration", () => {
    expect(() => waiting(-1)).toThrow('block "pause": a wait block needs config.durationMs');
  });
});
