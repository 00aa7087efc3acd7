import type { CallShape, SnapshotSpend } from './call-shapes.ts';

/**
 * `pg2crm plan`'s arithmetic, pure: from the quota (crm.limits × quota groups), the snapshot's
 * spend per mapping and the change rates, the snapshot's wall time and the steady-state share of
 * the quota. It models the sink's budget (rate-budget.ts, quota-lanes.ts): each quota group lets
 * `burst` of its window limit go at once, then paces at limit/window; no window ever holds more
 * than the limit; a daily quota rolls over 24 h; at most `concurrency` calls are in flight.
 */

export const DAY_SECONDS = 86_400;

export interface QuotaFigures {
  /** Requests (or credits) per window of ONE quota group, after `utilisation`. */
  perWindow: number;
  windowSeconds: number;
  /** Daily quota of one group, after `utilisation`; undefined = none. */
  daily: number | undefined;
  /** Separate quota groups: separate buckets, each with `perWindow`. */
  groups: number;
  concurrency: number;
  /** Share of a window limit that may go at once (quota-lanes.ts PACING_BURST). */
  burst: number;
  /** A limit on the CRM's execution time per window, per quota group (Dataverse's 1,200 s per 5 min), if any. */
  execution?: ExecutionLimit | undefined;
}

export interface ExecutionLimit {
  seconds: number;
  windowSeconds: number;
  /** Execution time one record written costs (an assumption: no CRM documents it). */
  secondsPerRecord: number;
}

export interface Assumptions {
  /** Time one CRM call takes (network and CRM), seconds. */
  callSeconds: number;
  /** From `pg2crm run` to the first CRM call: slot, snapshot start, consumer group join, budget share. */
  startupSeconds: number;
  /** Rows per second the source reads, publishes and the sink decodes (far above any CRM quota). */
  sourceRowsPerSecond: number;
  /**
   * Share of the paced quota the sink turns into calls during a snapshot (pauses, resumes and
   * refetches between calls that waited for budget, the partial calls at the end).
   */
  paceEfficiency: number;
}

export type Bound = 'quota window' | 'daily quota' | 'execution time' | 'concurrency' | 'source';

export interface SnapshotEstimate {
  calls: number;
  requests: number;
  daily: number;
  /** Seconds of waiting for bulk jobs (spread over the calls in flight). */
  jobSeconds: number;
  /** Windows of the whole quota (every group) the requests fill. */
  windows: number;
  /** Days of the daily quota the daily units fill (undefined without a daily quota). */
  days: number | undefined;
  seconds: number;
  /** What decides the time. */
  bound: Bound;
}

/**
 * Seconds until `requests` are spent under the window limit with pacing and the initial burst, the
 * paced part at `efficiency` of the rate.
 */
export function quotaSeconds(requests: number, q: QuotaFigures, efficiency = 1): number {
  const limit = q.perWindow * q.groups;
  const rate = (limit / q.windowSeconds) * efficiency;
  const paced = Math.max(0, (requests - limit * q.burst) / rate);
  // No window holds more than the limit: the n-th full window's worth waits for the first to age out.
  const windowed = (Math.ceil(requests / limit) - 1) * q.windowSeconds;
  return Math.max(paced, windowed);
}

/** Seconds until `daily` units are spent under a rolling 24 h quota (0 when it fits in one day). */
export function dailySeconds(daily: number, q: QuotaFigures): number {
  if (q.daily === undefined || daily <= 0) return 0;
  return Math.floor((daily - 1) / (q.daily * q.groups)) * DAY_SECONDS;
}

/**
 * Seconds the CRM's execution-time limit holds `rows` records back: a window's worth, then one
 * more per window (the sink paces its time evenly, execution-meter.ts, so the first window's
 * worth takes a window too: this is the least the limit costs).
 */
export function executionSeconds(rows: number, q: QuotaFigures): number {
  if (!q.execution || rows <= 0) return 0;
  const { seconds, windowSeconds, secondsPerRecord } = q.execution;
  return Math.floor((rows * secondsPerRecord - 1e-9) / (seconds * q.groups)) * windowSeconds;
}

/**
 * The snapshot of `rows` rows spending `spend`: the slowest of quota, daily quota, execution
 * time, concurrency (calls of `callSeconds` plus their bulk jobs' waits) and source.
 */
