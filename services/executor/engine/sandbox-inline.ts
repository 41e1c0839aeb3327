/**
 * Inline fast path of the function sandbox: a first attempt on the calling (main) thread, in a fresh
 * QuickJS runtime + context, with a small wall-clock budget. Handing a trivial function to a worker
 * thread costs several times more CPU (structured clone, waking the thread) than running it.
 *
 * Safe to abandon and redo on a worker because a function is pure: sandbox-worker.ts's WRAPPER gives
 * it no host functions, no timers and no I/O (console is a no-op), pending jobs are drained
 * synchronously, and each attempt gets a fresh runtime, so a discarded attempt leaves no trace.
 * Only a clean outcome is kept: a result, or an error the code itself threw. Anything touching a
 * limit (budget, memory, stack) or the host returns undefined and the worker runs it with full limits.
 */
import type { JsonValue } from "@bufbuild/protobuf";
import {
  newQuickJSWASMModule,
  type QuickJSContext,
  type QuickJSHandle,
  type QuickJSWASMModule,
} from "quickjs-emscripten";
import type { SandboxTask } from "./sandbox-worker.js";

export type InlineResult = { ok: true; value: JsonValue } | { ok: false; error: string };

const MB = 1024 * 1024;
// Well under the main thread's ~1 MB V8 stack (the caller may already be deep), so QuickJS's own
// check trips first; deeper recursion falls back to a worker with its 16 MB stack.
const INLINE_MAX_STACK = 256 * 1024;
/*
 * QuickJS cannot interrupt one native call: JSON.stringify over a subtree shared 2^20 times blocked
 * the event loop ~2 s with the full 32 MB; with this 1 MB, 2^18 times still took ~0.3 s (memory bounds
 * its output, not its time). Hence also the breaker below: an attempt that used OVERRUN_MS of CPU was
 * stuck in native code; its code never runs inline again, and after a few such overruns in a window
 * the fast path is off for the window, bounding how long hostile code can hold the event loop.
 */
const INLINE_MEMORY_MB = 1;
const OVERRUN_MS = 25;
const OVERRUNS_ALLOWED = 3;
const OVERRUN_WINDOW_MS = 60_000;
const DENIED_CODES_MAX = 10_000;

// Same WRAPPER as sandbox-worker.ts (which cannot import relative modules); keep them identical.
const WRAPPER = `(function (code, inputJson, blocksJson, loopJson) {
  globalThis.console = { log() {}, info() {}, warn() {}, error() {}, debug() {} };
  globalThis.loop = JSON.parse(loopJson);
  const AsyncFunction = (async function () {}).constructor;
  const body = new AsyncFunction("input", "blocks", code);
  return body(JSON.parse(inputJson), JSON.parse(blocksJson)).then(function (value) {
    const json = JSON.stringify(value === undefined ? null : value);
    if (typeof json !== "string") {
      throw new TypeError("the return value is not JSON-serialisable");
    }
    return json;
  });
})`;

/*
 * Memory cap while an inline attempt runs (set only during the synchronous run, so any growth then is
 * QuickJS's): growth beyond the module's size plus the limit is refused, malloc fails inside QuickJS
 * and the attempt falls back. setMemoryLimit alone does not count large strings in this build.
 */
type WasmMemory = { readonly buffer: ArrayBuffer; grow(pages: number): number };
let active: { memoryMb: number; capHit: boolean } | undefined;
const caps = new WeakMap<WasmMemory, number>();
const memoryPrototype = (globalThis as unknown as { WebAssembly: { Memory: { prototype: WasmMemory } } })
  .WebAssembly.Memory.prototype;
const originalGrow = memoryPrototype.grow;
memoryPrototype.grow = function grow(this: WasmMemory, pages: number): number {
  if (active !== undefined) {
    let cap = caps.get(this);
    if (cap === undefined) {
      cap = this.buffer.byteLength + active.memoryMb * MB;
      caps.set(this, cap);
    }
    if (this.buffer.byteLength + pages * 65536 > cap) {
      active.capHit = true;
      throw new RangeError("sandbox memory limit reached");
    }
  }
  return originalGrow.call(this, pages);
};

/** Thrown by an attempt that must be redone on a worker (the module is still sound). */
class Fallback extends Error {}

// Error names QuickJS uses for its own limits (stack overflow, interrupt, out of memory).
const LIMIT_NAMES = new Set(["InternalError", "RangeError"]);

export class InlineSandbox {
  private module: QuickJSWASMModule | undefined;
  private loading: Promise<void> | undefined;
  private readonly memoryMb: number;
  /** Attempts whose module had to be replaced (tests and diagnostics). */
  replacedModules = 0;
  /** Code that overran inline; always run on a worker. */
  private readonly denied = new Set<string>();
  private overruns: number[] = [];

  constructor(
    private readonly budgetMs: number,
    memoryMb: number,
  ) {
    this.memoryMb = Math.min(memoryMb, INLINE_MEMORY_MB);
    this.load();
  }

