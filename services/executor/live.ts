/**
 * Live progress of background runs on core NATS `<ns>.live.<executionId>` (DESIGN §4): fire and
 * forget, so a slow or absent watcher never slows a run; WatchExecution falls back to the stored row.
 */
import { create, fromJson, type JsonValue, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { NatsConnection } from "nats";
import {
  type LiveEvent,
  LiveEventKind,
  LiveEventSchema,
} from "../platform/gen/flowplane/events/v1/run_pb.js";
import type { Logger } from "../platform/log.js";
import type { NatsNames } from "../platform/nats.js";
import { statusFromText } from "./records.js";
import type { ExecutionRow } from "./store.js";

/** A block starting or finishing, as the engine reports it. */
export interface BlockProgress {
  kind: "started" | "finished";
  block: { id: string; name: string; type: string };
  at: Date;
  /** Finished only. */
  span?: { status: string; output?: JsonValue; error?: string };
}

export function finishedEvent(row: ExecutionRow): LiveEvent {
  return create(LiveEventSchema, {
    executionId: row.id,
    kind: LiveEventKind.EXECUTION_FINISHED,
    at: timestampFromDate(row.ended_at ?? new Date()),
    status: statusFromText(row.status),
    output: row.output,
    error: row.error ?? undefined,
  });
}

export class LiveEvents {
  constructor(
    private readonly nc: NatsConnection,
    private readonly names: NatsNames,
    private readonly log: Logger,
  ) {}

  private queued: LiveEvent[] = [];

  /*
   * Events are sent once per turn of the event loop: the NATS client writes to its socket once per
   * microtask checkpoint, so runs in flight each publishing several events from different callbacks
   * cost one write per event. Queued together they cost one write per turn. Order is kept.
   */
  private publish(event: LiveEvent): void {
    if (this.queued.push(event) === 1) setImmediate(() => this.flush());
  }

  private flush(): void {
    for (const event of this.queued.splice(0)) {
      try {
        this.nc.publish(this.names.live(event.executionId), toBinary(LiveEventSchema, event));
      } catch (err) {
        this.log.debug({ err, executionId: event.executionId }, "live event not published");
      }
    }
  }

  /** The engine's block listener for one execution. */
  blockListener(executionId: string): (progress: BlockProgress) => void {
    return (progress) => {
      const event = create(LiveEventSchema, {
        executionId,
        kind: progress.kind === "started" ? LiveEventKind.BLOCK_STARTED : LiveEventKind.BLOCK_FINISHED,
        at: timestampFromDate(progress.at),
        blockId: progress.block.id,
        blockName: progress.block.name,
        blockType: progress.block.type,
      });
      if (progress.span) {
        event.blockStatus = progress.span.status;
        if (progress.span.output !== undefined)
          event.blockOutput = fromJson(ValueSchema, progress.span.output);
        if (progress.span.error !== undefined) event.error = progress.span.error;
      }
      this.publish(event);
    };
  }

  started(row: Pick<ExecutionRow, "id" | "started_at">): void {
    this.publish(
      create(LiveEventSchema, {
        executionId: row.id,
        kind: LiveEventKind.EXECUTION_STARTED,
        at: timestampFromDate(row.started_at),
        status: statusFromText("running"),
      }),
    );
  }

  finished(row: ExecutionRow): void {
    this.publish(finishedEvent(row));
  }
}
