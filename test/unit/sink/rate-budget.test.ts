import { describe, expect, it } from 'vitest';
import { RateBudget } from '../../../src/sink/rate-budget.ts';

function clock(start = 0) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('RateBudget', () => {
  it('allows at most `requests` in any rolling window', () => {
    const c = clock();
    const b = new RateBudget({ requests: 3, windowSeconds: 10 }, c);
    expect([b.tryTake(1), b.tryTake(1), b.tryTake(1), b.tryTake(1)]).toEqual([true, true, true, false]);
    c.t = 5_000;
    expect(b.tryTake(1)).toBe(false);
    expect(b.waitMs(1)).toBe(5_000);
    c.t = 10_000;
    expect(b.tryTake(1)).toBe(true);
  });

  it('honours Retry-After, however long', () => {
    const c = clock();
    const b = new RateBudget({ requests: 100, windowSeconds: 60 }, c);
    b.observe({ retryAfterSeconds: 3600, throttled: true });
    expect(b.available()).toBe(0);
    expect(b.waitMs(1)).toBe(3_600_000);
    c.t = 3_600_000;
    expect(b.tryTake(1)).toBe(true);
  });

  it('trusts a lower remaining count from the CRM', () => {
    const b = new RateBudget({ requests: 100, windowSeconds: 60 }, clock());
    b.observe({ remaining: 10 });
    expect(b.available()).toBe(10);
  });

  it('keeps a share of the quota when utilisation < 1', () => {
    expect(new RateBudget({ requests: 200, windowSeconds: 60, utilisation: 0.9 }, clock()).available()).toBe(180);
  });
});
