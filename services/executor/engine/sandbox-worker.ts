/**
 * Worker-thread side of the function sandbox: runs one function block at a time in a fresh QuickJS
 * runtime + context. It runs in its own thread so a runaway function never blocks the service's
 * event loop, and a thread whose WebAssembly instance is left broken can simply be replaced.
 *
 * Loaded directly by `new Worker(...)`, so it imports only node builtins and packages (no relative
 * `.js` specifiers, which plain Node type stripping cannot map to `.ts`) and uses erasable syntax only.
 */
import { parentPort, workerData } from "node:worker_threads";
import { getQuickJS, type QuickJSContext, type QuickJSHandle } from "quickjs-emscripten";

export interface SandboxWorkerOptions {
  timeoutMs: number;
  memoryMb: number;
}

export interface SandboxTask {
  id: number;
  code: string;
  inputJson: string;
  blocksJson: string;
  loopJson: string;
}

export type SandboxReply =
  | { id: number; ok: true; resultJson: string }
  /** `fatal`: the WebAssembly instance may be corrupt; the worker exits after replying. */
  | { id: number; ok: false; error: string; fatal: boolean };

const MB = 1024 * 1024;
const WASM_PAGE = 65536;
// QuickJS's own stack check must trip before V8's (the worker gets a larger V8 stack).
const QUICKJS_MAX_STACK = 1 * MB;

const options = workerData as SandboxWorkerOptions;

/*
 * QuickJS's setMemoryLimit does not count bytes in this WebAssembly build (malloc_usable_size is
 * unavailable, so large strings and buffers escape it). The real cap: refuse to grow this thread's
 * WebAssembly memory beyond its initial size plus the limit; malloc then fails and QuickJS throws
 * "out of memory" inside the sandbox. Emscripten grows memory through Memory.prototype.grow.
 */
let memoryCapBytes: number | undefined;
let memoryCapHit = false;
type WasmMemory = { readonly buffer: ArrayBuffer; grow(pages: number): number };
const memoryPrototype = (globalThis as unknown as { WebAssembly: { Memory: { prototype: WasmMemory } } })
  .WebAssembly.Memory.prototype;
const originalGrow = memoryPrototype.grow;
memoryPrototype.grow = function grow(this: WasmMemory, pages: number): number {
  memoryCapBytes ??= this.buffer.byteLength + options.memoryMb * MB;
  if (this.buffer.byteLength + pages * WASM_PAGE > memoryCapBytes) {
    memoryCapHit = true;
    throw new RangeError("sandbox memory limit reached");
  }
  return originalGrow.call(this, pages);
};

/*
 * Evaluated once per context. `code` is compiled as an async function body, so it cannot break out
 * of the wrapper, `return` works and `await` is allowed; the result is serialised inside the sandbox.
 * sandbox-inline.ts keeps a copy and redoes abandoned inline attempts here: it must stay pure (no host
 * functions, timers or I/O).
 */
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

const quickjs = await getQuickJS();

class SandboxFailure extends Error {}

function describeThrown(vm: QuickJSContext, handle: QuickJSHandle): string {
  let dumped: unknown;
  try {
    dumped = vm.dump(handle);
  } catch {
    dumped = undefined;
  }
  if (dumped !== null && typeof dumped === "object") {
    const { name, message } = dumped as { name?: unknown; message?: unknown };
    if (typeof message === "string" && message !== "") {
      if (message === "interrupted") return timeoutMessage();
      if (message === "out of memory") return memoryLimitMessage();
      return typeof name === "string" && name !== "Error" ? `${name}: ${message}` : message;
    }
  }
  // Creating the error object itself can fail once memory is exhausted.
  if (memoryCapHit) return memoryLimitMessage();
  if (typeof dumped === "string") return dumped;
  return `threw ${JSON.stringify(dumped) ?? String(dumped)}`;
}

function timeoutMessage(): string {
  return `timed out after ${options.timeoutMs} ms`;
}

function memoryLimitMessage(): string {
  return `memory limit of ${options.memoryMb} MB exceeded`;
}

function run(task: SandboxTask): string {
  memoryCapHit = false;
  // CPU time of this thread, not wall time: on a loaded machine a trivial function can wait longer
  // than the limit for a core, and must not fail for it (the main thread's watchdog bounds wall time).
  const cpuStart = process.threadCpuUsage();
  const limitMicros = options.timeoutMs * 1000;
  const cpuSpent = () => {
    const now = process.threadCpuUsage();
    return now.user - cpuStart.user + (now.system - cpuStart.system);
  };
  // Remembered because an interrupt inside a detached promise job does not surface as an error.
  let interrupted = false;
  const runtime = quickjs.newRuntime();
  try {
    runtime.setMemoryLimit(options.memoryMb * MB);
    runtime.setMaxStackSize(QUICKJS_MAX_STACK);
    runtime.setInterruptHandler(() => {
      if (cpuSpent() > limitMicros) interrupted = true;
      return interrupted;
    });
    const vm = runtime.newContext();
    try {
      const wrapper = vm.evalCode(WRAPPER, "sandbox.js");
      if (wrapper.error) {
        const message = describeThrown(vm, wrapper.error);
        wrapper.error.dispose();
        throw new SandboxFailure(message);
      }
      const args = [
        vm.newString(task.code),
        vm.newString(task.inputJson),
        vm.newString(task.blocksJson),
        vm.newString(task.loopJson),
      ];
      const called = vm.callFunction(wrapper.value, vm.undefined, ...args);
      for (const arg of args) arg.dispose();
      wrapper.value.dispose();
      if (called.error) {
        const message = describeThrown(vm, called.error);
        called.error.dispose();
        throw new SandboxFailure(message);
      }
      const promise = called.value;
      try {
        const jobs = runtime.executePendingJobs();
        if (jobs.error) {
          const message = describeThrown(vm, jobs.error);
          jobs.error.dispose();
          throw new SandboxFailure(message);
        }
        if (interrupted) throw new SandboxFailure(timeoutMessage());
        const state = vm.getPromiseState(promise);
        if (state.type === "fulfilled") {
          const json = vm.getString(state.value);
          state.value.dispose();
          return json;
        }
        if (state.type === "rejected") {
          const message = describeThrown(vm, state.error);
          state.error.dispose();
          throw new SandboxFailure(message);
        }
        throw new SandboxFailure("the function awaited a promise that never settles");
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

parentPort!.on("message", (task: SandboxTask) => {
  let reply: SandboxReply;
  try {
    reply = { id: task.id, ok: true, resultJson: run(task) };
  } catch (err) {
    if (err instanceof SandboxFailure) {
      reply = { id: task.id, ok: false, error: err.message, fatal: false };
    } else {
      // A host-side error (WebAssembly trap, V8 stack overflow) leaves the instance unusable.
      const message = memoryCapHit
        ? memoryLimitMessage()
        : `sandbox failure: ${err instanceof Error ? err.message : String(err)}`;
      reply = { id: task.id, ok: false, error: message, fatal: true };
    }
  }
  parentPort!.postMessage(reply);
  if (!reply.ok && reply.fatal) process.exit(1);
});
