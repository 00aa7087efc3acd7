import type { MappingConfig } from '../config.ts';
import type { CrmAdapter, CrmWrite } from '../crm/crm-adapter.ts';
import { CallPlanner, type CallPlannerDeps, type Pending } from '../sink/call-planner.ts';

/**
 * How the sink would cut a mapping's records into CRM calls and what each call spends, asked of
 * the CRM adapter itself (`maxBatchSize`, `cost`, `dailyCost`, `warm`) and of the sink's
 * own CallPlanner (which shrinks a call to what the budget can pay at once), so the plan spends
 * exactly what the sink would. No I/O: the adapter is asked and warmed (`warm`), never called.
 */

/** One call: its records, the requests (or credits) of the window budget and the daily units it spends. */
export interface CallShape {
  records: number;
  requests: number;
  daily: number;
  /** Seconds the call waits for bulk jobs (`jobSeconds`), beyond its round trips. */
  jobSeconds: number;
}

/** What the snapshot of `rows` rows of one mapping spends, call by call summed. */
export interface SnapshotSpend {
  calls: number;
  requests: number;
  daily: number;
  /** Seconds of waiting for bulk jobs, all calls together. */
  jobSeconds: number;
  /** Records per full call (after the budget's limit on one call). */
  recordsPerCall: number;
}

export type CostAdapter = Pick<CrmAdapter, 'maxBatchSize' | 'cost' | 'dailyCost' | 'warm' | 'jobSeconds'>;

/**
 * Upserts as the snapshot sends them: every mapped field set (the same field set for all, as a
 * table's rows have), every lookup pointing at a record of its own (none cached: an upper bound
 * for adapters that look targets up, e.g. HubSpot and Zendesk Sell).
 */
export function sampleWrites(mapping: MappingConfig, n: number, from = 0): CrmWrite[] {
  const writes: CrmWrite[] = [];
  for (let i = from; i < from + n; i++) {
    const fields: Record<string, unknown> = {};
    for (const field of Object.keys(mapping.fields)) fields[field] = `plan-${i}`;
    const lookups: CrmWrite['lookups'] = {};
    for (const [field, l] of Object.entries(mapping.lookups))
      lookups[field] = { object: l.object, externalIdField: l.externalIdField, externalId: `plan-target-${i}` };
    writes.push({
      op: 'upsert',
      object: mapping.object,
      externalIdField: mapping.externalId.field,
      externalId: `plan-${i}`,
      fields,
      ...(Object.keys(lookups).length ? { lookups } : {}),
    });
  }
  return writes;
}

function shapeOf(adapter: CostAdapter, writes: CrmWrite[]): CallShape {
  const requests = adapter.cost(writes);
  const daily = adapter.dailyCost ? adapter.dailyCost(writes) : requests;
  return { records: writes.length, requests, daily, jobSeconds: adapter.jobSeconds?.(writes) ?? 0 };
}

/**
 * The records of the sink's next call for a queue of `available` writes of the mapping: the
 * CallPlanner's own cut (batch size, then what one call may cost: `maxCallCost`).
 */
export function nextCallRecords(adapter: CostAdapter, mapping: MappingConfig, available: number, maxCallCost: number): number {
  const size = Math.min(available, adapter.maxBatchSize(mapping.object));
  if (size <= 0) return 0;
  const cost = (writes: CrmWrite[]) => {
    const s = shapeOf(adapter, writes);
    return { requests: s.requests, daily: s.daily };
  };
  // nextCall reads only the budget's cost and maxCallCost and the sizer.
  const deps = {
    budget: { cost, maxCallCost: () => maxCallCost },
    sizer: { size: (object: string) => adapter.maxBatchSize(object) },
  } as unknown as CallPlannerDeps;
  const queue = sampleWrites(mapping, size).map((write) => ({ write }) as Pending);
  return new CallPlanner(deps).nextCall(queue).length;
}

/** The next call for `available` writes, as the adapter costs it now; the adapter then warms up as after that call. */
function takeCall(adapter: CostAdapter, mapping: MappingConfig, available: number, maxCallCost: number): CallShape {
  const writes = sampleWrites(mapping, nextCallRecords(adapter, mapping, available, maxCallCost));
  const shape = shapeOf(adapter, writes);
  adapter.warm?.(writes);
  return shape;
}

const same = (a: CallShape | undefined, b: CallShape): boolean =>
  a !== undefined && a.records === b.records && a.requests === b.requests && a.daily === b.daily && a.jobSeconds === b.jobSeconds;

/**
 * The snapshot of `rows` rows, call by call as the sink cuts them (the adapter warming up as it
 * would: Dynamics' first calls are small and dear), until two calls in a row look alike; the
 * rest are calls like those, then the remainder.
 */
export function snapshotSpend(adapter: CostAdapter, mapping: MappingConfig, rows: number, maxCallCost: number): SnapshotSpend {
  const out: SnapshotSpend = { calls: 0, requests: 0, daily: 0, jobSeconds: 0, recordsPerCall: 0 };
  const add = (shape: CallShape, times: number) => {
    out.calls += times;
    out.requests += shape.requests * times;
    out.daily += shape.daily * times;
    out.jobSeconds += shape.jobSeconds * times;
    out.recordsPerCall = Math.max(out.recordsPerCall, shape.records);
  };
  let left = rows;
  let previous: CallShape | undefined;
  while (left > 0) {
    const shape = takeCall(adapter, mapping, left, maxCallCost);
    const times = same(previous, shape) ? Math.floor(left / shape.records) : 1;
    add(shape, times);
    left -= times * shape.records;
    previous = shape;
  }
  if (rows <= 0) out.recordsPerCall = fullCall(adapter, mapping, maxCallCost).records;
  return out;
}

/** Warms the adapter up as a backlog would (calls until they stop changing), at most `calls` calls. */
function warmUp(adapter: CostAdapter, mapping: MappingConfig, maxCallCost: number, calls = 30): void {
  if (!adapter.warm) return;
  let previous: CallShape | undefined;
  for (let i = 0; i < calls; i++) {
    const shape = takeCall(adapter, mapping, Number.MAX_SAFE_INTEGER, maxCallCost);
    if (same(previous, shape)) return;
    previous = shape;
  }
}

/**
 * A call in steady state: `changesPerSecond` records arriving, gathered for `lingerMs` (the sink
 * waits that long to batch), at most a full call; the adapter warmed up.
 */
export function steadyCall(
  adapter: CostAdapter,
  mapping: MappingConfig,
  changesPerSecond: number,
  lingerMs: number,
  maxCallCost: number,
): CallShape {
  warmUp(adapter, mapping, maxCallCost);
  const gathered = Math.max(1, Math.round((changesPerSecond * lingerMs) / 1000));
  return shapeOf(adapter, sampleWrites(mapping, nextCallRecords(adapter, mapping, gathered, maxCallCost)));
}

/** A full call of the warmed-up adapter: what the sink sends once a backlog has built up. */
export function fullCall(adapter: CostAdapter, mapping: MappingConfig, maxCallCost: number): CallShape {
  warmUp(adapter, mapping, maxCallCost);
  return shapeOf(adapter, sampleWrites(mapping, nextCallRecords(adapter, mapping, Number.MAX_SAFE_INTEGER, maxCallCost)));
}
