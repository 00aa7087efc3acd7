/**
 * The figures `bench:sink` prints per (crm, contender), and the goals. Ratios only, so
 * the verdict does not depend on how fast this machine is:
 *   capacityUsed   = recordsPerSecond / theoretical (limit / window × records per unit of budget)
 *   throttledShare = throttled calls / calls (as the simulator counted them)
 *   callsPerChange = CRM calls / changes committed (1 = one call per change)
 */
export type Contender = 'pg2crm' | 'naive' | 'theoretical';

export interface SinkFigures {
  crm: string;
  contender: Contender;
  recordsPerSecond: number;
  capacityUsed: number;
  throttledShare: number;
  /** null when no change was consumed in the interval (nothing to divide by). */
  callsPerChange: number | null;
}

/** What a contender did in its measured interval (simulator stats deltas, committed changes). */
export interface Measured {
  records: number;
  calls: number;
  throttled: number;
  changes: number;
  seconds: number;
}

export interface Capacity {
  requests: number;
  windowSeconds: number;
  /** Largest records per call (adapter.maxBatchSize). */
  maxBatch: number;
  /** Budget units one full call spends (adapter.cost of maxBatch records): 1 for most CRMs, Zoho counts credits. */
  costOfFullBatch: number;
  /** Records per window another limit allows when it binds before the requests do (Dynamics' execution time). */
  recordsPerWindowBound?: number | undefined;
}

export const GOALS = { capacityUsed: 0.95, throttledShare: 0.005, callsPerChange: 0.1 } as const;

const round = (v: number, digits: number): number => Number(v.toFixed(digits));

/** The quota is spent per record (Zendesk Sell's single-record API, Dynamics' $batch operations): only compaction saves it. */
export function chargedPerRecord(c: Capacity): boolean {
  return c.maxBatch === 1 || c.costOfFullBatch >= c.maxBatch;
}

/**
 * Records per second if every unit of the budget is spent on full batches, or what another limit
 * allows (`recordsPerWindowBound`) when that is lower.
 */
export function theoreticalRecordsPerSecond(c: Capacity): number {
  const byRequests = (c.requests / c.windowSeconds) * (c.maxBatch / Math.max(1, c.costOfFullBatch));
  return c.recordsPerWindowBound === undefined ? byRequests : Math.min(byRequests, c.recordsPerWindowBound / c.windowSeconds);
}

export function figuresOf(crm: string, contender: Contender, m: Measured, theoretical: number): SinkFigures {
  const recordsPerSecond = m.seconds > 0 ? m.records / m.seconds : 0;
  return {
    crm,
    contender,
    recordsPerSecond: round(recordsPerSecond, 2),
    capacityUsed: theoretical > 0 ? round(recordsPerSecond / theoretical, 4) : 0,
    throttledShare: m.calls > 0 ? round(m.throttled / m.calls, 4) : 0,
    callsPerChange: m.changes > 0 ? round(m.calls / m.changes, 4) : null,
  };
}

export function theoreticalFigures(crm: string, c: Capacity): SinkFigures {
  return {
    crm,
    contender: 'theoretical',
    recordsPerSecond: round(theoreticalRecordsPerSecond(c), 2),
    capacityUsed: 1,
    throttledShare: 0,
    // HTTP calls, not budget units: a full call carries maxBatch changes at best.
    callsPerChange: round(1 / c.maxBatch, 4),
  };
}

export interface GoalVerdict {
  goal: string;
  value: number | null;
  met: boolean;
}

/**
 * The three goals for pg2crm's figures of one CRM: capacity and throttling on the
 * capacity workload (a backlog no CRM drains in the interval); calls per change on the
 * hourly-sync backlog, drained to its end. On a slice of a backlog too large to drain, calls per
 * change measure only how many distinct records the slice holds (bench:sink prints that floor).
 */
export function goalsOf(pg2crm: SinkFigures, drained: SinkFigures): GoalVerdict[] {
  const reduction = drained.callsPerChange === null ? null : round(1 - drained.callsPerChange, 4);
  return [
    { goal: `capacityUsed >= ${GOALS.capacityUsed}`, value: pg2crm.capacityUsed, met: pg2crm.capacityUsed >= GOALS.capacityUsed },
    {
      goal: `throttledShare <= ${GOALS.throttledShare}`,
      value: pg2crm.throttledShare,
      met: pg2crm.throttledShare <= GOALS.throttledShare && drained.throttledShare <= GOALS.throttledShare,
    },
    // One call per change is callsPerChange = 1 by definition; "90% fewer" is <= 0.1.
    {
      goal: `calls vs one-call-per-change >= ${1 - GOALS.callsPerChange} fewer (hourly sync)`,
      value: reduction,
      met: reduction !== null && reduction >= 1 - GOALS.callsPerChange,
    },
  ];
}

/**
 * The fewest record writes per change with which ANY sink could have committed the ranges
 * [from, to) of each partition's keys (indexes into `keys`, the message keys in offset order):
 * every record changed in a range needs a write, unless it also changed before `from` (then an
 * ideal sink, seeing the whole backlog at once, already wrote it with all its changes). A
 * single-record API cannot make fewer calls than this, whatever its compaction.
 */
export function writesPerChangeFloor(partitions: { keys: string[]; from: number; to: number }[]): number | null {
  let writes = 0;
  let changes = 0;
  for (const { keys, from, to } of partitions) {
    const a = Math.max(0, Math.min(from, keys.length));
    const b = Math.max(a, Math.min(to, keys.length));
    const seen = new Set(keys.slice(0, a));
    writes += new Set(keys.slice(a, b).filter((k) => !seen.has(k))).size;
    changes += b - a;
  }
  return changes > 0 ? round(writes / changes, 4) : null;
}