export function snapshotEstimate(
  spend: Omit<SnapshotSpend, 'recordsPerCall'>,
  rows: number,
  q: QuotaFigures,
  a: Assumptions,
): SnapshotEstimate {
  const bounds: [Bound, number][] = [
    ['quota window', quotaSeconds(spend.requests, q, a.paceEfficiency)],
    ['daily quota', dailySeconds(spend.daily, q)],
    ['execution time', executionSeconds(rows, q)],
    ['concurrency', (spend.calls * a.callSeconds + spend.jobSeconds) / q.concurrency],
    ['source', rows / a.sourceRowsPerSecond],
  ];
  const [bound, busy] = bounds.reduce((m, b) => (b[1] > m[1] ? b : m));
  // The last call still has to come back.
  const seconds = spend.calls === 0 ? 0 : a.startupSeconds + busy + a.callSeconds;
  return {
    calls: spend.calls,
    requests: spend.requests,
    daily: spend.daily,
    jobSeconds: spend.jobSeconds,
    windows: spend.requests / (q.perWindow * q.groups),
    days: q.daily === undefined ? undefined : spend.daily / (q.daily * q.groups),
    seconds,
    bound,
  };
}

/** One mapping's change flow in steady state. */
export interface SteadyInput {
  name: string;
  changesPerSecond: number;
  /** A call as the linger gathers it at this rate. */
  lingered: CallShape;
  /** A full call (what the sink sends once changes back up). */
  full: CallShape;
}

export interface SteadyEstimate {
  recordsPerHour: number;
  /** Requests per hour at the lingered call size, and their share of the quota (>1: over). */
  requestsPerHour: number;
  share: number;
  dailyShare: number | undefined;
  /** Share of the CRM's execution-time limit (with full calls: it counts records, not calls). */
  executionShare: number | undefined;
  /** keeps-up: within quota; batches-up: over at the lingered size, within it with full calls; behind: over either way. */
  status: 'keeps-up' | 'batches-up' | 'behind';
  /** Records per hour that pile up (status behind). */
  behindPerHour: number;
  /** Share of the most binding limit (window, daily, execution time) the change flow needs with full calls: over 1 falls behind. */
  fullShare: number;
}

export function steadyEstimate(flows: SteadyInput[], q: QuotaFigures): SteadyEstimate {
  const perHour = (f: SteadyInput, shape: CallShape, key: 'requests' | 'daily') =>
    shape.records > 0 ? ((f.changesPerSecond * 3600) / shape.records) * shape[key] : 0;
  const capacityPerHour = ((q.perWindow * q.groups) / q.windowSeconds) * 3600;
  const dailyPerHour = q.daily === undefined ? undefined : (q.daily * q.groups) / 24;
  const sum = (fn: (f: SteadyInput) => number) => flows.reduce((n, f) => n + fn(f), 0);
  const recordsPerHour = sum((f) => f.changesPerSecond * 3600);
  const requestsPerHour = sum((f) => perHour(f, f.lingered, 'requests'));
  const share = requestsPerHour / capacityPerHour;
  const fullShare = sum((f) => perHour(f, f.full, 'requests')) / capacityPerHour;
  const dailyShare = dailyPerHour === undefined ? undefined : sum((f) => perHour(f, f.lingered, 'daily')) / dailyPerHour;
  const fullDailyShare = dailyPerHour === undefined ? 0 : sum((f) => perHour(f, f.full, 'daily')) / dailyPerHour;
  const e = q.execution;
  const executionShare =
    e === undefined ? undefined : (recordsPerHour * e.secondsPerRecord) / ((e.seconds * q.groups * 3600) / e.windowSeconds);
  const over = Math.max(fullShare, fullDailyShare, executionShare ?? 0);
  const status = over > 1 ? 'behind' : share > 1 || (dailyShare ?? 0) > 1 ? 'batches-up' : 'keeps-up';
  return {
    recordsPerHour,
    requestsPerHour,
    share,
    dailyShare,
    executionShare,
    status,
    behindPerHour: over > 1 ? recordsPerHour * (1 - 1 / over) : 0,
    fullShare: over,
  };
}

/** What would let a change flow that falls behind keep up, with 20% headroom. */
export interface Fix {
  /** Quota groups needed in all (each a credential the CRM counts separately). */
  groupsNeeded: number;
  /** Mappings to leave out (largest need first) so the rest fits the current quota; empty when none would be left. */
  dropMappings: string[];
}

const FIX_HEADROOM = 1.2;

export function fixFor(flows: SteadyInput[], q: QuotaFigures, steady: SteadyEstimate): Fix | undefined {
  if (steady.status !== 'behind') return undefined;
  const groupsNeeded = Math.ceil(q.groups * steady.fullShare * FIX_HEADROOM);
  const needOf = (f: SteadyInput) => steadyEstimate([f], q).fullShare;
  const byNeed = [...flows].sort((a, b) => needOf(b) - needOf(a));
  const dropMappings: string[] = [];
  let left = byNeed;
  while (left.length > 0 && steadyEstimate(left, q).fullShare * FIX_HEADROOM > 1) {
    dropMappings.push(left[0]!.name);
    left = left.slice(1);
  }
  // Leaving every mapping out is no plan: each one alone is over the quota.
  return { groupsNeeded, dropMappings: left.length > 0 ? dropMappings : [] };
}
