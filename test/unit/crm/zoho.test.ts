import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmWrite, RateSignal } from '../../../src/crm/crm-adapter.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { ZohoAdapter } from '../../../src/crm/zoho/adapter.ts';
import { parseCsvRows, toCsv, ZOHO_CSV } from '../../../src/crm/csv.ts';
import { startZohoSimulator, type ZohoSimOptions } from '../../../src/crm/zoho/simulator.ts';
import { unzip, zip } from '../../../src/crm/zoho/zip.ts';
import { garbageProxy, rewriteProxy } from '../../helpers/garbage-proxy.ts';
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

const { proxies, adapters, started } = closedAfterEach<ZohoAdapter>();

async function start(opts: Partial<ZohoSimOptions> = {}): Promise<CrmSimulator> {
  return started(await startZohoSimulator({ port: 0, control: true, ...opts }));
}

const call = (s: CrmSimulator, method: string, path: string, body?: unknown, token = 'sim-token') =>
  simCall(s, method, path, body, token, 'application/json', 'Zoho-oauthtoken');

async function records(s: CrmSimulator, module: string): Promise<Record<string, unknown>[]> {
  return (await (await fetch(`${s.url}/__sim/records/${module}`)).json()) as Record<string, unknown>[];
}

async function stats(
  s: CrmSimulator,
): Promise<{ requests: number; throttled: number; byEndpoint: Record<string, number>; recordsWritten: number; recordsDeleted: number }> {
  return (await (await fetch(`${s.url}/__sim/stats`)).json()) as never;
}

function adapter(
  s: CrmSimulator,
  opts: { token?: string; bulkThreshold?: number; baseUrl?: string; timeoutMs?: number; bulkJobTimeoutMinutes?: number } = {},
): ZohoAdapter {
  const config = parseConfig({
    name: 't',
    postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
    kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
    crm: {
      kind: 'zoho',
      baseUrl: opts.baseUrl ?? s.url,
      auth: { token: opts.token ?? 'sim-token' },
      limits: { requests: 50_000, windowSeconds: 86_400, concurrency: 4 },
      bulkThreshold: opts.bulkThreshold ?? 0,
      timeoutMs: opts.timeoutMs ?? 10_000,
      ...(opts.bulkJobTimeoutMinutes !== undefined ? { bulkJobTimeoutMinutes: opts.bulkJobTimeoutMinutes } : {}),
    },
    mappings: [{ table: 'erp.customers', object: 'Contacts', externalId: { column: 'id', field: 'ERP_Id' }, fields: { Last_Name: 'l' } }],
  });
  const a = new ZohoAdapter(config.crm);
  adapters.push(a);
  return a;
}

const contact = (id: string, fields: Record<string, unknown>): CrmWrite => ({
  op: 'upsert',
  object: 'Contacts',
  externalIdField: 'ERP_Id',
  externalId: id,
  fields,
});
const remove = (id: string): CrmWrite => ({ op: 'delete', object: 'Contacts', externalIdField: 'ERP_Id', externalId: id, fields: {} });
const deal = (id: string, customer: string): CrmWrite => ({
  op: 'upsert',
  object: 'Deals',
  externalIdField: 'ERP_Order_Id',
  externalId: id,
  fields: { Deal_Name: `Order ${id}`, Stage: 'open', Amount: 10 },
  lookups: { Contact_Name: { object: 'Contacts', externalIdField: 'ERP_Id', externalId: customer } },
});
const ok = (): void => undefined;
/** A deal whose customer column is NULL now (it pointed to `previous` before, when given). */
const orphanDeal = (id: string, previous?: string): CrmWrite => ({
  ...deal(id, 'unused'),
  lookups: {
    Contact_Name: {
      object: 'Contacts',
      externalIdField: 'ERP_Id',
      externalId: null,
      ...(previous ? { previousExternalId: previous } : {}),
    },
  },
});

