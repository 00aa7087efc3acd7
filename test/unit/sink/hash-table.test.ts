import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Hash64Table, homeSlot } from '../../../src/sink/hash-table.ts';

/**
 * The written-hash store's table against a Map model: every operation sequence leaves the same
 * entries, including runs of keys that share a home slot (also across the end of the array),
 * the zero key (kept outside the array) and growth.
 */
type Key = readonly [number, number];
const big = (hi: number, lo: number): bigint => (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
const entries = (t: Hash64Table): [bigint, bigint][] => {
  const out: [bigint, bigint][] = [];
  t.forEach((kh, kl, vh, vl) => {
    out.push([big(kh, kl), big(vh, vl)]);
  });
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
};

/** Keys whose home slot in a 16-slot table is `slot` (deterministic search). */
function keysAt(slot: number, n: number, seed: number): Key[] {
  const out: Key[] = [];
  for (let i = 1; out.length < n; i++) {
    const key: Key = [Math.imul(i, 0x27d4eb2d) >>> 0, (i * 7919 + seed) >>> 0];
    if (homeSlot(key[0], key[1], 4) === slot) out.push(key);
  }
  return out;
}

/** Few keys, most of them colliding in a 16-slot table: at 15, 0 and 1 (a run that wraps), and 7. */
const POOL: Key[] = [
  [0, 0],
  [0, 1],
  [1, 0],
  [0xffffffff, 0xffffffff],
  ...keysAt(15, 5, 1),
  ...keysAt(0, 5, 2),
  ...keysAt(1, 3, 3),
  ...keysAt(7, 4, 4),
];

type Op = { kind: 'set'; key: number; hi: number; lo: number } | { kind: 'delete'; key: number };
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('set' as const), key: fc.nat(POOL.length - 1), hi: u32, lo: u32 }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), key: fc.nat(POOL.length - 1) }) },
);

describe('Hash64Table', () => {
  it('homeSlot puts the test pool where the tests say (colliding runs, one across the end)', () => {
    expect(keysAt(15, 5, 1).every(([h, l]) => homeSlot(h, l, 4) === 15)).toBe(true);
    expect(new Set(POOL.map(([h, l]) => `${h}:${l}`)).size).toBe(POOL.length);
  });

  it('behaves as a Map under any sequence of set, delete and lookups, through growth', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(opArb, { maxLength: 80 }), (bits, ops) => {
        const table = new Hash64Table(bits);
        const model = new Map<bigint, bigint>();
        for (const op of ops) {
          const [kh, kl] = POOL[op.key]!;
          const k = big(kh, kl);
          if (op.kind === 'set') {
            table.set(kh, kl, op.hi, op.lo);
            model.set(k, big(op.hi, op.lo));
          } else {
            expect(table.delete(kh, kl)).toBe(model.delete(k));
          }
          // Plain comparisons, one expect per operation: expect() in the inner loop is too slow for 2,000 runs.
          const wrong = POOL.filter(([h, l]) => {
            const want = model.get(big(h, l));
            if (table.get(h, l) !== want || table.has(h, l) !== (want !== undefined)) return true;
            if (want === undefined) return table.holds(h, l, 0, 0);
            const [vh, vl] = [Number(want >> 32n), Number(want & 0xffffffffn)];
            return !table.holds(h, l, vh, vl) || table.holds(h, l, vh, vl ^ 1) || table.holds(h, l, vh ^ 1, vl);
          });
          expect({ size: table.size, wrong }).toEqual({ size: model.size, wrong: [] });
        }
        expect(entries(table)).toEqual([...model].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
        expect(table.size / table.capacity).toBeLessThanOrEqual(0.7 + 1 / table.capacity);
      }),
      { numRuns: 2000 },
    );
  });

  it('finds every entry of a run that wraps around the end after any one of them is deleted', () => {
    const run = [...keysAt(15, 3, 1), ...keysAt(0, 3, 2), ...keysAt(14, 2, 5)];
    for (const gone of run) {
      const t = new Hash64Table(4);
      for (const [i, [h, l]] of run.entries()) t.set(h, l, i, i);
      expect(t.capacity).toBe(16);
      expect(t.delete(gone[0], gone[1])).toBe(true);
      expect(t.delete(gone[0], gone[1])).toBe(false);
      const held = run.map(([h, l]) => t.get(h, l));
      expect(held).toEqual(run.map((k, i) => (k === gone ? undefined : big(i, i))));
      expect(t.size).toBe(run.length - 1);
    }
  });

  it('grows by doubling before it is fuller than 0.7, keeps 16 bytes a slot, and ends empty after deleting everything', () => {
    const t = new Hash64Table();
    const n = 100_000;
    const key = (i: number): Key => [Math.imul(i, 0x9e3779b1) >>> 0, Math.imul(i ^ 0x5bd1e995, 0x85ebca6b) >>> 0];
    for (let i = 0; i < n; i++) t.set(...key(i), i, ~i);
    expect(t.size).toBe(n);
    expect(t.capacity).toBe(2 ** 18); // 100,000 / 0.7 = 142,858 > 2^17
    expect(t.bytes).toBe(16 * t.capacity);
    let found = 0;
    for (let i = 0; i < n; i++) if (t.holds(...key(i), i, ~i)) found++;
    expect(found).toBe(n);
    for (let i = 0; i < n; i += 2) t.delete(...key(i));
    let wrong = 0;
    for (let i = 0; i < n; i++) if (t.has(...key(i)) !== (i % 2 === 1)) wrong++;
    expect(wrong).toBe(0);
    for (let i = 1; i < n; i += 2) t.delete(...key(i));
    expect(t.size).toBe(0);
    expect(entries(t)).toEqual([]);
  });

  it('takes values as unsigned or signed 32-bit halves alike (XOR results are signed)', () => {
    const t = new Hash64Table();
    t.set(-1, -2, -3, 0x80000000 | 0);
    expect(t.get(0xffffffff, 0xfffffffe)).toBe(big(0xfffffffd, 0x80000000));
    expect(t.holds(0xffffffff, 0xfffffffe, 0xfffffffd, 0x80000000)).toBe(true);
    expect(t.holds(-1, -2, -3, -0x80000000)).toBe(true);
  });

  it('refuses a size it cannot hold', () => {
    expect(() => new Hash64Table(0)).toThrow(RangeError);
    expect(() => new Hash64Table(29)).toThrow(RangeError);
  });
});
