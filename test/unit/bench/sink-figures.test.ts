import { describe, expect, it } from 'vitest';
import { figuresOf, goalsOf, theoreticalFigures, theoreticalRecordsPerSecond, writesPerChangeFloor } from '../../bench/sink-figures.ts';

describe('bench:sink figures', () => {
  it('theoretical capacity is limit / window x records per call, divided by what a full call costs', () => {
    expect(theoreticalRecordsPerSecond({ requests: 100, windowSeconds: 10, maxBatch: 100, costOfFullBatch: 1 })).toBe(1000);
    // Zoho: 100 credits per 10 s, 100 records per call costing 10 credits -> 100 records/s.
    expect(theoreticalRecordsPerSecond({ requests: 100, windowSeconds: 10, maxBatch: 100, costOfFullBatch: 10 })).toBe(100);
    const t = theoreticalFigures('hubspot', { requests: 100, windowSeconds: 10, maxBatch: 100, costOfFullBatch: 1 });
    expect(t).toEqual({
      crm: 'hubspot',
      contender: 'theoretical',
      recordsPerSecond: 1000,
      capacityUsed: 1,
      throttledShare: 0,
      callsPerChange: 0.01,
    });
    // Dynamics: every operation of a $batch counts toward the limit; still one HTTP call per 1,000 records.
    const d = theoreticalFigures('dynamics', { requests: 200, windowSeconds: 10, maxBatch: 1000, costOfFullBatch: 1000 });
    expect([d.recordsPerSecond, d.callsPerChange]).toEqual([20, 0.001]);
  });

  it('derives the ratios from records, calls, throttles and changes of the interval', () => {
    const f = figuresOf('zendesk-sell', 'naive', { records: 90, calls: 100, throttled: 10, changes: 90, seconds: 30 }, 5);
    expect(f).toEqual({
      crm: 'zendesk-sell',
      contender: 'naive',
      recordsPerSecond: 3,
      capacityUsed: 0.6,
      throttledShare: 0.1,
      callsPerChange: 1.1111,
    });
    expect(figuresOf('x', 'pg2crm', { records: 0, calls: 0, throttled: 0, changes: 0, seconds: 30 }, 5).callsPerChange).toBeNull();
  });

  it('judges capacity and throttling on the capacity interval, calls saved on the drained hourly sync', () => {
    const good = figuresOf('hubspot', 'pg2crm', { records: 28_800, calls: 300, throttled: 1, changes: 120_000, seconds: 30 }, 1000);
    const drained = figuresOf('hubspot', 'pg2crm', { records: 500, calls: 5, throttled: 0, changes: 10_000, seconds: 12 }, 1000);
    expect(goalsOf(good, drained).map((g) => g.met)).toEqual([true, true, true]);
    const bad = figuresOf('zendesk-sell', 'pg2crm', { records: 120, calls: 150, throttled: 30, changes: 400, seconds: 30 }, 5);
    const badDrain = figuresOf('zendesk-sell', 'pg2crm', { records: 500, calls: 2_500, throttled: 0, changes: 10_000, seconds: 500 }, 5);
    const verdicts = goalsOf(bad, badDrain);
    expect(verdicts.map((g) => g.met)).toEqual([false, false, false]);
    expect(verdicts[2]!.value).toBe(0.75);
    // Calls saved are judged on the drain, not on the interval's slice of a backlog.
    expect(goalsOf(good, badDrain)[2]!.met).toBe(false);
    // A throttled drain fails the throttling goal even when the capacity interval was clean.
    const throttledDrain = figuresOf('hubspot', 'pg2crm', { records: 500, calls: 100, throttled: 5, changes: 10_000, seconds: 12 }, 1000);
    expect(goalsOf(good, throttledDrain)[1]!.met).toBe(false);
  });

  it('floors writes per change at the records first changed in the committed range', () => {
    // Partition 0: a b a c a | b d -- committing [2, 5) needs only c (a was seen before);
    // partition 1: x x x x -- committing [0, 4) needs one write of x.
    const p0 = { keys: ['a', 'b', 'a', 'c', 'a', 'b', 'd'], from: 2, to: 5 };
    const p1 = { keys: ['x', 'x', 'x', 'x'], from: 0, to: 4 };
    expect(writesPerChangeFloor([p0, p1])).toBe(Number((2 / 7).toFixed(4)));
    // The whole of p0 from the start: a, b, c, d for 7 changes.
    expect(writesPerChangeFloor([{ ...p0, from: 0, to: 7 }])).toBe(Number((4 / 7).toFixed(4)));
    expect(writesPerChangeFloor([{ ...p0, from: 3, to: 3 }])).toBeNull();
  });
});
