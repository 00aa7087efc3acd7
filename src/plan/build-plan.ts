import type { Config, MappingConfig } from '../config.ts';
import { CALL_SHARE_OF_LIMIT, PACING_BURST } from '../sink/quota-lanes.ts';
import { type CostAdapter, fullCall, snapshotSpend, steadyCall } from './call-shapes.ts';
import {
  type Assumptions,
  type ExecutionLimit,
  type Fix,
  fixFor,
  type QuotaFigures,
  type SnapshotEstimate,
  type SteadyEstimate,
  type SteadyInput,
  snapshotEstimate,
  steadyEstimate,
} from './estimate.ts';
import type { TableFigures } from './table-stats.ts';

/** The plan of one config: per mapping and in total (what `pg2crm plan --json` prints). */
export interface MappingPlan {
  table: string;
  object: string;
  rows: number;
  rowsSource: TableFigures['rowsSource'];
  changesPerSecond: number;
  changesSource: string;
  recordsPerCall: number;
  /** This mapping's snapshot alone, with the whole quota. */
  snapshot: SnapshotEstimate;
  /** Records per call, requests per hour and share of the quota of its change flow alone. */
  steady: { recordsPerCall: number; requestsPerHour: number; share: number };
}

export interface Plan {
  crm: string;
  /** The unit of crm.limits: credits (Zoho) or requests. */
  unit: string;
  quota: QuotaFigures;
  assumptions: Assumptions;
  mappings: MappingPlan[];
  /** Every mapping's snapshot together (they share the quota). */
  snapshot: SnapshotEstimate;
  steady: SteadyEstimate;
  /** When the change flow falls behind: what would fix it. */
  fix: (Fix & { bulk: string | undefined }) | undefined;
}

/**
 * Limits besides the request quota that decide a CRM's throughput. Dataverse: 1,200 s of combined
 * execution time per user per 5-minute window
 * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits); the time one
 * upsert takes is not documented: 100 ms is assumed (the simulator charges the same).
 */
const EXECUTION_LIMITS: Partial<Record<Config['crm']['kind'], ExecutionLimit>> = {
  dynamics: { seconds: 1200, windowSeconds: 300, secondsPerRecord: 0.1 },
};

/** The quota the sink's budget works with: crm.limits after utilisation, one bucket per quota group. */
export function quotaOf(crm: Config['crm']): QuotaFigures {
  const { limits } = crm;
  return {
    perWindow: Math.max(1, Math.floor(limits.requests * limits.utilisation)),
    windowSeconds: limits.windowSeconds,
    daily: limits.daily === undefined ? undefined : Math.max(1, Math.floor(limits.daily * limits.utilisation)),
    groups: new Set(crm.credentials.map((c) => c.quotaGroup)).size,
    concurrency: limits.concurrency,
    burst: PACING_BURST,
    execution: executionLimit(crm),
  };
}

/**
 * The execution-time limit: `crm.limits.executionSeconds` per configured window when set (the
 * sink counts its calls' durations against it, execution-meter.ts), else the documented one;
 * after utilisation, as the sink applies it.
 */
function executionLimit(crm: Config['crm']): ExecutionLimit | undefined {
  const limit = EXECUTION_LIMITS[crm.kind];
  if (!limit) return undefined;
  const { windowSeconds, executionSeconds, utilisation } = crm.limits;
  const set = executionSeconds === undefined ? limit : { ...limit, seconds: executionSeconds, windowSeconds };
  return { ...set, seconds: set.seconds * utilisation };
}

export interface PlanInputs {
  config: Config;
  tables: TableFigures[];
  assumptions: Assumptions;
  /** The adapter of crm (only its cost functions are used). */
  adapter: CostAdapter;
  /** Whether the CRM has a bulk API the config leaves unused (crm.bulkThreshold 0 or above the calls' size). */
  bulkUnused: boolean;
}

function mappingPlan(
  m: MappingConfig,
  t: TableFigures,
  inputs: PlanInputs,
  q: QuotaFigures,
  maxCallCost: number,
): [MappingPlan, SteadyInput] {
  const { adapter, config, assumptions } = inputs;
  const spend = snapshotSpend(adapter, m, t.rows, maxCallCost);
  const lingered = steadyCall(adapter, m, t.changesPerSecond, config.sink.lingerMs, maxCallCost);
  const flow: SteadyInput = {
    name: `${m.table} -> ${m.object}`,
    changesPerSecond: t.changesPerSecond,
    lingered,
    full: fullCall(adapter, m, maxCallCost),
  };
  const alone = steadyEstimate([flow], q);
  return [
    {
      table: m.table,
      object: m.object,
      rows: t.rows,
      rowsSource: t.rowsSource,
      changesPerSecond: t.changesPerSecond,
      changesSource: t.changesSource,
      recordsPerCall: spend.recordsPerCall,
      snapshot: snapshotEstimate(spend, t.rows, q, assumptions),
      steady: { recordsPerCall: lingered.records, requestsPerHour: alone.requestsPerHour, share: alone.share },
    },
    flow,
  ];
}

/** The plan: per mapping, then every snapshot together and the change flows together. */
export function buildPlan(inputs: PlanInputs): Plan {
  const { config, tables, assumptions } = inputs;
  const q = quotaOf(config.crm);
  const maxCallCost = q.perWindow * CALL_SHARE_OF_LIMIT;
  const byTable = new Map(tables.map((t) => [t.table, t]));
  const planned = config.mappings.map((m) => mappingPlan(m, byTable.get(m.table)!, inputs, q, maxCallCost));
  const mappings = planned.map(([p]) => p);
  const flows = planned.map(([, f]) => f);
  const sum = (fn: (p: MappingPlan) => number) => mappings.reduce((n, p) => n + fn(p), 0);
  const snapshot = snapshotEstimate(
    {
      calls: sum((p) => p.snapshot.calls),
      requests: sum((p) => p.snapshot.requests),
      daily: sum((p) => p.snapshot.daily),
      jobSeconds: sum((p) => p.snapshot.jobSeconds),
    },
    sum((p) => p.rows),
    q,
    assumptions,
  );
  const steady = steadyEstimate(flows, q);
  const fix = fixFor(flows, q, steady);
  return {
    crm: config.crm.kind,
    unit: config.crm.kind === 'zoho' ? 'credits' : 'requests',
    quota: q,
    assumptions,
    mappings,
    snapshot,
    steady,
    fix: fix && {
      ...fix,
      bulk: inputs.bulkUnused ? `set crm.bulkThreshold (now ${config.crm.bulkThreshold}) so backlogs go through the bulk API` : undefined,
    },
  };
}
