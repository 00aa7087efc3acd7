import type { Registry } from 'prom-client';
import { componentLogger } from '../logger.ts';
import type { ConnectorStatus, PartitionStatus } from './status.ts';

/**
 * The history behind the status page: every `intervalMs` the sampler reads the Prometheus
 * registry of this process and keeps the last `retentionSeconds` in a fixed-size ring buffer,
 * so a page opened late still shows the last 15 minutes and memory stays bounded. Counters
 * become per-second rates from the delta between two samples, as Prometheus' rate() does.
 */

/** A fixed-capacity FIFO: pushing into a full buffer drops the oldest item. */
export class RingBuffer<T> {
  private readonly items: (T | undefined)[];
  private start = 0;
  private count = 0;
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError(`ring buffer capacity must be a positive integer, got ${capacity}`);
    this.items = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  push(item: T): void {
    const end = (this.start + this.count) % this.capacity;
    this.items[end] = item;
    if (this.count < this.capacity) this.count++;
    else this.start = (this.start + 1) % this.capacity;
  }

  last(): T | undefined {
    return this.count === 0 ? undefined : this.items[(this.start + this.count - 1) % this.capacity];
  }

  /** Oldest first. */
  toArray(): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.count; i++) out.push(this.items[(this.start + i) % this.capacity] as T);
    return out;
  }
}

/**
 * Per-second rate of a counter between two samples. A counter lower than before means the
 * process restarted (Prometheus counters reset to 0), so the whole current value is the increase.
 */
export function ratePerSecond(previous: number | undefined, current: number, elapsedMs: number): number {
  if (previous === undefined || elapsedMs <= 0) return 0;
  const increase = current >= previous ? current - previous : current;
  return increase / (elapsedMs / 1000);
}

/** The values the status page plots, read from the registry at one instant (counters as totals). */
export interface Reading {
  eventsProduced: number;
  eventsConsumed: number;
  recordsWritten: number;
  crmRequests: number;
  throttles: number;
  deadLettered: number;
  pausedPartitions: number;
  budgetTokens: number | null;
  /**
   * `pg2crm_budget_limit` / `pg2crm_budget_used` by `scope` (limit: `quota` = the credential's,
   * `instance` = this instance's share; used: `instance`). `budgetPublished` is false in a
   * build whose rate budget does not declare them; the config quota stands in then.
   */
  budgetLimit: Record<string, number>;
  budgetUsed: Record<string, number>;
  budgetPublished: boolean;
  /** Consumer lag by `topic/partition`. */
  lag: Record<string, number>;
  slotLagBytes: number | null;
}

export interface MetricJson {
  name: string;
  values: { value: number; labels: Record<string, string | number | undefined> }[];
}

function sum(m: MetricJson | undefined): number {
  return m ? m.values.reduce((n, v) => n + v.value, 0) : 0;
}

function byLabel(m: MetricJson | undefined, key: (labels: Record<string, string | number | undefined>) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of m?.values ?? []) out[key(v.labels)] = (out[key(v.labels)] ?? 0) + v.value;
  return out;
}

/** Picks pg2crm's metrics out of `registry.getMetricsAsJSON()`; absent metrics read as 0 / null / {}. */
export function readMetrics(json: MetricJson[]): Reading {
  const m = new Map(json.map((j) => [j.name, j]));
  const tokens = m.get('pg2crm_budget_tokens');
  const slot = m.get('pg2crm_replication_slot_lag_bytes');
  return {
    eventsProduced: sum(m.get('pg2crm_events_produced_total')),
    eventsConsumed: sum(m.get('pg2crm_events_consumed_total')),
    recordsWritten: sum(m.get('pg2crm_records_written_total')),
    crmRequests: sum(m.get('pg2crm_crm_requests_total')),
    throttles: sum(m.get('pg2crm_crm_throttles_total')),
    deadLettered: sum(m.get('pg2crm_dead_lettered_total')),
    pausedPartitions: sum(m.get('pg2crm_paused_partitions')),
    budgetTokens: tokens && tokens.values.length > 0 ? sum(tokens) : null,
    budgetLimit: byLabel(m.get('pg2crm_budget_limit'), (l) => String(l.scope ?? 'budget')),
    budgetUsed: byLabel(m.get('pg2crm_budget_used'), (l) => String(l.scope ?? 'budget')),
    budgetPublished: m.has('pg2crm_budget_used') || m.has('pg2crm_budget_limit'),
    lag: byLabel(m.get('pg2crm_consumer_lag'), (l) => `${String(l.topic)}/${String(l.partition)}`),
    slotLagBytes: slot && slot.values.length > 0 ? sum(slot) : null,
  };
}

