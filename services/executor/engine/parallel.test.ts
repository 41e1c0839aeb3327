import http from "node:http";
import type { AddressInfo } from "node:net";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileWorkflow } from "./definition.js";
import { checkWorkflowInput, DEFAULT_ENGINE_SETTINGS, type EngineSettings, runWorkflow } from "./run.js";
import { FunctionSandbox } from "./sandbox.js";
import { blockJson as b, graphState } from "./workflow-fixtures.js";

const sandbox = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 2 });
const HOLD_MS = 300;
let server: http.Server;
let base: string;
let inFlight = 0;
let maxInFlight = 0;

beforeAll(async () => {
  // Holds every request a while and remembers how many were open at once.
  server = http.createServer((req, res) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    setTimeout(() => {
      inFlight--;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ path: req.url }));
    }, HOLD_MS);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await sandbox.close();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const settings: EngineSettings = {
  ...DEFAULT_ENGINE_SETTINGS,
  api: { allowPrivate: true, timeoutMs: 10_000 },
  parallelConcurrency: 3,
};

/** start → fan (parallel: call → shape) → out. */
function fanOut(
  parallel: JsonObject,
  blockConfig: JsonObject = {},
  shapeCode = "return { index: loop.index, item: loop.item, path: blocks.call.body.path };",
) {
  return compileWorkflow(
    graphState(
      [
        b.input([{ name: "names", type: "array" }]),
        b.of("fan", "parallel", blockConfig, { name: "Fan" }),
        b.of("call", "api", { url: `${base}/item/{{ loop.index }}` }),
        b.fn("shape", shapeCode),
        b.output("out", "Result", "blocks.fan"),
      ],
      [
        ["start", "fan"],
        ["call", "shape"],
        ["fan", "out"],
      ],
      { parallels: { fan: { id: "fan", nodes: ["call", "shape"], ...parallel } } },
    ),
  );
}

async function run(workflow: ReturnType<typeof fanOut>, input: JsonObject = { names: [] }) {
  maxInFlight = 0;
  return runWorkflow(workflow, input, checkWorkflowInput(workflow, input), { sandbox, settings });
}

describe("parallel block", () => {
  it("runs the body for every item at most `concurrency` at a time, results in item order", async () => {
    const result = await run(
      fanOut({ parallelType: "collection", distribution: "input.names" }, { concurrency: 2 }),
      { names: ["a", "b", "c", "d", "e"] },
    );
    expect(result.status).toBe("success");
    expect(maxInFlight).toBe(2);
    expect(result.output.Result).toEqual(
      ["a", "b", "c", "d", "e"].map((item, index) => ({ index, item, path: `/item/${index}` })),
    );
    const span = result.spans.find((s) => s.blockId === "fan")!;
    expect(span).toMatchObject({ type: "parallel", input: { concurrency: 2 } });
    expect(span.children!.map((s) => [s.type, s.parallelId, s.iterationIndex, s.status])).toEqual(
      [0, 1, 2, 3, 4].map((i) => ["parallel-iteration", "fan", i, "success"]),
    );
    for (const iteration of span.children!) {
      expect(iteration.children!.map((s) => [s.blockId, s.parallelId, s.iterationIndex])).toEqual([
        ["call", "fan", iteration.iterationIndex],
        ["shape", "fan", iteration.iterationIndex],
      ]);
    }
    expect(result.path.filter((id) => id === "call")).toHaveLength(5);
  });

  it("uses the configured concurrency by default and caps the block's own at it", async () => {
    await run(fanOut({ parallelType: "count", count: 6 }));
    expect(maxInFlight).toBe(3);
    const capped = await run(fanOut({ parallelType: "count", count: 6 }, { concurrency: 50 }));
    expect(maxInFlight).toBe(3);
    expect(capped.output.Result).toHaveLength(6);
    expect(capped.spans.find((s) => s.blockId === "fan")?.input).toEqual({ count: 6, concurrency: 3 });
  });

  it("fails with the first failing iteration and starts no more", async () => {
    const result = await run(
      fanOut(
        { parallelType: "count", count: 8 },
        { concurrency: 1 },
        'if (loop.index === 1) throw new Error("bad one"); return 1;',
      ),
    );
    expect(result.status).toBe("error");
    expect(result.error).toBe("block Fan: iteration 1: block shape: bad one");
    const span = result.spans.find((s) => s.blockId === "fan")!;
    expect(span.children!.map((s) => s.status)).toEqual(["success", "error"]);
  });

  it("rejects a bad definition", () => {
    expect(() => fanOut({ parallelType: "count" })).toThrow('parallel "fan": a "count" parallel needs count');
    expect(() => fanOut({ parallelType: "split", count: 2 })).toThrow(
      'parallelType must be "count" or "collection"',
    );
    expect(() => fanOut({ parallelType: "collection" })).toThrow(
      "distribution must be a CEL expression or a list",
    );
    expect(() => fanOut({ parallelType: "count", count: 2 }, { concurrency: 0 })).toThrow(
      'block "fan": config.concurrency must be an integer ≥ 1',
    );
  });
});