describe('Zoho CRM simulator', () => {
  it('counts credits over the rolling window, shows X-API-CREDITS-REMAINING from 50% used, then 429s', async () => {
    const s = await start({ limit: { requests: 4, windowSeconds: 60 } });
    const seen: (string | null)[] = [];
    for (let i = 0; i < 4; i++) seen.push((await call(s, 'GET', '/crm/v7/users?type=CurrentUser')).headers.get('x-api-credits-remaining'));
    expect(seen).toEqual([null, '2', '1', '0']);
    const res = await call(s, 'GET', '/crm/v7/users?type=CurrentUser');
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBeNull(); // Zoho documents none
    expect(res.headers.get('x-api-credits-remaining')).toBe('0');
    expect(await res.json()).toMatchObject({ code: 'TOO_MANY_REQUESTS', details: {}, status: 'error' });
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 61 });
    expect((await call(s, 'GET', '/crm/v7/users?type=CurrentUser')).status).toBe(200);
    expect(await stats(s)).toMatchObject({ requests: 6, throttled: 1 });
  });

  it('charges an upsert 1 credit per 10 records', async () => {
    const s = await start({ limit: { requests: 20, windowSeconds: 86_400 } });
    const data = Array.from({ length: 100 }, (_, i) => ({ ERP_Id: String(i), Last_Name: `L${i}` }));
    const res = await call(s, 'POST', '/crm/v7/Contacts/upsert', { data, duplicate_check_fields: ['ERP_Id'] });
    expect(res.status).toBe(201);
    expect(res.headers.get('x-api-credits-remaining')).toBe('10');
    const tooMany = await call(s, 'POST', '/crm/v7/Contacts/upsert', {
      data: [...data, { ERP_Id: 'x', Last_Name: 'x' }],
      duplicate_check_fields: ['ERP_Id'],
    });
    expect(tooMany.status).toBe(400);
    expect(await tooMany.json()).toMatchObject({ code: 'LIMIT_EXCEEDED', status: 'error' });
  });

  it('upserts by the duplicate check field: insert, then update the same record', async () => {
    const s = await start();
    const body = (last: string) => ({
      data: [
        { ERP_Id: '1', Last_Name: last },
        { ERP_Id: '2', Last_Name: 'B' },
      ],
      duplicate_check_fields: ['ERP_Id'],
    });
    const first = await call(s, 'POST', '/crm/v7/Contacts/upsert', body('A'));
    expect(first.status).toBe(201);
    const created = (await first.json()) as { data: { action: string; code: string; details: { id: string } }[] };
    expect(created.data.map((d) => [d.code, d.action])).toEqual([
      ['SUCCESS', 'insert'],
      ['SUCCESS', 'insert'],
    ]);
    const second = await call(s, 'POST', '/crm/v7/Contacts/upsert', body('A2'));
    expect(second.status).toBe(200);
    const updated = (await second.json()) as {
      data: { action: string; duplicate_field: string; message: string; details: { id: string } }[];
    };
    expect(updated.data[0]).toMatchObject({
      action: 'update',
      duplicate_field: 'ERP_Id',
      message: 'record updated',
      details: { id: created.data[0]!.details.id },
    });
    expect((await records(s, 'Contacts')).map((r) => [r.ERP_Id, r.Last_Name])).toEqual([
      ['1', 'A2'],
      ['2', 'B'],
    ]);
  });

  it('answers a partial failure with 202 and per-record errors in order; all failed is 400; injected rejections hit every record', async () => {
    const s = await start();
    const res = await call(s, 'POST', '/crm/v7/Contacts/upsert', {
      data: [{ ERP_Id: '1', Last_Name: 'A' }, { ERP_Id: '2' }, { ERP_Id: '3', Last_Name: 'C', Email: 'nope' }],
      duplicate_check_fields: ['ERP_Id'],
    });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { data: { code: string; status: string; details: { api_name?: string; json_path?: string } }[] };
    expect(body.data.map((d) => [d.code, d.status, d.details.api_name])).toEqual([
      ['SUCCESS', 'success', undefined],
      ['MANDATORY_NOT_FOUND', 'error', 'Last_Name'],
      ['INVALID_DATA', 'error', 'Email'],
    ]);
    expect(body.data[2]!.details.json_path).toBe('$.data[2].Email');
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'Last_Name', contains: 'bad' } });
    const all = await call(s, 'POST', '/crm/v7/Contacts/upsert', {
      data: [
        { ERP_Id: '4', Last_Name: 'bad1' },
        { ERP_Id: '5', Last_Name: 'bad2' },
      ],
      duplicate_check_fields: ['ERP_Id'],
    });
    expect(all.status).toBe(400);
    expect(((await all.json()) as { data: { code: string }[] }).data.map((d) => d.code)).toEqual(['INVALID_DATA', 'INVALID_DATA']);
    expect(await records(s, 'Contacts')).toHaveLength(1);
  });

  it('rejects unknown tokens with 401 INVALID_TOKEN', async () => {
    const s = await start({ tokens: ['good'] });
    const res = await call(s, 'GET', '/crm/v7/users', undefined, 'stolen');
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ code: 'INVALID_TOKEN', details: {}, message: 'invalid oauth token', status: 'error' });
  });

  it('throttles calls beyond the concurrency limit with 429 TOO_MANY_REQUESTS', async () => {
    const s = await start({ concurrency: 2, serviceMs: 300 });
    const results = await Promise.all(Array.from({ length: 4 }, () => call(s, 'GET', '/crm/v7/users')));
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 429, 429]);
    const throttled = results.find((r) => r.status === 429)!;
    expect(await throttled.json()).toMatchObject({ code: 'TOO_MANY_REQUESTS', status: 'error' });
    expect((await call(s, 'GET', '/crm/v7/users')).status).toBe(200); // the calls finished: room again
  });
});

