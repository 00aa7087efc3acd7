import { afterEach, describe, expect, it } from 'vitest';
import type { CrmAdapter, CrmWrite, WriteOutcome } from '../../../src/crm/crm-adapter.ts';
import { DynamicsAdapter } from '../../../src/crm/dynamics/adapter.ts';
import { startDynamicsSimulator } from '../../../src/crm/dynamics/simulator.ts';
import { SalesforceAdapter } from '../../../src/crm/salesforce/adapter.ts';
import { startSalesforceSimulator } from '../../../src/crm/salesforce/simulator.ts';
import { ZendeskSellAdapter } from '../../../src/crm/zendesk-sell/adapter.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';
import { ZohoAdapter } from '../../../src/crm/zoho/adapter.ts';
import { startZohoSimulator } from '../../../src/crm/zoho/simulator.ts';
import { type GarbageProxy, rewriteProxy } from '../../helpers/garbage-proxy.ts';
import { crmConfig } from './crm-config.ts';
import { type CutProxy, startCutProxy } from './cut-proxy.ts';

/**
 * A per-record retry that means the CRM itself is failing carries its `kind` (the sink's
 * circuit breaker reads the kind, never the code's spelling): a request cut off part-way through
 * a call leaves its undecided records `unreachable` (connection reset) or `timeout` (no answer
 * within crm.timeoutMs), whatever adapter made the call; the records already written stay done.
 */
const closing: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const c of closing.splice(0).reverse()) await c.close();
});

function keep<T extends { close(): Promise<void> }>(x: T): T {
  closing.push(x);
  return x;
}

const CUTS = [
  ['reset', { code: 'CRM_UNREACHABLE', kind: 'unreachable' }],
  ['hang', { code: 'CRM_TIMEOUT', kind: 'timeout' }],
] as const;

const write = (
  op: CrmWrite['op'],
  object: string,
  externalIdField: string,
  id: string,
  fields: Record<string, unknown> = {},
): CrmWrite => ({ op, object, externalIdField, externalId: id, fields });

const SALESFORCE_CONTACT = { object: 'Contact', externalId: { column: 'id', field: 'ERP_Id__c' }, fields: { LastName: 'l' } };

async function run(adapter: CrmAdapter, records: CrmWrite[]): Promise<WriteOutcome[]> {
  keep(adapter);
  return adapter.write(records, () => undefined);
}

/**
 * One call per CRM whose later request is cut: `cut` names it (`skip` matching requests go
 * through first); the first `written` records are done before it, the rest are left undecided.
 */
interface CutCase {
  crm: string;
  start: () => Promise<{ url: string; close(): Promise<void> }>;
  cut: { match: RegExp; skip?: number; path: string };
  adapter: (url: string) => CrmAdapter;
  records: CrmWrite[];
  written: number;
}

const CASES: CutCase[] = [
  {
    crm: 'Dynamics 365: the second $batch',
    start: () => startDynamicsSimulator({ port: 0, control: true }),
    cut: { match: /^POST \/api\/data\/v9\.2\/\$batch/, skip: 1, path: 'POST /api/data/v9.2/$batch' },
    adapter: (url) =>
      new DynamicsAdapter(
        crmConfig('dynamics', url, { timeoutMs: 500, limits: { requests: 6000, windowSeconds: 300 } }, { fields: { lastname: 'l' } }),
      ),
    // The first $batch carries 10 operations.
    records: Array.from({ length: 15 }, (_, i) => write('upsert', 'contacts', 'erp_id', `${i}`, { lastname: 'L' })),
    written: 10,
  },
  {
    crm: 'Zoho CRM: the delete search after a written upsert',
    start: () => startZohoSimulator({ port: 0, control: true }),
    cut: { match: /^GET \/crm\/v7\/Contacts\/search/, path: 'GET /crm/v7/Contacts/search' },
    adapter: (url) =>
      new ZohoAdapter(
        crmConfig(
          'zoho',
          url,
          { timeoutMs: 500 },
          { object: 'Contacts', externalId: { column: 'id', field: 'ERP_Id' }, fields: { Last_Name: 'l' } },
        ),
      ),
    records: [write('upsert', 'Contacts', 'ERP_Id', '1', { Last_Name: 'A' }), write('delete', 'Contacts', 'ERP_Id', '2')],
    written: 1,
  },
  {
    crm: 'Salesforce: the delete query after a written sObject Collections upsert',
    start: () => startSalesforceSimulator({ port: 0, control: true }),
    cut: { match: /^GET \/services\/data\/v62\.0\/query/, path: 'GET /services/data/v62.0/query' },
    adapter: (url) => new SalesforceAdapter(crmConfig('salesforce', url, { timeoutMs: 500, bulkThreshold: 0 }, SALESFORCE_CONTACT)),
    records: [write('upsert', 'Contact', 'ERP_Id__c', '1', { LastName: 'A' }), write('delete', 'Contact', 'ERP_Id__c', '2')],
    written: 1,
  },
  {
    crm: 'Zendesk Sell: the upsert of the second record',
    start: () => startZendeskSellSimulator({ port: 0, control: true }),
    cut: { match: /^POST \/v2\/contacts\/upsert/, skip: 1, path: 'POST /v2/contacts/upsert' },
    adapter: (url) =>
      new ZendeskSellAdapter(
        crmConfig('zendesk-sell', url, { timeoutMs: 500 }, { externalId: { column: 'id', field: 'custom_fields.erp_id' } }),
      ),
    records: [
      write('upsert', 'contacts', 'custom_fields.erp_id', '1', { last_name: 'A' }),
      write('upsert', 'contacts', 'custom_fields.erp_id', '2', { last_name: 'B' }),
    ],
    written: 1,
  },
];

describe('a request cut off part-way: the undecided records carry the kind of the failure', () => {
  describe.each(CASES)('$crm', (c) => {
    it.each(CUTS)('%s', async (how, expected) => {
      const sim = keep(await c.start());
      const proxy: CutProxy = keep(await startCutProxy(sim.url, [{ match: c.cut.match, skip: c.cut.skip ?? 0, how }]));
      const out = await run(c.adapter(proxy.url), c.records);
      expect(proxy.cut).toEqual([c.cut.path]);
      expect(out.slice(0, c.written).map((o) => o.status)).toEqual(c.records.slice(0, c.written).map(() => 'done'));
      expect(out.slice(c.written)).toEqual(c.records.slice(c.written).map(() => expect.objectContaining({ status: 'retry', ...expected })));
    });
  });
});

describe('per-record errors that say the CRM is failing', () => {
  let proxy: GarbageProxy | undefined;
  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });

  it('Salesforce SERVER_UNAVAILABLE on a record is a retry of kind server', async () => {
    const sim = keep(await startSalesforceSimulator({ port: 0, control: true }));
    const unavailable = [
      { id: null, success: false, errors: [{ statusCode: 'SERVER_UNAVAILABLE', message: 'Server temporarily unavailable', fields: [] }] },
    ];
    proxy = await rewriteProxy(
      sim.url,
      (method, path) => method === 'PATCH' && path.includes('/composite/sobjects/'),
      () => unavailable,
    );
    const a = new SalesforceAdapter(crmConfig('salesforce', proxy.url, { bulkThreshold: 0 }, SALESFORCE_CONTACT));
    const [out] = await run(a, [write('upsert', 'Contact', 'ERP_Id__c', '1', { LastName: 'A' })]);
    expect(out).toEqual({ status: 'retry', code: 'SERVER_UNAVAILABLE', kind: 'server', message: 'Server temporarily unavailable' });
  });
});
