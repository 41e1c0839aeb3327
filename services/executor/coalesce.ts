/**
 * Turns many concurrent single-item calls into batched calls: while a batch is running (or
 * `maxInFlight` of them), new calls wait and go together in the next one (up to `maxBatch`), so
 * batches grow with the load and a lone call on an idle process waits only for the end of the
 * current turn. The background workers use it so that runs in flight share claim and finish
 * statements (one in flight at a time measured 6 runs per statement at 32 runs in flight, against
 * under 3 with two in flight).
 */
export class Coalescer<I, R> {
  private queue: { item: I; resolve: (r: R) => void; reject: (err: unknown) => void }[] = [];
  private scheduled = false;
  private inFlight = 0;

  constructor(
    /** Returns one result per item, in the items' order. */
    private readonly run: (items: I[]) => Promise<R[]>,
    private readonly maxBatch = 256,
    private readonly maxInFlight = 1,
  ) {}

  call(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.inFlight >= this.maxInFlight) return;
    this.scheduled = true;
    // After the I/O callbacks of this turn, so messages that arrived in the same read join.
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.inFlight >= this.maxInFlight) return;
    const batch = this.queue.splice(0, this.maxBatch);
    if (batch.length === 0) return;
    this.inFlight++;
    this.run(batch.map((b) => b.item))
      .then(
        (results) => {
          for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i]!);
        },
        (err: unknown) => {
          for (const b of batch) b.reject(err);
        },
      )
      .finally(() => {
        this.inFlight--;
        this.schedule();
      });
    this.schedule();
  }
}
