import type { Kysely } from "kysely";
import type { Logger } from "../platform/log.js";
import { type Database, deleteExpiredBatch } from "./store.js";

export interface RetentionOptions {
  retentionDays: number;
  intervalMs: number;
  batchSize: number;
  /** Pause between batches, so a large purge does not starve ingestion and queries. */
  pauseMs: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** Periodically deletes logs that started more than `retentionDays` ago, in batches. */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private stopped = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly log: Logger,
    private readonly opts: RetentionOptions,
  ) {}

  start(): void {
    // Not at once: a fleet restarting together should not all start purging in the same second.
    this.schedule(Math.min(this.opts.intervalMs, 60_000));
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.runOnce(new Date())
        .catch((err: unknown) => {
          this.log.warn({ err }, "log retention pass failed");
          return 0;
        })
        .finally(() => {
          this.running = undefined;
          this.schedule(this.opts.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass; returns how many logs it deleted (0 when another replica holds the lock). */
  async runOnce(now: Date): Promise<number> {
    const cutoff = new Date(now.getTime() - this.opts.retentionDays * DAY_MS);
    let deleted = 0;
    while (!this.stopped) {
      const n = await deleteExpiredBatch(this.db, cutoff, this.opts.batchSize);
      if (n < 0) break;
      deleted += n;
      if (n < this.opts.batchSize) break;
      await new Promise((resolve) => setTimeout(resolve, this.opts.pauseMs));
    }
    if (deleted > 0) this.log.info({ deleted, cutoff }, "deleted expired logs");
    return deleted;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}
