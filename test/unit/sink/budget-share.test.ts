import { describe, expect, it } from 'vitest';
import { type GroupView, shareOf } from '../../../src/sink/budget-share.ts';

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

  it('is 0 for a member without partitions', () => {
    expect(shareOf(view({ a: { t: [0] }, b: {} }, {}), 'b', prio)).toBe(0);
  });
});