describe('Zoho Bulk Write plumbing', () => {
  it('runs a job on the simulator clock: upload -> ADDED/IN PROGRESS -> COMPLETED -> zipped result CSV with ERRORS as <code>-<column>', async () => {
    const s = await start({ bulkRowsPerSecond: 1 });
    const csv = toCsv(
      [
        ['ERP_Id', 'Last_Name'],
        ['1', 'A'],
        ['2', ''],
      ],
      ZOHO_CSV,
    );
    const form = new FormData();
    form.append('file', new Blob([zip([{ name: 'Contacts.csv', data: Buffer.from(csv) }])]), 'Contacts.zip');
    const auth = { authorization: 'Zoho-oauthtoken sim-token' };
    expect(
      (await fetch(`${s.url}/crm/v7/upload`, { method: 'POST', headers: { ...auth, 'x-crm-org': '1000000000' }, body: form })).status,
    ).toBe(400); // no feature header
    const up = await fetch(`${s.url}/crm/v7/upload`, {
      method: 'POST',
      headers: { ...auth, feature: 'bulk-write', 'x-crm-org': '1000000000' },
      body: form,
    });
    const uploaded = (await up.json()) as { code: string; details: { file_id: string } };
    expect(uploaded.code).toBe('FILE_UPLOAD_SUCCESS');
    const job = (await (
      await call(s, 'POST', '/crm/bulk/v7/write', {
        operation: 'upsert',
        resource: [
          {
            type: 'data',
            module: { api_name: 'Contacts' },
            file_id: uploaded.details.file_id,
            find_by: 'ERP_Id',
            field_mappings: [
              { api_name: 'ERP_Id', index: 0 },
              { api_name: 'Last_Name', index: 1 },
            ],
          },
        ],
      })
    ).json()) as { details: { id: string } };
    const status = async () =>
      (await (await call(s, 'GET', `/crm/bulk/v7/write/${job.details.id}`)).json()) as {
        status: string;
        result?: { download_url: string };
      };
    expect(['ADDED', 'IN PROGRESS']).toContain((await status()).status); // ADDED for its first 100 ms
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 1 });
    expect((await status()).status).toBe('IN PROGRESS');
    expect(await records(s, 'Contacts')).toHaveLength(0);
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 2 });
    const done = await status();
    expect(done.status).toBe('COMPLETED');
    const result = await fetch(done.result!.download_url, { headers: auth });
    expect(result.headers.get('content-type')).toBe('application/zip');
    const [entry] = unzip(Buffer.from(await result.arrayBuffer()));
    const [head, ...rows] = parseCsvRows(entry!.data.toString());
    expect(head).toEqual(['ERP_Id', 'Last_Name', 'RECORD_ID', 'STATUS', 'ERRORS']);
    // https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/download-result.html
    expect(rows.map((r) => [r[0], r[3], r[4]])).toEqual([
      ['1', 'added', ''],
      ['2', 'skipped', 'MANDATORY_NOT_FOUND-Last_Name'],
    ]);
    expect(await records(s, 'Contacts')).toEqual([{ ERP_Id: '1', Last_Name: 'A', id: Number(rows[0]![2]) }]);
  });

  it('round-trips ZIP containers and CSV with quotes, commas and line breaks', () => {
    const rows = [
      ['ERP_Id', 'Last_Name'],
      ['1', 'O"Neil, Jr.\nline 2'],
      ['2', ''],
    ];
    const packed = zip([{ name: 'Contacts.csv', data: Buffer.from(toCsv(rows, ZOHO_CSV)) }]);
    const [entry] = unzip(packed);
    expect(entry?.name).toBe('Contacts.csv');
    expect(parseCsvRows(entry!.data.toString())).toEqual(rows);
    const damaged = Buffer.from(packed);
    damaged[44] = damaged[44]! ^ 0xff; // inside the deflated data (30-byte header + 12-byte name)
    expect(() => unzip(damaged)).toThrow();
  });
});

