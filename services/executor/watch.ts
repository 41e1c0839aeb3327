/**
 * WatchExecution: the live events of one execution, ending with its final state. Events come from
 * core NATS; the stored row covers what core NATS cannot promise (an execution that finished before
 * the watch began, or a final event that was lost).
 */
import { create, fromBinary } from "@bufbuild/protobuf";
import { NotFoundError } from "../platform/errors.js";
import { ExecutionStatus } from "../platform/gen/flowplane/events/v1/execution_pb.js";
import {
  type LiveEvent,
  LiveEventKind,
  LiveEventSchema,
} from "../platform/gen/flowplane/events/v1/run_pb.js";
import type { ExecutionDeps } from "./executions.js";
import { finishedEvent, watchAnnounceSubject } from "./live.js";
import { findExecution, markWatched } from "./store.js";

// How often a watch re-reads the row in case the final live event was lost.
const ROW_CHECK_MS = 2_000;
// How long a watch of a running execution waits for the answer of the process running it.
const ANNOUNCE_TIMEOUT_MS = 500;

export async function* watchExecution(
  deps: Pick<ExecutionDeps, "db" | "nc" | "names">,
  tenantId: string,
  executionId: string,
  signal: AbortSignal,
): AsyncGenerator<LiveEvent> {
  const initial = await findExecution(deps.db, tenantId, executionId);
  if (!initial) throw new NotFoundError(`execution ${executionId} not found`);

  const pending: LiveEvent[] = [];
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  const subscription = deps.nc.subscribe(deps.names.live(executionId), {
    callback: (err, msg) => {
      if (err) return;
      // The run's probe (see LiveEvents.probe): answering it is what makes the run publish.
      if (msg.reply) {
        msg.respond();
        return;
      }
      try {
        pending.push(fromBinary(LiveEventSchema, msg.data));
        notify();
      } catch {
        // An undecodable event is skipped; the row check still ends the watch.
      }
    },
  });
  signal.addEventListener("abort", notify, { once: true });
  try {
    // After subscribing: a state reached before the subscription is in the row. Not finished, the
    // run learns of the watcher from the row when a worker claims it later, or (running) from its
    // process's answer to the announcement, after which every event goes out.
    const status = await markWatched(deps.db, tenantId, executionId);
    const current = status === undefined ? await findExecution(deps.db, tenantId, executionId) : undefined;
    if (current && (current.status === "success" || current.status === "error")) {
      yield finishedEvent(current);
      return;
    }
    if (status === "running") {
      // No answer: the run just ended (or its process is gone), which the row tells.
      const heard = await deps.nc
        .request(watchAnnounceSubject(deps.names, executionId), undefined, { timeout: ANNOUNCE_TIMEOUT_MS })
        .then(
          () => true,
          () => false,
        );
      if (!heard) {
        const row = await findExecution(deps.db, tenantId, executionId);
        if (row && (row.status === "success" || row.status === "error")) {
          yield finishedEvent(row);
          return;
        }
      }
      yield create(LiveEventSchema, {
        executionId,
        kind: LiveEventKind.EXECUTION_STARTED,
        status: ExecutionStatus.RUNNING,
      });
    }
    let lastRowCheck = Date.now();
    while (!signal.aborted) {
      const event = pending.shift();
      if (event) {
        yield event;
        if (event.kind === LiveEventKind.EXECUTION_FINISHED) return;
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, ROW_CHECK_MS).unref();
      });
      if (pending.length === 0 && Date.now() - lastRowCheck >= ROW_CHECK_MS) {
        lastRowCheck = Date.now();
        const row = await findExecution(deps.db, tenantId, executionId);
        if (row && (row.status === "success" || row.status === "error")) {
          // Block events are published before the row is finished and may still be on their way:
          // a round trip to the server delivers this process's first, and they go out before the end.
          await deps.nc.flush().catch(() => {});
          for (let next = pending.shift(); next; next = pending.shift()) {
            yield next;
            if (next.kind === LiveEventKind.EXECUTION_FINISHED) return;
          }
          yield finishedEvent(row);
          return;
        }
      }
    }
  } finally {
    subscription.unsubscribe();
    signal.removeEventListener("abort", notify);
  }
}
