/** What the sequencer needs from the stream it reads: stop reading, read again, report a failure. */
export interface StreamFlow {
  pause(): void;
  resume(): void;
  fail(err: Error): void;
}

/**
 * Handles the replication stream's messages one at a time, in stream order, without a promise
 * per message: a handler that can finish at once (nearly every message) does, and one that must
 * wait (a Relation's domain lookup, an incremental snapshot's watermark, a full queue) returns a
 * promise; the messages that arrive meanwhile are held, with the socket paused, until it settles.
 * pg-logical-replication's flow control awaited every message, which cost a tenth of the
 * source's CPU on single-row transactions.
 *
 * After a handler fails nothing more is handled: the changes after a message that was not
 * captured must never be queued, or their transaction's commit would confirm the slot past it
 * and PostgreSQL would never send it again. The failure goes to `flow.fail` (the connector
 * stops; a restart streams from the last confirmed transaction).
 */
export class MessageSequencer<M> {
  private readonly handle: (message: M) => Promise<void> | undefined;
  private readonly flow: StreamFlow;
  private held: (M | undefined)[] = [];
  private head = 0;
  private waiting = false;
  private failed = false;

  constructor(handle: (message: M) => Promise<void> | undefined, flow: StreamFlow) {
    this.handle = handle;
    this.flow = flow;
  }

  /** Messages held while a handler waits (for metrics and tests). */
  get heldCount(): number {
    return this.held.length - this.head;
  }

  push(message: M): void {
    if (this.failed) return;
    if (this.waiting) {
      this.held.push(message);
      return;
    }
    let wait: Promise<void> | undefined;
    try {
      wait = this.handle(message);
    } catch (err) {
      this.stop(err);
      return;
    }
    if (wait) {
      this.waiting = true;
      this.flow.pause();
      void this.release(wait);
    }
  }

  private async release(first: Promise<void>): Promise<void> {
    try {
      await first;
      while (this.head < this.held.length) {
        const message = this.held[this.head] as M;
        this.held[this.head++] = undefined;
        const wait = this.handle(message);
        if (wait) await wait;
      }
    } catch (err) {
      this.stop(err);
      return;
    }
    this.held = [];
    this.head = 0;
    this.waiting = false;
    this.flow.resume();
  }

  private stop(err: unknown): void {
    this.failed = true;
    this.held = [];
    this.head = 0;
    this.flow.pause();
    this.flow.fail(err instanceof Error ? err : new Error(String(err)));
  }
}
