/**
 * Running workflow versions: synchronously (Execute), or queued for the workers (ExecuteBackground);
 * and reading conversations and executions back.
 */
import { create, type JsonObject, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { JetStreamClient, NatsConnection } from "nats";
import { NotFoundError, UnavailableError } from "../platform/errors.js";
import type { Trigger } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import { RunRequestedSchema } from "../platform/gen/flowplane/events/v1/run_pb.js";
import {
  type Conversation,
  ConversationSchema,
  type ExecuteBackgroundResponse,
  ExecuteBackgroundResponseSchema,
  type ExecuteResponse,
  ExecuteResponseSchema,
} from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/log.js";
import type { NatsNames } from "../platform/nats.js";
import { currentTraceparent } from "../platform/telemetry.js";
import type { SyncRunAborts } from "./cancel.js";
import { Coalescer } from "./coalesce.js";
import { type CompletedWorkflow, publishStoredExecution } from "./completion.js";
import { agentHistoryFromSpans } from "./engine/agent.js";
import { costOfSpans } from "./engine/cost.js";
import type { CompiledWorkflow } from "./engine/definition.js";
import {
  checkWorkflowInput,
  type EngineDependencies,
  type EngineSettings,
  runWorkflow,
  type WorkflowRunResult,
} from "./engine/run.js";
import type { FunctionSandbox } from "./engine/sandbox.js";
import { costMessage, traceSpanMessage } from "./engine/trace.js";
import type { LiveEvents } from "./live.js";
import type { AuthClient } from "./quota.js";
import { costJson, executionMessage, statusFromText, traceSpansJson, triggerText } from "./records.js";
import {
  deleteQueuedExecution,
  type ExecutionResult,
  type ExecutionRow,
  type ExecutorDb,
  findConversation,
  findExecution,
  findWorkflow,
  finishExecution,
  finishExecutions,
  insertExecution,
  insertExecutionsAsync,
  listConversationExecutions,
  type NewExecution,
  type NewExecutionRow,
  type WorkflowRow,
} from "./store.js";
import type { CompiledVersions } from "./versions.js";

export interface ExecutionDeps {
  db: ExecutorDb;
  nc: NatsConnection;
  js: JetStreamClient;
  names: NatsNames;
  log: Logger;
  sandbox: FunctionSandbox;
  versions: CompiledVersions;
  /** Price of one execution, USD. */
  basePriceUsd: number;
  /** A run still going after this long is aborted and ends with an error, ms. */
  runTimeoutMs: number;
  live: LiveEvents;
  /** Aborts of this process's sync runs, for CancelExecution. */
  syncRuns: SyncRunAborts;
  /** The auth service: execution buckets and credits of hook and schedule runs. */
  auth: AuthClient;
  /** Block settings (api, agent, wait, loop, parallel, workflow); the engine's defaults when absent. */
  engine?: EngineSettings;
}

export interface ExecuteCommand {
  tenantId: string;
  workflowId: string;
  /** 0 = latest published. */
  version: number;
  input: JsonObject;
  /** Empty starts a new conversation. */
  conversationId: string;
  trigger: Trigger;
}

const MICRO_USD_PER_USD = 1_000_000;
const MICRO_USD_PER_CREDIT = 1_000; // 1 credit = USD 0.001

/** Cost rounded to whole micro-dollars, and the credits it takes (rounded up), in integer arithmetic. */
export function priceExecution(costUsd: number): { costUsd: number; credits: number } {
  const micro = Math.round(costUsd * MICRO_USD_PER_USD);
  return {
    costUsd: micro / MICRO_USD_PER_USD,
    credits: Math.floor((micro + MICRO_USD_PER_CREDIT - 1) / MICRO_USD_PER_CREDIT),
  };
}

/** An execution that passed every check and can run. */
export interface PreparedExecution {
  workflow: WorkflowRow;
  version: number;
  compiled: CompiledWorkflow;
  conversationId: string;
  /** Set when the execution starts a conversation; stored with the execution. */
  newConversation?: { id: string; createdAt: Date };
  validatedInput: JsonObject;
}

export function workflowInfo(workflow: WorkflowRow): CompletedWorkflow {
  return { name: workflow.name, description: workflow.description, folderId: workflow.folder_id };
}

/** Every check an execution request gets before anything runs or is stored (NotFound, InvalidArgument). */
export async function prepareExecution(deps: ExecutionDeps, cmd: ExecuteCommand): Promise<PreparedExecution> {
  const workflow = await deps.versions.workflow(deps.db, cmd.tenantId, cmd.workflowId, cmd.version);
  if (!workflow) throw new NotFoundError(`workflow ${cmd.workflowId} not found`);
  const version = cmd.version === 0 ? workflow.latest_version : cmd.version;
  if (version === 0) throw new NotFoundError(`workflow ${cmd.workflowId} has no published version`);
  const compiled = await deps.versions.load(deps.db, cmd.tenantId, cmd.workflowId, version);
  if (!compiled) throw new NotFoundError(`version ${version} of workflow ${cmd.workflowId} not found`);

  let newConversation: { id: string; createdAt: Date } | undefined;
  let conversationId = cmd.conversationId;
  if (conversationId !== "") {
    const conversation = await findConversation(deps.db, cmd.tenantId, conversationId);
    if (!conversation || conversation.workflow_id !== cmd.workflowId) {
      throw new NotFoundError(`conversation ${conversationId} not found`);
    }
  } else {
    newConversation = { id: newId("conv"), createdAt: new Date() };
    conversationId = newConversation.id;
  }
  const validatedInput = checkWorkflowInput(compiled, cmd.input);
  return { workflow, version, compiled, conversationId, newConversation, validatedInput };
}

export interface RunControl {
  /** Aborts the run: "cancelled" for a cancellation. */
  signal?: AbortSignal;
  executionId: string;
  /** Publish block events on `<ns>.live.<executionId>`, for WatchExecution. */
  live: boolean;
}

// After an abort, how long the engine may take to wind down before its result is given up on.
const ABORT_GRACE_MS = 2_000;

/**
 * Runs a prepared execution under the run timeout and `control.signal`; an aborted run ends with
 * status error and the abort's reason as its error ("cancelled", "run timed out after … ms").
 */
export async function runPrepared(
  deps: ExecutionDeps,
  prepared: PreparedExecution,
  rawInput: JsonObject,
  control: RunControl,
): Promise<ExecutionResult & { started_at: Date }> {
  const controller = new AbortController();
  const timeout = setTimeout(
    () => controller.abort(new Error(`run timed out after ${deps.runTimeoutMs} ms`)),
    deps.runTimeoutMs,
  );
  const onOuterAbort = () => controller.abort(control.signal?.reason ?? new Error("cancelled"));
  if (control.signal?.aborted) onOuterAbort();
  control.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const signal = controller.signal;

  const tenantId = prepared.workflow.tenant_id;
  // Agent blocks continue the conversation: earlier executions' agent turns are their history.
  const history = prepared.newConversation
    ? new Map()
    : agentHistoryFromSpans(
        (await listConversationExecutions(deps.db, tenantId, prepared.conversationId))
          .filter((row) => row.id !== control.executionId)
          .map((row) => row.trace_spans),
      );
  const engineContext: EngineDependencies = {
    sandbox: deps.sandbox,
    signal,
    onBlockEvent: control.live ? deps.live.blockListener(control.executionId) : undefined,
    settings: deps.engine,
    history,
    loadWorkflow: async (workflowId, version) => {
      let wanted = version;
      if (wanted === 0) wanted = (await findWorkflow(deps.db, tenantId, workflowId))?.latest_version ?? 0;
      return wanted === 0 ? undefined : deps.versions.load(deps.db, tenantId, workflowId, wanted);
    },
  };
  const startedAt = new Date();
  let result: WorkflowRunResult;
  try {
    result = await untilAbortedPlusGrace(
      runWorkflow(prepared.compiled, rawInput, prepared.validatedInput, engineContext),
      signal,
    );
  } finally {
    clearTimeout(timeout);
    control.signal?.removeEventListener("abort", onOuterAbort);
  }
  if (signal.aborted) {
    result = { ...result, status: "error", error: abortReason(signal) };
  }
  const endedAt = new Date();
  const cost = costOfSpans(result.spans, deps.basePriceUsd);
  const { costUsd, credits } = priceExecution(cost.total);
  return {
    status: result.status,
    output: JSON.stringify(result.output),
    path: result.path,
    error: result.error ?? null,
    trace_spans: JSON.stringify(traceSpansJson(result.spans.map(traceSpanMessage))),
    cost: costUsd,
    cost_detail: JSON.stringify(costJson(costMessage({ ...cost, total: costUsd }))),
    credit_usage: credits,
    started_at: startedAt,
    ended_at: endedAt,
    duration_ms: endedAt.getTime() - startedAt.getTime(),
  };
}

function abortReason(signal: AbortSignal): string {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason.message : typeof reason === "string" ? reason : "cancelled";
}

/** The engine's result, or an empty error result when it does not wind down soon after an abort. */
function untilAbortedPlusGrace(
  run: Promise<WorkflowRunResult>,
  signal: AbortSignal,
): Promise<WorkflowRunResult> {
  return new Promise((resolve, reject) => {
    let grace: NodeJS.Timeout | undefined;
    const onAbort = () => {
      grace = setTimeout(
        () =>
          resolve({
            status: "error",
            output: {},
            path: [],
            spans: [],
            error: abortReason(signal),
            cancelled: true,
          }),
        ABORT_GRACE_MS,
      );
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    run.then(resolve, reject).finally(() => {
      clearTimeout(grace);
      signal.removeEventListener("abort", onAbort);
    });
  });
}

/** Stored rows hold JSON columns as strings on the way in and parsed on the way out. */
function storedRow(row: NewExecutionRow & ExecutionResult): ExecutionRow {
  return {
    ...row,
    output: JSON.parse(row.output as string),
    trace_spans: JSON.parse(row.trace_spans as string),
    cost_detail: JSON.parse(row.cost_detail as string),
    input: JSON.parse(row.input as string),
    error: row.error ?? null,
    warnings: row.warnings ?? [],
    ended_at: row.ended_at ?? null,
    published_at: null,
    attempts: row.attempts ?? 0,
    cancel_requested: row.cancel_requested ?? false,
  } as ExecutionRow;
}

/**
 * The statements of concurrent sync runs, shared like the background workers' (see RunWorkers):
 * the `running` rows that arrive while one insert runs go together in the next, and so do the
 * results (one synchronous commit for the batch, before any of its callers is answered). A batch
 * that fails is retried one row at a time, so a bad row fails only its own run.
 */
interface SyncStatements {
  insert(item: NewExecution): Promise<void>;
  finish(item: FinishItem): Promise<ExecutionRow | undefined>;
}

type FinishItem = Parameters<typeof finishExecutions>[1][number];

const syncStatementsByDb = new WeakMap<ExecutorDb, SyncStatements>();

function syncStatements(db: ExecutorDb): SyncStatements {
  let statements = syncStatementsByDb.get(db);
  if (statements) return statements;
  const inserts = new Coalescer<NewExecution, unknown>((items) =>
    eachOnFailure(items, async (batch) => {
      await insertExecutionsAsync(db, batch);
      return batch.map(() => undefined);
    }),
  );
  const finishes = new Coalescer<FinishItem, unknown>((items) =>
    eachOnFailure(items, (batch) => finishExecutions(db, batch)),
  );
  statements = {
    async insert(item) {
      const outcome = await inserts.call(item);
      if (outcome instanceof Failure) throw outcome.err;
    },
    async finish(item) {
      const outcome = await finishes.call(item);
      if (outcome instanceof Failure) throw outcome.err;
      return outcome as ExecutionRow | undefined;
    },
  };
  syncStatementsByDb.set(db, statements);
  return statements;
}

class Failure {
  constructor(readonly err: unknown) {}
}

/** `run` on the whole batch; when that fails, on each item alone (a Failure for those that fail). */
async function eachOnFailure<I, R>(items: I[], run: (batch: I[]) => Promise<R[]>): Promise<(R | Failure)[]> {
  try {
    return await run(items);
  } catch (err) {
    if (items.length === 1) return [new Failure(err)];
    return Promise.all(
      items.map((item) =>
        run([item]).then(
          (r) => r[0]!,
          (e: unknown) => new Failure(e),
        ),
      ),
    );
  }
}

/** How long Execute waits before answering (ExecuteRequest.max_wait_ms, start_when_watched_ms). */
export interface SyncWait {
  /** Answer with status running after this long; undefined waits for the end. */
  maxWaitMs?: number;
  /** Hold the run's start until a WatchExecution listens, up to this long; 0 starts at once. */
  startWhenWatchedMs: number;
}

// Sync runs that outlived their caller's wait, per service instance, so stop() lets them finish.
const detachedRuns = new WeakMap<object, Set<Promise<unknown>>>();

/** Resolves once every sync run answered early (max_wait_ms) by this service instance has ended. */
export async function detachedSyncRunsSettled(deps: Pick<ExecutionDeps, "syncRuns">): Promise<void> {
  await Promise.allSettled([...(detachedRuns.get(deps.syncRuns) ?? [])]);
}

function trackDetached(
  deps: ExecutionDeps,
  run: Promise<unknown>,
  executionId: string,
  answeredEarly: () => boolean,
): void {
  const runs = detachedRuns.get(deps.syncRuns) ?? new Set<Promise<unknown>>();
  detachedRuns.set(deps.syncRuns, runs);
  const tracked = run.catch((err: unknown) => {
    // The row was ended as an error by runSync; once answered early, nobody else hears of it.
    if (answeredEarly()) deps.log.error({ err, executionId }, "detached sync run failed");
  });
  runs.add(tracked);
  void tracked.finally(() => runs.delete(tracked));
}

const WATCH_PROBE_RETRY_MS = 10;

/**
 * Resolves once somebody subscribes to the execution's live subject (WatchExecution subscribes
 * before reading the row, and answers the probe; see LiveEvents.probe), or after `holdMs`.
 */
async function untilWatched(
  deps: ExecutionDeps,
  executionId: string,
  holdMs: number,
  signal: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + holdMs;
  while (Date.now() < deadline && !signal.aborted) {
    if (await deps.live.probe(executionId)) return;
    await new Promise((resolve) => setTimeout(resolve, WATCH_PROBE_RETRY_MS));
  }
}

/**
 * Runs the workflow and answers once the execution is stored; its completion is published before
 * answering when JetStream acks in time, otherwise the outbox sweeper publishes it later. The row is
 * written as `running` when the run starts (so WatchExecution and CancelExecution find it, and live
 * block events are published as for background runs) and finished by one update at the end.
 *
 * With `wait.maxWaitMs` the answer comes after at most that long: a run still going answers status
 * running and goes on, detached from the call (the RPC's signal never reached the run), ending
 * exactly as it would have with the caller waiting.
 */
export async function executeWorkflow(
  deps: ExecutionDeps,
  cmd: ExecuteCommand,
  wait: SyncWait = { startWhenWatchedMs: 0 },
  /** Told the execution's id once its row is stored, before it runs (idempotency keys). */
  bind?: (executionId: string) => Promise<void>,
): Promise<ExecuteResponse> {
  const prepared = await prepareExecution(deps, cmd);
  const executionId = newId("exec");
  const runningRow: NewExecutionRow = {
    ...queuedExecutionRow(prepared, cmd, executionId),
    status: "running",
  };
  // Tracked before the row can be seen running: a watcher that reads it announces itself to us.
  const untrack = deps.live.track(executionId);
  try {
    // Asynchronous commit: a crash loses the run anyway, and the caller has been answered nothing.
    await syncStatements(deps.db).insert({
      row: { ...runningRow, traceparent: currentTraceparent() ?? null },
      newConversation: prepared.newConversation,
    });
    await bind?.(executionId);
  } catch (err) {
    untrack();
    throw err;
  }
  deps.live.started({ id: executionId, started_at: runningRow.started_at as Date });
  const run = runSync(deps, cmd, prepared, runningRow, wait.startWhenWatchedMs);
  void run.then(untrack, untrack);
  if (wait.maxWaitMs === undefined) return run;

  let answeredEarly = false;
  trackDetached(deps, run, executionId, () => answeredEarly);
  let timer: NodeJS.Timeout | undefined;
  const ceiling = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), wait.maxWaitMs);
  });
  try {
    const finished = await Promise.race([run, ceiling]);
    if (finished) return finished;
  } finally {
    clearTimeout(timer);
  }
  answeredEarly = true;
  return create(ExecuteResponseSchema, {
    conversationId: prepared.conversationId,
    executionId,
    output: {},
    creditUsage: 0n,
    status: statusFromText("running"),
  });
}

