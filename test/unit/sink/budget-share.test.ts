import { describe, expect, it } from 'vitest';
import { type GroupView, shareOf } from '../../../src/sink/budget-share.ts';
import { PACING_BURST } from '../../../src/sink/quota-lanes.ts';
import { RateBudget } from '../../../src/sink/rate-budget.ts';

function view(assignment: Record<string, Record<string, number[]>>, lag: Record<string, number>): GroupView {
  return {
    assignment: new Map(Object.entries(assignment).map(([m, t]) => [m, new Map(Object.entries(t))])),
    lag: new Map(Object.entries(lag)),
  };
}

describe('shareOf', () => {
  const prio = () => 5;
  it('splits by partitions when idle and sums to one', () => {
    const v = view({ a: { t: [0, 1] }, b: { t: [2] } }, {});
    expect(shareOf(v, 'a', prio)).toBeCloseTo(2 / 3);
    expect(shareOf(v, 'a', prio) + shareOf(v, 'b', prio)).toBeCloseTo(1);
  });

  it('gives the budget of idle partitions to busy ones, keeping a floor', () => {
    const v = view({ a: { t: [0] }, b: { t: [1] } }, { 't/0': 10_000, 't/1': 0 });
    const a = shareOf(v, 'a', prio);
    const b = shareOf(v, 'b', prio);
    expect(a).toBeGreaterThan(0.95);
    expect(b).toBeGreaterThan(0);
    expect(a + b).toBeCloseTo(1);
  });

  it('weighs higher-priority topics more', () => {
    const v = view({ a: { deals: [0] }, b: { notes: [0] } }, { 'deals/0': 100, 'notes/0': 100 });
    const p = (t: string) => (t === 'deals' ? 9 : 0);
    expect(shareOf(v, 'a', p) / shareOf(v, 'b', p)).toBeCloseTo(8);
  });

  it('gives whole calls of a quota that add up to it, the same split in every member', () => {
    const v = view(
      { a: { t: [0] }, b: { t: [1] }, c: { t: [2] }, d: { t: [3] }, e: {} },
      { 't/0': 4900, 't/1': 5000, 't/2': 5050, 't/3': 5100 },
    );
    const calls = ['a', 'b', 'c', 'd', 'e'].map((m) => Math.round(shareOf(v, m, prio, 20) * 20));
    expect(calls).toEqual([5, 5, 5, 5, 0]); // floors 4 + 4 + 5 + 5 = 18 would lose 2 of 20
    const tie = view({ a: { t: [0] }, b: { t: [1] }, c: { t: [2] } }, {});
    expect(['c', 'a', 'b'].map((m) => Math.round(shareOf(tie, m, prio, 20) * 20))).toEqual([6, 7, 7]);
  });

  it('is 0 for a member without partitions', () => {
    expect(shareOf(view({ a: { t: [0] }, b: {} }, {}), 'b', prio)).toBe(0);
  });
});

/**
 * N instances of one consumer group on one credential, in fake time: each drains its
 * partitions as it spends, commits every second, samples the group every window/5 (staggered,
 * as real instances are) and sets the share shareOf gives it; each spends whatever its
 * RateBudget (paced, as QuotaLanes makes it) allows. Every partition keeps a backlog, so every
 * instance could use any share: the quota is the only limit.
 */
function simulate(members: number, quota: number) {
  const windowMs = 10_000;
  const c = { t: 0, now: () => c.t };
  const ids = Array.from({ length: members }, (_, i) => `m${i}`);
  const partitions = 4;
  // Unequal backlogs; a call drains 100 records, more messages where updates compact (Zipf).
  const end = [90_000, 70_000, 55_000, 45_000];
  const perCall = [260, 180, 130, 110];
  const consumed = [0, 0, 0, 0];
  const committed = [0, 0, 0, 0];
  const owner = (p: number) => ids[p % members]!;
  const assignment = new Map(ids.map((id) => [id, new Map([['t', [...Array(partitions).keys()].filter((p) => owner(p) === id)]])]));
  const budgets = ids.map(() => new RateBudget({ requests: quota, windowSeconds: 10, burst: PACING_BURST }, c));
  for (const b of budgets) b.setShare(0, true);
  const interval = windowMs / 5;
  const sends: number[] = [];
  let turn = 0;
  for (let t = 0; t < 120_000; t += 50) {
    c.t = t;
    if (t % 1_000 === 0) for (let p = 0; p < partitions; p++) committed[p] = consumed[p]!;
    ids.forEach((id, i) => {
      if ((t - (i * interval) / members) % interval !== 0 || t < 1_000) return;
      const lag = new Map([...Array(partitions).keys()].map((p) => [`t/${p}`, end[p]! - committed[p]!]));
      budgets[i]!.setShare(shareOf({ assignment, lag }, id, () => 5, quota));
    });
    for (const [i, b] of budgets.entries()) {
      while (b.tryTake(1)) {
        sends.push(t);
        const mine = [...Array(partitions).keys()].filter((p) => owner(p) === ids[i]);
        const p = mine[turn++ % mine.length]!;
        consumed[p] = consumed[p]! + perCall[p]!;
      }
    }
  }
  let worst = 0;
  for (const t of sends) worst = Math.max(worst, sends.filter((s) => s > t - windowMs && s <= t).length);
  // Steady state: from 40 s (every share granted a window ago) to the end.
  const used = sends.filter((s) => s >= 40_000).length / ((80_000 / windowMs) * quota);
  return { used, worst };
}

describe('sharing one quota between instances', () => {
  for (const quota of [20, 100]) {
    for (const members of [2, 4]) {
      it(`${members} busy instances use >= 95% of ${quota}/10 s and never exceed it`, () => {
        const { used, worst } = simulate(members, quota);
        console.log(`sim ${members}x${quota}: used ${used} worst ${worst}`);
        expect(worst).toBeLessThanOrEqual(quota);
        expect(used).toBeGreaterThanOrEqual(0.95);
      });
    }
  }
});
