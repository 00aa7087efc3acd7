import type { KafkaMessage } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { RetryKind, WriteOutcome } from '../../../src/crm/crm-adapter.ts';
import type { ErrorKind } from '../../../src/errors.ts';
import type { CircuitState } from '../../../src/sink/circuit-breaker.ts';
import { type Decision, OutcomePolicy, retryKindOf, serverFailure } from '../../../src/sink/outcome-policy.ts';
import { message, pending, upsert } from './fake-batch.ts';

const TOPIC = 'pg2crm.public.customers';

function policy(
  opts: { maxAttempts?: number; lookupPendingSeconds?: number; circuit?: CircuitState; budgetWaitMs?: number; random?: number } = {},
) {
  const clock = { t: 0 };
  const breaker = { state: opts.circuit ?? ('closed' as CircuitState) };
  const p = new OutcomePolicy({
    maxAttempts: opts.maxAttempts ?? 3,
    lookupPendingSeconds: opts.lookupPendingSeconds ?? 60,
    breaker,
    budgetWaitMs: () => opts.budgetWaitMs ?? 0,
    now: () => clock.t,
    random: () => opts.random ?? 1,
  });
  return { p, clock, breaker };
}

const messageAt = (o: bigint): KafkaMessage => message(o);
const retry = (kind?: RetryKind, extra: Partial<WriteOutcome & { status: 'retry' }> = {}): WriteOutcome => ({
  status: 'retry',
  code: 'X',
  message: 'try again',
  ...(kind ? { kind } : {}),
  ...extra,
});
const record = pending(upsert('a'), [4, 7, 9]);
const decide = (p: OutcomePolicy, outcome: WriteOutcome): Decision => p.decide(TOPIC, 0, record, outcome, messageAt);