/**
 * The answer of a finished sync execution, read back (an idempotency key whose first answer was
 * lost); undefined while it has not finished.
 */
export async function finishedExecuteResponse(
  deps: Pick<ExecutionDeps, "db">,
  tenantId: string,
  executionId: string,
): Promise<ExecuteResponse | undefined> {
  const row = await findExecution(deps.db, tenantId, executionId);
  if (!row || (row.status !== "success" && row.status !== "error")) return undefined;
  return create(ExecuteResponseSchema, {
    conversationId: row.conversation_id,
    executionId: row.id,
    output: row.output,
    creditUsage: BigInt(row.credit_usage),
    status: statusFromText(row.status),
    error: row.error ?? undefined,
  });
}

/** The run of a stored `running` sync execution, to its stored, published end. */
async function runSync(
  deps: ExecutionDeps,
  cmd: ExecuteCommand,
  prepared: PreparedExecution,
  runningRow: NewExecutionRow,
  startWhenWatchedMs: number,
): Promise<ExecuteResponse> {
  const executionId = runningRow.id;
  const abort = deps.syncRuns.register(executionId);
  let result: ExecutionResult & { started_at: Date };
  try {
    if (startWhenWatchedMs > 0) await untilWatched(deps, executionId, startWhenWatchedMs, abort.signal);
    result = await runPrepared(deps, prepared, cmd.input, { executionId, signal: abort.signal, live: true });
  } catch (err) {
    // Not left running: the row ends as an error (published by the outbox sweeper).
    const endedAt = new Date();
    await finishExecution(deps.db, cmd.tenantId, executionId, {
      ...runningRow,
      status: "error",
      error: "internal error",
      ended_at: endedAt,
      duration_ms: endedAt.getTime() - (runningRow.started_at as Date).getTime(),
    }).catch((finishErr: unknown) => deps.log.warn({ err: finishErr, executionId }, "run not finished"));
    throw err;
  } finally {
    abort.done();
  }
  const stored =
    (await syncStatements(deps.db).finish({ tenantId: cmd.tenantId, executionId, result })) ??
    storedRow({ ...runningRow, ...result });
  deps.live.finished(stored);
  await publishStoredExecution(deps, stored, {
    ...workflowInfo(prepared.workflow),
    state: deps.versions.cachedState(cmd.tenantId, cmd.workflowId, prepared.version),
  });

  return create(ExecuteResponseSchema, {
    conversationId: prepared.conversationId,
    executionId,
    output: stored.output,
    creditUsage: BigInt(stored.credit_usage),
    status: statusFromText(stored.status),
    error: stored.error ?? undefined,
  });
}

