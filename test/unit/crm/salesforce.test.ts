import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmWrite, RateSignal } from '../../../src/crm/crm-adapter.ts';
import { SalesforceAdapter, estimatedPolls, lookupIdField, parseBulkError, relationshipName } from '../../../src/crm/salesforce/adapter.ts';
import { parseCsv } from '../../../src/crm/csv.ts';
import { type SalesforceSimOptions, startSalesforceSimulator } from '../../../src/crm/salesforce/simulator.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { garbageProxy } from '../../helpers/garbage-proxy.ts';
import {
  armGarbage,
  closedAfterEach,
  expectBad,
  expectOneGarbledPollPassed,
  expectPingFailsOnGarbage,
  GARBAGE_KINDS,
  outcomeLabels,
  proxiedBy,
  rewrittenBy,
  simCall,
} from './sim-harness.ts';

const { proxies, adapters, started } = closedAfterEach<SalesforceAdapter>();

async function start(opts: Partial<SalesforceSimOptions> = {}): Promise<CrmSimulator> {
  return started(await startSalesforceSimulator({ port: 0, control: true, ...opts }));
}

const V = '/services/data/v62.0';

const call = simCall;

async function json<T>(s: CrmSimulator, path: string): Promise<T> {
  return (await (await fetch(`${s.url}${path}`)).json()) as T;
}

interface Stats {
  requests: number;
  throttled: number;
  byEndpoint: Record<string, number>;
  recordsWritten: number;
  recordsDeleted: number;
}
const stats = (s: CrmSimulator) => json<Stats>(s, '/__sim/stats');
/** Requests that count as API calls: UserInfo is an OAuth endpoint, not one (see the simulator). */
const apiCalls = (st: Stats) => st.requests - (st.byEndpoint['GET /services/oauth2/userinfo'] ?? 0);
const stored = (s: CrmSimulator, object: string) => json<Record<string, unknown>[]>(s, `/__sim/records/${object}`);

const contact = (ext: string, fields: Record<string, unknown>) => ({ attributes: { type: 'Contact' }, ERP_Id__c: ext, ...fields });

