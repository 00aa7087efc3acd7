import { describe, expect, it } from 'vitest';
import type { MappingConfig } from '../../../src/config.ts';
import type { CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { type CostAdapter, fullCall, nextCallRecords, sampleWrites, snapshotSpend, steadyCall } from '../../../src/plan/call-shapes.ts';

const mapping: MappingConfig = {
  table: 'erp.customers',
  object: 'contacts',
  externalId: { column: 'id', field: 'erp_id' },
  fields: { first: 'first_name', last: 'last_name' },
  lookups: {},
  onDelete: 'delete',
  priority: 5,
};

/** Zoho-like: 100 records a call, 1 credit per 10 records. */
const perTen: CostAdapter = { maxBatchSize: () => 100, cost: (w) => Math.ceil(w.length / 10) };

/**
 * Dynamics-like: requests of `size` records doubling after each full one (as the adapter counts
 * them), up to 1,000 per request; `warm` grows `size` as a quick write would.
 */
function rampAdapter(): CostAdapter & { size: number } {
  const a = {
    size: 10,
    maxBatchSize: () => 1000,
    cost(w: CrmWrite[]) {
      let n = 0;
      for (let i = 0, s = a.size; i < w.length; n++) {
        const chunk = Math.min(s, w.length - i);
        i += chunk;
        if (chunk === s) s = Math.min(1000, s * 2);
      }
      return n;
    },
    warm(w: CrmWrite[]) {
      for (let i = 0; i < w.length; ) {
        const chunk = Math.min(a.size, w.length - i);
        i += chunk;
        if (chunk === a.size) a.size = Math.min(1000, a.size * 2);
      }
    },
  };
  return a;
}

describe('sampleWrites', () => {
  it('writes every mapped field and a lookup target of its own per record', () => {
    const withLookup: MappingConfig = {
      ...mapping,
      lookups: { company_id: { object: 'companies', column: 'company_id', externalIdField: 'erp_co' } },
    };
    const [w] = sampleWrites(withLookup, 1, 7);
    expect(w).toMatchObject({ op: 'upsert', object: 'contacts', externalIdField: 'erp_id', externalId: 'plan-7' });
    expect(Object.keys(w!.fields)).toEqual(['first', 'last']);
    expect(w!.lookups?.company_id).toEqual({ object: 'companies', externalIdField: 'erp_co', externalId: 'plan-target-7' });
  });
});

describe('nextCallRecords', () => {
  it("cuts a call at the adapter's batch size and at what one call may cost", () => {
    expect(nextCallRecords(perTen, mapping, 5000, 10)).toBe(100);
    // The CallPlanner shrinks a 10-credit call to the 4 credits a call may cost: 40 records.
    expect(nextCallRecords(perTen, mapping, 5000, 4)).toBe(40);
    expect(nextCallRecords(perTen, mapping, 7, 10)).toBe(7);
  });
});

describe('snapshotSpend', () => {
  it('sums full calls and the remainder', () => {
    expect(snapshotSpend(perTen, mapping, 1050, 10)).toEqual({ calls: 11, requests: 105, daily: 105, jobSeconds: 0, recordsPerCall: 100 });
  });

  it('counts daily units with dailyCost when the adapter has one', () => {
    const perRecordDaily: CostAdapter = { ...perTen, dailyCost: (w) => w.length };
    expect(snapshotSpend(perRecordDaily, mapping, 1050, 10).daily).toBe(1050);
  });

  it('replays the warm-up: the first calls cost more than the later ones', () => {
    // First call: 10+20+40+80+160+320+370 = 7 requests; then 640+360 = 2; then 1,000 each.
    const spend = snapshotSpend(rampAdapter(), mapping, 5000, 1000);
    expect(spend).toEqual({ calls: 5, requests: 7 + 2 + 3, daily: 12, jobSeconds: 0, recordsPerCall: 1000 });
  });

  it('adds up the waits for bulk jobs', () => {
    const bulk: CostAdapter = { ...perTen, jobSeconds: (w) => w.length / 50 };
    expect(snapshotSpend(bulk, mapping, 1050, 10).jobSeconds).toBe(21);
  });

  it('costs an empty table nothing', () => {
    expect(snapshotSpend(perTen, mapping, 0, 10)).toMatchObject({ calls: 0, requests: 0 });
  });
});

describe('steady calls', () => {
  it('gathers the changes of one linger into a call, at most a full one', () => {
    expect(steadyCall(perTen, mapping, 50, 200, 10)).toEqual({ records: 10, requests: 1, daily: 1, jobSeconds: 0 });
    expect(steadyCall(perTen, mapping, 0.1, 200, 10)).toEqual({ records: 1, requests: 1, daily: 1, jobSeconds: 0 });
    expect(steadyCall(perTen, mapping, 10_000, 200, 10)).toEqual({ records: 100, requests: 10, daily: 10, jobSeconds: 0 });
  });

  it('prices full calls on a warmed-up adapter', () => {
    expect(fullCall(rampAdapter(), mapping, 1000)).toEqual({ records: 1000, requests: 1, daily: 1, jobSeconds: 0 });
  });
});
