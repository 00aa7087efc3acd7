import { describe, expect, it } from 'vitest';
import { StallTracker } from '../../../src/ops/stall-tracker.ts';

const p = (committed: number | null, lag: number) => [{ topic: 't', partition: 0, committed, lag }];

describe('StallTracker', () => {
  it('counts the time a partition has lag while its committed offset stands still', () => {
    const s = new StallTracker();
    expect(s.observe(p(10, 1), 0).get('t/0')).toBe(0);
    expect(s.observe(p(10, 1), 60_000).get('t/0')).toBe(60);
    expect(s.observe(p(10, 5), 600_000).get('t/0')).toBe(600);
  });

  it('resets when the committed offset moves or the lag is gone', () => {
    const s = new StallTracker();
    s.observe(p(10, 3), 0);
    expect(s.observe(p(11, 2), 30_000).get('t/0')).toBe(0);
    expect(s.observe(p(11, 2), 50_000).get('t/0')).toBe(20);
    expect(s.observe(p(11, 0), 70_000).get('t/0')).toBe(0);
    expect(s.observe(p(11, 1), 90_000).get('t/0')).toBe(0);
    expect(s.observe(p(null, 4), 95_000).get('t/0')).toBe(0);
  });
});
