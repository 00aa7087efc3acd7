import { describe, expect, it } from 'vitest';
import type { CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { CallPlanner, InFlight, type Pending, type PlannerBudget } from '../../../src/sink/call-planner.ts';
import { CircuitBreaker } from '../../../src/sink/circuit-breaker.ts';
import type { Taken } from '../../../src/sink/quota-lanes.ts';
import { pending, upsert } from './fake-batch.ts';

/** A budget that pays for `calls` calls, each costing `costOf(writes)` requests. */
function fakeBudget(opts: { calls?: number; maxCallCost?: number; costOf?: (writes: CrmWrite[]) => number; fraction?: number } = {}) {
  const state = { calls: opts.calls ?? Infinity, taken: [] as CrmWrite[][], refunds: 0 };
  const costOf = opts.costOf ?? ((w: CrmWrite[]) => w.length);
  const budget: PlannerBudget = {
    fraction: opts.fraction ?? 1,
    cost: (writes) => ({ requests: costOf(writes), daily: costOf(writes) }),
    maxCallCost: () => opts.maxCallCost ?? 0,
    take: (writes) => {
      if (state.calls <= 0) return undefined;
      state.calls--;
      state.taken.push(writes);
      const spent = { at: 0, n: costOf(writes) };
      const lane = { budget: { refund: () => state.refunds++ } };
      return { lane, adapter: {}, spent } as unknown as Taken;
    },
  };
  return { budget, state };
}

function queueOf(...writes: CrmWrite[]): Pending[] {
  return writes.map((w, i) => pending(w, [i]));
}

function planner(opts: { budget?: PlannerBudget; batch?: number; concurrency?: number; inFlight?: number; breaker?: CircuitBreaker } = {}) {
  return new CallPlanner({
    budget: opts.budget ?? fakeBudget().budget,
    breaker: opts.breaker ?? new CircuitBreaker(),
    sizer: { size: () => opts.batch ?? 100 },
    inFlight: { count: opts.inFlight ?? 0 },
    concurrency: opts.concurrency ?? 4,
  });
}

const ids = (calls: Pending[][]): string[][] => calls.map((c) => c.map((p) => p.write.externalId));

describe('CallPlanner', () => {
  it('splits the queue by object and batch size, keeping its order', () => {
    const q = queueOf(upsert('a'), upsert('b'), upsert('c'), upsert('d', 'deals'), upsert('e'));
    const calls = planner({ batch: 2, concurrency: 10 }).takeCalls(q, 5, 't/0');
    expect(ids(calls)).toEqual([['a', 'b'], ['c'], ['d'], ['e']]);
    expect(q).toEqual([]);
  });

  it('takes no more calls than there are free in-flight slots', () => {
    const q = queueOf(upsert('a'), upsert('b'), upsert('c'));
    expect(ids(planner({ batch: 1, concurrency: 2 }).takeCalls(q, 5, 't/0'))).toEqual([['a'], ['b']]);
    expect(q.map((p) => p.write.externalId)).toEqual(['c']);
    const busy = planner({ batch: 1, concurrency: 2, inFlight: 2 });
    expect(busy.full()).toBe(true);
    expect(busy.takeCalls(q, 5, 't/0')).toEqual([]);
  });

  it("slots are this instance's share of the concurrency limit, at least one", () => {
    expect(planner({ concurrency: 8, budget: fakeBudget({ fraction: 0.5 }).budget }).slots()).toBe(4);
    expect(planner({ concurrency: 8, budget: fakeBudget({ fraction: 0 }).budget }).slots()).toBe(1);
  });

  it('takes no more calls than the budget pays for; the rest stays queued', () => {
    const { budget, state } = fakeBudget({ calls: 1 });
    const q = queueOf(upsert('a'), upsert('b'));
    const calls = planner({ budget, batch: 1 }).takeCalls(q, 5, 't/0');
    expect(ids(calls)).toEqual([['a']]);
    expect(calls[0]!.spent).toEqual({ at: 0, n: 1 });
    expect(state.taken).toHaveLength(1);
    expect(q).toHaveLength(1);
  });

  it('cuts a call to what the budget can pay at once (call cost)', () => {
    // Three requests per record; at most 7 requests per call: two records.
    const { budget } = fakeBudget({ maxCallCost: 7, costOf: (w) => 3 * w.length });
    const q = queueOf(upsert('a'), upsert('b'), upsert('c'), upsert('d'));
    expect(
      planner({ budget })
        .nextCall(q)
        .map((p) => p.write.externalId),
    ).toEqual(['a', 'b']);
    // A single record is sent even when it costs more than the limit (it could never be split).
    const { budget: tight } = fakeBudget({ maxCallCost: 2, costOf: (w) => 3 * w.length });
    expect(planner({ budget: tight }).nextCall(q)).toHaveLength(1);
  });

  it('sends nothing while the circuit is open; in half-open one probe and no budget spent on more', () => {
    const clock = { t: 0, now: () => clock.t };
    const breaker = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 1_000 }, clock);
    breaker.onFailure();
    const { budget, state } = fakeBudget();
    const q = queueOf(upsert('a'), upsert('b'));
    expect(planner({ budget, breaker, batch: 1 }).takeCalls(q, 5, 't/0')).toEqual([]);
    expect(state.taken).toHaveLength(0);
    clock.t = 1_000;
    const calls = planner({ budget, breaker, batch: 1, concurrency: 8 }).takeCalls(q, 5, 't/0');
    expect(ids(calls)).toEqual([['a']]);
    expect(state.taken).toHaveLength(1);
    expect(q).toHaveLength(1);
  });

  it('refunds the budget of a call the breaker does not let through', () => {
    const { budget, state } = fakeBudget();
    const breaker = { state: 'half-open', waitMs: () => 0, tryAcquire: () => false, restore: () => 1 } as const;
    const q = queueOf(upsert('a'));
    const p = new CallPlanner({ budget, breaker, sizer: { size: () => 10 }, inFlight: { count: 0 }, concurrency: 4 });
    expect(p.takeCalls(q, 5, 't/0')).toEqual([]);
    expect(state.taken).toHaveLength(1);
    expect(state.refunds).toBe(1);
    expect(q).toHaveLength(1);
  });
});

describe('InFlight', () => {
  it('counts calls and wakes a waiter when one ends', async () => {
    const inFlight = new InFlight();
    inFlight.enter();
    inFlight.enter();
    expect(inFlight.count).toBe(2);
    let woke = false;
    const waiting = inFlight.freed(60_000).then(() => (woke = true));
    await Promise.resolve();
    expect(woke).toBe(false);
    inFlight.leave();
    await waiting;
    expect(woke).toBe(true);
    expect(inFlight.count).toBe(1);
  });

  it('a waiter gives up after its timeout', async () => {
    const t0 = Date.now();
    await new InFlight().freed(20);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(15);
  });
});
