import { describe, expect, it } from 'vitest';
import { distinctKeys, hotShare, seededRandom, zipfExponentFor, zipfKeys } from '../../bench/zipf-workload.ts';

describe('zipf workload of bench:sink', () => {
  it('finds the exponent that puts 80% of the updates on 5% of the keys', () => {
    const s = zipfExponentFor(20_000, 0.05, 0.8);
    expect(s).toBeGreaterThan(0.5);
    expect(s).toBeLessThan(2);
    // Sampled, the hottest 5% of keys get close to 80% of 100k updates.
    const keys = zipfKeys(20_000, 100_000, s, 1);
    expect(hotShare(keys, 20_000, 0.05)).toBeGreaterThan(0.77);
    expect(hotShare(keys, 20_000, 0.05)).toBeLessThan(0.83);
  });

  it('is uniform at exponent 0 (no skew), so the skew comes from the exponent', () => {
    expect(zipfExponentFor(1000, 0.05, 0.05)).toBeLessThan(0.01);
    const keys = zipfKeys(1000, 50_000, 0, 7);
    expect(hotShare(keys, 1000, 0.05)).toBeLessThan(0.08);
  });

  it('draws keys in 1..n, reproducibly per seed, with hot keys spread over the id range', () => {
    const a = zipfKeys(500, 10_000, 1.2, 3);
    const b = zipfKeys(500, 10_000, 1.2, 3);
    const c = zipfKeys(500, 10_000, 1.2, 4);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...a)).toBeLessThanOrEqual(500);
    // The most hit key is not simply id 1: ranks are shuffled onto ids.
    const counts = new Map<number, number>();
    for (const k of a) counts.set(k, (counts.get(k) ?? 0) + 1);
    const hottest = [...counts.entries()]
      .sort((x, y) => y[1] - x[1])
      .slice(0, 5)
      .map(([k]) => k);
    expect(hottest).not.toEqual([1, 2, 3, 4, 5]);
    expect(distinctKeys(a)).toBeLessThan(500 + 1);
  });

  it('seededRandom stays in [0, 1)', () => {
    const r = seededRandom(9);
    for (let i = 0; i < 10_000; i++) {
      const v = r();
      expect(v >= 0 && v < 1).toBe(true);
    }
  });
});
