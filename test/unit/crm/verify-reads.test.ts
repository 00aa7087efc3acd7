import { describe, expect, it } from 'vitest';
import { createAdapter } from '../../../src/crm/create-adapter.ts';
import type { CrmAdapter, CrmTarget, CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { ThrottledCall } from '../../../src/crm/http.ts';
import type { SimStats } from '../../../src/crm/sim-server.ts';
import { TEST_CRMS } from '../../helpers/crm-sims.ts';
import { crmConfig } from './crm-config.ts';
import { closedAfterEach, simJson } from './sim-harness.ts';

/**
 * The read side `pg2crm verify` uses, per CRM, against its simulator: records read by external
 * id (absent ids absent), every record listed page by page (paging crossed where a page is
 * small enough to fill cheaply), one simulator request per call, and a throttle surfacing as the
 * one ThrottledCall of http.ts.
 */
const SHAPES: Record<string, { target: CrmTarget; last: string; company: string }> = {
  'zendesk-sell': {
    target: { object: 'contacts', externalIdField: 'custom_fields.erp_id' },
    last: 'last_name',
    company: 'custom_fields.company',
  },
  salesforce: { target: { object: 'Contact', externalIdField: 'ERP_Id__c' }, last: 'LastName', company: 'Company__c' },
  hubspot: { target: { object: 'contacts', externalIdField: 'erp_id' }, last: 'lastname', company: 'company' },
  dynamics: { target: { object: 'contacts', externalIdField: 'erp_id' }, last: 'lastname', company: 'erp_company' },
  zoho: { target: { object: 'Contacts', externalIdField: 'ERP_Customer_Id' }, last: 'Last_Name', company: 'ERP_Company' },
};
/** More than a page of Sell and HubSpot (100) and Zoho (200). */
const RECORDS = 230;

const { adapters, started } = closedAfterEach<CrmAdapter>();

async function writeAll(adapter: CrmAdapter, shape: (typeof SHAPES)[string]): Promise<void> {
  const records: CrmWrite[] = Array.from({ length: RECORDS }, (_, i) => ({
    op: 'upsert',
    object: shape.target.object,
    externalIdField: shape.target.externalIdField,
    externalId: String(i + 1),
    fields: { [shape.last]: `Last${i + 1}`, [shape.company]: `Co ${i + 1}` },
  }));
  const size = adapter.maxBatchSize(shape.target.object);
  for (let i = 0; i < records.length; i += size) {
    const out = await adapter.write(records.slice(i, i + size), () => undefined);
    expect(out.filter((o) => o.status !== 'done')).toEqual([]);
  }
}

describe.each(TEST_CRMS)('verify reads: $kind', ({ kind, start, limit }) => {
  const shape = SHAPES[kind]!;
  const fields = [shape.last, shape.company];

  it('reads by external id and lists every record page by page, one request a call', async () => {
    const sim = started(await start({ port: 0, control: true, limit }));
    const adapter = createAdapter(crmConfig(kind as never, sim.url, { bulkThreshold: 0, limits: limit }));
    adapters.push(adapter);
    await writeAll(adapter, shape);

    const before = await simJson<SimStats>(sim, '/__sim/stats');
    const read = await adapter.readByExternalIds!(shape.target, ['7', '230', 'no-such-id'], fields, () => undefined);
    expect(Object.fromEntries(read)).toEqual({
      '7': { [shape.last]: 'Last7', [shape.company]: 'Co 7' },
      '230': { [shape.last]: 'Last230', [shape.company]: 'Co 230' },
    });
    const calls = kind === 'zendesk-sell' ? 3 : 1; // Sell filters by one value a request
    expect((await simJson<SimStats>(sim, '/__sim/stats')).requests - before.requests).toBe(calls);
    expect(adapter.readBatchSize!(shape.target.object)).toBeGreaterThanOrEqual(1);

    const listed = new Map<string, Record<string, unknown>>();
    let cursor: string | undefined;
    let pages = 0;
    const listStart = await simJson<SimStats>(sim, '/__sim/stats');
    do {
      const page = await adapter.listRecords!(shape.target, fields, cursor, () => undefined);
      for (const r of page.records) listed.set(r.externalId, r.fields);
      cursor = page.next;
      pages++;
    } while (cursor !== undefined && pages < 20);
    expect(listed.size).toBe(RECORDS);
    expect(listed.get('123')).toEqual({ [shape.last]: 'Last123', [shape.company]: 'Co 123' });
    if (kind === 'zendesk-sell' || kind === 'hubspot' || kind === 'zoho') expect(pages).toBeGreaterThan(1);
    expect((await simJson<SimStats>(sim, '/__sim/stats')).requests - listStart.requests).toBe(pages);
  }, 60_000);

  it('a throttled read is a ThrottledCall', async () => {
    const sim = started(await start({ port: 0, control: true, limit }));
    const adapter = createAdapter(crmConfig(kind as never, sim.url, { bulkThreshold: 0, limits: limit }));
    adapters.push(adapter);
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ throttle: { requests: 2, retryAfterSeconds: 7 } }) });
    const signals: unknown[] = [];
    await expect(adapter.readByExternalIds!(shape.target, ['1'], fields, (s) => signals.push(s))).rejects.toBeInstanceOf(ThrottledCall);
    await expect(adapter.listRecords!(shape.target, fields, undefined, () => undefined)).rejects.toBeInstanceOf(ThrottledCall);
    expect(signals).toContainEqual(expect.objectContaining({ throttled: true }));
  });
});
