import type { KafkaMessage } from 'kafkajs';
import type { CrmWrite, RetryKind, WriteOutcome } from '../crm/crm-adapter.ts';
import type { ErrorKind } from '../errors.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import type { Pending } from './call-planner.ts';
import { type DeadLetter, deadLetterOf } from './dead-letter.ts';

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 60_000;

/** Retry kinds that mean the CRM itself is failing (not a throttle, not the record, not a pending lookup). */
const SERVER_FAILURE_KINDS: ReadonlySet<RetryKind | undefined> = new Set(['server', 'unreachable', 'timeout', 'bad-response']);

/** The CRM itself is failing (5xx, no answer, an answer that is not its documented shape). */
export function serverFailure(o: WriteOutcome): boolean {
  return o.status === 'retry' && SERVER_FAILURE_KINDS.has(o.kind);
}

/** The retry kind of a whole call that threw an error of this kind. */
export function retryKindOf(kind: ErrorKind): RetryKind {
  switch (kind) {
    case 'throttle':
    case 'timeout':
    case 'bad-response':
    case 'unreachable':
      return kind;
    default:
      return 'server';
  }
}

/** What happens to a record after the CRM's answer. */
export type Decision =
  /** Written: its offsets are done. */
  | { action: 'done' }
  /** Rejected or out of attempts: these letters go to the dead-letter topic, one per folded message. */
  | { action: 'dead-letter'; letters: DeadLetter[] }
  /** To be tried again: the partition pauses for `waitMs` (`attempt`: the count that set the backoff). */
  | { action: 'retry'; attempt: number; waitMs: number; code: string };

export interface OutcomePolicyOptions {
  /** Attempts at a record before it is dead-lettered (sink.maxAttempts). */
  maxAttempts: number;
  /** How long a lookup may stay pending before the record is dead-lettered (sink.lookupPendingSeconds). */
  lookupPendingSeconds: number;
  breaker: Pick<CircuitBreaker, 'state'>;
  /** Milliseconds until the budget can pay for these writes (quota-lanes.ts). */
  budgetWaitMs: (writes: CrmWrite[]) => number;
  now?: () => number;
  random?: () => number;
}

/**
 * Decides what the CRM's answer means for a record and its partition: done, dead-lettered, or
 * retried after a wait (the partition blocks there, so later changes of the record wait too).
 * Counts attempts per record (topic/partition/first offset of the compacted write), apart from
 * waits that are nobody's fault (throttles, pending lookups, a store that failed), which only
 * lengthen the backoff.
 */
export class OutcomePolicy {
  private readonly opts: OutcomePolicyOptions;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly attempts = new Map<string, number>();
  /** When a record's lookup was first found pending (`sink.lookupPendingSeconds` counts from there). */
  private readonly pendingSince = new Map<string, number>();

  constructor(opts: OutcomePolicyOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  /** The decision for one record of a call; `messageAt` finds a folded offset's original message (for its dead letter). */
  decide(topic: string, partition: number, p: Pending, outcome: WriteOutcome, messageAt: (offset: bigint) => KafkaMessage): Decision {
    const key = `${topic}/${partition}/${p.group.firstOffset}`;
    if (outcome.status === 'done') {
      this.forget(key);
      return { action: 'done' };
    }
    const attempts = (this.attempts.get(key) ?? 0) + 1;
    if (outcome.status === 'retry' && this.keeps(key, outcome, attempts)) return this.retry(topic, partition, p, outcome);
    this.forget(key);
    // Rejected by the CRM (or out of attempts): every message folded into this write goes to
    // the dead-letter topic, so a replay re-drives each original change.
    const error = {
      code: outcome.code,
      message: outcome.message,
      ...(outcome.status === 'rejected' && outcome.field ? { field: outcome.field } : {}),
    };
    const letters = p.group.offsets.map((o) =>
      deadLetterOf(topic, partition, messageAt(o), { object: p.write.object, externalId: p.write.externalId, error, attempts }),
    );
    return { action: 'dead-letter', letters };
  }

  /** True when a record to be retried is kept (retried) rather than dead-lettered. */
  private keeps(key: string, outcome: WriteOutcome & { status: 'retry' }, attempts: number): boolean {
    if (outcome.kind === 'throttle') return true;
    if (outcome.kind === 'pending') {
      const since = this.pendingSince.get(key) ?? this.now();
      this.pendingSince.set(key, since);
      if (this.now() - since < this.opts.lookupPendingSeconds * 1000) return true;
    } else if (attempts < this.opts.maxAttempts) return true;
    // During an outage (circuit not closed) a server failure is not the record's fault: keep it
    // until the CRM is back rather than dead-letter everything in flight. A record that keeps
    // failing while other calls succeed is dead-lettered as usual.
    return serverFailure(outcome) && this.opts.breaker.state !== 'closed';
  }

  private retry(topic: string, partition: number, p: Pending, outcome: WriteOutcome & { status: 'retry' }): Decision {
    // A throttle is the CRM's budget, never the record's fault: it is not an attempt (a record
    // meeting many 3600 s lockouts must not end in the dead-letter topic). Nor is a lookup still
    // pending: the linked record is written by another partition, later.
    const throttle = outcome.kind === 'throttle';
    const pending = outcome.kind === 'pending';
    const attempt = this.bump(topic, partition, p.group.firstOffset, throttle || pending ? 'wait' : 'attempt');
    const waitMs =
      outcome.retryAfterSeconds !== undefined
        ? outcome.retryAfterSeconds * 1000
        : throttle
          ? Math.max(this.opts.budgetWaitMs([p.write]), this.backoff(Math.min(attempt, 6)))
          : this.backoff(pending ? Math.min(attempt, 6) : attempt);
    return { action: 'retry', attempt, waitMs, code: outcome.code };
  }

  /** Counts a failed attempt at a record, or apart (`wait`: a throttle, a store that failed) what only lengthens the backoff. */
  bump(topic: string, partition: number, offset: bigint, what: 'attempt' | 'wait' = 'attempt'): number {
    const key = what === 'attempt' ? `${topic}/${partition}/${offset}` : `${topic}/${partition}/${offset}/wait`;
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return n;
  }

  /** Exponential backoff with full jitter (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). */
  backoff(attempt: number): number {
    return this.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  }

  private forget(key: string): void {
    this.attempts.delete(key);
    this.attempts.delete(`${key}/wait`);
    this.pendingSince.delete(key);
  }
}
