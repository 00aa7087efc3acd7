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

  it("a throttle's remaining count (0) does not spend the window: Retry-After decides the wait", () => {
    const c = clock();
    const b = new RateBudget({ requests: 36_000, windowSeconds: 3_600 }, c);
    b.observe({ retryAfterSeconds: 2, throttled: true, remaining: 0 });
    expect(b.waitMs(1)).toBeLessThanOrEqual(2_000);
    c.t = 2_000;
    expect(b.waitMs(1)).toBeLessThan(1_000);
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

describe('RateBudget shares, adaptation, priorities and daily quota', () => {
  it('applies a smaller share at once and a larger one only a window later', () => {
    const c = clock();
    const b = new RateBudget({ requests: 100, windowSeconds: 10 }, c);
    b.setShare(0.5, true);
    expect(b.limit()).toBe(50);
    b.setShare(0.2);
    expect(b.limit()).toBe(20);
    c.t = 1_000;
    b.setShare(0.8);
    expect(b.limit()).toBe(20); // the instance that gave it up may still be spending it
    c.t = 10_999;
    expect(b.limit()).toBe(20);
    c.t = 11_000;
    expect(b.limit()).toBe(80);
  });

  it('two instances that trade shares never exceed the quota in any window', () => {
    const c = clock();
    const a = new RateBudget({ requests: 100, windowSeconds: 10 }, c);
    const b = new RateBudget({ requests: 100, windowSeconds: 10 }, c);
    a.setShare(0.9, true);
    b.setShare(0.1, true);
    const sends: number[] = [];
    for (let t = 0; t < 60_000; t += 50) {
      c.t = t;
      if (t === 5_000) {
        // the shares swap: a lowers at once, b's raise waits a window
        a.setShare(0.1);
        b.setShare(0.9);
      }
      if (t === 30_000) {
        b.setShare(0.5);
        a.setShare(0.5);
      }
      for (const x of [a, b]) while (x.tryTake(1)) sends.push(t);
    }
    for (const t of sends) {
      const inWindow = sends.filter((s) => s > t - 10_000 && s <= t).length;
      expect(inWindow).toBeLessThanOrEqual(100);
    }
    expect(sends.length).toBeGreaterThan(400);
  });

  it('cuts to 0.7x on a throttle and recovers additively', () => {
    const c = clock();
    const b = new RateBudget({ requests: 100, windowSeconds: 10 }, c);
    b.observe({ throttled: true });
    b.observe({ throttled: true }); // same burst: counted once
    expect(b.limit()).toBe(70);
    c.t = 1_000;
    expect(b.limit()).toBe(75);
    c.t = 6_000;
    expect(b.limit()).toBe(100);
  });

  it('leaves scarce budget to a waiting higher-priority caller', () => {
    const c = clock();
    const b = new RateBudget({ requests: 3, windowSeconds: 10 }, c);
    expect(b.tryTake(1, { priority: 2, who: 'notes' })).toBe(true);
    expect(b.tryTake(3, { priority: 8, who: 'deals' })).toBe(false); // registers its demand
    expect(b.tryTake(1, { priority: 2, who: 'notes' })).toBe(false);
    expect(b.tryTake(2, { priority: 8, who: 'deals' })).toBe(true);
    b.withdraw('deals');
  });

  it('counts a daily quota in its own unit and trusts a lower remaining count from the CRM', () => {
    const c = clock();
    const b = new RateBudget({ requests: 1000, windowSeconds: 10, daily: 25 }, c);
    expect(b.tryTake(1, { daily: 10 })).toBe(true);
    expect(b.tryTake(1, { daily: 10 })).toBe(true);
    expect(b.tryTake(1, { daily: 10 })).toBe(false);
    expect(b.waitMs(1, 10)).toBeGreaterThan(86_000_000);
    c.t = 86_400_000 + 60_000;
    expect(b.tryTake(1, { daily: 10 })).toBe(true);
    b.observe({ dailyRemaining: 0 });
    expect(b.tryTake(1, { daily: 1 })).toBe(false);
  });
});

describe('RateBudget with a day-long window', () => {
  it('applies a raise after at most 60 s and lets the remaining-quota header bound it', () => {
    const c = clock();
    const b = new RateBudget({ requests: 100_000, windowSeconds: 86_400 }, c);
    b.setShare(0, true);
    b.setShare(0.5);
    expect(b.limit()).toBe(0);
    c.t = 60_000;
    expect(b.limit()).toBe(50_000);
    b.observe({ remaining: 10 });
    expect(b.available()).toBe(10);
  });

  it('looks again within seconds while the share is below one call (no first view of the group yet)', () => {
    const c = clock();
    const b = new RateBudget({ requests: 100_000, windowSeconds: 86_400, daily: 100_000 }, c);
    b.setShare(0, true);
    expect(b.tryTake(8)).toBe(false);
    expect(b.waitMs(8)).toBe(5_000);
    b.setShare(1, true);
    expect(b.tryTake(8)).toBe(true);
  });
});

describe('RateBudget pacing', () => {
  it('a share of 0 before the first view of the group does not leave the pacing bucket empty', () => {
    // Zoho-like: credits per 24 h, a Bulk Write job costs ~505 credits, paced by a tenth of the window.
    const c = clock();
    const b = new RateBudget({ requests: 1_000_000, windowSeconds: 86_400, burst: 0.1 }, c);
    b.setShare(0, true);
    expect(b.tryTake(505)).toBe(false); // a batch that arrives before the share
    c.t += 200;
    b.setShare(1, true);
    // At once, not after 505 credits refilled at 1,000,000 per day (44 s).
    expect(b.waitMs(505)).toBe(0);
    expect(b.tryTake(505)).toBe(true);
  });

  it('keeps the refill that arrives while the caller is late when the bucket holds less than a call', () => {
    // One of four sinks sharing 20 per 10 s: 5 calls, a bucket of a tenth = half a call. The
    // sink comes back some time after waitMs (timers, the batch being assembled).
    const c = clock();
    const b = new RateBudget({ requests: 20, windowSeconds: 10, burst: 0.1 }, c);
    b.setShare(0.25, true);
    const times: number[] = [];
    while (c.t < 70_000) {
      if (b.tryTake(1)) times.push(c.t);
      c.t += b.waitMs(1) + 200;
    }
    for (const t of times) expect(times.filter((s) => s > t - 10_000 && s <= t).length).toBeLessThanOrEqual(5);
    // Steady state: the window's 5, not 5 in every 11 s.
    expect(times.filter((t) => t >= 10_000 && t < 70_000).length).toBeGreaterThanOrEqual(30);
  });

  it('lets a quarter of the window go at once and spreads the rest evenly, same total', () => {
    const c = clock();
    const b = new RateBudget({ requests: 100, windowSeconds: 10, burst: 0.25 }, c);
    let sent = 0;
    while (b.tryTake(1)) sent++;
    expect(sent).toBe(25);
    expect(b.waitMs(1)).toBe(100); // one every 100 ms
    const times: number[] = [];
    for (let t = 0; t <= 30_000; t += 10) {
      c.t = t;
      while (b.tryTake(1)) times.push(t);
    }
    // steady state: the window's limit, never more in any 10 s
    for (const t of times) expect(times.filter((s) => s > t - 10_000 && s <= t).length).toBeLessThanOrEqual(100);
    expect(times.filter((t) => t > 20_000).length).toBeGreaterThanOrEqual(99);
  });
});
