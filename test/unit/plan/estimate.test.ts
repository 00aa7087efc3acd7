import { describe, expect, it } from 'vitest';
import {
  type Assumptions,
  dailySeconds,
  executionSeconds,
  fixFor,
  type QuotaFigures,
  quotaSeconds,
  type SteadyInput,
  snapshotEstimate,
  steadyEstimate,
} from '../../../src/plan/estimate.ts';

const quota = (over: Partial<QuotaFigures> = {}): QuotaFigures => ({
  perWindow: 100,
  windowSeconds: 10,
  daily: undefined,
  groups: 1,
  concurrency: 4,
  burst: 0.1,
  ...over,
});
const assumed: Assumptions = { callSeconds: 0.5, startupSeconds: 6, sourceRowsPerSecond: 10_000, paceEfficiency: 1 };

describe('quotaSeconds', () => {
  it('lets the burst go at once and paces the rest at limit / window', () => {
    expect(quotaSeconds(10, quota())).toBe(0);
    expect(quotaSeconds(110, quota())).toBe(10);
  });

  it('counts separate quota groups as more capacity', () => {
    // burst 2 × 10, rate 2 × 10/s
    expect(quotaSeconds(110, quota({ groups: 2 }))).toBe(4.5);
  });

  it('never puts more than the limit in one window', () => {
    // Without pacing (burst 1) the burst is a whole window: 250 requests need three windows.
    expect(quotaSeconds(250, quota({ burst: 1 }))).toBe(20);
  });

  it('paces the rest at the efficiency given', () => {
    expect(quotaSeconds(110, quota(), 0.5)).toBe(20);
  });
});

describe('dailySeconds and executionSeconds', () => {
  it('waits a day for each full daily quota after the first', () => {
    expect(dailySeconds(1000, quota({ daily: 1000 }))).toBe(0);
    expect(dailySeconds(2500, quota({ daily: 1000 }))).toBe(2 * 86_400);
    expect(dailySeconds(2500, quota({ daily: 1000, groups: 3 }))).toBe(0);
    expect(dailySeconds(2500, quota())).toBe(0);
  });

  it('holds records back a window per execution-time limit they exceed', () => {
    const q = quota({ execution: { seconds: 1200, windowSeconds: 300, secondsPerRecord: 0.1 } });
    expect(executionSeconds(12_000, q)).toBe(0);
    expect(executionSeconds(12_001, q)).toBe(300);
    expect(executionSeconds(12_001, { ...q, groups: 2 })).toBe(0);
  });
});

describe('snapshotEstimate', () => {
  it('adds the start and the last call to the binding limit and names it', () => {
    const e = snapshotEstimate({ calls: 110, requests: 110, daily: 110, jobSeconds: 0 }, 110, quota(), { ...assumed, callSeconds: 0.2 });
    expect(e.bound).toBe('quota window');
    expect(e.seconds).toBe(6 + 10 + 0.2);
    expect(e.windows).toBe(1.1);
  });

  it('is bound by the daily quota when that is the slowest', () => {
    const e = snapshotEstimate({ calls: 300, requests: 300, daily: 30_000, jobSeconds: 0 }, 300, quota({ daily: 10_000 }), assumed);
    expect(e.bound).toBe('daily quota');
    expect(e.seconds).toBe(6 + 2 * 86_400 + 0.5);
    expect(e.days).toBe(3);
  });

  it('is bound by concurrency when calls are slow and the quota large', () => {
    const e = snapshotEstimate({ calls: 100, requests: 100, daily: 100, jobSeconds: 0 }, 100, quota({ perWindow: 100_000 }), {
      ...assumed,
      callSeconds: 2,
    });
    expect(e.bound).toBe('concurrency');
    expect(e.seconds).toBe(6 + 50 + 2);
  });

  it('spreads the waits for bulk jobs over the calls in flight', () => {
    const e = snapshotEstimate({ calls: 10, requests: 10, daily: 10, jobSeconds: 400 }, 100_000, quota({ perWindow: 100_000 }), assumed);
    expect(e.bound).toBe('concurrency');
    expect(e.seconds).toBe(6 + (10 * 0.5 + 400) / 4 + 0.5);
  });

  it('takes no time for an empty table', () => {
    expect(snapshotEstimate({ calls: 0, requests: 0, daily: 0, jobSeconds: 0 }, 0, quota(), assumed).seconds).toBe(0);
  });
});

/** A flow of `perSecond` changes whose lingered calls carry `lingered` records and full calls `full`, one request each. */
const flow = (name: string, perSecond: number, lingered: number, full: number): SteadyInput => ({
  name,
  changesPerSecond: perSecond,
  lingered: { records: lingered, requests: 1, daily: 1, jobSeconds: 0 },
  full: { records: full, requests: 1, daily: 1, jobSeconds: 0 },
});

describe('steadyEstimate', () => {
  // capacity: 100 requests per 10 s = 36,000 per hour
  it('keeps up with headroom when the lingered calls fit the quota', () => {
    const s = steadyEstimate([flow('a', 5, 1, 100)], quota());
    expect(s.status).toBe('keeps-up');
    expect(s.requestsPerHour).toBe(18_000);
    expect(s.share).toBe(0.5);
    expect(s.behindPerHour).toBe(0);
  });

  it('batches up when lingered calls are over the quota and full calls within it', () => {
    const s = steadyEstimate([flow('a', 20, 1, 100)], quota());
    expect(s.share).toBe(2);
    expect(s.status).toBe('batches-up');
  });

  it('falls behind by the records the quota cannot carry even in full calls', () => {
    // 2,000 records/s in calls of 100: 20 requests/s against 10/s: half is left behind.
    const s = steadyEstimate([flow('a', 2000, 100, 100)], quota());
    expect(s.status).toBe('behind');
    expect(s.behindPerHour).toBe(3_600_000);
  });

  it('counts the daily quota and the execution-time limit', () => {
    expect(steadyEstimate([flow('a', 5, 1, 100)], quota({ daily: 100_000 })).status).toBe('batches-up');
    const execution = { seconds: 1200, windowSeconds: 300, secondsPerRecord: 0.1 };
    // 50 records/s × 0.1 s = 5 s of execution per second against 4: behind.
    const s = steadyEstimate([flow('a', 50, 100, 100)], quota({ execution }));
    expect(s.executionShare).toBe(1.25);
    expect(s.status).toBe('behind');
  });
});

describe('fixFor', () => {
  it('names the quota groups needed and the mappings to leave out, largest first', () => {
    const flows = [flow('small', 100, 100, 100), flow('big', 1500, 100, 100)];
    const q = quota();
    const fix = fixFor(flows, q, steadyEstimate(flows, q));
    // 16 requests/s against 10/s: 1.6 × 1.2 headroom = 1.92 -> 2 groups.
    expect(fix).toEqual({ groupsNeeded: 2, dropMappings: ['big'] });
  });

  it('suggests leaving nothing out when every mapping alone is over the quota', () => {
    const flows = [flow('a', 1500, 100, 100), flow('b', 1500, 100, 100)];
    expect(fixFor(flows, quota(), steadyEstimate(flows, quota()))?.dropMappings).toEqual([]);
  });

  it('has nothing to fix for a flow that keeps up', () => {
    const flows = [flow('a', 5, 1, 100)];
    expect(fixFor(flows, quota(), steadyEstimate(flows, quota()))).toBeUndefined();
  });
});