  private load(): void {
    if (this.loading) return;
    this.loading = newQuickJSWASMModule().then(
      (module) => {
        this.module = module;
        this.loading = undefined;
      },
      () => {
        // The worker path still works; try again on a later run.
        this.loading = undefined;
      },
    );
  }

  /** Resolves once a module is loaded (tests). */
  async ready(): Promise<void> {
    while (this.module === undefined) {
      this.load();
      await this.loading;
    }
  }

  /** The outcome, or undefined when the run must be redone on a worker. Never throws. */
  tryRun(task: SandboxTask): InlineResult | undefined {
    const module = this.module;
    if (module === undefined) {
      this.load();
      return undefined;
    }
    if (this.denied.has(task.code)) return undefined;
    const now = performance.now();
    // Overruns are judged on this thread's CPU time, so being descheduled on a busy machine is not one.
    const cpuStart = process.threadCpuUsage();
    this.overruns = this.overruns.filter((at) => now - at < OVERRUN_WINDOW_MS);
    if (this.overruns.length >= OVERRUNS_ALLOWED) return undefined;
    const state = { memoryMb: this.memoryMb, capHit: false };
    active = state;
    try {
      const json = this.attempt(module, task);
      if (state.capHit) {
        this.replace(module);
        return undefined;
      }
      return { ok: true, value: JSON.parse(json) as JsonValue };
    } catch (err) {
      if (state.capHit || !(err instanceof Fallback || err instanceof UserError)) {
        // A WebAssembly abort/trap, a host stack overflow or a refused allocation may leave the
        // instance corrupt: never use it again.
        this.replace(module);
        return undefined;
      }
      if (err instanceof UserError) return { ok: false, error: err.message };
      return undefined;
    } finally {
      active = undefined;
      const cpu = process.threadCpuUsage(cpuStart);
      if ((cpu.user + cpu.system) / 1000 > OVERRUN_MS) this.overran(task.code);
    }
  }

  private overran(code: string): void {
    this.overruns.push(performance.now());
    if (this.denied.size >= DENIED_CODES_MAX) this.denied.clear();
    this.denied.add(code);
  }

  /** Retires `module` after a host failure; a fresh one loads in the background. */
  replace(module: QuickJSWASMModule): void {
    if (this.module !== module) return;
    this.module = undefined;
    this.replacedModules++;
    this.load();
  }

  /** The loaded module (tests). */
  get current(): QuickJSWASMModule | undefined {
    return this.module;
  }

  private attempt(module: QuickJSWASMModule, task: SandboxTask): string {
    const deadline = performance.now() + this.budgetMs;
    let interrupted = false;
    const runtime = module.newRuntime();
    try {
      runtime.setMemoryLimit(this.memoryMb * MB);
      runtime.setMaxStackSize(INLINE_MAX_STACK);
      runtime.setInterruptHandler(() => {
        if (performance.now() > deadline) interrupted = true;
        return interrupted;
      });
      const vm = runtime.newContext();
      try {
        const wrapper = vm.evalCode(WRAPPER, "sandbox.js");
        if (wrapper.error) throw fail(vm, wrapper.error);
        const args = [
          vm.newString(task.code),
          vm.newString(task.inputJson),
          vm.newString(task.blocksJson),
          vm.newString(task.loopJson),
        ];
        const called = vm.callFunction(wrapper.value, vm.undefined, ...args);
        for (const arg of args) arg.dispose();
        wrapper.value.dispose();
        if (called.error) throw fail(vm, called.error);
        const promise = called.value;
        try {
          const jobs = runtime.executePendingJobs();
          if (jobs.error) throw fail(vm, jobs.error);
          if (interrupted) throw new Fallback("inline budget spent");
          const state = vm.getPromiseState(promise);
          if (state.type === "fulfilled") {
            const json = vm.getString(state.value);
            state.value.dispose();
            return json;
          }
          if (state.type === "rejected") throw fail(vm, state.error);
          // A promise that never settles: the worker reports it with its usual text.
          throw new Fallback("pending");
        } finally {
          promise.dispose();
        }
      } finally {
        vm.dispose();
      }
    } finally {
      runtime.dispose();
    }
  }
}

/** An error thrown by the function's own code, reported as the worker would. */
class UserError extends Error {}

/** Turns a thrown QuickJS value into a UserError, or a Fallback if a limit may be involved. */
function fail(vm: QuickJSContext, handle: QuickJSHandle): Error {
  try {
    let dumped: unknown;
    try {
      dumped = vm.dump(handle);
    } catch {
      return new Fallback("undumpable error");
    }
    if (active?.capHit) return new Fallback("memory");
    if (dumped !== null && typeof dumped === "object") {
      const { name, message } = dumped as { name?: unknown; message?: unknown };
      if (typeof message === "string" && message !== "") {
        if (typeof name === "string" && LIMIT_NAMES.has(name)) return new Fallback(message);
        if (message === "interrupted" || message === "out of memory") return new Fallback(message);
        return new UserError(typeof name === "string" && name !== "Error" ? `${name}: ${message}` : message);
      }
    }
    // Everything else (plain values, errors without a message) keeps the worker's exact wording.
    return new Fallback("uncommon error shape");
  } finally {
    handle.dispose();
  }
}
