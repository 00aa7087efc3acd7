import { describe, expect, it } from 'vitest';
import type { CrmAdapter, RateSignal, WriteOutcome } from '../../../src/crm/crm-adapter.ts';
import { ConnectorError } from '../../../src/errors.ts';
import type { Call } from '../../../src/sink/call-planner.ts';
import { CallWriter } from '../../../src/sink/call-writer.ts';
import { pending, silentLog, upsert } from './fake-batch.ts';

type Answer = { outcomes: WriteOutcome[]; signal?: RateSignal } | { error: unknown; signal?: RateSignal };

function setup(answer: Answer) {
  const seen = {
    failures: [] as string[],
    successes: 0,
    sizes: [] as boolean[],
    fatal: [] as Error[],
    inFlight: [] as string[],
    completed: 0,
    observed: [] as RateSignal[],
  };
  const adapter = {
    write: async (_records: unknown[], onSignal: (s: RateSignal) => void) => {
      if (answer.signal) onSignal(answer.signal);
      if ('error' in answer) throw answer.error;
      return answer.outcomes;
    },
  } as unknown as CrmAdapter;
  const writer = new CallWriter({
    adapter,
    breaker: {
      onFailure: (kind = 'error') => {
        seen.failures.push(kind);
        return false;
      },
      onSuccess: () => void seen.successes++,
      retryTokens: 500,
    },
    sizer: { observe: (_o, _n, _ms, tooLarge) => void seen.sizes.push(tooLarge) },
    inFlight: { enter: () => void seen.inFlight.push('enter'), leave: () => void seen.inFlight.push('leave') },
    log: silentLog,
    onFatal: (err) => void seen.fatal.push(err),
  });
  const call: Call = [pending(upsert('a'), [0]), pending(upsert('b'), [1])];
  call.spent = { at: 0, n: 1 };
  call.lane = {
    group: 'g',
    adapters: [],
    next: 0,
    budget: { complete: () => void seen.completed++, observe: (s: RateSignal) => void seen.observed.push(s) },
  } as unknown as Call['lane'];
  return { writer, call, seen };
}

const beat = (): void => undefined;

describe('CallWriter', () => {
  it('returns the outcomes, feeds the breaker a success, holds a slot and completes the budget', async () => {
    const { writer, call, seen } = setup({
      outcomes: [{ status: 'done' }, { status: 'rejected', code: 'BAD', message: 'no' }],
      signal: { remaining: 10 },
    });
    expect(await writer.write(call, beat)).toEqual([{ status: 'done' }, { status: 'rejected', code: 'BAD', message: 'no' }]);
    expect(seen.successes).toBe(1);
    expect(seen.failures).toEqual([]);
    expect(seen.inFlight).toEqual(['enter', 'leave']);
    expect(seen.completed).toBe(1);
    expect(seen.observed).toEqual([{ remaining: 10 }]);
  });

  it('all records failing by server kinds counts as the call failing; a timeout among them as a timeout', async () => {
    const s1 = setup({
      outcomes: [
        { status: 'retry', code: 'HTTP_503', message: 'x', kind: 'server' },
        { status: 'retry', code: 'E', message: 'x', kind: 'unreachable' },
      ],
    });
    await s1.writer.write(s1.call, beat);
    expect(s1.seen.failures).toEqual(['error']);
    const s2 = setup({
      outcomes: [
        { status: 'retry', code: 'E', message: 'x', kind: 'timeout' },
        { status: 'retry', code: 'E', message: 'x', kind: 'bad-response' },
      ],
    });
    await s2.writer.write(s2.call, beat);
    expect(s2.seen.failures).toEqual(['timeout']);
    // A code that looks like a 5xx without a kind is not classified as one.
    const s3 = setup({
      outcomes: [
        { status: 'retry', code: 'CRM_HTTP_503', message: 'x' },
        { status: 'retry', code: 'CRM_HTTP_503', message: 'x' },
      ],
    });
    await s3.writer.write(s3.call, beat);
    expect(s3.seen.failures).toEqual([]);
    expect(s3.seen.successes).toBe(1);
  });

  it('a throttled call feeds no breaker, and its unclassified retries become throttles', async () => {
    const { writer, call, seen } = setup({
      outcomes: [{ status: 'retry', code: 'E', message: 'x' }, { status: 'done' }],
      signal: { throttled: true },
    });
    const out = await writer.write(call, beat);
    expect(out[0]).toMatchObject({ status: 'retry', kind: 'throttle' });
    expect(seen.failures).toEqual([]);
    expect(seen.successes).toBe(0);
  });

  it("a thrown error becomes a retry of every record, its kind read from the error's kind", async () => {
    const cases: [ConnectorError, string, string[]][] = [
      [new ConnectorError('CRM_TIMEOUT', 't', { retriable: true }), 'timeout', ['timeout']],
      [new ConnectorError('CRM_UNREACHABLE', 'u', { retriable: true }), 'unreachable', ['error']],
      [new ConnectorError('CRM_BAD_RESPONSE', 'b', { retriable: true }), 'bad-response', ['error']],
      [new ConnectorError('CRM_HTTP_502', 'h', { retriable: true, status: 502 }), 'server', ['error']],
      [new ConnectorError('CRM_HTTP_504', 'g', { retriable: true, status: 504 }), 'timeout', ['timeout']],
      [new ConnectorError('RATE_LIMITED', 'r', { retriable: true, retryAfterSeconds: 3 }), 'throttle', []],
    ];
    for (const [err, kind, failures] of cases) {
      const { writer, call, seen } = setup({ error: err });
      const out = await writer.write(call, beat);
      expect(out).toHaveLength(2);
      expect(out.every((o) => o.status === 'retry' && o.kind === kind && o.code === err.code)).toBe(true);
      expect(seen.failures).toEqual(failures);
      expect(seen.inFlight).toEqual(['enter', 'leave']);
    }
  });

  it("carries the error's Retry-After to every record", async () => {
    const { writer, call } = setup({ error: new ConnectorError('RATE_LIMITED', 'r', { retriable: true, retryAfterSeconds: 3 }) });
    expect((await writer.write(call, beat)).map((o) => o.status === 'retry' && o.retryAfterSeconds)).toEqual([3, 3]);
  });

  it('a call too large halves the batch and is not the CRM failing', async () => {
    for (const err of [
      new ConnectorError('CRM_TOO_LARGE', 'big', { retriable: true }),
      new ConnectorError('CRM_HTTP_413', 'big', { retriable: true, status: 413 }),
    ]) {
      const { writer, call, seen } = setup({ error: err });
      await writer.write(call, beat);
      expect(seen.sizes).toEqual([true]);
      expect(seen.failures).toEqual([]);
    }
  });

  it('a permanent error stops the sink; anything not a ConnectorError is retried without feeding the breaker', async () => {
    const auth = new ConnectorError('CRM_AUTH', 'bad token');
    const a = setup({ error: auth });
    await a.writer.write(a.call, beat);
    expect(a.seen.fatal).toEqual([auth]);
    expect(a.seen.failures).toEqual([]);
    const b = setup({ error: new TypeError('boom') });
    const out = await b.writer.write(b.call, beat);
    expect(out[0]).toMatchObject({ status: 'retry', code: 'CRM_CALL', kind: 'server' });
    expect(b.seen.failures).toEqual([]);
    expect(b.seen.fatal).toEqual([]);
  });
});
