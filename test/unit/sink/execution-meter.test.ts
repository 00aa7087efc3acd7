import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmAdapter, CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { ExecutionMeter } from '../../../src/sink/execution-meter.ts';
import { QuotaLanes } from '../../../src/sink/quota-lanes.ts';
import type { RateBudget } from '../../../src/sink/rate-budget.ts';

/** A clock the test moves. */
function clock(start = 1_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

describe('ExecutionMeter', () => {
  it('reserves estimates, counts measured durations from the end of the call for a window', () => {
    const c = clock();
    // 10 s of time per 10 s window, 100 ms per record to start with.
    const m = new ExecutionMeter({ seconds: 10, windowSeconds: 10 }, c);
    const a = m.take(50)!; // 5 s
    const b = m.take(40)!; // 4 s
    expect(m.usedMs()).toBe(9_000);
    expect(m.canTake(20)).toBe(false); // 2 s more would be 11 s
    expect(m.take(20)).toBeUndefined();
    expect(m.canTake(10)).toBe(true);
    c.t += 6_000;
    m.settle(a, 6_000, true); // took longer than estimated: 120 ms per record
    expect(m.perRecordMs).toBe(120);
    expect(m.usedMs()).toBe(10_000);
    c.t += 1_000;
    m.settle(b, 5_000, true);
    expect(m.perRecordMs).toBeCloseTo(0.3 * 125 + 0.7 * 120);
    expect(m.usedMs()).toBe(11_000);
    // a's 6 s leave the window 10 s after a ended, not after it started.
    c.t += 8_999;
    expect(m.usedMs()).toBe(11_000);
    c.t += 1;
    expect(m.usedMs()).toBe(5_000);
  });

  it('a throttled or failed call counts its (short) duration but teaches nothing about records', () => {
    const c = clock();
    const m = new ExecutionMeter({ seconds: 100, windowSeconds: 10 }, c);
    const r = m.take(100)!;
    c.t += 5;
    m.settle(r, 5, false);
    expect(m.perRecordMs).toBe(100);
    expect(m.usedMs()).toBe(5);
    const gone = m.take(10)!;
    m.refund(gone);
    expect(m.usedMs()).toBe(5);
  });

  it('waitMs: until enough spending has left the window, counting calls in flight as ending when estimated', () => {
    const c = clock();
    const m = new ExecutionMeter({ seconds: 10, windowSeconds: 10 }, c);
    const a = m.take(40)!; // 4 s
    c.t += 4_000;
    m.settle(a, 4_000, true);
    m.take(50); // 5 s in flight, estimated to end at +5 s
    expect(m.waitMs(10)).toBe(0);
    // 2 s more: a's 4 s must leave first, 10 s after it ended; the call may count on what leaves
    // during the first half of its own estimate (1 s).
    expect(m.waitMs(20)).toBe(10_000 - 1_000);
    // 10 s more (the whole limit): the call in flight must leave as well, 5 s + 10 s from now,
    // less half the new call's estimate.
    expect(m.waitMs(100)).toBe(15_000 - 5_000);
  });

  it('a call may count on what leaves the window during the first half of its estimate', () => {
    const c = clock();
    const m = new ExecutionMeter({ seconds: 10, windowSeconds: 10 }, c);
    const a = m.take(100)!;
    c.t += 10_000;
    m.settle(a, 10_000, true); // the whole window's time, ended now
    c.t += 8_000; // a leaves in 2 s
    expect(m.canTake(30)).toBe(false); // 3 s: half of it is 1.5 s, a still counts then
    expect(m.canTake(40)).toBe(true); // 4 s: a has left 2 s into it
  });

  it('scales with the request budget fraction (share, back-off) and utilisation', () => {
    const c = clock();
    let fraction = 0.5;
    const m = new ExecutionMeter({ seconds: 20, windowSeconds: 10, utilisation: 0.5, fraction: () => fraction }, c);
    expect(m.limitMs()).toBe(5_000);
    expect(m.take(30)).toBeDefined();
    expect(m.canTake(21)).toBe(false);
    expect(m.canTake(20)).toBe(true);
    fraction = 0;
    expect(m.canTake(1)).toBe(false);
    expect(m.waitMs(1)).toBe(1_000);
  });

  it('paces: the bucket of a tenth of the window starts empty (a restart), fills at limit/window', () => {
    const c = clock();
    const m = new ExecutionMeter({ seconds: 100, windowSeconds: 10, burst: 0.1 }, c);
    // refilled at 100 s per 10 s: 1 s of time in 100 ms
    expect(m.take(10)).toBeUndefined();
    expect(m.waitMs(10)).toBe(100);
    c.t += 100;
    expect(m.take(10)).toBeDefined();
    c.t += 60_000;
    expect(m.take(100)).toBeDefined(); // 10 s: the whole bucket at once
    expect(m.take(10)).toBeUndefined();
    expect(m.waitMs(10)).toBe(100);
  });

  it('keeps calls short: about a hundredth of the window, at least twice the time per request', () => {
    const m = new ExecutionMeter({ seconds: 1200, windowSeconds: 300, requests: 6000 }, clock());
    expect(m.maxCallRecords()).toBe(30); // 3 s at 100 ms
    const scaled = new ExecutionMeter({ seconds: 40, windowSeconds: 10, requests: 200 }, clock());
    expect(scaled.maxCallRecords()).toBe(4); // 2 × 40 s / 200 requests = 400 ms
  });
});

describe('QuotaLanes with an execution-time limit', () => {
  afterEach(() => vi.useRealTimers());
  const base = {
    name: 'c',
    postgres: { url: 'postgresql://u@h/db', tables: ['public.customers'] },
    kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
    mappings: [
      { table: 'public.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { email: 'email' } },
    ],
  };
  const writes = (n: number): CrmWrite[] =>
    Array.from({ length: n }, (_, i) => ({ op: 'upsert', object: 'contacts', externalIdField: 'erp_id', externalId: `${i}`, fields: {} }));
  const fake = (executionSeconds?: (w: number) => number): CrmAdapter => ({
    kind: 'fake',
    maxBatchSize: () => 1000,
    cost: () => 1,
    write: async () => [],
    ping: async () => undefined,
    close: async () => undefined,
    ...(executionSeconds ? { executionSeconds } : {}),
  });

  it("takes the adapter's limit scaled to the window, or crm.limits.executionSeconds; none without either", () => {
    const crm = (limits: Record<string, number>) =>
      parseConfig({ ...base, crm: { kind: 'dynamics', baseUrl: 'http://d', auth: { token: 't' }, limits } }, {}).crm;
    const dataverse = (w: number): number => (1200 * w) / 300;
    expect(new QuotaLanes(crm({ requests: 6000, windowSeconds: 300 }), () => fake(dataverse)).lanes[0]!.meter?.quotaMs).toBe(1_200_000);
    expect(new QuotaLanes(crm({ requests: 200, windowSeconds: 10 }), () => fake(dataverse)).lanes[0]!.meter?.quotaMs).toBe(40_000);
    expect(
      new QuotaLanes(crm({ requests: 200, windowSeconds: 10, executionSeconds: 20 }), () => fake(dataverse)).lanes[0]!.meter?.quotaMs,
    ).toBe(20_000);
    expect(new QuotaLanes(crm({ requests: 200, windowSeconds: 10 }), () => fake()).lanes[0]!.meter).toBeUndefined();
  });

  it('a call needs both requests and time; waitMs is the later of the two; maxCallWrites keeps calls short', () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const cfg = parseConfig(
      {
        ...base,
        crm: {
          kind: 'dynamics',
          baseUrl: 'http://d',
          auth: { token: 't' },
          limits: { requests: 1000, windowSeconds: 300, executionSeconds: 3 },
        },
      },
      {},
    );
    const lanes = new QuotaLanes(cfg.crm, () => fake());
    expect(lanes.maxCallWrites()).toBe(30);
    const meter = lanes.lanes[0]!.meter!;
    const budget: RateBudget = lanes.lanes[0]!.budget;
    // The time's pacing bucket (300 ms of 3 s) starts empty and fills at 3 s per 300 s.
    expect(lanes.take(writes(30), { priority: 5, who: 'p' })).toBeUndefined();
    expect(lanes.waitMs(writes(30))).toBe(30_000);
    vi.advanceTimersByTime(30_000);
    // 3 s of time: a 3 s call fits, a second does not although requests are left.
    const first = lanes.take(writes(30), { priority: 5, who: 'p' })!;
    expect(first.execution?.ms).toBe(3_000);
    expect(lanes.take(writes(1), { priority: 5, who: 'p' })).toBeUndefined();
    expect(budget.used()).toBe(1);
    expect(lanes.waitMs(writes(1))).toBeGreaterThan(0);
    lanes.refund(first);
    expect(meter.usedMs()).toBe(0);
    expect(budget.used()).toBe(0);
    // without a meter nothing changes
    const plain = new QuotaLanes(cfg.crm, () => fake());
    plain.lanes[0]!.meter = undefined;
    expect(plain.maxCallWrites()).toBe(Number.POSITIVE_INFINITY);
    vi.useRealTimers();
  });
});
