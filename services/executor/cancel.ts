/**
 * Cancelling executions: a queued one ends at once without running; a running one (background or
 * sync) is flagged in its row (seen by a worker that takes it over after a crash) and aborted through
 * the core NATS cancel subject by whichever process runs it. Both end as status error, error
 * "cancelled".
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { NatsConnection, Subscription } from "nats";
import { FailedPreconditionError, NotFoundError } from "../platform/errors.js";
import { RunCancelRequestedSchema } from "../platform/gen/flowplane/events/v1/run_pb.js";
import type { Execution } from "../platform/gen/flowplane/executor/v1/executor_pb.js";
import type { Logger } from "../platform/log.js";
import type { NatsNames } from "../platform/nats.js";
import { publishStoredExecution } from "./completion.js";
import { type ExecutionDeps, workflowInfo } from "./executions.js";
import { executionMessage } from "./records.js";
import {
  cancelQueuedExecution,
  type ExecutionRow,
  findExecution,
  findWorkflow,
  requestCancel,
} from "./store.js";

// How long CancelExecution waits for the worker to stop a running execution before answering.
const RUNNING_CANCEL_WAIT_MS = 5_000;
const POLL_MS = 50;

function isFinal(row: ExecutionRow): boolean {
  return row.status === "success" || row.status === "error";
}

export async function getExecution(
  deps: Pick<ExecutionDeps, "db">,
  tenantId: string,
  executionId: string,
): Promise<Execution> {
  const row = await findExecution(deps.db, tenantId, executionId);
  if (!row) throw new NotFoundError(`execution ${executionId} not found`);
  return executionMessage(row);
}

export async function cancelExecution(
  deps: ExecutionDeps,
  tenantId: string,
  executionId: string,
): Promise<Execution> {
  const cancelled = await cancelQueuedExecution(deps.db, tenantId, executionId, "cancelled");
  if (cancelled) {
    deps.live.finished(cancelled);
    const workflow = await findWorkflow(deps.db, tenantId, cancelled.workflow_id);
    // A failed publish is retried by the outbox sweeper.
    if (workflow) await publishStoredExecution(deps, cancelled, workflowInfo(workflow));
    return executionMessage(cancelled);
  }
  const flagged = await requestCancel(deps.db, tenantId, executionId);
  if (!flagged) {
    const row = await findExecution(deps.db, tenantId, executionId);
    if (!row) throw new NotFoundError(`execution ${executionId} not found`);
    throw new FailedPreconditionError(`execution ${executionId} already finished with status ${row.status}`);
  }
  deps.nc.publish(
    deps.names.runCancel,
    toBinary(RunCancelRequestedSchema, create(RunCancelRequestedSchema, { executionId, tenantId })),
  );
  const deadline = Date.now() + RUNNING_CANCEL_WAIT_MS;
  let row: ExecutionRow | undefined = flagged;
  while (row && !isFinal(row) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    row = await findExecution(deps.db, tenantId, executionId);
  }
  return executionMessage(row ?? flagged);
}

/**
 * The sync runs of this process by execution id, aborted with "cancelled" when a cancel request for
 * one of them arrives on the cancel subject (any replica may have received the CancelExecution).
 */
export class SyncRunAborts {
  private readonly running = new Map<string, AbortController>();
  private readonly subscription: Subscription;

  constructor(nc: NatsConnection, names: NatsNames, log: Logger) {
    this.subscription = nc.subscribe(names.runCancel, {
      callback: (err, msg) => {
        if (err || this.running.size === 0) return;
        try {
          const request = fromBinary(RunCancelRequestedSchema, msg.data);
          this.running.get(request.executionId)?.abort(new Error("cancelled"));
        } catch (decodeErr) {
          log.warn({ err: decodeErr }, "undecodable run cancel request");
        }
      },
    });
  }

  /** The signal of one run; call the returned function when the run is over. */
  register(executionId: string): { signal: AbortSignal; done: () => void } {
    const controller = new AbortController();
    this.running.set(executionId, controller);
    return { signal: controller.signal, done: () => this.running.delete(executionId) };
  }

  stop(): void {
    this.subscription.unsubscribe();
  }
}
