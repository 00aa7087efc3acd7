import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import { createAdapter } from '../../../src/crm/create-adapter.ts';
import { DynamicsAdapter } from '../../../src/crm/dynamics/adapter.ts';
import { buildPlan, quotaOf } from '../../../src/plan/build-plan.ts';
import { sampleWrites } from '../../../src/plan/call-shapes.ts';
import { formatDuration, formatPlan } from '../../../src/plan/format-plan.ts';
import type { TableFigures } from '../../../src/plan/table-stats.ts';

function config(crm: Record<string, unknown> = {}) {
  return parseConfig({
    name: 't',
    postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
    kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
    crm: {
      kind: 'zendesk-sell',
      baseUrl: 'http://127.0.0.1:1',
      auth: { token: 'sim-token' },
      limits: { requests: 200, windowSeconds: 60 },
      ...crm,
    },
    mappings: [{ table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { last_name: 'l' } }],
  });
}

const table = (rows: number, changesPerSecond: number): TableFigures => ({
  table: 'erp.customers',
  rows,
  rowsSource: 'pg_class.reltuples',
  changesPerSecond,
  changesSource: 'test',
});
const assumptions = { callSeconds: 0.3, startupSeconds: 0, sourceRowsPerSecond: 10_000, paceEfficiency: 1 };

describe('quotaOf', () => {
  it('counts separate quota groups, not credentials, and applies utilisation', () => {
    const c = config({
      auth: undefined,
      limits: { requests: 200, windowSeconds: 60, utilisation: 0.5 },
      credentials: [
        { token: 'a', quotaGroup: 'one' },
        { token: 'b', quotaGroup: 'one' },
        { token: 'c', quotaGroup: 'two' },
      ],
    });
    expect(quotaOf(c.crm)).toMatchObject({ perWindow: 100, groups: 2, windowSeconds: 60 });
  });

  it("takes Dataverse's execution time from crm.limits.executionSeconds when set, as the sink does, after utilisation", () => {
    const dynamics = (limits: Record<string, unknown>) =>
      config({ kind: 'dynamics', auth: undefined, credentials: [{ token: 't' }], limits });
    expect(quotaOf(dynamics({ requests: 6000, windowSeconds: 300 }).crm).execution).toMatchObject({ seconds: 1200, windowSeconds: 300 });
    expect(quotaOf(dynamics({ requests: 6000, windowSeconds: 300, executionSeconds: 600, utilisation: 0.5 }).crm).execution).toMatchObject({
      seconds: 300,
      windowSeconds: 300,
    });
  });
});

describe('buildPlan', () => {
  it("plans Zendesk Sell's 1.2M contacts at 200 a minute as about four days", () => {
    const c = config();
    const adapter = createAdapter(c.crm);
    const plan = buildPlan({ config: c, tables: [table(1_200_000, 1)], assumptions, adapter, bulkUnused: false });
    expect(plan.snapshot.requests).toBe(1_200_000);
    // 20 at once, then 200 per 60 s: (1,200,000 - 20) × 0.3 s
    expect(plan.snapshot.seconds).toBeCloseTo((1_200_000 - 20) * 0.3 + 0.3, 3);
    expect(formatDuration(plan.snapshot.seconds)).toBe('4d 3h');
    expect(plan.steady.status).toBe('keeps-up');
    expect(plan.fix).toBeUndefined();
  });

  it('says by how much a change flow falls behind and what would fix it', () => {
    const c = config();
    // 10 changes/s = 36,000 single-record writes an hour against 12,000.
    const plan = buildPlan({ config: c, tables: [table(0, 10)], assumptions, adapter: createAdapter(c.crm), bulkUnused: false });
    expect(plan.steady.status).toBe('behind');
    expect(plan.steady.behindPerHour).toBeCloseTo(24_000, 6);
    expect(plan.fix).toMatchObject({ groupsNeeded: 4, dropMappings: [] });
    const text = formatPlan(plan).join('\n');
    expect(text).toContain('falls behind by 24,000 records/hour');
    expect(text).toContain('4 credentials in separate quota groups');
  });
});

describe('adapters asked by the plan', () => {
  const mapping = config().mappings[0]!;

  it("Dynamics' warm-up makes its calls cheaper, as write's batch growth does", () => {
    const a = new DynamicsAdapter(config({ kind: 'dynamics', baseUrl: 'http://127.0.0.1:1/' }).crm);
    const writes = sampleWrites(mapping, 1000);
    expect(a.cost(writes)).toBe(7);
    a.warm(writes);
    expect(a.cost(writes)).toBe(2);
    a.warm(writes);
    expect(a.cost(writes)).toBe(1);
  });

  it('Salesforce and Zoho report the waits of their bulk jobs, nothing below the threshold', () => {
    for (const kind of ['salesforce', 'zoho'] as const) {
      const a = createAdapter(config({ kind, baseUrl: 'http://127.0.0.1:1/', bulkThreshold: 2000 }).crm);
      expect(a.jobSeconds?.(sampleWrites(mapping, 100)), kind).toBe(0);
      expect(a.jobSeconds?.(sampleWrites(mapping, 10_000)), kind).toBeGreaterThan(2);
    }
  });
});