describe('ZohoAdapter', () => {
  it('writes a batch with outcomes in order and stores flat records the source can be compared with', async () => {
    const s = await start();
    const a = adapter(s);
    const batch = Array.from({ length: 25 }, (_, i) =>
      contact(String(i + 1), { Last_Name: `L${i + 1}`, First_Name: 'F', Email: i === 3 ? 'broken' : `c${i + 1}@example.com` }),
    );
    batch[7] = contact('8', { First_Name: 'no last name' });
    expect(a.cost(batch)).toBe(3); // 25 records = ceil(25/10) credits
    const out = await a.write(batch, ok);
    expect(out.map((o) => o.status)).toEqual(batch.map((_, i) => (i === 3 || i === 7 ? 'rejected' : 'done')));
    expect(out[3]).toMatchObject({ code: 'INVALID_DATA', field: 'Email' });
    expect(out[7]).toMatchObject({ code: 'MANDATORY_NOT_FOUND', field: 'Last_Name' });
    expect(out[0]).toMatchObject({ created: true });
    const stored = await records(s, 'Contacts');
    const expected = batch.filter((_, i) => i !== 3 && i !== 7).map((w) => ({ ERP_Id: w.externalId, ...w.fields }));
    expect(stored.map(({ id: _id, ...rest }) => rest)).toEqual(expected);
    expect((await stats(s)).byEndpoint['POST /crm/v7/Contacts/upsert']).toBe(1);
    // Again: updates, same ids.
    const again = await a.write([contact('1', { Last_Name: 'changed' })], ok);
    expect(again[0]).toMatchObject({ status: 'done', created: false, crmId: String(stored[0]!.id) });
  });

  it('spends 10 credits on 100 records and reports X-API-CREDITS-REMAINING as remaining and dailyRemaining', async () => {
    const s = await start({ limit: { requests: 20, windowSeconds: 86_400 } });
    const a = adapter(s);
    const batch = Array.from({ length: 100 }, (_, i) => contact(String(i), { Last_Name: `L${i}` }));
    expect(a.cost(batch)).toBe(10);
    expect(a.dailyCost(batch)).toBe(10);
    const signals: RateSignal[] = [];
    const out = await a.write(batch, (x) => signals.push(x));
    expect(out.every((o) => o.status === 'done')).toBe(true);
    expect(signals).toEqual([{ remaining: 10, dailyRemaining: 10 }]);
    expect((await stats(s)).requests).toBe(1);
  });

  it('resolves lookups by searching the external id (cached), deletes by external id, cost = requests counted', async () => {
    const s = await start();
    const writer = adapter(s);
    expect((await writer.write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' })], ok)).map((o) => o.status)).toEqual([
      'done',
      'done',
    ]);
    const contacts = await records(s, 'Contacts');

    // A fresh adapter has no cache: the two deals' contacts cost one search (10 ids per search).
    const a = adapter(s);
    const deals = [deal('7', '1'), deal('8', '2'), deal('9', '3')];
    const before = (await stats(s)).requests;
    expect(a.cost(deals)).toBe(2); // 1 search + 1 upsert
    const out = await a.write(deals, ok);
    expect((await stats(s)).requests - before).toBe(2);
    expect(out.map((o) => o.status)).toEqual(['done', 'done', 'retry']);
    expect(out[2]).toMatchObject({ code: 'LOOKUP_PENDING' });
    const stored = await records(s, 'Deals');
    expect(stored.map((d) => [d.ERP_Order_Id, d.Contact_Name])).toEqual([
      ['7', { id: String(contacts[0]!.id) }],
      ['8', { id: String(contacts[1]!.id) }],
    ]);
    expect(a.cost([deal('7', '1')])).toBe(1); // cached now: the upsert only

    // Deletes: one search for the ids, one DELETE for those found; unknown ids are already gone.
    const d = adapter(s);
    const deletes = [remove('1'), remove('2'), remove('404')];
    const mark = (await stats(s)).requests;
    expect(d.cost(deletes)).toBe(2);
    expect((await d.write(deletes, ok)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
    const after = await stats(s);
    expect(after.requests - mark).toBe(2);
    expect(after.recordsDeleted).toBe(2);
    expect(await records(s, 'Contacts')).toHaveLength(0);
    // Search values escape parentheses, commas and backslashes.
    const odd = 'x(1),y\\z';
    expect((await d.write([contact(odd, { Last_Name: 'Odd' })], ok))[0]?.status).toBe('done');
    expect((await adapter(s).write([remove(odd)], ok))[0]?.status).toBe('done');
    expect(await records(s, 'Contacts')).toHaveLength(0);
    // A mixed call: an upsert and a delete of another record.
    expect((await d.write([contact('5', { Last_Name: 'E' }), remove('404')], ok)).map((o) => o.status)).toEqual(['done', 'done']);
  });

  it('clears a lookup whose column became NULL with null in the upsert, without a search', async () => {
    const s = await start();
    const writer = adapter(s);
    await writer.write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' })], ok);
    expect((await writer.write([deal('7', '1')], ok))[0]?.status).toBe('done');
    const contacts = await records(s, 'Contacts');

    // A fresh adapter (empty cache): clearing 7, creating 8 with no contact, and 9 -> contact 2
    // cost one search (for 2 only) and one upsert.
    const a = adapter(s);
    const batch = [orphanDeal('7', '1'), orphanDeal('8'), deal('9', '2')];
    const before = (await stats(s)).requests;
    expect(a.cost(batch)).toBe(2);
    expect((await a.write(batch, ok)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
    expect((await stats(s)).requests - before).toBe(2);
    const stored = new Map((await records(s, 'Deals')).map((d) => [d.ERP_Order_Id, d]));
    expect(stored.get('7')).toMatchObject({ Contact_Name: null });
    expect(stored.get('8')).toMatchObject({ Contact_Name: null, Deal_Name: 'Order 8' });
    expect(stored.get('9')).toMatchObject({ Contact_Name: { id: String(contacts[1]!.id) } });
    // Only cleared lookups: the upsert alone.
    expect(adapter(s).cost([orphanDeal('7'), orphanDeal('8')])).toBe(1);
  });

  it('a rebalance dropping the id cache in the middle of a call does not turn a delete into "already gone"', async () => {
    const s = await start();
    const a = adapter(s);
    await a.write([contact('1', { Last_Name: 'One' }), contact('2', { Last_Name: 'Two' })], () => undefined);
    const b = adapter(s); // another credential's adapter wrote contact 2; a knows only its own writes
    await b.write([contact('3', { Last_Name: 'Three' })], () => undefined);
    // Deleting 1 (cached) and 3 (searched): the cache is dropped while the search is out.
    const outcomes = await a.write([remove('1'), remove('3')], () => a.forget());
    expect(outcomes.map((o) => o.status)).toEqual(['done', 'done']);
    expect((await records(s, 'Contacts')).map((r) => r.ERP_Id)).toEqual(['2']);
  });

  it('turns a throttled call into retry outcomes: 1 s for the concurrency limit, 300 s when credits ran out', async () => {
    const s = await start({ limit: { requests: 4, windowSeconds: 86_400 } });
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { throttle: { requests: 1, retryAfterSeconds: 60 } });
    const signals: RateSignal[] = [];
    const out = await a.write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' })], (x) => signals.push(x));
    expect(out).toEqual([
      {
        status: 'retry',
        code: 'RATE_LIMITED',
        kind: 'throttle',
        message: expect.stringContaining('Too many requests'),
        retryAfterSeconds: 1,
      },
      {
        status: 'retry',
        code: 'RATE_LIMITED',
        kind: 'throttle',
        message: expect.stringContaining('Too many requests'),
        retryAfterSeconds: 1,
      },
    ]);
    expect(signals).toEqual([{ throttled: true, retryAfterSeconds: 1 }]);
    // 4 credits: 30 records (3 credits) pass, the next 20 (2 credits) find 1 left.
    expect(
      (
        await a.write(
          Array.from({ length: 30 }, (_, i) => contact(String(i), { Last_Name: 'x' })),
          ok,
        )
      ).every((o) => o.status === 'done'),
    ).toBe(true);
    signals.length = 0;
    const out2 = await a.write(
      Array.from({ length: 20 }, (_, i) => contact(`n${i}`, { Last_Name: 'x' })),
      (x) => signals.push(x),
    );
    expect(out2.every((o) => o.status === 'retry' && o.code === 'RATE_LIMITED' && o.retryAfterSeconds === 300)).toBe(true);
    expect(signals).toEqual([{ remaining: 1, dailyRemaining: 1, throttled: true, retryAfterSeconds: 300 }]);
  });

  it('throws a retriable error on 5xx and a permanent CRM_AUTH error on a bad token', async () => {
    const s = await start();
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { errors5xx: { requests: 1, status: 503 } });
    await expect(a.write([contact('1', { Last_Name: 'A' })], ok)).rejects.toMatchObject({ code: 'CRM_HTTP_503', retriable: true });
    await a.ping();
    const bad = adapter(s, { token: 'wrong' });
    await expect(bad.ping()).rejects.toMatchObject({
      code: 'CRM_AUTH',
      retriable: false,
      message: 'Zoho CRM rejected the token (HTTP 401); check crm.auth.token',
    });
    await expect(bad.write([contact('1', { Last_Name: 'A' })], ok)).rejects.toMatchObject({ code: 'CRM_AUTH' });
  });

  it('uses Bulk Write from bulkThreshold: zipped CSV in, per-row results out, lookups by find_by, cost = credits spent', async () => {
    const s = await start();
    const a = adapter(s, { bulkThreshold: 20 });
    expect(a.maxBatchSize()).toBe(25_000);
    expect(adapter(s).maxBatchSize()).toBe(100);
    const batch = Array.from({ length: 30 }, (_, i) =>
      contact(String(i + 1), { Last_Name: `L${i + 1}`, Email: i === 4 ? 'broken' : `c${i + 1}@example.com`, Score: i }),
    );
    const cost = a.cost(batch);
    expect(cost).toBe(1 + 1 + 500 + 1 + 1); // org, upload, job, one poll, result download
    const out = await a.write(batch, ok);
    expect(out.map((o) => o.status)).toEqual(batch.map((_, i) => (i === 4 ? 'rejected' : 'done')));
    expect(out[4]).toMatchObject({ code: 'INVALID_DATA', field: 'Email' });
    expect(out[0]).toMatchObject({ status: 'done', created: true });
    const st = await stats(s);
    expect(st.byEndpoint).toMatchObject({
      'GET /crm/v7/org': 1,
      'POST /crm/v7/upload': 1,
      'POST /crm/bulk/v7/write': 1,
      'GET /crm/bulk/v7/write/{id}': 1,
    });
    expect(st.requests - 1 + 500).toBe(cost); // the job costs 500 credits, every other call 1
    const stored = await records(s, 'Contacts');
    expect(stored).toHaveLength(29);
    expect(stored[0]).toMatchObject({ ERP_Id: '1', Last_Name: 'L1', Email: 'c1@example.com', Score: 0 });

    // Second job: updates (org id cached), and deals whose contact lookups use find_by.
    const updates = batch.map((w) => contact(w.externalId, { ...w.fields, Email: `new${w.externalId}@example.com` }));
    expect(a.cost(updates)).toBe(503);
    // Record 5 was rejected the first time: now valid, it is added; the others are updated.
    expect((await a.write(updates, ok)).map((o) => o.status === 'done' && o.created)).toEqual(updates.map((_, i) => i === 4));
    const deals = Array.from({ length: 20 }, (_, i) => deal(String(100 + i), i === 0 ? '999' : String(i + 1)));
    const dealOut = await a.write(deals, ok);
    expect(dealOut[0]).toMatchObject({ status: 'retry', code: 'LOOKUP_PENDING' });
    expect(dealOut.slice(1).every((o) => o.status === 'done')).toBe(true);
    const storedDeals = await records(s, 'Deals');
    expect(storedDeals[0]).toMatchObject({ ERP_Order_Id: '101', Deal_Name: 'Order 101', Contact_Name: { id: String(stored[1]!.id) } });
  });

  it('keeps records that clear a lookup out of Bulk Write: they go through the regular upsert', async () => {
    const s = await start();
    const a = adapter(s, { bulkThreshold: 3 });
    await a.write([contact('1', { Last_Name: 'A' })], ok);
    expect((await a.write([deal('1', '1'), deal('2', '1')], ok)).map((o) => o.status)).toEqual(['done', 'done']);
    // Three deals keep their contact (a Bulk Write job), two lose it (one upsert call).
    const batch = [deal('3', '1'), orphanDeal('1', '1'), deal('4', '1'), orphanDeal('2', '1'), deal('5', '1')];
    const mark = await stats(s);
    const cost = a.cost(batch);
    expect(cost).toBe(1 + 1 + 500 + 1 + 1 + 1); // org, upload, job, one poll, download; the upsert
    expect((await a.write(batch, ok)).map((o) => o.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
    const st = await stats(s);
    expect((st.byEndpoint['POST /crm/v7/Deals/upsert'] ?? 0) - (mark.byEndpoint['POST /crm/v7/Deals/upsert'] ?? 0)).toBe(1);
    expect(st.byEndpoint['POST /crm/bulk/v7/write']).toBe(1);
    const contactId = String((await records(s, 'Contacts'))[0]!.id);
    const stored = new Map((await records(s, 'Deals')).map((d) => [d.ERP_Order_Id, d.Contact_Name]));
    expect(Object.fromEntries(stored)).toEqual({
      '1': null,
      '2': null,
      '3': { id: contactId },
      '4': { id: contactId },
      '5': { id: contactId },
    });
    // Only cleared lookups, above the threshold: no job at all.
    expect(a.cost([orphanDeal('1'), orphanDeal('2'), orphanDeal('3')])).toBe(1);
  });

  describe('Bulk Write as documented (issue 11)', () => {
    const jobsCreated = async (s: CrmSimulator) => (await stats(s)).byEndpoint['POST /crm/bulk/v7/write'] ?? 0;
    const servers: Server[] = [];
    afterEach(async () => {
      for (const srv of servers.splice(0)) await new Promise((r) => srv.close(r));
    });
    async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
      const srv = createServer(handler);
      servers.push(srv);
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
      return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
    }

    it('reads ERRORS as <code>-<column> joined by ":": permanent errors are rejected with their column, a missing lookup alone is pending', async () => {
      const s = await start();
      const a = adapter(s, { bulkThreshold: 3 });
      await a.write([contact('1', { Last_Name: 'A' })], ok);
      const deals = [
        deal('1', '1'),
        // No contact 999 and no Deal_Name: MANDATORY_NOT_FOUND-Deal_Name:INVALID_DATA-Contact_Name
        { ...deal('2', '999'), fields: { Deal_Name: '', Stage: 'open', Amount: 10 } },
        deal('3', '999'), // INVALID_DATA-Contact_Name alone: the contact may still come
        deal('4', '1'),
      ];
      const out = await a.write(deals, ok);
      expect(out[0]).toMatchObject({ status: 'done' });
      expect(out[1]).toMatchObject({
        status: 'rejected',
        code: 'MANDATORY_NOT_FOUND',
        field: 'Deal_Name',
        message: 'Bulk Write skipped the record: MANDATORY_NOT_FOUND-Deal_Name:INVALID_DATA-Contact_Name',
      });
      expect(out[2]).toMatchObject({ status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending' });
      expect(out[3]).toMatchObject({ status: 'done' });
      expect(await jobsCreated(s)).toBe(1);
    });

    it('keeps polling a job that runs longer than crm.timeoutMs (each poll is one call) until COMPLETED: one job, 500 credits once', async () => {
      // ADDED for 2 s of the simulator clock (which runs with real time here); one call may take 500 ms.
      const s = await start({ bulkQueueSeconds: 2 });
      const a = adapter(s, { bulkThreshold: 3, timeoutMs: 500 });
      const batch = [1, 2, 3].map((k) => contact(String(k), { Last_Name: `L${k}` }));
      expect((await a.write(batch, ok)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
      expect(await jobsCreated(s)).toBe(1);
      expect(await records(s, 'Contacts')).toHaveLength(3);
    }, 15_000);

    it('a job whose call ended early is taken up by the same records when they come back, not paid for again', async () => {
      const s = await start();
      // The first result download is garbled: the call fails after the job wrote everything.
      const p = await garbageProxy(s.url, (m, path) => m === 'GET' && path.endsWith('.zip'), 'html');
      proxies.push(p);
      const a = adapter(s, { baseUrl: p.url, bulkThreshold: 3 });
      const batch = [1, 2, 3].map((k) => contact(String(k), { Last_Name: `L${k}` }));
      await expect(a.write(batch, ok)).rejects.toMatchObject({ code: 'CRM_BAD_RESPONSE' });
      expect((await a.write(batch, ok)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
      expect(await jobsCreated(s)).toBe(1);
      expect((await stats(s)).recordsWritten).toBe(3);
      // Changed values are not what the old job carries: a new job.
      const changed = batch.map((w) => contact(w.externalId, { Last_Name: `${String(w.fields.Last_Name)}!` }));
      expect((await a.write(changed, ok)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
      expect(await jobsCreated(s)).toBe(2);
    }, 15_000);

    it('downloads the result from another host through send(): the User-Agent, and one deadline over the whole download', async () => {
      const s = await start();
      let agent: string | undefined;
      let trickle = false;
      // The download host (download-accl.zoho.com in Zoho's cloud): serves the simulator's zip.
      const host = await serve((req, res) => {
        agent = req.headers['user-agent'];
        void fetch(`${s.url}${req.url}`, { headers: { authorization: String(req.headers.authorization) } }).then(async (r) => {
          const bytes = Buffer.from(await r.arrayBuffer());
          res.writeHead(r.status, { 'content-type': 'application/zip', 'content-length': bytes.length });
          if (!trickle) return res.end(bytes);
          // A byte every 50 ms: no single gap is long, the whole takes far longer than timeoutMs.
          let i = 0;
          const timer = setInterval(() => {
            if (res.destroyed || i >= bytes.length) {
              clearInterval(timer);
              return res.end();
            }
            res.write(bytes.subarray(i, ++i));
          }, 50);
        });
      });
      const moved = await rewriteProxy(
        s.url,
        (m, path) => m === 'GET' && path.startsWith('/crm/bulk/v7/write/'),
        (b) => {
          const body = b as { result?: { download_url: string } };
          if (body.result) body.result.download_url = body.result.download_url.replace(/^https?:\/\/[^/]+/, host);
          return body;
        },
        100,
      );
      proxies.push(moved);
      const a = adapter(s, { baseUrl: moved.url, bulkThreshold: 3, timeoutMs: 1000 });
      const batch = (from: number) => [0, 1, 2].map((k) => contact(String(from + k), { Last_Name: `L${k}` }));
      expect((await a.write(batch(1), ok)).map((o) => o.status)).toEqual(['done', 'done', 'done']);
      expect(agent).toMatch(/^pg2crm\//);
      trickle = true;
      const t0 = Date.now();
      await expect(a.write(batch(10), ok)).rejects.toMatchObject({ code: 'CRM_TIMEOUT', retriable: true });
      expect(Date.now() - t0).toBeLessThan(8000);
    }, 30_000);

    it('reads a Retry-After HTTP-date on a 429 with parseRetryAfter', async () => {
      const at = new Date(Date.now() + 120_000).toUTCString();
      const url = await serve((_req, res) => {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': at });
        res.end(JSON.stringify({ code: 'TOO_MANY_REQUESTS', details: {}, message: 'Too many requests', status: 'error' }));
      });
      const s = await start();
      const out = await adapter(s, { baseUrl: url }).write([contact('1', { Last_Name: 'A' })], ok);
      expect(out[0]).toMatchObject({ status: 'retry', code: 'RATE_LIMITED', kind: 'throttle' });
      const wait = (out[0] as { retryAfterSeconds?: number }).retryAfterSeconds ?? 0;
      expect(wait).toBeGreaterThan(100);
      expect(wait).toBeLessThanOrEqual(121);
    });
  });

  describe("answers that are not Zoho CRM's (issue 10, defect 3)", () => {
    const proxied = proxiedBy((p) => proxies.push(p));
    const rewritten = rewrittenBy((p) => proxies.push(p));

    it.each(GARBAGE_KINDS)('a %s 200 to an upsert is CRM_BAD_RESPONSE, not done', async (kind) => {
      const s = await start();
      const a = adapter(s);
      await armGarbage(s, kind);
      await expectBad(a.write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' })], ok));
      expect(await records(s, 'Contacts')).toHaveLength(0);
    });

    it.each(GARBAGE_KINDS)('a %s 200 to a lookup search is CRM_BAD_RESPONSE, not a pending lookup', async (kind) => {
      const s = await start();
      await adapter(s).write([contact('1', { Last_Name: 'A' })], ok);
      const a = adapter(s);
      await armGarbage(s, kind);
      await expectBad(a.write([deal('7', '1'), deal('8', '1')], ok));
      expect(await records(s, 'Deals')).toHaveLength(0);
    });

    it.each(GARBAGE_KINDS)('a %s 200 to the delete search or to the DELETE is CRM_BAD_RESPONSE, not "already gone"', async (kind) => {
      const s = await start();
      await adapter(s).write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' })], ok);
      await armGarbage(s, kind);
      await expectBad(adapter(s).write([remove('1'), remove('2')], ok));
      const p = await proxied(s, (m) => m === 'DELETE', kind);
      await expectBad(adapter(s, { baseUrl: p.url }).write([remove('1'), remove('2')], ok));
      expect(p.hits).toEqual(['DELETE /crm/v7/Contacts']);
      expect(await records(s, 'Contacts')).toHaveLength(2);
    });

    it.each(GARBAGE_KINDS)('a %s 200 to a Bulk Write step or result download is CRM_BAD_RESPONSE, not done', async (kind) => {
      const s = await start();
      for (const [name, step] of [
        ['org', (m: string, path: string) => m === 'GET' && path === '/crm/v7/org'],
        ['upload', (m: string, path: string) => m === 'POST' && path === '/crm/v7/upload'],
        ['job', (m: string, path: string) => m === 'POST' && path === '/crm/bulk/v7/write'],
        ['download', (m: string, path: string) => m === 'GET' && path.endsWith('.zip')],
      ] as const) {
        const p = await proxied(s, step, kind);
        const a = adapter(s, { baseUrl: p.url, bulkThreshold: 3 });
        await expectBad(
          a.write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' }), contact('3', { Last_Name: 'C' })], ok),
          `${name}: `,
        );
        expect(p.hits).toHaveLength(1);
      }
    });

    it.each(GARBAGE_KINDS)(
      'a %s 200 to one Bulk Write job poll is polled past; three in a row give up on the job',
      async (kind) => {
        const s = await start();
        // The job cost 500 credits: a garbled status answer alone does not give it up.
        const poll = (m: string, path: string) => m === 'GET' && path.startsWith('/crm/bulk/v7/write/');
        const batch = (from: number) => [0, 1, 2].map((k) => contact(String(from + k), { Last_Name: `L${from + k}` }));
        await expectOneGarbledPollPassed(
          s,
          poll,
          kind,
          (baseUrl, from) => adapter(s, { baseUrl, bulkThreshold: 3 }).write(batch(from), ok),
          (p) => proxies.push(p),
        );
      },
      20_000,
    );

    it.each(GARBAGE_KINDS)('ping (pg2crm check) fails on a %s 200', async (kind) => {
      const s = await start();
      await expectPingFailsOnGarbage(s, adapter(s), kind);
    });

    it('checks every result of a well-formed answer: a result short, a success without an id, a delete result for another id, a search row without id', async () => {
      const s = await start();
      const label = outcomeLabels;
      const data = (b: unknown) => (b as { data: Record<string, unknown>[] }).data;
      const upsertCall = (m: string, path: string) => m === 'POST' && path.endsWith('/upsert');
      const short = await rewritten(s, upsertCall, (b) => ({ data: data(b).slice(0, 1) }));
      await expectBad(adapter(s, { baseUrl: short.url }).write([contact('1', { Last_Name: 'A' }), contact('2', { Last_Name: 'B' })], ok));
      const noId = await rewritten(s, upsertCall, (b) => ({ data: data(b).map((r, k) => (k === 0 ? { ...r, details: {} } : r)) }));
      expect(
        label(await adapter(s, { baseUrl: noId.url }).write([contact('3', { Last_Name: 'C' }), contact('4', { Last_Name: 'D' })], ok)),
      ).toEqual(['CRM_BAD_RESPONSE/bad-response', 'done']);
      const other = await rewritten(
        s,
        (m) => m === 'DELETE',
        (b) => ({ data: data(b).map((r, k) => (k === 0 ? { ...r, details: { id: '999999' } } : r)) }),
      );
      expect(label(await adapter(s, { baseUrl: other.url }).write([remove('1'), remove('2')], ok))).toEqual([
        'CRM_BAD_RESPONSE/bad-response',
        'done',
      ]);
      const rowNoId = await rewritten(
        s,
        (m, path) => m === 'GET' && path.endsWith('/search'),
        (b) => ({ ...(b as object), data: data(b).map(({ id: _, ...r }) => r) }),
      );
      await expectBad(adapter(s, { baseUrl: rowNoId.url }).write([remove('3')], ok));
      expect((await records(s, 'Contacts')).map((r) => r.ERP_Id)).toEqual(['3', '4']);
    });

    it('marks throttles and pending lookups with their retry kind', async () => {
      const s = await start();
      const a = adapter(s);
      await call(s, 'POST', '/__sim/faults', { throttle: { requests: 1, retryAfterSeconds: 1 } });
      expect(await a.write([contact('1', { Last_Name: 'A' })], ok)).toEqual([
        expect.objectContaining({ code: 'RATE_LIMITED', kind: 'throttle' }),
      ]);
      expect(await a.write([deal('7', '404')], ok)).toEqual([expect.objectContaining({ code: 'LOOKUP_PENDING', kind: 'pending' })]);
    });
  });
});

describe('Zoho Bulk Write ERRORS (issue 11)', () => {
  it('parses <errorCode>-<column_header>, several joined by ":", one code over several columns', async () => {
    const { parseBulkErrors } = await import('../../../src/crm/zoho/adapter.ts');
    // The documentation's own example (download-result.html).
    expect(parseBulkErrors('MANDATORY_NOT_FOUND-Company,Last_Name:DUPLICATE_DATA-Email')).toEqual([
      { code: 'MANDATORY_NOT_FOUND', columns: ['Company', 'Last_Name'] },
      { code: 'DUPLICATE_DATA', columns: ['Email'] },
    ]);
    expect(parseBulkErrors('INVALID_DATA-Email')).toEqual([{ code: 'INVALID_DATA', columns: ['Email'] }]);
    expect(parseBulkErrors('')).toEqual([]);
  });
});
