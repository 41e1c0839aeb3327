import { afterAll, describe, expect, it } from "vitest";
import { FunctionSandbox } from "./sandbox.js";

const TIMEOUT_MS = 300;
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
    // Both threads up and warm first, so thread start-up time cannot serialise the two runs.
    await Promise.all([sandbox.run("return 1;", {}, {}), sandbox.run("return 2;", {}, {})]);
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
});
