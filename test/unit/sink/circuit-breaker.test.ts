import { describe, expect, it } from 'vitest';
import { BatchSizer } from '../../../src/sink/batch-sizer.ts';
import { CircuitBreaker } from '../../../src/sink/circuit-breaker.ts';
import { writeHash } from '../../../src/sink/written-hashes.ts';

const clock = () => {
  const c = { t: 0, now: () => c.t };
  return c;
};

describe('CircuitBreaker', () => {
  it('opens after consecutive failures, probes once half-open, closes and ramps back', () => {
    const c = clock();
    const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000, rampMs: 10_000 }, c);
    b.onFailure();
    b.onFailure();
    expect(b.state).toBe('closed');
    expect(b.onFailure()).toBe(true);
    expect(b.tryAcquire()).toBe(false);
    expect(b.waitMs()).toBe(1000);
    c.t = 1000;
    expect(b.state).toBe('half-open');
    expect(b.tryAcquire()).toBe(true);
    expect(b.tryAcquire()).toBe(false); // one probe at a time
    b.onFailure(); // probe failed: open again, cooldown doubled
    expect(b.waitMs()).toBe(2000);
    c.t = 3000;
    expect(b.tryAcquire()).toBe(true);
    b.onSuccess();
    expect(b.state).toBe('closed');
    expect(b.restore()).toBeCloseTo(0.25);
    c.t = 13_000;
    expect(b.restore()).toBe(1);
  });

  it('opens when the retry budget is spent even without consecutive failures', () => {
    const b = new CircuitBreaker({ failureThreshold: 1000, retryTokens: 20 }, clock());
    b.onFailure('timeout');
    b.onSuccess();
    b.onFailure('timeout');
    expect(b.state).toBe('open');
  });
});

describe('BatchSizer', () => {
  it('halves on payload too large or slow calls and grows back on fast full ones', () => {
    const s = new BatchSizer(() => 200, 1000);
    s.observe('c', 200, 50, true);
    expect(s.size('c')).toBe(100);
    s.observe('c', 100, 5000, false);
    expect(s.size('c')).toBe(50);
    s.observe('c', 50, 10, false);
    expect(s.size('c')).toBe(63);
    for (let i = 0; i < 20; i++) s.observe('c', s.size('c'), 10, false);
    expect(s.size('c')).toBe(200);
  });
});

describe('writeHash', () => {
  it('depends on field values and lookups, not on field order', () => {
    const w = { op: 'upsert' as const, object: 'contacts', externalIdField: 'x', externalId: '1' };
    const a = writeHash({ ...w, fields: { a: 1, b: 'x' } });
    expect(writeHash({ ...w, fields: { b: 'x', a: 1 } })).toBe(a);
    expect(writeHash({ ...w, fields: { a: 2, b: 'x' } })).not.toBe(a);
    expect(writeHash({ ...w, fields: { a: 1, b: 'x' }, lookups: { c: { object: 'o', externalIdField: 'e', externalId: '9' } } })).not.toBe(
      a,
    );
    // A cleared lookup differs from no lookup and from a target whose external id is "null".
    const lookup = (externalId: string | null) =>
      writeHash({ ...w, fields: { a: 1, b: 'x' }, lookups: { c: { object: 'o', externalIdField: 'e', externalId } } });
    expect(new Set([a, lookup(null), lookup('null'), lookup('9')]).size).toBe(4);
  });
});
