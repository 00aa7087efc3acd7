import type { EachBatchPayload } from 'kafkajs';
import type { CrmWrite } from '../crm/crm-adapter.ts';
import type { Logger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import type { DeadLetter } from './dead-letter.ts';

/**
 * A long batch commits what is done every this often (kafkajs' autoCommitInterval is set to
 * the same, so commitOffsetsIfNecessary() commits then).
 */
export const CHECKPOINT_MS = 2_000;

/** What the tracker needs of a kafkajs batch. */
export type Trackable = Pick<EachBatchPayload, 'batch' | 'resolveOffset' | 'commitOffsetsIfNecessary'>;

/** A write the CRM accepted, for the written-hash store (`full`: it carried every mapped field). */
export interface Written {
  write: CrmWrite;
  full: boolean;
}

export interface OffsetTrackerDeps {
  /** Makes the hashes of accepted writes durable (written-hashes.ts); absent without no-op skip. */
  rememberHashes?: ((written: Written[]) => Promise<void>) | undefined;
  /** Sends dead letters to the dead-letter topic; throws when they were not all accepted. */
  sendDeadLetters: (letters: DeadLetter[]) => Promise<void>;
  /** Partitions whose offset does not move, shared by all batches. */
  stalls: StallWatch;
  log: Logger;
  now?: () => number;
}

/**
 * The guarantee of the sink, for one fetched batch: an offset is committed only after the CRM
 * accepted the write covering it or it was dead-lettered, and only in order (the lowest
 * unfinished offset stops resolution). kafkajs fetches again from the last resolved offset, so
 * whatever was not finished is delivered again: at-least-once, and a later change of a record
 * never overtakes an earlier one that is still being retried.
 *
 * `checkpoint()` runs in this order: done set → written hashes → dead letters → resolve →
 * commit. Each step must be durable before the next: a committed offset whose hash or letter
 * was lost cannot be redone.
 */
export class OffsetTracker {
  private readonly payload: Trackable;
  private readonly deps: OffsetTrackerDeps;
  private readonly now: () => number;
  private readonly started: number;
  private readonly done = new Set<bigint>();
  private readonly letters: DeadLetter[] = [];
  private readonly letterOffsets = new Set<bigint>();
  private readonly written: Written[] = [];
  /** Index into batch.messages of the first message not resolved yet. */
  private resolvedUpTo = 0;
  private lastCheckpoint: number;

  constructor(payload: Trackable, deps: OffsetTrackerDeps) {
    this.payload = payload;
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.started = this.now();
    this.lastCheckpoint = this.started;
  }

  private get who(): string {
    return `${this.payload.batch.topic}/${this.payload.batch.partition}`;
  }

  /** These offsets need nothing more (written, skipped as no-ops, tombstones). */
  finish(offsets: Iterable<bigint>): void {
    for (const o of offsets) this.done.add(o);
  }

  /** These messages go to the dead-letter topic; their offsets are done once the letters are sent. */
  deadLetter(letters: DeadLetter[]): void {
    for (const l of letters) {
      this.letters.push(l);
      this.letterOffsets.add(BigInt(l.offset));
    }
  }

  /** True while this offset waits for its dead letter to be sent (it is not done before). */
  awaitsDeadLetter(offset: bigint): boolean {
    return this.letterOffsets.has(offset) && !this.done.has(offset);
  }

  /** The CRM accepted this write: its hash is stored at the next checkpoint, before the offset is committed. */
  wrote(written: Written): void {
    this.written.push(written);
  }

  /** True when the last checkpoint is more than CHECKPOINT_MS ago. */
  due(): boolean {
    return this.now() - this.lastCheckpoint > CHECKPOINT_MS;
  }

  async checkpointIfDue(): Promise<void> {
    if (this.due()) await this.checkpoint();
  }

  /**
   * Makes what is done durable and commits it: hashes and dead letters first, then offsets up
   * to the first unfinished message. Runs every few seconds of a long batch and at its end.
   * A failure (hash store, dead-letter topic) throws before anything is resolved.
   */
  async checkpoint(): Promise<void> {
    this.lastCheckpoint = this.now();
    // The hashes must be durable before the offsets that produced them are committed.
    if (this.deps.rememberHashes && this.written.length) await this.deps.rememberHashes(this.written.splice(0));
    if (this.letters.length) await this.sendLetters();
    this.resolve();
    await this.payload.commitOffsetsIfNecessary();
  }

  private async sendLetters(): Promise<void> {
    const sent = this.letters.splice(0);
    await this.deps.sendDeadLetters(sent);
    for (const l of sent) {
      this.done.add(BigInt(l.offset));
      metrics.deadLettered.inc({ object: l.object ?? 'unknown' });
    }
    const { topic, partition } = this.payload.batch;
    this.deps.log.warn({ count: sent.length, topic, partition }, 'records dead-lettered');
  }

  /** Resolves offsets in order up to the first one not done; notes a partition that does not move. */
  private resolve(): void {
    const { messages } = this.payload.batch;
    const before = this.resolvedUpTo;
    for (; this.resolvedUpTo < messages.length; this.resolvedUpTo++) {
      const message = messages[this.resolvedUpTo]!;
      if (!this.done.has(BigInt(message.offset))) break;
      this.payload.resolveOffset(message.offset);
    }
    this.deps.stalls.note(this.who, this.resolvedUpTo > before || this.resolvedUpTo === messages.length, this.started);
  }
}

/**
 * `topic/partition` -> since when its committed offset has not moved although messages wait
 * behind it (a record retried without end, a poison message): `pg2crm status` shows it.
 */
export class StallWatch {
  private readonly since = new Map<string, number>();

  /** A checkpoint of `who` resolved something or everything (`moved`), or not since `started`. */
  note(who: string, moved: boolean, started: number): void {
    if (moved) this.since.delete(who);
    else if (!this.since.has(who)) this.since.set(who, started);
  }

  /** `topic/partition` -> seconds its offset has stood still with messages waiting behind it. */
  stalled(now: number): Record<string, number> {
    return Object.fromEntries([...this.since].map(([id, since]) => [id, Math.round((now - since) / 1000)]));
  }

  /** The group rebalanced: partitions may have moved, their stall times start anew. */
  clear(): void {
    this.since.clear();
  }
}
