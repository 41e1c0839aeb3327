/**
 * Live progress of runs on core NATS `<ns>.live.<executionId>` (DESIGN §4): fire and forget, so a
 * slow or absent watcher never slows a run; WatchExecution falls back to the stored row.
 *
 * The runs this process runs (sync and background) publish only while somebody watches, so an
 * unwatched run sends nothing: a run is tracked here from before its row can be seen running, and
 * becomes watched when (a) the claim of a background run reads the mark a watcher left in the row
 * while it was queued, (b) a watcher that finds the row running announces itself on
 * `<ns>.live.<executionId>.watch` and gets this process's answer before it reads on (see
 * watchExecution), or (c) a streamed sync run's hold finds its watcher with a probe. A watch thus
 * misses no event after it began; executions not tracked here (cancelled while queued) always publish.
 */
import { create, fromJson, type JsonValue, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { ErrorCode, type NatsConnection } from "nats";
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

/** The subject a watcher announces itself on; the run's process answers it. */
export function watchAnnounceSubject(names: NatsNames, executionId: string): string {
  return `${names.live(executionId)}.watch`;
}

/** Bytes no LiveEvent decodes from (field 0): watchers answer it and skip it. */
export const WATCH_PROBE = new Uint8Array([0x07]);
// A watcher that does not answer probes (an older replica) lets the probe time out: watched.
const WATCH_PROBE_TIMEOUT_MS = 50;

export class LiveEvents {
  /** Executions run by this process → whether somebody watches them. */
  private readonly tracked = new Map<string, { watched: boolean }>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly names: NatsNames,
    private readonly log: Logger,
  ) {
    // Ends with the connection's drain when the service stops.
    nc.subscribe(watchAnnounceSubject(names, "*"), {
      callback: (err, msg) => {
        if (err) return;
        const executionId = msg.subject.slice(names.live("").length, -".watch".length);
        const run = this.tracked.get(executionId);
        if (!run) return;
        run.watched = true;
        // Answered only after the flag is set: every later event goes out.
        msg.respond();
      },
    });
  }

  private queued: LiveEvent[] = [];

  /**
   * Tracks a run of this process before its row can be seen running: its events go out only once
   * it is watched. Returns the untrack function, to call after its finished event.
   */
  track(executionId: string): () => void {
    this.tracked.set(executionId, { watched: false });
    return () => this.tracked.delete(executionId);
  }

  /** Marks a tracked run watched (a watcher was seen another way). */
  watched(executionId: string): void {
    const run = this.tracked.get(executionId);
    if (run) run.watched = true;
  }

  /**
   * Asks once whether somebody subscribes to the run's live subject (watchers answer the probe;
   * "no responders" means nobody does) and marks it watched if so.
   */
  async probe(executionId: string): Promise<boolean> {
    const run = this.tracked.get(executionId);
    if (!run || run.watched) return true;
    try {
      await this.nc.request(this.names.live(executionId), WATCH_PROBE, { timeout: WATCH_PROBE_TIMEOUT_MS });
    } catch (err) {
      if ((err as { code?: unknown }).code === ErrorCode.NoResponders) return run.watched;
    }
    run.watched = true;
    return true;
  }

  /*
   * Events are sent once per turn of the event loop: the NATS client writes to its socket once per
   * microtask checkpoint, so runs in flight each publishing several events from different callbacks
   * cost one write per event. Queued together they cost one write per turn. Order is kept.
   */
  private publish(event: LiveEvent): void {
    if (this.tracked.get(event.executionId)?.watched === false) return;
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
      // Not even built when nobody watches.
      if (this.tracked.get(executionId)?.watched === false) return;
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