/** The row of an execution that waits in the queue: nothing ran, nothing is charged yet. */
export function queuedExecutionRow(
  prepared: PreparedExecution,
  cmd: ExecuteCommand,
  id: string,
): NewExecutionRow {
  return {
    id,
    tenant_id: cmd.tenantId,
    workflow_id: cmd.workflowId,
    workflow_version: prepared.version,
    conversation_id: prepared.conversationId,
    status: "queued",
    trigger: triggerText(cmd.trigger),
    input: JSON.stringify(cmd.input),
    output: "{}",
    path: [],
    error: null,
    warnings: [],
    trace_spans: "[]",
    cost: 0,
    cost_detail: "{}",
    credit_usage: 0,
    started_at: new Date(),
    ended_at: null,
    duration_ms: 0,
    published_at: null,
  };
}

/** Hands a committed queued execution to the workers; de-duplicated by execution id. */
export async function publishRunRequest(
  deps: Pick<ExecutionDeps, "js" | "names">,
  tenantId: string,
  executionId: string,
  newConversation: boolean,
): Promise<void> {
  const request = create(RunRequestedSchema, { executionId, tenantId, newConversation });
  await deps.js.publish(deps.names.runRequest, toBinary(RunRequestedSchema, request), {
    msgID: executionId,
    timeout: 5_000,
  });
}

