import { describe, expect, it } from 'vitest';
import type { RateSignal } from '../../../src/crm/crm-adapter.ts';
import { ThrottledCall } from '../../../src/crm/http.ts';
import { ConnectorError } from '../../../src/errors.ts';
import { ReadBudget } from '../../../src/verify/read-budget.ts';

/** A budget on a fake clock: sleeping moves the clock, so an hour passes at once. */
function budget(limits: { requests: number; windowSeconds: number; daily?: number }, share = 0.25, maxWaitSeconds = 600) {
  let now = 1_000_000;
  const clock = { now: () => now };
  const b = new ReadBudget({ concurrency: 4, utilisation: 1, ...limits }, { share, maxWaitSeconds }, clock, async (ms) => {
    now += ms;
  });
  return { b, clock, advance: (ms: number) => (now += ms) };
}

const throttle = (onSignal: (s: RateSignal) => void, seconds?: number): never => {
  const after = seconds === undefined ? {} : { retryAfterSeconds: seconds };
  onSignal({ throttled: true, ...after });
  throw new ThrottledCall({ status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', message: 'throttled', ...after });
};

describe('verify read budget', () => {
  it('spends at most its share of the window in any window, paced rather than in one burst', async () => {
    const { b, clock } = budget({ requests: 200, windowSeconds: 60 });
    expect(b.quota).toBe(50);
    const at: number[] = [];
    for (let i = 0; i < 160; i++) await b.call('read', async () => at.push(clock.now()));
    for (const t of at) expect(at.filter((u) => u > t - 60_000 && u <= t).length).toBeLessThanOrEqual(50);
    // A 10% pacing bucket: at most 5 reads in the first second, not the window's 50.
    expect(at.filter((t) => t < at[0]! + 1000).length).toBeLessThanOrEqual(6);
    expect(b.calls).toBe(160);
  });

  it('keeps to its share of the daily quota too', async () => {
    const { b } = budget({ requests: 1000, windowSeconds: 60, daily: 400 });
    let reads = 0;
    await expect(
      (async () => {
        for (;;) await b.call('read', async () => reads++);
      })(),
    ).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    expect(reads).toBe(100);
  });

  it('waits out a Retry-After and reads again; counts the throttle', async () => {
    const { b, clock } = budget({ requests: 100, windowSeconds: 60 });
    const at: number[] = [];
    const value = await b.call('read', async (onSignal) => {
      at.push(clock.now());
      if (at.length === 1) throttle(onSignal, 30);
      return 'ok';
    });
    expect(value).toBe('ok');
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(30_000);
    expect(b).toMatchObject({ calls: 2, throttled: 1 });
  });

  it('gives up on a wait longer than --max-wait with RATE_LIMITED naming the fix, and after repeated throttles', async () => {
    const { b } = budget({ requests: 100, windowSeconds: 60 }, 0.25, 600);
    const err = await b.call('reading contacts', async (onSignal) => throttle(onSignal, 3600)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectorError);
    expect((err as ConnectorError).message).toMatch(/reading contacts would wait \d+ s .*--max-wait 600 s/);
    const again = budget({ requests: 100, windowSeconds: 60 });
    await expect(again.b.call('read', async (onSignal) => throttle(onSignal))).rejects.toBeInstanceOf(ThrottledCall);
    expect(again.b.throttled).toBe(5);
  });

  it('does not retry a permanent failure', async () => {
    const { b } = budget({ requests: 100, windowSeconds: 60 });
    let n = 0;
    await expect(
      b.call('read', async () => {
        n++;
        throw new ConnectorError('CRM_CALL', 'bad field');
      }),
    ).rejects.toMatchObject({ code: 'CRM_CALL' });
    expect(n).toBe(1);
  });
});

describe('verify read budget retries', () => {
  it('does not retry a 4xx a CRM marked retriable: only throttles, 5xx, unreachable and timeouts', async () => {
    const { b } = budget({ requests: 1000, windowSeconds: 60 });
    let calls = 0;
    const bad = new ConnectorError('CRM_HTTP_400', 'HubSpot answered HTTP 400', { retriable: true, status: 400 });
    await expect(
      b.call('read', async () => {
        calls++;
        throw bad;
      }),
    ).rejects.toBe(bad);
    expect(calls).toBe(1);
    let tries = 0;
    await expect(
      b.call('read', async () => {
        if (++tries < 3) throw new ConnectorError('CRM_HTTP_503', 'unavailable', { retriable: true, status: 503 });
        return 'ok';
      }),
    ).resolves.toBe('ok');
    expect(tries).toBe(3);
  });

  it('counts the extra requests an adapter reports as calls', async () => {
    const { b } = budget({ requests: 1000, windowSeconds: 60 });
    await b.call('read', async (onSignal) => {
      onSignal({ extraRequests: 2 });
      return 1;
    });
    expect(b.calls).toBe(3);
  });
});
