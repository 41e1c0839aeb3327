import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { FunctionSandbox } from "./sandbox.js";

const TIMEOUT_MS = 300;
// The project's TypeScript libs do not declare WebAssembly's globals.
const WasmRuntimeError = (
  globalThis as unknown as { WebAssembly: { RuntimeError: new (message: string) => Error } }
).WebAssembly.RuntimeError;
const sandbox = new FunctionSandbox({ timeoutMs: TIMEOUT_MS, memoryMb: 32, workers: 2 });

afterAll(() => sandbox.close());

describe("function sandbox", () => {
  it("runs a function body with input and blocks in scope", async () => {
    const result = await sandbox.run(
      'return { greeting: "Hello " + input["First Name"], seen: blocks.start.Age };',
      { "First Name": "John" },
      { start: { Age: 30 } },
    );
    expect(result).toEqual({ ok: true, value: { greeting: "Hello John", seen: 30 } });
  });

  it("returns null when the function returns nothing, and supports await", async () => {
    expect(await sandbox.run("const x = 1;", {}, {})).toEqual({ ok: true, value: null });
    expect(await sandbox.run("return await Promise.resolve(5);", {}, {})).toEqual({ ok: true, value: 5 });
  });

  it("exposes no host capabilities", async () => {
    const result = await sandbox.run(
      "return [typeof process, typeof require, typeof fetch, typeof XMLHttpRequest, typeof std, typeof os, typeof setTimeout];",
      {},
      {},
    );
    expect(result).toEqual({ ok: true, value: Array(7).fill("undefined") });
  });

  it("reports thrown errors with their message", async () => {
    expect(await sandbox.run('throw new Error("boom");', {}, {})).toEqual({ ok: false, error: "boom" });
    expect(await sandbox.run("return undefinedThing.x;", {}, {})).toEqual({
      ok: false,
      error: "ReferenceError: 'undefinedThing' is not defined",
    });
    expect(await sandbox.run('throw "plain";', {}, {})).toEqual({ ok: false, error: "plain" });
  });

  it("cannot escape the function wrapper with crafted code", async () => {
    const result = await sandbox.run("}); (function () { return 1;", {}, {});
    expect(result.ok).toBe(false);
  });

  it("rejects return values that are not JSON-serialisable", async () => {
    expect(await sandbox.run("return () => 1;", {}, {})).toEqual({
      ok: false,
      error: "TypeError: the return value is not JSON-serialisable",
    });
    const cyclic = await sandbox.run("const o = {}; o.o = o; return o;", {}, {});
    expect(cyclic.ok).toBe(false);
  });

  it("stops an endless loop at the deadline, even one that catches", async () => {
    const started = Date.now();
    const result = await sandbox.run("while (true) { try { while (true) {} } catch (e) {} }", {}, {});
    expect(result).toEqual({ ok: false, error: `timed out after ${TIMEOUT_MS} ms` });
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS + 2_000);
    expect(await sandbox.run("return 1 + 1;", {}, {})).toEqual({ ok: true, value: 2 });
  });

  it("stops an endless promise chain", async () => {
    const result = await sandbox.run("const f = async () => { await null; f(); }; f(); return 1;", {}, {});
    expect(result).toEqual({ ok: false, error: `timed out after ${TIMEOUT_MS} ms` });
  });

  it.each([
    ["large strings", 'const a = []; while (true) a.push("x".repeat(1e6) + a.length);'],
    ["small objects", "const a = []; while (true) a.push({ x: [1, 2, 3], y: 'abc' });"],
    ["typed arrays", "const a = []; while (true) a.push(new Uint8Array(1e6));"],
    ["a doubling string", 'let s = "x"; while (true) s += s;'],
  ])("stops a memory bomb of %s and keeps working", async (_what, code) => {
    const result = await sandbox.run(code, {}, {});
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error).toMatch(/memory|too long|timed out/);
    expect(await sandbox.run("return [1, 2].map((x) => x * 2);", {}, {})).toEqual({
      ok: true,
      value: [2, 4],
    });
  });

  it("stops unbounded recursion", async () => {
    const result = await sandbox.run("function f(n) { return f(n + 1) + 1; } return f(0);", {}, {});
    expect(result).toEqual({ ok: false, error: "InternalError: stack overflow" });
    expect(await sandbox.run("return 3;", {}, {})).toEqual({ ok: true, value: 3 });
  });

  it("runs functions on separate threads in parallel", async () => {
    // Both threads up and warm first, so thread start-up time cannot serialise the two runs (the
    // warm-ups outlast the inline budget, so they reach the threads).
    const warm = "const s = Date.now(); while (Date.now() < s + 20) {} return 1;";
    await Promise.all([sandbox.run(warm, {}, {}), sandbox.run(warm, {}, {})]);
    const busy = "const s = Date.now(); while (Date.now() < s + 250) {} return { s, e: Date.now() };";
    const [a, b] = await Promise.all([sandbox.run(busy, {}, {}), sandbox.run(busy, {}, {})]);
    if (!a?.ok || !b?.ok) throw new Error("busy functions failed");
    const first = a.value as { s: number; e: number };
    const second = b.value as { s: number; e: number };
    // Each started before the other ended: they overlapped in time.
    expect(first.s).toBeLessThan(second.e);
    expect(second.s).toBeLessThan(first.e);
  });

  it("fails runs after close", async () => {
    const closed = new FunctionSandbox({ timeoutMs: 100, memoryMb: 16, workers: 1 });
    await closed.close();
    expect(await closed.run("return 1;", {}, {})).toEqual({ ok: false, error: "the sandbox is shut down" });
  });

  describe("inline fast path", () => {
    // A cold module's first runs can miss the 3 ms budget on a loaded machine: retry until inline.
    const inlineRun = async (sb: FunctionSandbox, code: string): Promise<unknown> => {
      let result: unknown;
      for (let i = 0; i < 100 && result === undefined; i++) {
        await sb.inline!.ready();
        result = sb.inline!.tryRun(task(code));
      }
      return result;
    };
    const task = (code: string) => ({
      id: 0,
      code,
      inputJson: '{"name":"x"}',
      blocksJson: "{}",
      loopJson: "null",
    });

    it("runs a trivial function inline, without a worker", async () => {
      const inline = new FunctionSandbox({ timeoutMs: TIMEOUT_MS, memoryMb: 32, workers: 1 });
      await inline.inline!.ready();
      expect(await inlineRun(inline, 'return "Hello " + input.name;')).toEqual({
        ok: true,
        value: "Hello x",
      });
      expect(await inline.run('throw new Error("boom");', {}, {})).toEqual({ ok: false, error: "boom" });
      await inline.close();
    });

    it("redoes a function over the inline budget on a worker, from scratch", async () => {
      await sandbox.inline!.ready();
      // ~30 ms of work against the 3 ms inline budget; a counter proves no state carried over.
      const code =
        "globalThis.runs = (globalThis.runs ?? 0) + 1; const s = Date.now(); while (Date.now() < s + 30) {} return runs;";
      expect(sandbox.inline!.tryRun(task(code))).toBeUndefined();
      expect(await sandbox.run(code, {}, {})).toEqual({ ok: true, value: 1 });
    });

    it.each([
      ["inline", 3],
      ["worker", 0],
    ])("does not let a global set by one run be seen by the next (%s)", async (_path, inlineBudgetMs) => {
      const isolated = new FunctionSandbox({
        timeoutMs: TIMEOUT_MS,
        memoryMb: 32,
        workers: 1,
        inlineBudgetMs,
      });
      await isolated.inline?.ready();
      const code =
        "const seen = typeof leaked; globalThis.leaked = 1; Object.prototype.polluted = 1; return [seen, typeof {}.polluted];";
      for (let i = 0; i < 3; i++)
        expect(await isolated.run(code, {}, {})).toEqual({ ok: true, value: ["undefined", "number"] });
      await isolated.close();
    });

    it("trips QuickJS's stack check inline, not V8's, and leaves the module in use", async () => {
      const fresh = new FunctionSandbox({ timeoutMs: TIMEOUT_MS, memoryMb: 32, workers: 1 });
      await fresh.inline!.ready();
      const replaced = fresh.inline!.replacedModules;
      expect(
        fresh.inline!.tryRun(task("function f(n) { return f(n + 1) + 1; } return f(0);")),
      ).toBeUndefined();
      expect(fresh.inline!.replacedModules).toBe(replaced);
      expect(await inlineRun(fresh, "return 4;")).toEqual({ ok: true, value: 4 });
      await fresh.close();
    });

    it("falls back to a worker on a WebAssembly abort and replaces the module", async () => {
      const aborting = new FunctionSandbox({ timeoutMs: TIMEOUT_MS, memoryMb: 32, workers: 1 });
      const inline = aborting.inline!;
      await inline.ready();
      const broken = inline.current!;
      // What quickjs-emscripten throws when the C code aborts (seen in fuzz runs).
      broken.newRuntime = () => {
        throw new WasmRuntimeError("Aborted(Assertion failed: list_empty(&rt->gc_obj_list))");
      };
      expect(await aborting.run('return "Hello " + input.name;', { name: "x" }, {})).toEqual({
        ok: true,
        value: "Hello x",
      });
      expect(inline.replacedModules).toBe(1);
      await inline.ready();
      expect(inline.current).not.toBe(broken);
      expect(await inlineRun(aborting, "return 5;")).toEqual({ ok: true, value: 5 });
      await aborting.close();
    });

    it("sends code stuck in uninterruptible native work to workers only, after one overrun", async () => {
      const guarded = new FunctionSandbox({ timeoutMs: 1000, memoryMb: 32, workers: 1 });
      const inline = guarded.inline!;
      await inline.ready();
      // One JSON.stringify call over 2^18 shared leaves: native work QuickJS cannot interrupt.
      const code = "let o = []; for (let i = 0; i < 18; i++) o = [o, o]; return JSON.stringify(o).length;";
      const first = performance.now();
      // It may complete (correctly) once it got to run; either way it overran the budget.
      const done = inline.tryRun(task(code)) ?? { ok: true, value: 1310717 };
      expect(done).toEqual({ ok: true, value: 1310717 });
      expect(performance.now() - first).toBeGreaterThan(25);
      // Denied after its overrun: the second attempt returns at once without running.
      const second = performance.now();
      expect(inline.tryRun(task(code))).toBeUndefined();
      expect(performance.now() - second).toBeLessThan(25);
      expect(await guarded.run(code, {}, {})).toEqual({ ok: true, value: 1310717 });
      // Three overrunning codes switch the fast path off for the window.
      let off = false;
      for (let i = 0; i < 10 && !off; i++) {
        inline.tryRun(task(`${code} // ${i}`));
        off = inline.tryRun(task("return 1;")) === undefined;
      }
      expect(off).toBe(true);
      await guarded.close();
    });

    it("falls back on a memory bomb inline and keeps working", async () => {
      const fresh = new FunctionSandbox({ timeoutMs: TIMEOUT_MS, memoryMb: 32, workers: 1 });
      await fresh.inline!.ready();
      const bomb = "const a = []; while (true) a.push(new Uint8Array(1e6));";
      expect(fresh.inline!.tryRun(task(bomb))).toBeUndefined();
      expect(await fresh.run(bomb, {}, {})).toEqual({ ok: false, error: "memory limit of 32 MB exceeded" });
      expect(await fresh.run("return 6;", {}, {})).toEqual({ ok: true, value: 6 });
      // Back inline once the module (replaced if the cap was hit) has settled: the first runs on
      // freshly grown memory can outlast the budget and go to a worker, which is still correct.
      expect(await inlineRun(fresh, "return 6;")).toEqual({ ok: true, value: 6 });
      await fresh.close();
    });
  });
});

describe("the inline path and the worker", () => {
  it("wrap function code the same way (sandbox-inline.ts keeps a copy of the worker's WRAPPER)", () => {
    // The worker cannot import relative modules, so the wrapper is written twice; an attempt redone
    // on a worker must behave exactly as it would have inline.
    const wrapperOf = (file: string) => {
      const text = readFileSync(new URL(file, import.meta.url), "utf8");
      return /const WRAPPER = `([^`]*)`;/.exec(text)?.[1];
    };
    const worker = wrapperOf("./sandbox-worker.ts");
    expect(worker).toMatch(/AsyncFunction/);
    expect(wrapperOf("./sandbox-inline.ts")).toBe(worker);
  });
});
