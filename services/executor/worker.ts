/**
 * Background run workers (DESIGN §3): pull run requests from the work-queue stream, run them, store
 * and publish the result, and only then ack. A worker that dies mid-run stops heart-beating, so its
 * request is redelivered after the ack wait and another worker runs the execution again; an
 * execution that already finished is never run twice.
 */
import { fromBinary } from "@bufbuild/protobuf";
import {
  type JetStreamManager,
  type JsMsg,
  nanos,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  type Subscription,
} from "nats";
import { type DurableConsumer, decodeEvent, startDurableConsumer } from "../platform/consumer.js";
import { RunCancelRequestedSchema, RunRequestedSchema } from "../platform/gen/flowplane/events/v1/run_pb.js";
import type { NatsNames } from "../platform/nats.js";
import { Coalescer } from "./coalesce.js";
import { publishStoredExecution } from "./completion.js";
import { checkWorkflowInput } from "./engine/run.js";
import { type ExecutionDeps, type PreparedExecution, runPrepared, workflowInfo } from "./executions.js";
import {
  type ClaimedExecution,
  claimExecutions,
  type ExecutionResult,
  type ExecutionRow,
  findExecution,
  findWorkflow,
  finishExecutions,
  type WorkflowRow,
} from "./store.js";

export const RUN_WORKERS_DURABLE = "executor-workers";

/** The work-queue stream of run requests; each request is removed once a worker acks it. */
export function runsStreamConfig(names: NatsNames): Partial<StreamConfig> & { name: string } {
  return {
    name: names.runsStream,
    subjects: [names.runRequest],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(2 * 60 * 1000),
  };
}

// A run request delivered this many times is given up on: something in it kills workers.
const MAX_ATTEMPTS = 5;

export interface RunWorkersOptions {
  /** Runs one process works on at once; 0 runs none (an API-only replica). */
  concurrency: number;
  /** How long a request may go without an ack or heartbeat before it is redelivered, ms. */
  ackWaitMs: number;
  jsm: JetStreamManager;
}

/** The abort reason of runs interrupted because this process stops: they are handed back, not failed. */
class HandedBack extends Error {}

export class RunWorkers {
  private consumers: DurableConsumer[] = [];
  private cancelSubscription: Subscription | undefined;
  /** Execution id → the abort of its run in this process. */
  private readonly running = new Map<string, AbortController>();
  // Runs in flight share claim and finish statements (one round trip per batch, not per run).
  private readonly claims: Coalescer<{ tenantId: string; executionId: string }, ClaimedExecution | undefined>;
  private readonly finishes: Coalescer<
    { tenantId: string; executionId: string; result: ExecutionResult },
    ExecutionRow | undefined
  >;

  constructor(
    private readonly deps: ExecutionDeps,
    private readonly opts: RunWorkersOptions,
  ) {
    this.claims = new Coalescer((keys) => claimExecutions(deps.db, keys));
    this.finishes = new Coalescer((items) => finishExecutions(deps.db, items));
  }

  private finish(row: ExecutionRow, result: ExecutionResult): Promise<ExecutionRow | undefined> {
    return this.finishes.call({ tenantId: row.tenant_id, executionId: row.id, result });
  }

