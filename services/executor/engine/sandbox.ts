import { Worker } from "node:worker_threads";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { InlineSandbox } from "./sandbox-inline.js";
import type { SandboxReply, SandboxTask, SandboxWorkerOptions } from "./sandbox-worker.js";

export interface SandboxOptions {
  /** CPU-time budget of one function run. */
  timeoutMs: number;
  /** Memory budget of one function run. */
  memoryMb: number;
  /** Threads running functions in parallel. */
  workers: number;
  /**
   * Wall-clock budget of the inline first attempt on the calling thread (0 disables it); a function
   * that needs more is redone from scratch on a worker thread with the full limits.
   */
  inlineBudgetMs?: number;
}

const DEFAULT_INLINE_BUDGET_MS = 3;

export type SandboxResult = { ok: true; value: JsonValue } | { ok: false; error: string };

// The worker's own CPU deadline fires first; this wall-clock bound only catches native work QuickJS
// cannot interrupt. It allows a loaded machine to give the thread a third of a core.
const WATCHDOG_GRACE_MS = 2_000;
const WATCHDOG_CPU_SHARE = 3;
// Enough V8 stack for QuickJS's recursion check to trip before V8's own.
const WORKER_STACK_MB = 16;
const WORKER_URL = new URL("./sandbox-worker.ts", import.meta.url);

interface PendingTask {
  task: SandboxTask;
  resolve(result: SandboxResult): void;
}

class SandboxThread {
  readonly worker: Worker;
  current: (PendingTask & { watchdog: NodeJS.Timeout }) | undefined;
  dead = false;

  constructor(
    options: SandboxWorkerOptions,
    private readonly onIdle: (thread: SandboxThread) => void,
    private readonly onDead: (thread: SandboxThread) => void,
  ) {
    this.worker = new Worker(WORKER_URL, {
      workerData: options,
      resourceLimits: { stackSizeMb: WORKER_STACK_MB },
      stdout: false,
      stderr: false,
    });
    this.worker.unref();
    this.worker.on("message", (reply: SandboxReply) => {
      if (!reply.ok && reply.fatal) this.die(reply.error);
      else this.settle(reply.id, replyResult(reply));
    });
    this.worker.on("error", (err) => this.die(`sandbox failure: ${err.message}`));
    this.worker.on("exit", () => this.die("sandbox failure: worker exited"));
  }

  start(pending: PendingTask, watchdogMs: number): void {
    const watchdog = setTimeout(() => {
      // The function ignored its deadline (stuck in native code): the thread is replaced.
      this.die(`timed out after ${Math.round((watchdogMs - WATCHDOG_GRACE_MS) / WATCHDOG_CPU_SHARE)} ms`);
    }, watchdogMs);
    watchdog.unref();
    this.current = { ...pending, watchdog };
    this.worker.postMessage(pending.task);
  }

  private settle(id: number, result: SandboxResult): void {
    const current = this.current;
    if (current === undefined || current.task.id !== id) return;
    clearTimeout(current.watchdog);
    this.current = undefined;
    current.resolve(result);
    if (!this.dead) this.onIdle(this);
  }

  /** Fails the run in progress with `reason` and retires the thread. */
  die(reason: string): void {
    if (this.dead) return;
    this.dead = true;
    if (this.current) this.settle(this.current.task.id, { ok: false, error: reason });
    void this.worker.terminate();
    this.onDead(this);
  }
}

function replyResult(reply: SandboxReply): SandboxResult {
  if (!reply.ok) return { ok: false, error: reply.error };
  return { ok: true, value: JSON.parse(reply.resultJson) as JsonValue };
}

/**
 * Runs function-block code in QuickJS: first inline on the calling thread within a small budget
 * (sandbox-inline.ts), else on a small pool of worker threads. Each run gets a fresh runtime +
 * context, a CPU deadline and a memory cap; a thread that breaks is replaced on demand.
 */
export class FunctionSandbox {
  private readonly threads = new Set<SandboxThread>();
  private readonly idle: SandboxThread[] = [];
  private readonly queue: PendingTask[] = [];
  private nextId = 1;
  private closed = false;
  /** The main-thread fast path; undefined when disabled. */
  readonly inline: InlineSandbox | undefined;

  constructor(private readonly options: SandboxOptions) {
    const budget = options.inlineBudgetMs ?? DEFAULT_INLINE_BUDGET_MS;
    // Never more than the run's own limit, so the inline attempt cannot outlast it.
    if (budget > 0) this.inline = new InlineSandbox(Math.min(budget, options.timeoutMs), options.memoryMb);
  }

  /**
   * Runs `code` as a function body with `input` and `blocks` in scope, and `loop` as a global
   * (`{index, item}` inside a loop or parallel body, null elsewhere); never rejects.
   */
  run(
    code: string,
    input: JsonObject,
    blocks: Readonly<Record<string, JsonValue>>,
    loop: JsonValue = null,
  ): Promise<SandboxResult> {
    if (this.closed) return Promise.resolve({ ok: false, error: "the sandbox is shut down" });
    const task: SandboxTask = {
      id: this.nextId++,
      code,
      inputJson: JSON.stringify(input),
      blocksJson: JSON.stringify(blocks),
      loopJson: JSON.stringify(loop),
    };
    const quick = this.inline?.tryRun(task);
    if (quick !== undefined) return Promise.resolve(quick);
    return new Promise((resolve) => {
      this.queue.push({ task, resolve });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      let thread = this.idle.pop();
      if (thread === undefined) {
        if (this.threads.size >= this.options.workers) return;
        thread = this.spawn();
      }
      thread.start(this.queue.shift()!, this.options.timeoutMs * WATCHDOG_CPU_SHARE + WATCHDOG_GRACE_MS);
    }
  }

  private spawn(): SandboxThread {
    const thread = new SandboxThread(
      { timeoutMs: this.options.timeoutMs, memoryMb: this.options.memoryMb },
      (idle) => {
        this.idle.push(idle);
        this.dispatch();
      },
      (dead) => {
        this.threads.delete(dead);
        const at = this.idle.indexOf(dead);
        if (at >= 0) this.idle.splice(at, 1);
        if (!this.closed) this.dispatch();
      },
    );
    this.threads.add(thread);
    return thread;
  }

  /** Fails queued runs and stops every thread. */
  async close(): Promise<void> {
    this.closed = true;
    for (const pending of this.queue.splice(0))
      pending.resolve({ ok: false, error: "the sandbox is shut down" });
    const threads = [...this.threads];
    for (const thread of threads) thread.die("the sandbox is shut down");
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }
}