/** One sample as the page receives it. */
export interface Point {
  /** Unix milliseconds. */
  t: number;
  rates: { eventsProduced: number; eventsConsumed: number; recordsWritten: number; crmRequests: number; throttles: number };
  totals: {
    eventsProduced: number;
    eventsConsumed: number;
    recordsWritten: number;
    crmRequests: number;
    throttles: number;
    deadLettered: number;
  };
  pausedPartitions: number;
  budgetTokens: number | null;
  /** Requests used in the current budget window and the limits (quota, this instance's share), by scope. */
  budget: { used: Record<string, number>; limit: Record<string, number> };
  lag: Record<string, number>;
  slotLagBytes: number | null;
}

/** The CRM quota from the config, used when the budget does not publish its own gauges. */
export interface Quota {
  requests: number;
  windowSeconds: number;
}

/**
 * CRM calls this process made in the last `windowMs`: the current request total minus the
 * total at the newest sample at least one window old. Without such a sample the counter's
 * start (0, it starts with the process) is the base, or the oldest sample kept when the ring
 * buffer has already dropped older ones (`truncated`; a window longer than the retention).
 */
export function usedInWindow(
  history: readonly Pick<Point, 't' | 'totals'>[],
  now: number,
  windowMs: number,
  currentTotal: number,
  truncated = false,
): number {
  let from = truncated && history[0] ? history[0].totals.crmRequests : 0;
  for (const p of history) {
    if (p.t <= now - windowMs) from = p.totals.crmRequests;
    else break;
  }
  return currentTotal >= from ? currentTotal - from : currentTotal;
}

/** Turns a reading into a point, given the previous point (for rates) and the history (for the window). */
export function toPoint(
  r: Reading,
  now: number,
  previous: Point | undefined,
  history: readonly Point[],
  quota: Quota | undefined,
  truncated = false,
): Point {
  const dt = previous ? now - previous.t : 0;
  const rate = (k: keyof Point['rates']): number => ratePerSecond(previous?.totals[k], r[k], dt);
  const budget: Point['budget'] = { used: r.budgetUsed, limit: r.budgetLimit };
  if (!r.budgetPublished && quota) {
    budget.used = { instance: usedInWindow(history, now, quota.windowSeconds * 1000, r.crmRequests, truncated) };
    budget.limit = { quota: quota.requests };
  }
  return {
    t: now,
    rates: {
      eventsProduced: rate('eventsProduced'),
      eventsConsumed: rate('eventsConsumed'),
      recordsWritten: rate('recordsWritten'),
      crmRequests: rate('crmRequests'),
      throttles: rate('throttles'),
    },
    totals: {
      eventsProduced: r.eventsProduced,
      eventsConsumed: r.eventsConsumed,
      recordsWritten: r.recordsWritten,
      crmRequests: r.crmRequests,
      throttles: r.throttles,
      deadLettered: r.deadLettered,
    },
    pausedPartitions: r.pausedPartitions,
    budgetTokens: r.budgetTokens,
    budget,
    lag: r.lag,
    slotLagBytes: r.slotLagBytes,
  };
}

/** What the page's table shows beside the plots; each part is optional (a role may not run it). */
export interface StatusDetails {
  partitions?: (PartitionStatus & { paused: boolean })[];
  slot?: ConnectorStatus['slot'];
}

export interface TimeseriesResponse {
  name: string;
  intervalSeconds: number;
  retentionSeconds: number;
  quota: Quota | null;
  now: number;
  points: Point[];
  details: StatusDetails;
}

export interface SamplerOptions {
  name: string;
  registry: Registry;
  intervalMs?: number;
  retentionSeconds?: number;
  quota?: Quota;
  details?: () => StatusDetails;
  clock?: () => number;
}

export class TimeseriesSampler {
  private readonly log = componentLogger('ops.timeseries');
  private readonly opts: SamplerOptions;
  private readonly intervalMs: number;
  private readonly retentionSeconds: number;
  private readonly clock: () => number;
  private readonly points: RingBuffer<Point>;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: SamplerOptions) {
    this.opts = opts;
    this.intervalMs = opts.intervalMs ?? 2000;
    this.retentionSeconds = opts.retentionSeconds ?? 15 * 60;
    this.clock = opts.clock ?? Date.now;
    this.points = new RingBuffer(Math.ceil((this.retentionSeconds * 1000) / this.intervalMs) + 1);
  }

  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    return Promise.resolve();
  }

  async sample(): Promise<void> {
    try {
      const reading = readMetrics(await this.opts.registry.getMetricsAsJSON());
      const history = this.points.toArray();
      const truncated = this.points.size === this.points.capacity;
      this.points.push(toPoint(reading, this.clock(), this.points.last(), history, this.opts.quota, truncated));
    } catch (err) {
      this.log.warn({ err }, 'metrics sample failed');
    }
  }

  snapshot(): TimeseriesResponse {
    let details: StatusDetails = {};
    try {
      details = this.opts.details?.() ?? {};
    } catch (err) {
      this.log.warn({ err }, 'status details failed');
    }
    return {
      name: this.opts.name,
      intervalSeconds: this.intervalMs / 1000,
      retentionSeconds: this.retentionSeconds,
      quota: this.opts.quota ?? null,
      now: this.clock(),
      points: this.points.toArray(),
      details,
    };
  }
}
