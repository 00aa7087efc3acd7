import { describe, expect, it } from 'vitest';
import { createAdapter } from '../../../src/crm/create-adapter.ts';
import type { CrmAdapter, CrmTarget, CrmWrite, RateSignal } from '../../../src/crm/crm-adapter.ts';
import { startSalesforceSimulator } from '../../../src/crm/salesforce/simulator.ts';
import type { SimStats } from '../../../src/crm/sim-server.ts';
import { crmConfig } from './crm-config.ts';
import { closedAfterEach, simJson } from './sim-harness.ts';

/**
 * Salesforce's SOQL reads as verify and deletes use them: a query answer may hold fewer records
 * than asked (`done: false`, `nextRecordsUrl`), and `IN (...)` travels in the GET URI, which with
 * the headers may not exceed 16,384 bytes, so long external ids must be split by size, not count.
 */
const target: CrmTarget = { object: 'Contact', externalIdField: 'ERP_Id__c' };
const LIMIT = { requests: 100_000, windowSeconds: 86_400 };
const { adapters, started } = closedAfterEach<CrmAdapter>();

async function writeAll(adapter: CrmAdapter, ids: string[]): Promise<void> {
  const records: CrmWrite[] = ids.map((id) => ({
    op: 'upsert',
    object: target.object,
    externalIdField: target.externalIdField,
    externalId: id,
    fields: { LastName: `Last ${id.slice(0, 8)}` },
  }));
  const size = adapter.maxBatchSize(target.object);
  for (let i = 0; i < records.length; i += size) {
    const out = await adapter.write(records.slice(i, i + size), () => undefined);
    expect(out.filter((o) => o.status !== 'done')).toEqual([]);
  }
}

async function setUp(opts: Record<string, unknown> = {}) {
  const sim = started(await startSalesforceSimulator({ port: 0, control: true, limit: LIMIT, ...opts }));
  const adapter = createAdapter(crmConfig('salesforce', sim.url, { bulkThreshold: 0, limits: LIMIT }));
  adapters.push(adapter);
  return { sim, adapter };
}

describe('salesforce verify reads', () => {
  it('follows nextRecordsUrl when an answer holds fewer records than asked, counting the extra calls', async () => {
    const { sim, adapter } = await setUp({ queryPageSize: 2 });
    await writeAll(adapter, ['1', '2', '3', '4', '5']);
    const before = await simJson<SimStats>(sim, '/__sim/stats');
    const signals: RateSignal[] = [];
    const read = await adapter.readByExternalIds!(target, ['1', '2', '3', '4', '5'], ['LastName'], (s) => signals.push(s));
    expect([...read.keys()].sort()).toEqual(['1', '2', '3', '4', '5']);
    const requests = (await simJson<SimStats>(sim, '/__sim/stats')).requests - before.requests;
    expect(requests).toBe(3);
    const extra = signals.reduce((n, s) => n + (s.extraRequests ?? 0), 0);
    expect(extra).toBe(requests - 1);
  });

  it('splits the verify read by URI length: 200 long external ids are read', async () => {
    const { adapter } = await setUp();
    const ids = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, '0')}-${'x'.repeat(96)}`);
    await writeAll(adapter, ids);
    expect(adapter.readBatchSize!(target.object)).toBe(200);
    const read = await adapter.readByExternalIds!(target, ids, ['LastName'], () => undefined);
    expect(read.size).toBe(200);
  });

  it('splits the delete lookup by URI length: 200 long external ids are deleted', async () => {
    const { sim, adapter } = await setUp();
    const ids = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, '0')}-${'x'.repeat(96)}`);
    await writeAll(adapter, ids);
    const deletes: CrmWrite[] = ids.map((id) => ({
      op: 'delete',
      object: target.object,
      externalIdField: target.externalIdField,
      externalId: id,
      fields: {},
    }));
    const out = await adapter.write(deletes, () => undefined);
    expect(out.filter((o) => o.status !== 'done')).toEqual([]);
    const left = await simJson<unknown[]>(sim, '/__sim/records/Contact');
    expect(left).toEqual([]);
  });
});