/** Stores a queued execution and queues it; answers at once with nothing charged. */
export async function executeInBackground(
  deps: ExecutionDeps,
  cmd: ExecuteCommand,
): Promise<ExecuteBackgroundResponse> {
  const prepared = await prepareExecution(deps, cmd);
  const row = queuedExecutionRow(prepared, cmd, newId("exec"));
  await insertExecution(deps.db, row, prepared.newConversation);
  try {
    await publishRunRequest(deps, cmd.tenantId, row.id, prepared.newConversation !== undefined);
  } catch (err) {
    deps.log.warn({ err, executionId: row.id }, "run request not queued; execution withdrawn");
    await deleteQueuedExecution(deps.db, cmd.tenantId, row.id, prepared.newConversation?.id);
    throw new UnavailableError("the run queue is unavailable; try again");
  }
  return create(ExecuteBackgroundResponseSchema, {
    conversationId: prepared.conversationId,
    executionId: row.id,
    creditUsage: 0n,
    status: statusFromText("queued"),
  });
}

/** The conversation with its executions, oldest first; NotFound unless it is the tenant's and the workflow's. */
export async function getConversation(
  db: ExecutorDb,
  req: { tenantId: string; workflowId: string; conversationId: string },
): Promise<Conversation> {
  const conversation = await findConversation(db, req.tenantId, req.conversationId);
  if (!conversation || conversation.workflow_id !== req.workflowId) {
    throw new NotFoundError(`conversation ${req.conversationId} not found`);
  }
  const executions = await listConversationExecutions(db, req.tenantId, conversation.id);
  return create(ConversationSchema, {
    id: conversation.id,
    workflowId: conversation.workflow_id,
    createdAt: timestampFromDate(conversation.created_at),
    executions: executions.map(executionMessage),
  });
}
