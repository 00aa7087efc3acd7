import { Counter, Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { statusPageHtml } from '../../../src/ops/status-page.ts';
import { type Point, RingBuffer, ratePerSecond, readMetrics, TimeseriesSampler, usedInWindow } from '../../../src/ops/timeseries.ts';

describe('RingBuffer', () => {
  it('keeps items oldest first until full', () => {
    const b = new RingBuffer<number>(3);
    expect(b.toArray()).toEqual([]);
    expect(b.last()).toBeUndefined();
    b.push(1);
    b.push(2);
    expect(b.toArray()).toEqual([1, 2]);
    expect(b.last()).toBe(2);
    expect(b.size).toBe(2);
  });

  it('drops the oldest item when full, so memory stays bounded', () => {
    const b = new RingBuffer<number>(3);
    for (let i = 1; i <= 10; i++) b.push(i);
    expect(b.toArray()).toEqual([8, 9, 10]);
    expect(b.size).toBe(3);
    expect(b.last()).toBe(10);
  });

  it('rejects a capacity that is not a positive integer', () => {
    expect(() => new RingBuffer(0)).toThrow(/positive integer/);
    expect(() => new RingBuffer(1.5)).toThrow(/positive integer/);
  });
});

describe('ratePerSecond', () => {
  it('divides the counter increase by the elapsed seconds', () => {
    expect(ratePerSecond(100, 160, 2000)).toBe(30);
    expect(ratePerSecond(5, 5, 2000)).toBe(0);
  });

  it('is 0 for the first sample and for a zero interval', () => {
    expect(ratePerSecond(undefined, 500, 2000)).toBe(0);
    expect(ratePerSecond(1, 5, 0)).toBe(0);
  });

  it('treats a lower value as a counter reset: the whole current value is the increase', () => {
    expect(ratePerSecond(1000, 40, 2000)).toBe(20);
  });
});

function point(t: number, crmRequests: number): Pick<Point, 't' | 'totals'> {
  return { t, totals: { eventsProduced: 0, eventsConsumed: 0, recordsWritten: 0, crmRequests, throttles: 0, deadLettered: 0 } };
}

describe('usedInWindow', () => {
  const history = [point(0, 0), point(10_000, 40), point(20_000, 90), point(30_000, 150)];

  it('subtracts the total of the newest sample at least one window old', () => {
    // window 15 s at t=32 s: the base is the sample at 10 s (the one at 20 s is inside the window).
    expect(usedInWindow(history, 32_000, 15_000, 170)).toBe(130);
    expect(usedInWindow(history, 40_000, 10_000, 170)).toBe(20);
  });

  it('counts from 0 while the process is younger than a window', () => {
    expect(usedInWindow([point(1000, 3), point(3000, 8)], 5000, 60_000, 12)).toBe(12);
  });

  it('counts from the oldest sample kept once the buffer dropped older ones', () => {
    expect(usedInWindow([point(1000, 300), point(3000, 320)], 5000, 60_000, 330, true)).toBe(30);
  });
});

function testRegistry() {
  const registry = new Registry();
  const m = {
    produced: new Counter({ name: 'pg2crm_events_produced_total', help: 'h', registers: [registry] }),
    written: new Counter({ name: 'pg2crm_records_written_total', help: 'h', labelNames: ['object', 'op'], registers: [registry] }),
    requests: new Counter({ name: 'pg2crm_crm_requests_total', help: 'h', labelNames: ['object', 'outcome'], registers: [registry] }),
    lag: new Gauge({ name: 'pg2crm_consumer_lag', help: 'h', labelNames: ['topic', 'partition'], registers: [registry] }),
    slot: new Gauge({ name: 'pg2crm_replication_slot_lag_bytes', help: 'h', labelNames: ['slot'], registers: [registry] }),
  };
  return { registry, m };
}

describe('readMetrics', () => {
  it('sums counters over labels, keys lag by topic/partition and reads absent metrics as empty', async () => {
    const { registry, m } = testRegistry();
    m.written.inc({ object: 'contacts', op: 'upsert' }, 7);
    m.written.inc({ object: 'deals', op: 'delete' }, 3);
    m.lag.set({ topic: 't.erp.customers', partition: '0' }, 12);
    m.lag.set({ topic: 't.erp.customers', partition: '1' }, 0);
    const r = readMetrics(await registry.getMetricsAsJSON());
    expect(r.recordsWritten).toBe(10);
    expect(r.lag).toEqual({ 't.erp.customers/0': 12, 't.erp.customers/1': 0 });
    // Declared but never set: no sample yet, which is not the same as 0 bytes held.
    expect(r.slotLagBytes).toBeNull();
    // Not registered at all (a build without the budget gauges).
    expect(r.budgetUsed).toEqual({});
    expect(r.budgetPublished).toBe(false);
    expect(r.budgetTokens).toBeNull();
    expect(r.throttles).toBe(0);
  });

  it('reads budget used and limit by scope when the budget publishes them', async () => {
    const { registry } = testRegistry();
    new Gauge({ name: 'pg2crm_budget_limit', help: 'h', labelNames: ['scope'], registers: [registry] }).set({ scope: 'instance' }, 100);
    new Gauge({ name: 'pg2crm_budget_used', help: 'h', labelNames: ['scope'], registers: [registry] }).set({ scope: 'instance' }, 42);
    const r = readMetrics(await registry.getMetricsAsJSON());
    expect(r.budgetLimit).toEqual({ instance: 100 });
    expect(r.budgetUsed).toEqual({ instance: 42 });
    expect(r.budgetPublished).toBe(true);
  });

  it('uses the published budget, never the config fallback, once the gauges exist (even before their first value)', async () => {
    const { registry, m } = testRegistry();
    new Gauge({ name: 'pg2crm_budget_used', help: 'h', labelNames: ['scope'], registers: [registry] });
    m.requests.inc({ object: 'contacts', outcome: 'ok' }, 5);
    const sampler = new TimeseriesSampler({ name: 'c', registry, quota: { requests: 50, windowSeconds: 4 } });
    await sampler.sample();
    expect(sampler.snapshot().points[0]!.budget).toEqual({ used: {}, limit: {} });
  });
});

describe('TimeseriesSampler', () => {
  it('turns counter deltas into rates, keeps at most the retention, and falls back to the config quota', async () => {
    const { registry, m } = testRegistry();
    let now = 1_000_000;
    const sampler = new TimeseriesSampler({
      name: 'c',
      registry,
      intervalMs: 2000,
      retentionSeconds: 10,
      quota: { requests: 50, windowSeconds: 4 },
      clock: () => now,
    });
    await sampler.sample();
    m.produced.inc(40);
    m.requests.inc({ object: 'contacts', outcome: 'ok' }, 6);
    now += 2000;
    await sampler.sample();
    let points = sampler.snapshot().points;
    expect(points).toHaveLength(2);
    expect(points[0]!.rates.eventsProduced).toBe(0);
    expect(points[1]!.rates.eventsProduced).toBe(20);
    expect(points[1]!.rates.crmRequests).toBe(3);
    // No budget gauges in this registry: requests counted over the window vs the config quota.
    expect(points[1]!.budget).toEqual({ used: { instance: 6 }, limit: { quota: 50 } });

    for (let i = 0; i < 20; i++) {
      m.requests.inc({ object: 'contacts', outcome: 'ok' }, 1);
      now += 2000;
      await sampler.sample();
    }
    points = sampler.snapshot().points;
    // 10 s at one sample per 2 s: 6 samples (both ends of the span).
    expect(points).toHaveLength(6);
    expect(points.at(-1)!.t - points[0]!.t).toBe(10_000);
    // One request per 2 s sample, 4 s window: the last two samples' requests.
    expect(points.at(-1)!.budget.used.instance).toBe(2);
  });

  it('starts and stops idempotently, and stop() ends sampling', async () => {
    const { registry } = testRegistry();
    const sampler = new TimeseriesSampler({ name: 'c', registry, intervalMs: 20 });
    sampler.start();
    sampler.start();
    await new Promise((r) => setTimeout(r, 110));
    await sampler.stop();
    await sampler.stop();
    const n = sampler.snapshot().points.length;
    expect(n).toBeGreaterThanOrEqual(3);
    // Two timers would have sampled about twice as often.
    expect(n).toBeLessThanOrEqual(8);
    await new Promise((r) => setTimeout(r, 80));
    expect(sampler.snapshot().points.length).toBe(n);
  });

  it('serves the details of the table and survives a failing details provider', () => {
    const { registry } = testRegistry();
    const slot = { name: 's', exists: true, active: true, confirmedFlushLsn: '0/1', lagBytes: 10 };
    expect(new TimeseriesSampler({ name: 'c', registry, details: () => ({ slot }) }).snapshot().details).toEqual({ slot });
    const failing = new TimeseriesSampler({
      name: 'c',
      registry,
      details: () => {
        throw new Error('boom');
      },
    });
    expect(failing.snapshot().details).toEqual({});
  });
});

describe('status page', () => {
  it('is self-contained: no external scripts, styles or images (the container has no internet)', () => {
    const html = statusPageHtml();
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).not.toMatch(/<script[^>]+src=/i);
    expect(html).not.toMatch(/<link /i);
    expect(html).not.toMatch(/<img /i);
    // The only absolute URL is the SVG namespace, which is an identifier, not a fetch.
    expect(html.match(/https?:\/\/[^'"\s)]+/g)).toEqual(['http://www.w3.org/2000/svg']);
    expect(html).toContain("fetch('api/timeseries'");
  });
});