describe('Salesforce simulator', () => {
  it('counts API calls over the rolling window, reports them in Sforce-Limit-Info and throttles with 403 REQUEST_LIMIT_EXCEEDED', async () => {
    const s = await start({ limit: { requests: 3, windowSeconds: 86_400 } });
    const usage: (string | null)[] = [];
    for (let i = 0; i < 3; i++) usage.push((await call(s, 'GET', `${V}/limits`)).headers.get('sforce-limit-info'));
    expect(usage).toEqual(['api-usage=1/3', 'api-usage=2/3', 'api-usage=3/3']);
    // The versions list needs no session and does not count.
    expect((await call(s, 'GET', '/services/data')).status).toBe(200);
    const res = await call(s, 'GET', `${V}/limits`);
    expect(res.status).toBe(403);
    expect(res.headers.get('retry-after')).toBeNull();
    expect(res.headers.get('sforce-limit-info')).toBe('api-usage=3/3');
    expect(await res.json()).toEqual([{ message: 'TotalRequests Limit exceeded.', errorCode: 'REQUEST_LIMIT_EXCEEDED' }]);
    // The window is rolling: a day later the calls have left it.
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 86_401 });
    const later = await call(s, 'GET', `${V}/limits`);
    expect(later.status).toBe(200);
    expect(((await later.json()) as { DailyApiRequests: unknown }).DailyApiRequests).toEqual({ Max: 3, Remaining: 2 });
    expect(await stats(s)).toMatchObject({ throttled: 1, requests: 6 });
  });

  it('rejects unknown session ids with 401 INVALID_SESSION_ID', async () => {
    const s = await start({ tokens: ['good'] });
    const res = await call(s, 'GET', `${V}/limits`, undefined, 'stolen');
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual([{ message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' }]);
    expect((await call(s, 'GET', `${V}/limits`, undefined, 'good')).status).toBe(200);
  });

  it('upserts a collection by external id: created, then updated in place, stored flat', async () => {
    const s = await start();
    const path = `${V}/composite/sobjects/Contact/ERP_Id__c`;
    const first = (await (
      await call(s, 'PATCH', path, { allOrNone: false, records: [contact('1', { LastName: 'A' }), contact('2', { LastName: 'B' })] })
    ).json()) as { id: string; success: boolean; created: boolean }[];
    expect(first.map((r) => [r.success, r.created])).toEqual([
      [true, true],
      [true, true],
    ]);
    expect(first[0]!.id).toMatch(/^003[0-9A-Za-z]{15}$/);
    const second = (await (
      await call(s, 'PATCH', path, { allOrNone: false, records: [contact('1', { LastName: 'A2', Email: 'a@x.io' })] })
    ).json()) as { id: string; created: boolean }[];
    expect(second[0]).toMatchObject({ id: first[0]!.id, created: false, success: true, errors: [] });
    const records = await stored(s, 'Contact');
    expect(records).toHaveLength(2);
    expect(records[0]).toMatchObject({ Id: first[0]!.id, ERP_Id__c: '1', LastName: 'A2', Email: 'a@x.io' });
    expect((await stats(s)).recordsWritten).toBe(3);
  });

  it('answers partial failures per record, in order, in the documented error shape', async () => {
    const s = await start();
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'LastName', contains: 'blocked' } });
    const res = await call(s, 'PATCH', `${V}/composite/sobjects/Contact/ERP_Id__c`, {
      allOrNone: false,
      records: [
        contact('1', { LastName: 'ok' }),
        contact('2', { FirstName: 'no last name' }),
        contact('3', { LastName: 'x', Email: 'nope' }),
        contact('4', { LastName: 'blocked' }),
        contact('5', { LastName: 'ok too' }),
      ],
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { success: boolean; errors: { statusCode: string; message: string; fields: string[] }[] }[];
    expect(body.map((r) => r.success)).toEqual([true, false, false, false, true]);
    expect(body[1]!.errors).toEqual([
      { statusCode: 'REQUIRED_FIELD_MISSING', message: 'Required fields are missing: [LastName]', fields: ['LastName'] },
    ]);
    expect(body[2]!.errors[0]).toMatchObject({ statusCode: 'INVALID_EMAIL_ADDRESS', fields: ['Email'] });
    expect(body[3]!.errors[0]).toMatchObject({ statusCode: 'FIELD_CUSTOM_VALIDATION_EXCEPTION', fields: ['LastName'] });
    expect((await stored(s, 'Contact')).map((r) => r.ERP_Id__c)).toEqual(['1', '5']);
    // allOrNone:true rolls the good ones back too; more than 200 records is a request error.
    const all = (await (
      await call(s, 'PATCH', `${V}/composite/sobjects/Contact/ERP_Id__c`, {
        allOrNone: true,
        records: [contact('6', { LastName: 'ok' }), contact('7', {})],
      })
    ).json()) as { errors: { statusCode: string }[] }[];
    expect(all.map((r) => r.errors[0]?.statusCode)).toEqual(['ALL_OR_NONE_OPERATION_ROLLED_BACK', 'REQUIRED_FIELD_MISSING']);
    const tooMany = await call(s, 'PATCH', `${V}/composite/sobjects/Contact/ERP_Id__c`, {
      allOrNone: false,
      records: Array.from({ length: 201 }, (_, i) => contact(String(i), { LastName: 'x' })),
    });
    expect(tooMany.status).toBe(400);
    expect(((await tooMany.json()) as { errorCode: string }[])[0]?.errorCode).toBe('EXCEEDED_ID_LIMIT');
  });

  it('clears a lookup set to null and refuses a record naming both the relationship and the lookup field', async () => {
    const s = await start();
    const path = `${V}/composite/sobjects/Opportunity/ERP_Order_Id__c`;
    await call(s, 'PATCH', `${V}/composite/sobjects/Contact/ERP_Id__c`, { allOrNone: false, records: [contact('5', { LastName: 'E' })] });
    const deal = (fields: Record<string, unknown>) => ({
      attributes: { type: 'Opportunity' },
      ERP_Order_Id__c: '70',
      Name: 'D',
      StageName: 'Prospecting',
      CloseDate: '2026-12-01',
      ...fields,
    });
    await call(s, 'PATCH', path, { allOrNone: false, records: [deal({ Customer__r: { ERP_Id__c: '5' } })] });
    expect((await stored(s, 'Opportunity'))[0]?.Customer__c).toMatch(/^003/);
    const both = (await (
      await call(s, 'PATCH', path, { allOrNone: false, records: [deal({ Customer__r: { ERP_Id__c: '5' }, Customer__c: null })] })
    ).json()) as { success: boolean; errors: { statusCode: string; message: string }[] }[];
    expect(both[0]).toMatchObject({
      success: false,
      errors: [
        {
          statusCode: 'INVALID_FIELD',
          message: 'Cannot specify both an external ID reference Customer__r and a salesforce id, Customer__c',
        },
      ],
    });
    const cleared = (await (await call(s, 'PATCH', path, { allOrNone: false, records: [deal({ Customer__c: null })] })).json()) as {
      success: boolean;
    }[];
    expect(cleared[0]?.success).toBe(true);
    expect((await stored(s, 'Opportunity'))[0]).toMatchObject({ ERP_Order_Id__c: '70', Customer__c: null });
  });

  it('answers the concurrent long-running request limit with 403 REQUEST_LIMIT_EXCEEDED (not counted), and UserInfo without counting', async () => {
    const s = await start({ serviceMs: 300, longRequestSeconds: 0.1, concurrentLongRequests: 1 });
    const slow = call(s, 'GET', `${V}/limits`);
    await new Promise((r) => setTimeout(r, 150));
    const refused = await call(s, 'GET', `${V}/limits`);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual([{ message: 'ConcurrentPerOrgLongTxn Limit exceeded.', errorCode: 'REQUEST_LIMIT_EXCEEDED' }]);
    expect((await slow).status).toBe(200);
    expect((await call(s, 'GET', `${V}/limits`)).headers.get('sforce-limit-info')).toBe('api-usage=2/100000');
    const me = await call(s, 'GET', '/services/oauth2/userinfo');
    expect(await me.json()).toMatchObject({ user_id: '005SIM000000001AAA', organization_id: expect.any(String) });
    expect((await call(s, 'GET', `${V}/limits`)).headers.get('sforce-limit-info')).toBe('api-usage=3/100000');
  });

  it('lists ingest jobs (GET /jobs/ingest) with createdById, createdDate and the state as of now, 1,000 a page', async () => {
    const s = await start({ bulkStartSeconds: 60 });
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const job = (await (
        await call(s, 'POST', `${V}/jobs/ingest`, { object: 'Contact', externalIdFieldName: 'ERP_Id__c', operation: 'upsert' })
      ).json()) as { id: string };
      ids.push(job.id);
    }
    await call(s, 'PUT', `${V}/jobs/ingest/${ids[0]}/batches`, 'ERP_Id__c,LastName\n1,A\n', 'sim-token', 'text/csv');
    await call(s, 'PATCH', `${V}/jobs/ingest/${ids[0]}`, { state: 'UploadComplete' });
    const list = (await (await call(s, 'GET', `${V}/jobs/ingest?jobType=V2Ingest`)).json()) as {
      done: boolean;
      records: Record<string, unknown>[];
    };
    expect(list.done).toBe(true);
    expect(list.records.map((j) => [j.id, j.state, j.object, j.externalIdFieldName, j.operation, j.createdById])).toEqual([
      [ids[0], 'InProgress', 'Contact', 'ERP_Id__c', 'upsert', '005SIM000000001AAA'],
      [ids[1], 'Open', 'Contact', 'ERP_Id__c', 'upsert', '005SIM000000001AAA'],
    ]);
    expect(Date.parse(String(list.records[0]!.createdDate))).toBeGreaterThan(Date.now() - 60_000);
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 61 });
    const later = (await (await call(s, 'GET', `${V}/jobs/ingest`)).json()) as { records: { state: string }[] };
    expect(later.records.map((j) => j.state)).toEqual(['JobComplete', 'Open']);
  });

  it('runs a Bulk API 2.0 ingest job on the simulator clock and returns CSV results', async () => {
    const s = await start({ bulkStartSeconds: 60, bulkRecordsPerSecond: 1 });
    const job = (await (
      await call(s, 'POST', `${V}/jobs/ingest`, {
        object: 'Contact',
        externalIdFieldName: 'ERP_Id__c',
        operation: 'upsert',
        contentType: 'CSV',
        lineEnding: 'LF',
      })
    ).json()) as { id: string; state: string };
    expect(job.state).toBe('Open');
    const put = await call(
      s,
      'PUT',
      `${V}/jobs/ingest/${job.id}/batches`,
      'ERP_Id__c,LastName,Email\n1,"Doe, Jane",\n2,,x@y.io\n3,Roe,#N/A\n',
      'sim-token',
      'text/csv',
    );
    expect(put.status).toBe(201);
    expect(
      ((await (await call(s, 'PATCH', `${V}/jobs/ingest/${job.id}`, { state: 'UploadComplete' })).json()) as { state: string }).state,
    ).toBe('UploadComplete');
    expect(((await (await call(s, 'GET', `${V}/jobs/ingest/${job.id}`)).json()) as { state: string }).state).toBe('InProgress');
    expect(await stored(s, 'Contact')).toHaveLength(0);
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 63 });
    const done = (await (await call(s, 'GET', `${V}/jobs/ingest/${job.id}`)).json()) as Record<string, unknown>;
    expect(done).toMatchObject({ state: 'JobComplete', numberRecordsProcessed: 3, numberRecordsFailed: 1, jobType: 'V2Ingest' });
    const ok = await call(s, 'GET', `${V}/jobs/ingest/${job.id}/successfulResults/`);
    expect(ok.headers.get('content-type')).toContain('text/csv');
    const okRows = parseCsv(await ok.text());
    expect(okRows.header).toEqual(['sf__Id', 'sf__Created', 'ERP_Id__c', 'LastName', 'Email']);
    expect(okRows.rows.map((r) => r.ERP_Id__c).sort()).toEqual(['1', '3']);
    const failed = parseCsv(await (await call(s, 'GET', `${V}/jobs/ingest/${job.id}/failedResults/`)).text());
    expect(failed.rows).toEqual([
      {
        sf__Id: '',
        sf__Error: 'REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --',
        ERP_Id__c: '2',
        LastName: '',
        Email: 'x@y.io',
      },
    ]);
    const records = await stored(s, 'Contact');
    expect(records.find((r) => r.ERP_Id__c === '1')).toMatchObject({ LastName: 'Doe, Jane' });
    expect(records.find((r) => r.ERP_Id__c === '3')).toMatchObject({ LastName: 'Roe', Email: null });
  });
});