  async start(): Promise<void> {
    const { deps } = this;
    this.cancelSubscription = deps.nc.subscribe(deps.names.runCancel, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const request = fromBinary(RunCancelRequestedSchema, msg.data);
          this.running.get(request.executionId)?.abort(new Error("cancelled"));
        } catch (decodeErr) {
          deps.log.warn({ err: decodeErr }, "undecodable run cancel request");
        }
      },
    });
    // Each loop holds one request at a time, so no request waits unheard-of in a client buffer
    // while its ack wait runs out.
    for (let i = 0; i < this.opts.concurrency; i++) {
      this.consumers.push(
        await startDurableConsumer({
          js: deps.js,
          jsm: this.opts.jsm,
          log: deps.log,
          stream: runsStreamConfig(deps.names),
          durable: RUN_WORKERS_DURABLE,
          consumerConfig: {
            ack_wait: nanos(this.opts.ackWaitMs),
            max_ack_pending: -1,
            filter_subject: deps.names.runRequest,
          },
          maxMessages: 1,
          handle: (m) => this.handle(m),
        }),
      );
    }
  }

  /** Processes one run request; returning acks it. */
  async handle(m: JsMsg): Promise<void> {
    const { deps } = this;
    const request = decodeEvent(RunRequestedSchema, m);
    // A redelivery of a run this process is still running: retry later rather than run it twice.
    if (this.running.has(request.executionId)) {
      throw new Error(`execution ${request.executionId} is already running in this process`);
    }
    const controller = new AbortController();
    // Registered before the claim, so a cancel arriving right after it commits finds the run, and
    // so does a watcher that reads the row running.
    this.running.set(request.executionId, controller);
    const untrack = deps.live.track(request.executionId);
    const heartbeat = setInterval(() => m.working(), Math.max(100, Math.floor(this.opts.ackWaitMs / 3)));
    try {
      const claimed = await this.claims.call({
        tenantId: request.tenantId,
        executionId: request.executionId,
      });
      if (!claimed) {
        await this.publishIfFinished(request.tenantId, request.executionId);
        return;
      }
      const outcome = await this.run(claimed, controller.signal, request.newConversation);
      if (controller.signal.reason instanceof HandedBack) throw controller.signal.reason;
      const finished = outcome?.row;
      if (!finished) return;
      deps.live.finished(finished);
      const workflow =
        outcome.workflow ?? (await findWorkflow(deps.db, finished.tenant_id, finished.workflow_id));
      if (!workflow) return;
      // Not acked until the completion is out: a redelivery publishes it again.
      const info = {
        ...workflowInfo(workflow),
        state: deps.versions.cachedState(finished.tenant_id, finished.workflow_id, finished.workflow_version),
      };
      if (!(await publishStoredExecution(deps, finished, info))) {
        throw new Error(`completion of ${finished.id} not published`);
      }
    } finally {
      clearInterval(heartbeat);
      this.running.delete(request.executionId);
      untrack();
    }
  }

  /** Runs a claimed execution and stores the result; undefined when something else finished it. */
  private async run(
    { row, workflow }: ClaimedExecution,
    signal: AbortSignal,
    newConversation: boolean,
  ): Promise<{ row: ExecutionRow | undefined; workflow?: WorkflowRow } | undefined> {
    const { deps } = this;
    const fail = async (error: string) => ({ row: await this.finish(row, errorResult(row, error)) });
    if (row.cancel_requested) return fail("cancelled");
    if (row.attempts > MAX_ATTEMPTS) {
      return fail(`run abandoned after ${MAX_ATTEMPTS} attempts: every worker running it stopped`);
    }
    const compiled = workflow
      ? await deps.versions.load(deps.db, row.tenant_id, row.workflow_id, row.workflow_version)
      : undefined;
    if (!workflow || !compiled)
      return fail(`version ${row.workflow_version} of workflow ${row.workflow_id} not found`);
    let prepared: PreparedExecution;
    try {
      prepared = {
        workflow,
        version: row.workflow_version,
        compiled,
        conversationId: row.conversation_id,
        // Only tells the run there are no earlier turns; the conversation row exists already.
        newConversation: newConversation ? { id: row.conversation_id, createdAt: row.started_at } : undefined,
        validatedInput: checkWorkflowInput(compiled, row.input),
      };
    } catch (err) {
      return fail((err as Error).message);
    }
    // A watcher that found the run not yet claimed left word in the row.
    if (row.watched) deps.live.watched(row.id);
    deps.live.started(row);
    const result = await runPrepared(deps, prepared, row.input, { executionId: row.id, signal, live: true });
    // Left running: the redelivered request runs it again elsewhere.
    if (signal.reason instanceof HandedBack) return undefined;
    return { row: await this.finish(row, result), workflow };
  }

  /** A redelivered request of a finished execution: make sure its completion went out. */
  private async publishIfFinished(tenantId: string, executionId: string): Promise<void> {
    const row = await findExecution(this.deps.db, tenantId, executionId);
    if (!row || row.published_at !== null || (row.status !== "success" && row.status !== "error")) return;
    const workflow = await findWorkflow(this.deps.db, tenantId, row.workflow_id);
    if (!workflow) return;
    if (!(await publishStoredExecution(this.deps, row, workflowInfo(workflow)))) {
      throw new Error(`completion of ${executionId} not published`);
    }
  }

  async stop(): Promise<void> {
    this.cancelSubscription?.unsubscribe();
    // Runs in flight are interrupted and their requests naked, so another worker takes them now
    // rather than after a long run or the ack wait.
    for (const controller of this.running.values()) controller.abort(new HandedBack("worker stopping"));
    await Promise.all(this.consumers.map((c) => c.stop()));
    this.consumers = [];
  }
}

function errorResult(row: ExecutionRow, error: string): ExecutionResult {
  const endedAt = new Date();
  return {
    status: "error",
    output: "{}",
    path: [],
    error,
    trace_spans: "[]",
    cost: 0,
    cost_detail: "{}",
    credit_usage: 0,
    ended_at: endedAt,
    duration_ms: endedAt.getTime() - row.started_at.getTime(),
  };
}
