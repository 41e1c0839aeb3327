/**
 * The execution-completed event: built from the stored row, published to JetStream with a stable
 * Nats-Msg-Id, and republished by the outbox sweeper when the first attempt did not get an ack.
 */
import { create, fromJson, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { sql } from "kysely";
import type { JetStreamClient } from "nats";
import {
  type ExecutionCompleted,
  ExecutionCompletedSchema,
  type WorkflowState,
  WorkflowStateSchema,
} from "../platform/gen/flowplane/events/v1/execution_pb.js";
import type { Logger } from "../platform/log.js";
import type { NatsNames } from "../platform/nats.js";
import { withStoredTraceparent } from "../platform/telemetry.js";
import { costFromJson, statusFromText, traceSpansFromJson, triggerFromText } from "./records.js";
import {
  type ExecutionRow,
  type ExecutorDb,
  failAbandonedSyncRuns,
  findUnpublishedExecutions,
  findVersionState,
} from "./store.js";

/** What the completion carries about the workflow besides the execution row. */
export interface CompletedWorkflow {
  name: string;
  description: string;
  /** The folder holding the workflow, when workflows have folders. */
  folderId?: string;
  /** The definition of the version that ran; looked up by publishStoredExecution when absent. */
  state?: WorkflowState;
}

const PUBLISH_TIMEOUT_MS = 5_000;

export function completionEvent(row: ExecutionRow, workflow: CompletedWorkflow): ExecutionCompleted {
  return create(ExecutionCompletedSchema, {
    executionId: row.id,
    tenantId: row.tenant_id,
    workflowId: row.workflow_id,
    workflowVersion: row.workflow_version,
    workflowName: workflow.name,
    workflowDescription: workflow.description,
    conversationId: row.conversation_id,
    status: statusFromText(row.status),
    trigger: triggerFromText(row.trigger),
    startedAt: timestampFromDate(row.started_at),
    endedAt: row.ended_at ? timestampFromDate(row.ended_at) : undefined,
    durationMs: BigInt(row.duration_ms),
    cost: costFromJson(row.cost_detail),
    creditUsage: BigInt(row.credit_usage),
    finalOutput: row.output,
    traceSpans: traceSpansFromJson(row.trace_spans),
    error: row.error ?? undefined,
    path: row.path,
    input: row.input,
    workflowState: workflow.state,
    folderId: workflow.folderId ?? "",
  });
}

/** Publishes on `<ns>.execution.completed.<tenant>` and waits for the stream's ack. */
export async function publishCompletion(
  js: JetStreamClient,
  names: NatsNames,
  event: ExecutionCompleted,
): Promise<void> {
  await js.publish(names.executionCompleted(event.tenantId), toBinary(ExecutionCompletedSchema, event), {
    msgID: `${event.executionId}:completed`,
    timeout: PUBLISH_TIMEOUT_MS,
  });
}

/** Publishes, then records the ack. Failures are logged: the outbox sweeper retries the row. */
export async function publishStoredExecution(
  deps: { db: ExecutorDb; js: JetStreamClient; names: NatsNames; log: Logger },
  row: ExecutionRow,
  workflow: CompletedWorkflow,
): Promise<boolean> {
  try {
    // The logs keep the definition that ran (seed 002's workflowState): it travels in the event.
    const state = workflow.state ?? (await versionState(deps.db, row));
    // Republished by the outbox, it still continues the trace of the request that ran it.
    await withStoredTraceparent(row.traceparent, () =>
      publishCompletion(deps.js, deps.names, completionEvent(row, { ...workflow, state })),
    );
  } catch (err) {
    deps.log.warn({ err, executionId: row.id }, "completion publish failed; the outbox will retry");
    return false;
  }
  markPublishedSoon(deps, row.id);
  return true;
}

/*
 * Recording the acks is deferred and batched: one UPDATE for every completion acknowledged within
 * MARK_DELAY_MS instead of one per execution. The ack already made the completion durable; a mark
 * that is lost (the process dies first) or fails only lets the outbox republish it, which JetStream
 * drops by its msgID and the consumers ignore by execution id. The outbox only looks at rows older
 * than OUTBOX_MIN_AGE_MS, far longer than a mark waits.
 */
const MARK_DELAY_MS = 50;
const MARK_BATCH = 500;

interface PendingMarks {
  ids: string[];
  timer: NodeJS.Timeout | undefined;
  writing: Promise<void>;
}

const pendingMarks = new WeakMap<ExecutorDb, PendingMarks>();

function markPublishedSoon(deps: { db: ExecutorDb; log: Logger }, executionId: string): void {
  let marks = pendingMarks.get(deps.db);
  if (!marks) {
    marks = { ids: [], timer: undefined, writing: Promise.resolve() };
    pendingMarks.set(deps.db, marks);
  }
  marks.ids.push(executionId);
  if (marks.ids.length >= MARK_BATCH) void writeMarks(deps, marks);
  else if (!marks.timer) {
    marks.timer = setTimeout(() => void writeMarks(deps, marks), MARK_DELAY_MS);
    marks.timer.unref();
  }
}

function writeMarks(deps: { db: ExecutorDb; log: Logger }, marks: PendingMarks): Promise<void> {
  clearTimeout(marks.timer);
  marks.timer = undefined;
  const ids = marks.ids.splice(0);
  if (ids.length === 0) return marks.writing;
  const write = async () => {
    try {
      // Asynchronous commit: a mark lost to a database crash is only a harmless republish too.
      await sql`
        update executions set published_at = now()
        from (select set_config('synchronous_commit', 'off', true)) as async_commit
        where id = any(${ids}::text[]) and published_at is null`.execute(deps.db);
    } catch (err) {
      // The outbox republishes them: harmless, as said above.
      deps.log.warn({ err, executions: ids.length }, "could not record completion publishes");
    }
  };
  marks.writing = marks.writing.then(write);
  return marks.writing;
}

/** Writes the publish marks still waiting (the outbox before it looks again, and on shutdown). */
export function flushPublishedMarks(deps: { db: ExecutorDb; log: Logger }): Promise<void> {
  const marks = pendingMarks.get(deps.db);
  return marks ? writeMarks(deps, marks) : Promise.resolve();
}

async function versionState(db: ExecutorDb, row: ExecutionRow): Promise<WorkflowState | undefined> {
  const json = await findVersionState(db, row.tenant_id, row.workflow_id, row.workflow_version);
  return json ? fromJson(WorkflowStateSchema, json, { ignoreUnknownFields: true }) : undefined;
}

// Rows younger than this are probably still being published by the request that wrote them.
const OUTBOX_MIN_AGE_MS = 2_000;
const OUTBOX_BATCH = 100;

/** Periodically republishes executions whose completion was never acknowledged. */
export class OutboxSweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly deps: { db: ExecutorDb; js: JetStreamClient; names: NatsNames; log: Logger },
    private readonly intervalMs: number,
    /** Sync runs still running after this long were abandoned by a stopped process, ms. */
    private readonly abandonedAfterMs?: number,
  ) {}

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.sweeping = this.sweep()
        .then(
          (published) => {
            if (published > 0) this.deps.log.info({ published }, "outbox republished completions");
          },
          (err: unknown) => this.deps.log.warn({ err }, "outbox sweep failed"),
        )
        .finally(() => {
          this.sweeping = undefined;
          this.schedule();
        });
    }, this.intervalMs);
  }

  /** One pass over the unpublished rows; returns how many were published. */
  async sweep(): Promise<number> {
    let published = 0;
    if (this.abandonedAfterMs !== undefined) {
      const failed = await failAbandonedSyncRuns(this.deps.db, new Date(Date.now() - this.abandonedAfterMs));
      if (failed > 0) this.deps.log.warn({ failed }, "ended sync runs abandoned by a stopped executor");
    }
    for (;;) {
      const rows = await findUnpublishedExecutions(
        this.deps.db,
        new Date(Date.now() - OUTBOX_MIN_AGE_MS),
        OUTBOX_BATCH,
      );
      for (const row of rows) {
        if (this.stopped) return published;
        const workflow = {
          name: row.workflow_name,
          description: row.workflow_description,
          folderId: row.workflow_folder_id,
        };
        // NATS is likely unreachable: try again next interval rather than hammering it.
        if (!(await publishStoredExecution(this.deps, row, workflow))) return published;
        published++;
      }
      // Else the next query would find the rows just published again.
      await flushPublishedMarks(this.deps);
      if (rows.length < OUTBOX_BATCH) return published;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.sweeping;
    await flushPublishedMarks(this.deps);
  }
}
