import { describe, expect, it } from 'vitest';
import { PacingBucket } from '../../../src/sink/pacing-bucket.ts';
import { SpendLedger } from '../../../src/sink/spend-ledger.ts';

const DAY = 86_400_000;

describe('SpendLedger', () => {
  it('counts spending in the rolling window until it ages out', () => {
    const l = new SpendLedger(10_000, false);
    l.spend(0, 2);
    l.spend(4_000, 3);
    expect(l.inWindow).toBe(5);
    l.prune(10_000);
    expect(l.inWindow).toBe(3);
    l.prune(14_000);
    expect(l.inWindow).toBe(0);
  });

  it('windowWait: until enough of the oldest spending has left the window', () => {
    const l = new SpendLedger(10_000, false);
    l.spend(0, 2);
    l.spend(4_000, 3);
    expect(l.windowWait(0, 5_000)).toBe(0);
    expect(l.windowWait(2, 5_000)).toBe(5_000);
    expect(l.windowWait(3, 5_000)).toBe(9_000);
  });

  it('a refund frees the requests of a call never sent', () => {
    const l = new SpendLedger(10_000, false);
    const s = l.spend(0, 4);
    l.refund(s);
    expect(l.inWindow).toBe(0);
    expect(s.n).toBe(0);
  });

  it('keeps daily units in one-minute buckets for 24 h, only when asked', () => {
    const l = new SpendLedger(10_000, true);
    l.spend(30_000, 1, 5);
    l.spend(90_000, 1);
    expect(l.today).toBe(5);
    // The oldest minute (0–60 s) leaves the day at 24 h + 60 s.
    expect(l.dailyWait(100_000)).toBe(60_000 + DAY - 100_000);
    l.prune(DAY + 60_000);
    expect(l.today).toBe(0);
    expect(new SpendLedger(10_000, false).dailyWait(0)).toBe(60_000);
    const none = new SpendLedger(10_000, false);
    none.spend(0, 1, 7);
    expect(none.today).toBe(0);
  });
});

describe('PacingBucket', () => {
  it('starts full, spends, and refills at limit/window', () => {
    const b = new PacingBucket(10_000, 0.1);
    // limit 100 per 10 s, a tenth at once: capacity 10, 0.01 per ms.
    expect(b.fill(0, 100)).toEqual({ tokens: 10, capacity: 10, ratePerMs: 0.01 });
    b.take(10, 10);
    expect(b.fill(0, 100).tokens).toBe(0);
    expect(b.fill(500, 100).tokens).toBeCloseTo(5);
    expect(b.fill(5_000, 100).tokens).toBe(10);
  });

  it('25 takes of 1/25 leave it exactly empty; unannounced requests may take it below empty', () => {
    const b = new PacingBucket(10_000, 0.25);
    for (let i = 0; i < 25; i++) b.take(1, 25);
    expect(b.fill(0, 100).tokens).toBe(0);
    b.drain(5, 0, 100);
    expect(b.fill(0, 100).tokens).toBeLessThan(0);
  });
});
