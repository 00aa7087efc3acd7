import { describe, expect, it } from 'vitest';
import type { CrmAdapter, RateSignal, RetryKind, WriteOutcome } from '../../../src/crm/crm-adapter.ts';
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

  const retry = (code: string, kind?: RetryKind): WriteOutcome => ({ status: 'retry', code, message: 'x', ...(kind ? { kind } : {}) });
  it.each([
    ['all records failing by server kinds: the call failed', [retry('HTTP_503', 'server'), retry('E', 'unreachable')], ['error'], 0],
    ['a timeout among them: the call timed out', [retry('E', 'timeout'), retry('E', 'bad-response')], ['timeout'], 0],
    // A code that looks like a 5xx without a kind is not classified as one.
    ['a 5xx-looking code without a kind: not a failure', [retry('CRM_HTTP_503'), retry('CRM_HTTP_503')], [], 1],
  ] as const)('%s', async (_name, outcomes, failures, successes) => {
    const { writer, call, seen } = setup({ outcomes: [...outcomes] });
    await writer.write(call, beat);
    expect(seen.failures).toEqual(failures);
    expect(seen.successes).toBe(successes);
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

  it.each([
    ['CRM_TIMEOUT', 'timeout', ['timeout'], new ConnectorError('CRM_TIMEOUT', 't', { retriable: true })],
    ['CRM_UNREACHABLE', 'unreachable', ['error'], new ConnectorError('CRM_UNREACHABLE', 'u', { retriable: true })],
    ['CRM_BAD_RESPONSE', 'bad-response', ['error'], new ConnectorError('CRM_BAD_RESPONSE', 'b', { retriable: true })],
    ['CRM_HTTP_502', 'server', ['error'], new ConnectorError('CRM_HTTP_502', 'h', { retriable: true, status: 502 })],
    ['CRM_HTTP_504', 'timeout', ['timeout'], new ConnectorError('CRM_HTTP_504', 'g', { retriable: true, status: 504 })],
    ['RATE_LIMITED', 'throttle', [], new ConnectorError('RATE_LIMITED', 'r', { retriable: true, retryAfterSeconds: 3 })],
  ] as const)("a thrown %s becomes a retry of every record of kind '%s', the error's kind", async (_code, kind, failures, err) => {
    const { writer, call, seen } = setup({ error: err });
    const out = await writer.write(call, beat);
    expect(out.map((o) => o.status === 'retry' && `${o.code}/${o.kind}`)).toEqual([`${err.code}/${kind}`, `${err.code}/${kind}`]);
    expect(seen.failures).toEqual(failures);
    expect(seen.inFlight).toEqual(['enter', 'leave']);
  });

  it("carries the error's Retry-After to every record", async () => {
    const { writer, call } = setup({ error: new ConnectorError('RATE_LIMITED', 'r', { retriable: true, retryAfterSeconds: 3 }) });
    expect((await writer.write(call, beat)).map((o) => o.status === 'retry' && o.retryAfterSeconds)).toEqual([3, 3]);
  });

  it.each([
    ['CRM_TOO_LARGE', new ConnectorError('CRM_TOO_LARGE', 'big', { retriable: true })],
    ['CRM_HTTP_413', new ConnectorError('CRM_HTTP_413', 'big', { retriable: true, status: 413 })],
  ] as const)('a call too large (%s) halves the batch and is not the CRM failing', async (_code, err) => {
    const { writer, call, seen } = setup({ error: err });
    await writer.write(call, beat);
    expect(seen.sizes).toEqual([true]);
    expect(seen.failures).toEqual([]);
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