describe('SalesforceAdapter', () => {
  function adapter(s: CrmSimulator, crm: Record<string, unknown> = {}): SalesforceAdapter {
    const config = parseConfig({
      name: 't',
      postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
      kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
      crm: {
        kind: 'salesforce',
        baseUrl: s.url,
        auth: { token: 'sim-token' },
        limits: { requests: 100_000, windowSeconds: 86_400 },
        bulkThreshold: 0,
        ...crm,
      },
      mappings: [
        { table: 'erp.customers', object: 'Contact', externalId: { column: 'id', field: 'ERP_Id__c' }, fields: { LastName: 'l' } },
      ],
    });
    const a = new SalesforceAdapter(config.crm);
    adapters.push(a);
    return a;
  }
  const upsert = (id: string, fields: Record<string, unknown>): CrmWrite => ({
    op: 'upsert',
    object: 'Contact',
    externalIdField: 'ERP_Id__c',
    externalId: id,
    fields,
  });
  const del = (id: string): CrmWrite => ({ op: 'delete', object: 'Contact', externalIdField: 'ERP_Id__c', externalId: id, fields: {} });
  /** Opportunity `ext` whose Customer__c lookup names Contact `customer` (moved from `previous` when given). */
  const opportunity = (ext: string, customer: string | null, previous?: string): CrmWrite => ({
    op: 'upsert',
    object: 'Opportunity',
    externalIdField: 'ERP_Order_Id__c',
    externalId: ext,
    fields: { Name: `Deal ${ext}`, StageName: 'Prospecting', CloseDate: '2026-12-01' },
    lookups: {
      Customer__c: {
        object: 'Contact',
        externalIdField: 'ERP_Id__c',
        externalId: customer,
        ...(previous !== undefined ? { previousExternalId: previous } : {}),
      },
    },
  });
  const people = (n: number, from = 1) =>
    Array.from({ length: n }, (_, i) =>
      upsert(String(from + i), { FirstName: `F${from + i}`, LastName: `L${from + i}`, Email: `p${from + i}@example.com` }),
    );

  it('round-trips records through sObject Collections (200 a request), spending exactly cost() requests', async () => {
    const s = await start();
    const a = adapter(s);
    expect(a.maxBatchSize('Contact')).toBe(200);
    const records = people(250);
    const signals: RateSignal[] = [];
    expect(a.cost(records)).toBe(2);
    const out = await a.write(records, (x) => signals.push(x));
    expect(out.every((o) => o.status === 'done' && o.created === true && /^003/.test(o.crmId ?? ''))).toBe(true);
    const st = await stats(s);
    expect(st.requests).toBe(2);
    expect(st.byEndpoint[`PATCH ${V}/composite/sobjects/Contact/ERP_Id__c`]).toBe(2);
    expect(signals).toEqual([{ dailyRemaining: 99_999 }, { dailyRemaining: 99_998 }]);
    const crm = await stored(s, 'Contact');
    const pick = (r: Record<string, unknown>) => ({ ERP_Id__c: r.ERP_Id__c, FirstName: r.FirstName, LastName: r.LastName, Email: r.Email });
    expect(crm.map(pick)).toEqual(records.map((r) => ({ ERP_Id__c: r.externalId, ...r.fields })));
    // Updates keep the record: created is false and the Id is the same.
    const again = await a.write([upsert('7', { LastName: 'Changed' })], () => undefined);
    expect(again[0]).toMatchObject({ status: 'done', created: false, crmId: out[6]!.status === 'done' ? out[6]!.crmId : '' });
  });

  it('returns per-record outcomes in order: rejected with the field, lookups pending as retry', async () => {
    const s = await start();
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'LastName', contains: 'blocked' } });
    const out = await a.write(
      [
        upsert('1', { LastName: 'A' }),
        upsert('2', { LastName: '' }),
        upsert('3', { LastName: 'C', Email: 'bad' }),
        upsert('4', { LastName: 'blocked' }),
        upsert('5', { LastName: 'E' }),
      ],
      () => undefined,
    );
    expect(out.map((o) => o.status)).toEqual(['done', 'rejected', 'rejected', 'rejected', 'done']);
    expect(out[1]).toMatchObject({ code: 'REQUIRED_FIELD_MISSING', field: 'LastName' });
    expect(out[2]).toMatchObject({ code: 'INVALID_EMAIL_ADDRESS', field: 'Email' });
    expect(out[3]).toMatchObject({ code: 'FIELD_CUSTOM_VALIDATION_EXCEPTION', field: 'LastName' });
  });

  it('resolves lookups by external id inside the write, without extra requests', async () => {
    const s = await start();
    const a = adapter(s);
    const opp: CrmWrite = {
      op: 'upsert',
      object: 'Opportunity',
      externalIdField: 'ERP_Order_Id__c',
      externalId: '70',
      fields: { Name: 'Deal', StageName: 'Prospecting', CloseDate: '2026-12-01', Amount: '12.50' },
      lookups: { Customer__c: { object: 'Contact', externalIdField: 'ERP_Id__c', externalId: '5' } },
    };
    expect(a.cost([opp])).toBe(1);
    expect((await a.write([opp], () => undefined))[0]).toMatchObject({ status: 'retry', code: 'LOOKUP_PENDING' });
    const [c] = await a.write([upsert('5', { LastName: 'E' })], () => undefined);
    expect((await a.write([opp], () => undefined))[0]?.status).toBe('done');
    const [deal] = await stored(s, 'Opportunity');
    expect(deal).toMatchObject({ ERP_Order_Id__c: '70', Name: 'Deal', Customer__c: c?.status === 'done' ? c.crmId : 'missing' });
    expect(deal).not.toHaveProperty('Customer__r');
    // A standard lookup named by its field (AccountId) goes as the relationship `Account`.
    const acct: CrmWrite = { op: 'upsert', object: 'Account', externalIdField: 'ERP_Id__c', externalId: 'A1', fields: { Name: 'Acme' } };
    const [acctOut] = await a.write([acct], () => undefined);
    await a.write(
      [{ ...upsert('5', {}), lookups: { AccountId: { object: 'Account', externalIdField: 'ERP_Id__c', externalId: 'A1' } } }],
      () => undefined,
    );
    expect((await stored(s, 'Contact'))[0]).toMatchObject({
      AccountId: acctOut?.status === 'done' ? acctOut.crmId : 'missing',
      LastName: 'E',
    });
    expect((await stats(s)).requests).toBe(5);
  });

  it('clears a lookup whose column became NULL with the lookup field set to null, creates with a null lookup, mixes both in one request', async () => {
    const s = await start();
    const a = adapter(s);
    const opp = (ext: string, customer: string | null): CrmWrite => opportunity(ext, customer, customer === null ? '5' : undefined);
    const [c] = await a.write([upsert('5', { LastName: 'E' })], () => undefined);
    const contactId = c?.status === 'done' ? c.crmId : 'missing';
    await a.write([opp('70', '5')], () => undefined);
    expect((await stored(s, 'Opportunity'))[0]).toMatchObject({ ERP_Order_Id__c: '70', Customer__c: contactId });
    // Moved to NULL: the lookup is cleared, not kept pointing to contact 5, and nothing is looked up.
    const before = (await stats(s)).requests;
    expect(a.cost([opp('70', null)])).toBe(1);
    expect(await a.write([opp('70', null)], () => undefined)).toEqual([expect.objectContaining({ status: 'done', created: false })]);
    expect((await stats(s)).requests - before).toBe(1);
    const [deal] = await stored(s, 'Opportunity');
    expect(deal).toMatchObject({ ERP_Order_Id__c: '70', Name: 'Deal 70', Customer__c: null });
    expect(deal).not.toHaveProperty('Customer__r');
    // A new record with a NULL lookup is simply created without one; one request mixes null and non-null.
    const mixed = [opp('71', null), opp('72', '5'), opp('73', '404'), opp('70', '5')];
    expect(a.cost(mixed)).toBe(1);
    const out = await a.write(mixed, () => undefined);
    expect(out.map((o) => (o.status === 'done' ? `done${o.created ? '+' : ''}` : o.code))).toEqual([
      'done+',
      'done+',
      'LOOKUP_PENDING',
      'done',
    ]);
    const deals = Object.fromEntries((await stored(s, 'Opportunity')).map((d) => [d.ERP_Order_Id__c, d.Customer__c]));
    expect(deals).toEqual({ '70': contactId, '71': null, '72': contactId });
    // A standard lookup, whether named by its field (AccountId) or its relationship (Account), clears AccountId.
    await a.write(
      [{ op: 'upsert', object: 'Account', externalIdField: 'ERP_Id__c', externalId: 'A1', fields: { Name: 'Acme' } }],
      () => undefined,
    );
    const withAccount = (ext: string | null, field = 'AccountId'): CrmWrite => ({
      ...upsert('5', {}),
      lookups: { [field]: { object: 'Account', externalIdField: 'ERP_Id__c', externalId: ext } },
    });
    await a.write([withAccount('A1')], () => undefined);
    expect((await stored(s, 'Contact'))[0]?.AccountId).toMatch(/^001/);
    expect((await a.write([withAccount(null, 'Account')], () => undefined))[0]?.status).toBe('done');
    expect((await stored(s, 'Contact'))[0]).toMatchObject({ LastName: 'E', AccountId: null });
  });

  it('sends records that clear a lookup through sObject Collections, never in a Bulk job, and counts that in cost()', async () => {
    const s = await start();
    const a = adapter(s, { bulkThreshold: 3 });
    const [c] = await a.write([upsert('5', { LastName: 'E' })], () => undefined);
    const contactId = c?.status === 'done' ? c.crmId : 'missing';
    const opp = (ext: string, customer: string | null): CrmWrite => opportunity(ext, customer);
    await a.write([opp('80', '5'), opp('81', '5')], () => undefined);
    // 3 that set the lookup go as a job, the 2 that clear it as one collection request.
    const records = [opp('80', null), opp('82', '5'), opp('83', '5'), opp('81', null), opp('84', '5')];
    const cost = a.cost(records);
    // The job list (once per object after a start), create, upload, close, polls, three result files; one collection request.
    expect(cost).toBe(1 + 6 + estimatedPolls(3) + 1);
    const before = await stats(s);
    const out = await a.write(records, () => undefined);
    expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
    const after = await stats(s);
    expect(apiCalls(after) - apiCalls(before)).toBe(cost);
    expect((after.byEndpoint[`POST ${V}/jobs/ingest`] ?? 0) - (before.byEndpoint[`POST ${V}/jobs/ingest`] ?? 0)).toBe(1);
    expect(
      (after.byEndpoint[`PATCH ${V}/composite/sobjects/Opportunity/ERP_Order_Id__c`] ?? 0) -
        (before.byEndpoint[`PATCH ${V}/composite/sobjects/Opportunity/ERP_Order_Id__c`] ?? 0),
    ).toBe(1);
    const deals = Object.fromEntries((await stored(s, 'Opportunity')).map((d) => [d.ERP_Order_Id__c, d.Customer__c]));
    expect(deals).toEqual({ '80': null, '81': null, '82': contactId, '83': contactId, '84': contactId });
    // Fewer than bulkThreshold records left to set lookups: everything goes in one collection request.
    const small = [opp('85', '5'), opp('86', null), opp('87', '5')];
    expect(a.cost(small)).toBe(1);
    const mid = (await stats(s)).requests;
    expect((await a.write(small, () => undefined)).every((o) => o.status === 'done')).toBe(true);
    expect((await stats(s)).requests - mid).toBe(1);
  });

  it('deletes by external id: one query and one collection delete per 200, already-gone records are done', async () => {
    const s = await start();
    const a = adapter(s);
    await a.write(people(3), () => undefined);
    const before = (await stats(s)).requests;
    const batch = [del('1'), upsert('4', { LastName: 'New' }), del('3'), del('99')];
    const cost = a.cost(batch);
    expect(cost).toBe(3);
    const out = await a.write(batch, () => undefined);
    expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done', 'done']);
    const st = await stats(s);
    expect(st.requests - before).toBe(cost);
    expect(st.recordsDeleted).toBe(2);
    expect((await stored(s, 'Contact')).map((r) => r.ERP_Id__c)).toEqual(['2', '4']);
    // Nothing left to delete: the query alone answers.
    expect((await a.write([del('1')], () => undefined))[0]?.status).toBe('done');
  });

  it('maps 403 REQUEST_LIMIT_EXCEEDED (daily allocation) to throttled signals and RATE_LIMITED retries that wait for the rolling 24 h', async () => {
    const s = await start({ limit: { requests: 1, windowSeconds: 86_400 } });
    const a = adapter(s);
    const signals: RateSignal[] = [];
    const out = await a.write(people(250), (x) => signals.push(x));
    expect(out.slice(0, 200).every((o) => o.status === 'done')).toBe(true);
    expect(out.slice(200).every((o) => o.status === 'retry' && o.code === 'RATE_LIMITED' && o.retryAfterSeconds === 300)).toBe(true);
    expect(signals).toEqual([{ dailyRemaining: 0 }, { dailyRemaining: 0, throttled: true, retryAfterSeconds: 300 }]);
    // An injected storm looks the same and is counted as throttled.
    await call(s, 'POST', '/__sim/reset');
    await call(s, 'POST', '/__sim/faults', { throttle: { requests: 1, retryAfterSeconds: 60 } });
    const storm = await a.write([upsert('1', { LastName: 'A' }), del('2')], () => undefined);
    expect(storm.map((o) => o.status === 'retry' && o.code)).toEqual(['RATE_LIMITED', 'RATE_LIMITED']);
    expect(await stats(s)).toMatchObject({ requests: 1, throttled: 1 });
  });

  it('throws retriable errors for 5xx and a permanent CRM_AUTH error for a bad token', async () => {
    const s = await start();
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { errors5xx: { requests: 1, status: 503 } });
    await expect(a.write([upsert('1', { LastName: 'A' })], () => undefined)).rejects.toMatchObject({
      code: 'CRM_HTTP_503',
      retriable: true,
    });
    await a.ping();
    const bad = adapter(s, { auth: { token: 'wrong' } });
    await expect(bad.ping()).rejects.toMatchObject({
      code: 'CRM_AUTH',
      retriable: false,
      message: 'Salesforce rejected the token (HTTP 401); check crm.auth.token',
    });
    await expect(bad.write([upsert('1', { LastName: 'A' })], () => undefined)).rejects.toMatchObject({ code: 'CRM_AUTH' });
  });

  it('switches to a Bulk API 2.0 job at bulkThreshold and matches shuffled results by external id', async () => {
    const s = await start();
    const a = adapter(s, { bulkThreshold: 5 });
    expect(a.maxBatchSize('Contact')).toBe(10_000);
    const records = [
      ...people(6),
      upsert('7', { LastName: '' }),
      upsert('8', { LastName: 'x', Email: 'broken' }),
      upsert('9', { LastName: 'Null email', Email: null }),
    ];
    const cost = a.cost(records);
    // The job list (once after a start), create, upload, close, polls, three result files.
    expect(cost).toBe(1 + 6 + estimatedPolls(records.length));
    expect(a.cost(records.slice(0, 5))).toBe(1 + 6 + estimatedPolls(5));
    const signals: RateSignal[] = [];
    const out = await a.write(records, (x) => signals.push(x));
    expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done', 'done', 'done', 'done', 'rejected', 'rejected', 'done']);
    expect(out[6]).toMatchObject({ code: 'REQUIRED_FIELD_MISSING', field: 'LastName' });
    expect(out[7]).toMatchObject({ code: 'INVALID_EMAIL_ADDRESS', field: 'Email' });
    const crm = await stored(s, 'Contact');
    // Every outcome carries the Id of the record with its own external id.
    records.forEach((r, i) => {
      const o = out[i]!;
      if (o.status === 'done') expect(crm.find((c) => c.ERP_Id__c === r.externalId)?.Id).toBe(o.crmId);
    });
    expect(crm.find((c) => c.ERP_Id__c === '9')).toMatchObject({ LastName: 'Null email', Email: null });
    const st = await stats(s);
    expect(st.byEndpoint[`POST ${V}/jobs/ingest`]).toBe(1);
    expect(st.byEndpoint[`PATCH ${V}/composite/sobjects/Contact/ERP_Id__c`]).toBeUndefined();
    expect(apiCalls(st)).toBe(cost);
    expect(signals).toHaveLength(cost);
  });

  it('sends lookups in Bulk CSV as Relationship__r.ExternalId__c columns; a missing parent is a retry', async () => {
    const s = await start();
    const a = adapter(s, { bulkThreshold: 2 });
    const [c] = await a.write([upsert('5', { LastName: 'E' })], () => undefined);
    const opp = (ext: string, customer: string): CrmWrite => ({
      op: 'upsert',
      object: 'Opportunity',
      externalIdField: 'ERP_Order_Id__c',
      externalId: ext,
      fields: { Name: `Deal ${ext}`, StageName: 'Prospecting', CloseDate: '2026-12-01' },
      lookups: { Customer__c: { object: 'Contact', externalIdField: 'ERP_Id__c', externalId: customer } },
    });
    const out = await a.write([opp('70', '5'), opp('71', '404'), opp('72', '5')], () => undefined);
    expect(out.map((o) => (o.status === 'done' ? 'done' : o.code))).toEqual(['done', 'LOOKUP_PENDING', 'done']);
    const deals = await stored(s, 'Opportunity');
    expect(deals.map((d) => [d.ERP_Order_Id__c, d.Customer__c])).toEqual(
      expect.arrayContaining([
        ['70', c?.status === 'done' ? c.crmId : 'missing'],
        ['72', c?.status === 'done' ? c.crmId : 'missing'],
      ]),
    );
    expect(deals).toHaveLength(2);
  });

  it('turns a throttled job poll into retries and aborts a job that outlives crm.bulkJobTimeoutMinutes', async () => {
    const s = await start({ limit: { requests: 4, windowSeconds: 86_400 } });
    const a = adapter(s, { bulkThreshold: 2 });
    // The job list, create, upload and UploadComplete pass; the first poll is throttled.
    const out = await a.write(people(3), () => undefined);
    expect(out.every((o) => o.status === 'retry' && o.code === 'RATE_LIMITED')).toBe(true);
    expect(await stats(s)).toMatchObject({ throttled: 1 });
    await s.close();
    // A job still running when the job timeout (0.01 min = 600 ms here) is up is aborted.
    const s2 = await start({ bulkStartSeconds: 60 });
    const hasty = adapter(s2, { bulkThreshold: 2, bulkJobTimeoutMinutes: 0.01 });
    await expect(hasty.write(people(3), () => undefined)).rejects.toMatchObject({
      code: 'CRM_BULK_TIMEOUT',
      retriable: true,
      message: expect.stringContaining('crm.bulkJobTimeoutMinutes'),
    });
    await call(s2, 'POST', '/__sim/clock', { advanceSeconds: 60 });
    const st = await stats(s2);
    // Polled, then UploadComplete and Aborted; the aborted job never writes.
    expect(
      Object.entries(st.byEndpoint)
        .filter(([k]) => k.startsWith('PATCH'))
        .map(([, n]) => n),
    ).toEqual([2]);
    expect(
      Object.entries(st.byEndpoint)
        .filter(([k]) => /^GET .*\/jobs\/ingest\/[^/]+$/.test(k))
        .reduce((n, [, c]) => n + c, 0),
    ).toBeGreaterThanOrEqual(1);
    expect(await stored(s2, 'Contact')).toHaveLength(0);
  });

  describe('bulk jobs and request limits as documented (issue 11)', () => {
    const jobCreates = async (s: CrmSimulator) => (await stats(s)).byEndpoint[`POST ${V}/jobs/ingest`] ?? 0;
    const patches = async (s: CrmSimulator) =>
      Object.entries((await stats(s)).byEndpoint)
        .filter(([k]) => k.startsWith('PATCH') && k.includes('/jobs/ingest/'))
        .reduce((n, [, c]) => n + c, 0);
    async function until(what: string, check: () => Promise<boolean>, ms = 5000): Promise<void> {
      const end = Date.now() + ms;
      while (!(await check())) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }

    it('keeps polling a job that runs longer than crm.timeoutMs (each poll is one call) and never aborts it', async () => {
      // The job takes 2.5 s; one call may take 500 ms.
      const s = await start({ bulkStartSeconds: 2.5 });
      const a = adapter(s, { bulkThreshold: 2, timeoutMs: 500 });
      const out = await a.write(people(3), () => undefined);
      expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done']);
      expect(await jobCreates(s)).toBe(1);
      expect(await patches(s)).toBe(1); // UploadComplete only: no Aborted
      expect(await stored(s, 'Contact')).toHaveLength(3);
    }, 15_000);

    it('a job whose call ended early is taken up by the records when they come back, not created again', async () => {
      const s = await start();
      // The first successfulResults download is garbled: the call ends with CRM_BAD_RESPONSE
      // while the job has written everything.
      const p = await garbageProxy(s.url, (m, path) => m === 'GET' && path.endsWith('/successfulResults/'), 'html');
      proxies.push(p);
      const a = adapter(s, { baseUrl: p.url, bulkThreshold: 2, timeoutMs: 5000 });
      await expect(a.write(people(3), () => undefined)).rejects.toMatchObject({ code: 'CRM_BAD_RESPONSE' });
      // Redelivered: the same records, same values.
      const again = await a.write(people(3), () => undefined);
      expect(again.map((o) => o.status)).toEqual(['done', 'done', 'done']);
      expect(await jobCreates(s)).toBe(1);
      expect((await stats(s)).recordsWritten).toBe(3);
      // A record whose values changed since is not covered by the old job: it goes into a new one.
      const changed = [...people(2), upsert('3', { FirstName: 'F3', LastName: 'Changed', Email: 'p3@example.com' }), ...people(2, 4)];
      expect((await a.write(changed, () => undefined)).map((o) => o.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
      expect(await jobCreates(s)).toBe(2);
      expect((await stored(s, 'Contact')).find((c) => c.ERP_Id__c === '3')).toMatchObject({ LastName: 'Changed' });
    }, 15_000);

    it('after a restart, the redelivered records find the job the crashed process created (GET /jobs/ingest) instead of creating one', async () => {
      // The job runs 2 s; the first process stops right after starting it.
      const s = await start({ bulkStartSeconds: 2 });
      const first = adapter(s, { bulkThreshold: 2 });
      const running = first.write(people(4), () => undefined);
      await until('UploadComplete', async () => (await patches(s)) === 1);
      const crashed = expect(running).rejects.toMatchObject({ retriable: true });
      await first.close();
      await crashed;
      const second = adapter(s, { bulkThreshold: 2 });
      const out = await second.write(people(4), () => undefined);
      expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done', 'done']);
      expect(await jobCreates(s)).toBe(1);
      expect((await stats(s)).recordsWritten).toBe(4);
      // Each process looked for its jobs once.
      expect((await stats(s)).byEndpoint[`GET ${V}/jobs/ingest`]).toBe(2);
    }, 15_000);

    it('tells the daily allocation from the concurrent long-running request limit: a short wait for one, the rolling 24 h for the other', async () => {
      // One request of >= 0.1 s (the documented 20 s, scaled) in flight is the limit; each takes 400 ms.
      const s = await start({ serviceMs: 400, longRequestSeconds: 0.1, concurrentLongRequests: 1 });
      const a = adapter(s);
      const signals: RateSignal[] = [];
      const slow = a.write([upsert('1', { LastName: 'A' })], () => undefined);
      await new Promise((r) => setTimeout(r, 200));
      const out = await a.write([upsert('2', { LastName: 'B' })], (x) => signals.push(x));
      expect(out).toEqual([
        expect.objectContaining({
          status: 'retry',
          code: 'RATE_LIMITED',
          kind: 'throttle',
          retryAfterSeconds: 5,
          message: expect.stringContaining('concurrent long-running request limit'),
        }),
      ]);
      expect(signals).toEqual([expect.objectContaining({ throttled: true, retryAfterSeconds: 5 })]);
      expect((await slow)[0]?.status).toBe('done');
      await s.close();
      const daily = await start({ limit: { requests: 1, windowSeconds: 86_400 } });
      const b = adapter(daily);
      await b.write([upsert('1', { LastName: 'A' })], () => undefined);
      const over = await b.write([upsert('2', { LastName: 'B' })], () => undefined);
      expect(over).toEqual([
        expect.objectContaining({
          status: 'retry',
          code: 'RATE_LIMITED',
          kind: 'throttle',
          retryAfterSeconds: 300,
          message: expect.stringContaining('daily API request allocation'),
        }),
      ]);
    });
  });

  describe("answers that are not Salesforce's (issue 10, defect 3)", () => {
    const proxied = proxiedBy((p) => proxies.push(p));
    const rewritten = rewrittenBy((p) => proxies.push(p));

    it.each(GARBAGE_KINDS)('a %s 200 to a collection upsert is CRM_BAD_RESPONSE, not done', async (kind) => {
      const s = await start();
      const a = adapter(s);
      await armGarbage(s, kind);
      await expectBad(a.write([upsert('1', { LastName: 'A' }), upsert('2', { LastName: 'B' })], () => undefined));
      expect(await stored(s, 'Contact')).toHaveLength(0);
    });

    it.each(GARBAGE_KINDS)(
      'a %s 200 to the delete query or to the collection delete is CRM_BAD_RESPONSE, not "already gone"',
      async (kind) => {
        const s = await start();
        const a = adapter(s);
        await a.write(people(2), () => undefined);
        await armGarbage(s, kind);
        await expectBad(a.write([del('1'), del('2')], () => undefined));
        const p = await proxied(s, (m, path) => m === 'DELETE' && path.endsWith('/composite/sobjects'), kind);
        const b = adapter(s, { baseUrl: p.url });
        await expectBad(b.write([del('1'), del('2')], () => undefined));
        expect(p.hits).toEqual([`DELETE ${V}/composite/sobjects`]);
        expect(await stored(s, 'Contact')).toHaveLength(2);
      },
    );

    it.each(GARBAGE_KINDS)('a %s 200 to a Bulk API job step or result download is CRM_BAD_RESPONSE, not done', async (kind) => {
      const s = await start();
      for (const [name, step] of [
        ['create', (m: string, path: string) => m === 'POST' && path === `${V}/jobs/ingest`],
        ['upload', (m: string, path: string) => m === 'PUT' && path.endsWith('/batches')],
        ['UploadComplete', (m: string, path: string) => m === 'PATCH' && /\/jobs\/ingest\/[^/]+$/.test(path)],
        ['successfulResults', (m: string, path: string) => m === 'GET' && path.endsWith('/successfulResults/')],
      ] as const) {
        const p = await proxied(s, step, kind);
        const a = adapter(s, { baseUrl: p.url, bulkThreshold: 2, timeoutMs: 5000 });
        await expectBad(
          a.write(people(3), () => undefined),
          `${name}: `,
        );
        expect(p.hits).toHaveLength(1);
      }
      // A bad failedResults file after a good successfulResults one: the records the good file
      // lists are done, the one only the bad file could account for is retried.
      const p = await proxied(s, (m, path) => m === 'GET' && path.endsWith('/failedResults/'), kind);
      const a = adapter(s, { baseUrl: p.url, bulkThreshold: 2, timeoutMs: 5000 });
      const out = await a.write([...people(2, 10), upsert('12', { LastName: '' })], () => undefined);
      expect(out.map((o) => (o.status === 'retry' ? `${o.code}/${o.kind}` : o.status))).toEqual([
        'done',
        'done',
        'CRM_BAD_RESPONSE/bad-response',
      ]);
      expect(p.hits).toHaveLength(1);
    });

    it.each(GARBAGE_KINDS)(
      'a %s 200 to one Bulk API job poll is polled past; three in a row give up on the job',
      async (kind) => {
        const s = await start();
        const poll = (m: string, path: string) => m === 'GET' && /\/jobs\/ingest\/[^/]+$/.test(path);
        await expectOneGarbledPollPassed(
          s,
          poll,
          kind,
          (baseUrl, from) => adapter(s, { baseUrl, bulkThreshold: 2, timeoutMs: 5000 }).write(people(3, from), () => undefined),
          (p) => proxies.push(p),
        );
      },
      20_000,
    );

    it.each(GARBAGE_KINDS)('ping (pg2crm check) fails on a %s 200', async (kind) => {
      const s = await start();
      await expectPingFailsOnGarbage(s, adapter(s), kind);
    });

    it('checks every result of a well-formed answer: a result short, a success without an Id, a delete result for another Id', async () => {
      const s = await start();
      const label = outcomeLabels;
      const collection = (m: string, path: string) => m === 'PATCH' && path.includes('/composite/sobjects/');
      const short = await rewritten(s, collection, (b) => (b as unknown[]).slice(0, 1));
      await expectBad(
        adapter(s, { baseUrl: short.url }).write([upsert('1', { LastName: 'A' }), upsert('2', { LastName: 'B' })], () => undefined),
      );
      const noId = await rewritten(s, collection, (b) =>
        (b as Record<string, unknown>[]).map((r, k) => (k === 0 ? { ...r, id: null } : r)),
      );
      expect(
        label(
          await adapter(s, { baseUrl: noId.url }).write([upsert('3', { LastName: 'C' }), upsert('4', { LastName: 'D' })], () => undefined),
        ),
      ).toEqual(['CRM_BAD_RESPONSE/bad-response', 'done']);
      const other = await rewritten(
        s,
        (m) => m === 'DELETE',
        (b) => (b as Record<string, unknown>[]).map((r, k) => (k === 0 ? { ...r, id: '003000000000000AAA' } : r)),
      );
      expect(label(await adapter(s, { baseUrl: other.url }).write([del('1'), del('2')], () => undefined))).toEqual([
        'CRM_BAD_RESPONSE/bad-response',
        'done',
      ]);
      const notDone = await rewritten(
        s,
        (m, path) => m === 'GET' && path.endsWith('/query'),
        (b) => ({ ...(b as object), done: undefined }),
      );
      await expectBad(adapter(s, { baseUrl: notDone.url }).write([del('3')], () => undefined));
      expect((await stored(s, 'Contact')).map((r) => r.ERP_Id__c)).toEqual(['3', '4']);
    });

    it('marks throttles, 5xx and pending lookups with their retry kind', async () => {
      const s = await start();
      const a = adapter(s);
      await call(s, 'POST', '/__sim/faults', { throttle: { requests: 1, retryAfterSeconds: 60 } });
      expect(await a.write([upsert('1', { LastName: 'A' })], () => undefined)).toEqual([
        expect.objectContaining({ code: 'RATE_LIMITED', kind: 'throttle' }),
      ]);
      const opp: CrmWrite = {
        op: 'upsert',
        object: 'Opportunity',
        externalIdField: 'ERP_Order_Id__c',
        externalId: '70',
        fields: { Name: 'Deal', StageName: 'Prospecting', CloseDate: '2026-12-01' },
        lookups: { Customer__c: { object: 'Contact', externalIdField: 'ERP_Id__c', externalId: '404' } },
      };
      expect(await a.write([opp], () => undefined)).toEqual([expect.objectContaining({ code: 'LOOKUP_PENDING', kind: 'pending' })]);
    });
  });
});

describe('Salesforce helpers', () => {
  it('names relationships after their lookup fields and parses Bulk API errors', () => {
    expect(relationshipName('Customer__c')).toBe('Customer__r');
    expect(relationshipName('AccountId')).toBe('Account');
    expect(relationshipName('Customer__r')).toBe('Customer__r');
    expect([lookupIdField('Customer__c'), lookupIdField('Customer__r'), lookupIdField('AccountId'), lookupIdField('Account')]).toEqual([
      'Customer__c',
      'Customer__c',
      'AccountId',
      'AccountId',
    ]);
    expect(parseBulkError('INVALID_EMAIL_ADDRESS:Email: invalid email address: bad:Email --')).toEqual({
      statusCode: 'INVALID_EMAIL_ADDRESS',
      message: 'Email: invalid email address: bad',
      fields: ['Email'],
    });
    expect(parseBulkError('UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record:--')).toEqual({
      statusCode: 'UNABLE_TO_LOCK_ROW',
      message: 'unable to obtain exclusive access to this record',
      fields: [],
    });
    expect(estimatedPolls(10)).toBe(2);
    expect(estimatedPolls(10_000)).toBeGreaterThan(estimatedPolls(10));
  });
});