describe('OutcomePolicy', () => {
  it("done: nothing more, and the record's attempts start again", () => {
    const { p } = policy({ maxAttempts: 2 });
    expect(decide(p, retry()).action).toBe('retry');
    expect(decide(p, { status: 'done' })).toEqual({ action: 'done' });
    // Counting starts again: one more failure is attempt 1, not 2.
    expect(decide(p, retry())).toMatchObject({ action: 'retry', attempt: 1 });
  });

  it('reaching maxAttempts dead-letters every message folded into the write', () => {
    const { p } = policy({ maxAttempts: 3 });
    expect(decide(p, retry())).toMatchObject({ action: 'retry', attempt: 1 });
    expect(decide(p, retry())).toMatchObject({ action: 'retry', attempt: 2 });
    const d = decide(p, retry(undefined, { code: 'LOCKED' }));
    expect(d.action).toBe('dead-letter');
    const letters = d.action === 'dead-letter' ? d.letters : [];
    expect(letters.map((l) => l.offset)).toEqual(['4', '7', '9']);
    expect(letters.every((l) => l.attempts === 3 && l.error.code === 'LOCKED' && l.externalId === 'a' && l.object === 'contacts')).toBe(
      true,
    );
  });

  it('a rejected record is dead-lettered at once, with the field the CRM named', () => {
    const { p } = policy();
    const d = decide(p, { status: 'rejected', code: 'INVALID_EMAIL', message: 'bad email', field: 'email' });
    expect(d.action === 'dead-letter' && d.letters[0]!.error).toEqual({ code: 'INVALID_EMAIL', message: 'bad email', field: 'email' });
  });

  it('a throttle is not an attempt: many throttles never dead-letter the record', () => {
    const { p } = policy({ maxAttempts: 2 });
    for (let i = 0; i < 20; i++) expect(decide(p, retry('throttle')).action).toBe('retry');
    // The record's own failures still count from zero.
    expect(decide(p, retry())).toMatchObject({ action: 'retry', attempt: 1 });
    expect(decide(p, retry()).action).toBe('dead-letter');
    // Even where a single attempt is all a record gets.
    const { p: once } = policy({ maxAttempts: 1 });
    expect(decide(once, retry('throttle')).action).toBe('retry');
    expect(decide(once, retry('throttle')).action).toBe('retry');
  });

  it('a pending lookup is not an attempt, until lookupPendingSeconds have passed since it was first pending', () => {
    const { p, clock } = policy({ maxAttempts: 1, lookupPendingSeconds: 60 });
    expect(decide(p, retry('pending')).action).toBe('retry');
    clock.t = 59_999;
    expect(decide(p, retry('pending')).action).toBe('retry');
    clock.t = 60_000;
    const d = decide(p, retry('pending', { code: 'LOOKUP_PENDING' }));
    expect(d.action === 'dead-letter' && d.letters[0]!.error.code).toBe('LOOKUP_PENDING');
  });

  it("pending waits do not count toward the record's attempts", () => {
    const { p } = policy({ maxAttempts: 3 });
    for (let i = 0; i < 5; i++) expect(decide(p, retry('pending')).action).toBe('retry');
    expect(decide(p, retry())).toMatchObject({ action: 'retry', attempt: 1 });
  });

  it('a server failure past maxAttempts is kept while the circuit is not closed, dead-lettered once it is', () => {
    const { p, breaker } = policy({ maxAttempts: 1, circuit: 'open' });
    for (const kind of ['server', 'unreachable', 'timeout', 'bad-response'] as const) expect(decide(p, retry(kind)).action).toBe('retry');
    breaker.state = 'half-open';
    expect(decide(p, retry('server')).action).toBe('retry');
    // Not a server failure: the record's own trouble is dead-lettered whatever the circuit.
    expect(decide(p, retry()).action).toBe('dead-letter');
    breaker.state = 'closed';
    expect(decide(p, retry('server')).action).toBe('dead-letter');
  });

  it("retryAfterSeconds decides the wait; otherwise backoff, a throttle at least the budget's wait", () => {
    expect(decide(policy({ random: 0.5 }).p, retry('server', { retryAfterSeconds: 7 }))).toMatchObject({ action: 'retry', waitMs: 7_000 });
    expect(decide(policy({ budgetWaitMs: 99_999 }).p, retry('throttle', { retryAfterSeconds: 2 }))).toMatchObject({ waitMs: 2_000 });
    expect(decide(policy({ budgetWaitMs: 12_345 }).p, retry('throttle'))).toMatchObject({ waitMs: 12_345 });
    // Full jitter with random() = 1: 500 ms × 2^attempt.
    const { p } = policy({ maxAttempts: 10 });
    expect(decide(p, retry())).toMatchObject({ attempt: 1, waitMs: 1_000 });
    expect(decide(p, retry())).toMatchObject({ attempt: 2, waitMs: 2_000 });
  });

  it('backoff is full jitter, capped at 60 s', () => {
    expect(policy({ random: 1 }).p.backoff(20)).toBe(60_000);
    expect(policy({ random: 0.25 }).p.backoff(2)).toBe(500);
  });

  it('bump counts attempts and waits apart', () => {
    const { p } = policy();
    expect(p.bump(TOPIC, 0, 4n, 'wait')).toBe(1);
    expect(p.bump(TOPIC, 0, 4n, 'wait')).toBe(2);
    expect(p.bump(TOPIC, 0, 4n)).toBe(1);
  });
});

describe('error classification by kind', () => {
  it('a server failure is a retry of kind server, unreachable, timeout or bad-response, never read from its code', () => {
    for (const kind of ['server', 'unreachable', 'timeout', 'bad-response'] as const) expect(serverFailure(retry(kind))).toBe(true);
    for (const kind of ['throttle', 'pending', undefined] as const) expect(serverFailure(retry(kind))).toBe(false);
    expect(serverFailure(retry(undefined, { code: 'CRM_HTTP_503' }))).toBe(false);
    expect(serverFailure({ status: 'rejected', code: 'HTTP_500', message: 'x' })).toBe(false);
  });

  it("a thrown error's kind maps to a retry kind", () => {
    const cases: [ErrorKind, RetryKind][] = [
      ['throttle', 'throttle'],
      ['timeout', 'timeout'],
      ['bad-response', 'bad-response'],
      ['unreachable', 'unreachable'],
      ['server', 'server'],
      ['auth', 'server'],
      ['protocol', 'server'],
      ['too-large', 'server'],
    ];
    for (const [kind, retryKind] of cases) expect(retryKindOf(kind)).toBe(retryKind);
  });
});
