import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmWrite, RateSignal } from '../../../src/crm/crm-adapter.ts';
import { DynamicsAdapter, keySegment } from '../../../src/crm/dynamics/adapter.ts';
import {
  type BatchOperation,
  boundaryOf,
  buildBatchRequest,
  buildBatchResponse,
  parseBatchRequest,
  parseBatchResponse,
  splitMultipart,
} from '../../../src/crm/dynamics/multipart.ts';
import { startDynamicsSimulator } from '../../../src/crm/dynamics/simulator.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { type AnswerProxy, type ProxyAnswer, GARBAGE, startAnswerProxy } from '../../helpers/answer-proxy.ts';
import { expectPingFailsOnGarbage, simCall } from './sim-harness.ts';

let sim: CrmSimulator | undefined;
let proxy: AnswerProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  await sim?.close();
  sim = undefined;
});

async function start(opts: Partial<Parameters<typeof startDynamicsSimulator>[0]> = {}): Promise<CrmSimulator> {
  sim = await startDynamicsSimulator({ port: 0, control: true, ...opts });
  return sim;
}

const API = '/api/data/v9.2';

const call = simCall;

/** A raw `$batch` as a client would send it; returns the status, headers and parsed parts. */
async function batch(s: CrmSimulator, ops: Parameters<typeof buildBatchRequest>[1], continueOnError = true) {
  const boundary = 'batch_test';
  const res = await fetch(`${s.url}${API}/$batch`, {
    method: 'POST',
    headers: {
      authorization: 'Bearer sim-token',
      'content-type': `multipart/mixed; boundary=${boundary}`,
      ...(continueOnError ? { prefer: 'odata.continue-on-error' } : {}),
    },
    body: buildBatchRequest(boundary, ops),
  });
  const text = await res.text();
  const inner = boundaryOf(res.headers.get('content-type') ?? '');
  return { status: res.status, headers: res.headers, parts: inner ? parseBatchResponse(text, inner) : [], text };
}

const upsertOp = (erpId: string, body: Record<string, unknown>, set = 'contacts'): BatchOperation => ({
  method: 'PATCH',
  url: `${API}/${set}(${keySegment('erp_id', erpId)})`,
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
});

const records = async (s: CrmSimulator, object: string) =>
  (await (await fetch(`${s.url}/__sim/records/${object}`)).json()) as Record<string, unknown>[];
const stats = async (s: CrmSimulator) =>
  (await (await fetch(`${s.url}/__sim/stats`)).json()) as {
    requests: number;
    throttled: number;
    byEndpoint: Record<string, number>;
    recordsWritten: number;
    recordsDeleted: number;
  };

describe('Dataverse $batch multipart', () => {
  it('builds and parses requests with change sets, quotes and LF-only line ends', () => {
    const ops: Parameters<typeof buildBatchRequest>[1] = [
      upsertOp("O'Brien", { lastname: 'a\r\n--batch_x is only text' }),
      { changeset: [{ method: 'DELETE', url: `${API}/contacts(erp_id='2')`, contentId: '1' }, upsertOp('3', { lastname: 'C' })] },
      { method: 'GET', url: 'WhoAmI' },
    ];
    const text = buildBatchRequest('batch_x', ops);
    expect(text).toContain('\r\n--batch_x--\r\n');
    expect(text.startsWith('--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPATCH ')).toBe(true);
    const parsed = parseBatchRequest(text, 'batch_x');
    expect(parsed).toHaveLength(3);
    expect(parsed[0]).toMatchObject({
      method: 'PATCH',
      url: `${API}/contacts(erp_id='O''Brien')`,
      body: JSON.stringify({ lastname: 'a\r\n--batch_x is only text' }),
    });
    expect(parsed[0]).toMatchObject({ headers: { 'content-type': 'application/json' } });
    expect(parsed[1]).toMatchObject({
      changeset: [
        { method: 'DELETE', contentId: '1' },
        { method: 'PATCH', body: '{"lastname":"C"}' },
      ],
    });
    expect(parsed[2]).toEqual({ method: 'GET', url: 'WhoAmI', headers: {} });
    // Hand-written batches often use bare LF.
    const lf = parseBatchRequest(text.replace(/\r\n/g, '\n'), 'batch_x');
    expect(lf.map((p) => ('changeset' in p ? 'cs' : p.method))).toEqual(['PATCH', 'cs', 'GET']);
  });

  it('round-trips responses, flattening change sets, and rejects truncated bodies', () => {
    const text = buildBatchResponse('batchresponse_1', [
      { status: 204, headers: { 'OData-EntityId': 'http://x/contacts(1)' }, body: '' },
      { changeset: [{ status: 201, headers: {}, body: '{"a":1}' }] },
      { status: 400, headers: { 'Content-Type': 'application/json' }, body: '{"error":{"code":"0x1","message":"m"}}' },
    ]);
    expect(text).toContain('HTTP/1.1 204 No Content\r\n');
    const parts = parseBatchResponse(text, 'batchresponse_1');
    expect(parts.map((p) => p.status)).toEqual([204, 201, 400]);
    expect(parts[0]!.headers['odata-entityid']).toBe('http://x/contacts(1)');
    expect(JSON.parse(parts[2]!.body)).toEqual({ error: { code: '0x1', message: 'm' } });
    expect(boundaryOf('multipart/mixed; boundary="batchresponse_q"')).toBe('batchresponse_q');
    expect(boundaryOf('application/json')).toBeUndefined();
    expect(() => splitMultipart(text.slice(0, text.lastIndexOf('--batchresponse_1--')), 'batchresponse_1')).toThrow(/close delimiter/);
  });
});

describe('Dataverse simulator', () => {
  it('throttles past the request limit with 0x80072322, Retry-After and remaining-request headers', async () => {
    const s = await start({ limit: { requests: 3, windowSeconds: 300 } });
    const remaining: (string | null)[] = [];
    for (let i = 0; i < 3; i++)
      remaining.push((await call(s, 'GET', `${API}/WhoAmI`)).headers.get('x-ms-ratelimit-burst-remaining-xrm-requests'));
    expect(remaining).toEqual(['2', '1', '0']);
    const res = await call(s, 'GET', `${API}/WhoAmI`);
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBe(300);
    expect(await res.json()).toEqual({
      error: { code: '0x80072322', message: 'Number of requests exceeded the limit of 3 over time window of 300 seconds.' },
    });
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 301 });
    expect((await call(s, 'GET', `${API}/WhoAmI`)).status).toBe(200);
    expect(await stats(s)).toMatchObject({ requests: 5, throttled: 1 });
  });

  it('grows Retry-After while the client keeps sending, capped at the window', async () => {
    const s = await start({ limit: { requests: 1, windowSeconds: 60 }, retryAfterSeconds: 10 });
    expect((await call(s, 'GET', `${API}/WhoAmI`)).status).toBe(200);
    const waits: (string | null)[] = [];
    for (let i = 0; i < 4; i++) waits.push((await call(s, 'GET', `${API}/WhoAmI`)).headers.get('retry-after'));
    expect(waits).toEqual(['10', '20', '40', '60']);
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 59 });
    expect((await call(s, 'GET', `${API}/WhoAmI`)).status).toBe(429); // still locked: sending again extends it
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 61 });
    expect((await call(s, 'GET', `${API}/WhoAmI`)).status).toBe(200);
  });

  it('counts a $batch as one request toward the 6,000 and each operation toward execution time (api-limits)', async () => {
    // "A batch can contain up to 1000 operations and will avoid the number of requests limit.
    // However, you will need to be prepared for the execution time limit."
    const s = await start({ limit: { requests: 3, windowSeconds: 300 }, executionSeconds: 1, executionMsPerOperation: 200 });
    const first = await batch(s, [upsertOp('1', { lastname: 'A' }), upsertOp('2', { lastname: 'B' }), upsertOp('3', { lastname: 'C' })]);
    expect(first.status).toBe(200);
    expect(first.headers.get('x-ms-ratelimit-burst-remaining-xrm-requests')).toBe('2');
    expect((await stats(s)).requests).toBe(1);
    const second = await batch(s, [upsertOp('4', { lastname: 'D' }), upsertOp('5', { lastname: 'E' })]);
    expect(second.status).toBe(200);
    expect(await records(s, 'contacts')).toHaveLength(5);
    // 5 operations x 200 ms = the 1 s of execution time: the next request is throttled for time.
    const third = await batch(s, [upsertOp('6', { lastname: 'F' })]);
    expect(third.status).toBe(429);
    expect(JSON.parse(third.text)).toMatchObject({ error: { code: '0x80072321' } });
  });

  it('refuses alternate-key values with / # < > * % & : \\ ? + in key segments and binds (400), finds them by $filter, creates by POST', async () => {
    const s = await start();
    for (const v of ['ORD/2024/1', 'A&B', '50%', 'a:b', 'x+y', 'q?', 'a*b', 'c<d>', 'b\\s', 'h#1']) {
      const get = await call(s, 'GET', `${API}/contacts(${keySegment('erp_id', v)})`);
      expect([v, get.status]).toEqual([v, 400]);
      expect(await get.json()).toEqual({ error: { code: '0x80060888', message: 'Bad Request - Error in query syntax.' } });
    }
    const refused = await batch(s, [
      upsertOp('ORD/2024/1', { lastname: 'A' }),
      { method: 'DELETE', url: `${API}/contacts(${keySegment('erp_id', 'A&B')})` },
      upsertOp('plain', { lastname: 'B', 'parentcustomerid_account@odata.bind': `/accounts(${keySegment('erp_id', '50%')})` }),
    ]);
    expect(refused.parts.map((p) => p.status)).toEqual([400, 400, 400]);
    expect(await records(s, 'contacts')).toHaveLength(0);
    // The documented other ways: create with POST, find with $filter (case-insensitive), write by GUID.
    const created = await call(s, 'POST', `${API}/contacts`, { erp_id: 'ORD/2024/1', lastname: 'A' });
    expect(created.status).toBe(204);
    const id = /\(([0-9a-f-]{36})\)$/.exec(created.headers.get('odata-entityid') ?? '')?.[1];
    expect(id).toBeDefined();
    expect((await call(s, 'POST', `${API}/contacts`, { erp_id: 'ORD/2024/1', lastname: 'dup' })).status).toBe(412);
    const found = await call(s, 'GET', `${API}/contacts?$filter=${encodeURIComponent("erp_id eq 'ord/2024/1'")}&$select=contactid`);
    expect(((await found.json()) as { value: unknown[] }).value).toEqual([{ '@odata.etag': expect.any(String), contactid: id }]);
    const meta = await call(
      s,
      'GET',
      `${API}/EntityDefinitions?$select=EntitySetName,PrimaryIdAttribute&$filter=${encodeURIComponent("EntitySetName eq 'opportunities'")}`,
    );
    expect(((await meta.json()) as { value: unknown[] }).value).toEqual([
      expect.objectContaining({ EntitySetName: 'opportunities', PrimaryIdAttribute: 'opportunityid' }),
    ]);
    const byGuid = await batch(s, [
      {
        method: 'PATCH',
        url: `${API}/contacts(${id})`,
        headers: { 'Content-Type': 'application/json', 'If-Match': '*' },
        body: '{"lastname":"Z"}',
      },
    ]);
    expect(byGuid.parts[0]?.status).toBe(204);
    expect((await records(s, 'contacts'))[0]).toMatchObject({ erp_id: 'ORD/2024/1', lastname: 'Z' });
  });

  it('throttles on combined execution time (0x80072321) and on concurrency (0x80072326)', async () => {
    const s = await start({ executionSeconds: 1, executionMsPerOperation: 600 });
    expect((await batch(s, [upsertOp('1', { lastname: 'A' }), upsertOp('2', { lastname: 'B' })])).status).toBe(200);
    const res = await call(s, 'GET', `${API}/WhoAmI`);
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('300');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('0x80072321');
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 301 });
    expect((await call(s, 'GET', `${API}/WhoAmI`)).status).toBe(200);
    await s.close();

    const c = await start({ concurrency: 2, holdMs: 1000 });
    const all = await Promise.all([0, 1, 2].map(() => call(c, 'GET', `${API}/WhoAmI`)));
    const statuses = all.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 429]);
    const throttled = all.find((r) => r.status === 429)!;
    expect(throttled.headers.get('retry-after')).toBe('1');
    expect(await throttled.json()).toEqual({
      error: { code: '0x80072326', message: 'Number of concurrent requests exceeded the limit of 2.' },
    });
  });

  it('upserts by alternate key: create, then update the same record', async () => {
    const s = await start();
    const a = await batch(s, [upsertOp('1', { lastname: 'A', firstname: 'Ann' })]);
    const b = await batch(s, [upsertOp('1', { lastname: 'B' })]);
    expect([a.parts[0]!.status, b.parts[0]!.status]).toEqual([204, 204]);
    expect(b.parts[0]!.headers['odata-entityid']).toBe(a.parts[0]!.headers['odata-entityid']);
    expect(a.parts[0]!.headers['odata-entityid']).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/api\/data\/v9\.2\/contacts\([0-9a-f-]{36}\)$/);
    const stored = await records(s, 'contacts');
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ erp_id: '1', lastname: 'B', firstname: 'Ann' });
    const direct = await call(s, 'GET', `${API}/contacts(erp_id='1')`);
    expect(((await direct.json()) as { lastname: string }).lastname).toBe('B');
  });

  it('disassociates a single-valued navigation property bound to null in a $batch operation', async () => {
    const s = await start();
    await batch(s, [upsertOp('A1', { name: 'Acme' }, 'accounts')]);
    const bound = await batch(s, [
      upsertOp('1', { lastname: 'A', 'parentcustomerid_account@odata.bind': `/accounts(${keySegment('erp_id', 'A1')})` }),
    ]);
    expect(bound.parts[0]?.status).toBe(204);
    const [account] = await records(s, 'accounts');
    expect((await records(s, 'contacts'))[0]).toMatchObject({ erp_id: '1', parentcustomerid_account: account?.accountid });
    // Documented disassociate: the navigation property's @odata.bind set to null; on a create it is a no-op.
    const cleared = await batch(s, [
      upsertOp('1', { 'parentcustomerid_account@odata.bind': null }),
      upsertOp('2', { lastname: 'B', 'parentcustomerid_account@odata.bind': null }),
    ]);
    expect(cleared.parts.map((p) => p.status)).toEqual([204, 204]);
    const contacts = await records(s, 'contacts');
    expect(contacts.find((r) => r.erp_id === '1')).toMatchObject({ lastname: 'A', parentcustomerid_account: null });
    expect(contacts.find((r) => r.erp_id === '2')).toMatchObject({ lastname: 'B', parentcustomerid_account: null });
  });

  it('stops at the first failure without continue-on-error (400) and goes on with it (200)', async () => {
    const s = await start();
    const ops = [upsertOp('1', { lastname: 'A' }), upsertOp('2', { lastname: '' }), upsertOp('3', { lastname: 'C' })];
    const stop = await batch(s, ops, false);
    expect(stop.status).toBe(400);
    expect(stop.parts.map((p) => p.status)).toEqual([204, 400]);
    expect(JSON.parse(stop.parts[1]!.body)).toMatchObject({ error: { code: '0x80044331' } });
    expect((await records(s, 'contacts')).map((r) => r.erp_id)).toEqual(['1']);
    const go = await batch(s, ops, true);
    expect(go.status).toBe(200);
    expect(go.headers.get('preference-applied')).toBe('odata.continue-on-error');
    expect(go.parts.map((p) => p.status)).toEqual([204, 400, 204]);
    expect((await records(s, 'contacts')).map((r) => r.erp_id).sort()).toEqual(['1', '3']);
  });

  it('undoes a change set when one of its operations fails', async () => {
    const s = await start();
    const res = await batch(s, [
      { changeset: [upsertOp('1', { lastname: 'A' }), upsertOp('2', { lastname: 'B', emailaddress1: 'nope' })] },
      upsertOp('3', { lastname: 'C' }),
    ]);
    expect(res.status).toBe(200);
    expect(res.parts.map((p) => p.status)).toEqual([400, 204]);
    expect((await records(s, 'contacts')).map((r) => r.erp_id)).toEqual(['3']);
  });

  it('rejects unknown tokens with 401 and WWW-Authenticate; applies rejectWhen to every record of a batch', async () => {
    const s = await start();
    const res = await call(s, 'GET', `${API}/WhoAmI`, undefined, 'stolen');
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer authorization_uri=/);
    expect(await res.json()).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'lastname', contains: 'bad' } });
    const b = await batch(s, [upsertOp('1', { lastname: 'bad1' }), upsertOp('2', { lastname: 'ok' }), upsertOp('3', { lastname: 'bad3' })]);
    expect(b.parts.map((p) => p.status)).toEqual([400, 204, 400]);
  });
});

describe('DynamicsAdapter', () => {
  function adapter(s: CrmSimulator, token = 'sim-token'): DynamicsAdapter {
    const config = parseConfig({
      name: 't',
      postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
      kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
      crm: { kind: 'dynamics', baseUrl: s.url, auth: { token }, limits: { requests: 6000, windowSeconds: 300 } },
      mappings: [
        { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { lastname: 'last_name' } },
      ],
    });
    return new DynamicsAdapter(config.crm);
  }
  const contact = (id: string, fields: Record<string, unknown>): CrmWrite => ({
    op: 'upsert',
    object: 'contacts',
    externalIdField: 'erp_id',
    externalId: id,
    fields,
  });
  const del = (id: string, object = 'contacts'): CrmWrite => ({
    op: 'delete',
    object,
    externalIdField: object === 'contacts' ? 'erp_id' : 'erp_order_id',
    externalId: id,
    fields: {},
  });
  const opportunity = (id: string, customer: string | null): CrmWrite => ({
    op: 'upsert',
    object: 'opportunities',
    externalIdField: 'erp_order_id',
    externalId: id,
    fields: { name: `Order ${id}`, estimatedvalue: 12.5 },
    lookups: { customerid_contact: { object: 'contacts', externalIdField: 'erp_id', externalId: customer } },
  });

  it('writes N records in growing batches; the store equals them and cost() equals the requests counted', async () => {
    const s = await start();
    const a = adapter(s);
    const input = Array.from({ length: 25 }, (_, i) =>
      contact(`${i + 1}`, { firstname: `F${i}`, lastname: `L${i}`, emailaddress1: `u${i}@example.com` }),
    );
    input.push(contact("O'Brien & Co/7", { lastname: 'Quote' }));
    expect(a.maxBatchSize()).toBe(1000);
    const cost = a.cost(input);
    const signals: RateSignal[] = [];
    const out = await a.write(input, (x) => signals.push(x));
    expect(out.every((o) => o.status === 'done')).toBe(true);
    expect(out[0]).toMatchObject({ crmId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const stored = await records(s, 'contacts');
    const view = (r: Record<string, unknown>) => ({
      erp_id: r.erp_id,
      firstname: r.firstname,
      lastname: r.lastname,
      emailaddress1: r.emailaddress1,
    });
    expect(stored.map(view).sort((x, y) => String(x.erp_id).localeCompare(String(y.erp_id)))).toEqual(
      input.map((r) => view({ erp_id: r.externalId, ...r.fields })).sort((x, y) => String(x.erp_id).localeCompare(String(y.erp_id))),
    );
    const st = await stats(s);
    expect(st.requests).toBe(cost);
    // 10, then 16 of the grown 20, whose "O'Brien & Co/7" (& and / cannot be in a key segment)
    // is looked up first: one $batch of look-ups after one EntityDefinitions request.
    expect(st.byEndpoint[`POST ${API}/$batch`]).toBe(3);
    expect(Object.keys(st.byEndpoint).filter((e) => e.includes('EntityDefinitions'))).toHaveLength(1);
    expect(cost).toBe(4);
    expect(a.batchSize).toBe(20);
    // x-ms-ratelimit-* are "intended for debugging purposes" (api-limits): never a pacing signal.
    expect(signals.length).toBeGreaterThan(0);
    expect(signals.every((x) => x.remaining === undefined)).toBe(true);
    await a.close();
  });

  it('reports partial failures in order with the field, and deletes by external id', async () => {
    const s = await start();
    const a = adapter(s);
    await fetch(`${s.url}/__sim/faults`, {
      method: 'POST',
      body: JSON.stringify({ rejectWhen: { field: 'lastname', contains: 'poison' } }),
    });
    const out = await a.write(
      [
        contact('1', { lastname: 'A' }),
        contact('2', { lastname: 'B', emailaddress1: 'not-an-email' }),
        contact('3', { lastname: 'x'.repeat(51) }),
        contact('4', { lastname: 'poison' }),
        contact('5', { lastname: 'E' }),
      ],
      () => undefined,
    );
    expect(out.map((o) => o.status)).toEqual(['done', 'rejected', 'rejected', 'rejected', 'done']);
    expect(out[1]).toMatchObject({ code: 'HTTP_400_0x80044331', field: 'emailaddress1' });
    expect(out[2]).toMatchObject({ field: 'lastname', message: expect.stringMatching(/maximum allowed length of '50'/) });
    expect(out[3]).toMatchObject({ field: 'lastname' });
    const deleted = await a.write([del('1'), contact('6', { lastname: 'F' }), del('404')], () => undefined);
    expect(deleted.map((o) => o.status)).toEqual(['done', 'done', 'done']);
    expect((await records(s, 'contacts')).map((r) => r.erp_id).sort()).toEqual(['5', '6']);
    expect((await stats(s)).recordsDeleted).toBe(1);
    await a.close();
  });

  it('binds lookups by alternate key in the same operation; a missing target is retried', async () => {
    const s = await start();
    const a = adapter(s);
    expect(a.cost([opportunity('7', '5')])).toBe(1);
    const early = await a.write([opportunity('7', '5')], () => undefined);
    expect(early[0]).toMatchObject({ status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending' });
    const out = await a.write([contact('5', { lastname: 'E' })], () => undefined);
    const later = await a.write([opportunity('7', '5')], () => undefined);
    expect(later[0]?.status).toBe('done');
    const [opp] = await records(s, 'opportunities');
    expect(opp).toMatchObject({ erp_order_id: '7', name: 'Order 7', customerid_contact: (out[0] as { crmId: string }).crmId });
    expect((await stats(s)).requests).toBe(3);
    await a.close();
  });

  it('clears a lookup whose column became NULL with a null @odata.bind: no target looked up, never pending', async () => {
    const s = await start();
    const a = adapter(s);
    const [c] = await a.write([contact('5', { lastname: 'E' })], () => undefined);
    await a.write([opportunity('7', '5')], () => undefined);
    expect((await records(s, 'opportunities'))[0]).toMatchObject({ erp_order_id: '7', customerid_contact: (c as { crmId: string }).crmId });
    const moved: CrmWrite = {
      ...opportunity('7', null),
      lookups: { customerid_contact: { object: 'contacts', externalIdField: 'erp_id', externalId: null, previousExternalId: '5' } },
    };
    const before = (await stats(s)).requests;
    expect(a.cost([moved])).toBe(1);
    expect(await a.write([moved], () => undefined)).toEqual([expect.objectContaining({ status: 'done' })]);
    expect((await stats(s)).requests - before).toBe(1);
    expect((await records(s, 'opportunities'))[0]).toMatchObject({ erp_order_id: '7', name: 'Order 7', customerid_contact: null });
    // Creates with a null lookup succeed; one $batch mixes null, bound and not-yet-there targets.
    const mixed = [opportunity('8', null), opportunity('9', '5'), opportunity('10', '404'), opportunity('7', '5')];
    const sent = (await stats(s)).requests;
    const out = await a.write(mixed, () => undefined);
    expect(out.map((o) => (o.status === 'done' ? 'done' : o.code))).toEqual(['done', 'done', 'LOOKUP_PENDING', 'done']);
    expect((await stats(s)).requests - sent).toBe(a.cost(mixed));
    const opps = Object.fromEntries((await records(s, 'opportunities')).map((r) => [r.erp_order_id, r.customerid_contact]));
    expect(opps).toEqual({ '7': (c as { crmId: string }).crmId, '8': null, '9': (c as { crmId: string }).crmId });
    await a.close();
  });

  it('turns a throttle into retry outcomes with Retry-After, keeps what was written, and halves the batch', async () => {
    const s = await start({ limit: { requests: 1, windowSeconds: 300 } });
    const a = adapter(s);
    const signals: RateSignal[] = [];
    const out = await a.write(
      Array.from({ length: 30 }, (_, i) => contact(`${i}`, { lastname: 'L' })),
      (x) => signals.push(x),
    );
    expect(out.slice(0, 10).every((o) => o.status === 'done')).toBe(true);
    expect(
      out.slice(10).every((o) => o.status === 'retry' && o.code === 'RATE_LIMITED' && o.retryAfterSeconds === 300 && o.kind === 'throttle'),
    ).toBe(true);
    expect(signals.at(-1)).toMatchObject({ throttled: true, retryAfterSeconds: 300 });
    expect(a.batchSize).toBe(10);
    // An injected storm is answered the same way.
    await fetch(`${s.url}/__sim/reset`, { method: 'POST' });
    await fetch(`${s.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ throttle: { requests: 1, retryAfterSeconds: 7 } }) });
    const storm = await a.write([contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' })], () => undefined);
    expect(storm).toEqual([0, 1].map(() => expect.objectContaining({ status: 'retry', code: 'RATE_LIMITED', retryAfterSeconds: 7 })));
    await a.close();
  });

  describe('alternate-key values Dataverse cannot take in a key segment (define-alternate-keys-portal)', () => {
    const ERP_KEYS = ['ORD/2024/1', 'A&B', '50%'];

    it('upserts them: found by $filter and patched by GUID, or created with POST; a second write updates', async () => {
      const s = await start();
      const a = adapter(s);
      const input = ERP_KEYS.map((k, i) => contact(k, { lastname: `L${i}` }));
      input.push(contact('plain-1', { lastname: 'P' }));
      const before = (await stats(s)).requests;
      const cost = a.cost(input);
      const first = await a.write(input, () => undefined);
      expect(first).toEqual(input.map(() => expect.objectContaining({ status: 'done', crmId: expect.stringMatching(/^[0-9a-f-]{36}$/) })));
      expect((await stats(s)).requests - before).toBe(cost);
      const second = await a.write(
        input.map((r) => ({ ...r, fields: { lastname: `${String(r.fields.lastname)}-2` } })),
        () => undefined,
      );
      expect(second.map((o) => (o.status === 'done' ? o.crmId : o))).toEqual(first.map((o) => (o.status === 'done' ? o.crmId : o)));
      const stored = await records(s, 'contacts');
      expect(stored.map((r) => [r.erp_id, r.lastname]).sort()).toEqual([
        ['50%', 'L2-2'],
        ['A&B', 'L1-2'],
        ['ORD/2024/1', 'L0-2'],
        ['plain-1', 'P-2'],
      ]);
      await a.close();
    });

    it('deletes them by GUID; one already gone is done without a write', async () => {
      const s = await start();
      const a = adapter(s);
      await a.write(
        ERP_KEYS.map((k) => contact(k, { lastname: 'L' })),
        () => undefined,
      );
      const out = await a.write([del('ORD/2024/1'), del('A&B'), del('50%'), del('gone/1')], () => undefined);
      expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done', 'done']);
      expect(await records(s, 'contacts')).toEqual([]);
      expect((await stats(s)).recordsDeleted).toBe(3);
      await a.close();
    });

    it('binds lookups to them by GUID; a target not there yet is pending', async () => {
      const s = await start();
      const a = adapter(s);
      const early = await a.write([opportunity('SO/7', 'ORD/2024/1'), opportunity('8', 'A&B')], () => undefined);
      expect(early).toEqual([0, 1].map(() => expect.objectContaining({ status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending' })));
      const customers = await a.write([contact('ORD/2024/1', { lastname: 'A' }), contact('A&B', { lastname: 'B' })], () => undefined);
      const later = await a.write([opportunity('SO/7', 'ORD/2024/1'), opportunity('8', 'A&B'), opportunity('9', '50%')], () => undefined);
      expect(later.map((o) => (o.status === 'done' ? 'done' : o.code))).toEqual(['done', 'done', 'LOOKUP_PENDING']);
      const opps = Object.fromEntries((await records(s, 'opportunities')).map((r) => [r.erp_order_id, r.customerid_contact]));
      expect(opps).toEqual({ 'SO/7': (customers[0] as { crmId: string }).crmId, '8': (customers[1] as { crmId: string }).crmId });
      await a.close();
    });
    it('matches a look-up case-insensitively like $filter, and rejects a value more than one record has (no alternate key)', async () => {
      const s = await start({ alternateKeys: [] });
      const a = adapter(s);
      const [first] = await a.write([contact('ord/2024/1', { lastname: 'A' })], () => undefined);
      const again = await a.write([contact('ORD/2024/1', { lastname: 'B' })], () => undefined);
      expect(again[0]).toMatchObject({ status: 'done', crmId: (first as { crmId: string }).crmId });
      await call(s, 'POST', `${API}/contacts`, { erp_id: 'X/1', lastname: 'one' });
      await call(s, 'POST', `${API}/contacts`, { erp_id: 'X/1', lastname: 'two' });
      const out = await a.write([contact('X/1', { lastname: 'C' }), del('X/1')], () => undefined);
      expect(out).toEqual(
        [0, 1].map(() =>
          expect.objectContaining({
            status: 'rejected',
            code: 'CRM_KEY_NOT_UNIQUE',
            message: expect.stringMatching(/2 contacts records whose erp_id is "X\/1"; define an alternate key on erp_id/),
          }),
        ),
      );
      expect((await records(s, 'contacts')).map((r) => r.lastname).sort()).toEqual(['B', 'one', 'two']);
      await a.close();
    });
  });

  it('cost() counts $batch requests, not operations: a $batch avoids the number-of-requests limit (api-limits)', async () => {
    const s = await start();
    const a = adapter(s);
    const input = Array.from({ length: 40 }, (_, i) => contact(`${i}`, { lastname: 'L' }));
    const cost = a.cost(input);
    await a.write(input, () => undefined);
    const st = await stats(s);
    expect(st.byEndpoint[`POST ${API}/$batch`]).toBe(3); // 10 + 20 + 10
    expect(cost).toBe(3);
    expect(st.requests).toBe(cost);
    // The daily entitlement counts every CRUD operation, batched or not.
    expect(a.dailyCost?.(input)).toBe(40);
    await a.close();
  });

  it('reads Retry-After with the shared parser (seconds or HTTP-date) for a throttled $batch and a throttled part', async () => {
    const s = await start();
    const inSeconds = (n: number) => new Date(Date.now() + n * 1000).toUTCString();
    proxy = await startAnswerProxy(s.url, [
      {
        match: /^POST \/api\/data\/v9\.2\/\$batch/,
        answer: () => ({
          status: 429,
          headers: { 'content-type': 'application/json', 'retry-after': inSeconds(40) },
          text: JSON.stringify({
            error: { code: '0x80072322', message: 'Number of requests exceeded the limit of 6000 over time window of 300 seconds.' },
          }),
        }),
      },
      {
        match: /^POST \/api\/data\/v9\.2\/\$batch/,
        forward: true,
        answer: (real) => {
          const boundary = boundaryOf(real!.headers['content-type'])!;
          const parts = parseBatchResponse(real!.text, boundary);
          parts[1] = {
            ...parts[1]!,
            status: 429,
            headers: { 'retry-after': inSeconds(90), 'content-type': 'application/json' },
            body: JSON.stringify({ error: { code: '0x80072326', message: 'Number of concurrent requests exceeded the limit of 52.' } }),
          };
          return { ...real!, text: buildBatchResponse(boundary, parts) };
        },
      },
    ]);
    const a = adapter({ ...s, url: proxy.url });
    const signals: RateSignal[] = [];
    const whole = await a.write([contact('1', { lastname: 'A' })], (x) => signals.push(x));
    expect(whole[0]).toMatchObject({ status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', retryAfterSeconds: expect.any(Number) });
    expect((whole[0] as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThanOrEqual(38);
    expect((whole[0] as { retryAfterSeconds: number }).retryAfterSeconds).toBeLessThanOrEqual(40);
    const part = await a.write([contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' })], (x) => signals.push(x));
    expect(part[0]?.status).toBe('done');
    expect(part[1]).toMatchObject({ status: 'retry', code: 'RATE_LIMITED', kind: 'throttle' });
    expect((part[1] as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThanOrEqual(88);
    expect(signals.filter((x) => x.throttled).map((x) => x.retryAfterSeconds! >= 38)).toEqual([true, true]);
    await a.close();
  });

  describe("answers that are not Dataverse's (HTML, truncated JSON, empty, wrong parts)", () => {
    const KINDS = ['html', 'truncated', 'empty'] as const;
    const badResponse = { status: 'retry', code: 'CRM_BAD_RESPONSE', kind: 'bad-response' };
    const garbage = (s: CrmSimulator, kind: (typeof KINDS)[number]) =>
      fetch(`${s.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ garbage: { requests: 1, kind } }) });
    const adapterAt = (s: CrmSimulator, url: string) => adapter({ ...s, url });
    /** The simulator's real `$batch` answer with its parts rewritten by `edit`. */
    const rewriteParts =
      (edit: (parts: ReturnType<typeof parseBatchResponse>) => ReturnType<typeof parseBatchResponse>) =>
      (real: ProxyAnswer | undefined): ProxyAnswer => {
        const boundary = boundaryOf(real!.headers['content-type'])!;
        return { ...real!, text: buildBatchResponse(boundary, edit(parseBatchResponse(real!.text, boundary))) };
      };
    const HTML_PART = { status: 200, headers: { 'content-type': 'text/html' }, body: '<html><body>Bad Gateway</body></html>' };

    it.each(KINDS)('a $batch answered 200 with %s fails the call with a retriable CRM_BAD_RESPONSE; nothing is done', async (kind) => {
      const s = await start();
      const a = adapter(s);
      await garbage(s, kind);
      await expect(a.write([contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' })], () => undefined)).rejects.toMatchObject({
        code: 'CRM_BAD_RESPONSE',
        retriable: true,
        message: expect.stringMatching(/Dynamics 365 POST .*\$batch: HTTP 200 .*expected/),
      });
      expect(await records(s, 'contacts')).toHaveLength(0);
      expect((await a.write([contact('1', { lastname: 'A' })], () => undefined))[0]?.status).toBe('done');
      await a.close();
    });

    it.each(KINDS)(
      'a later $batch of the call answered 200 with %s: its records are CRM_BAD_RESPONSE retries, the first batch stays done',
      async (kind) => {
        const s = await start();
        proxy = await startAnswerProxy(s.url, [
          { match: /^POST \/api\/data\/v9\.2\/\$batch/, forward: true, answer: (real) => real! },
          { match: /^POST \/api\/data\/v9\.2\/\$batch/, answer: () => GARBAGE[kind] },
        ]);
        const a = adapterAt(s, proxy.url);
        const out = await a.write(
          Array.from({ length: 15 }, (_, i) => contact(`${i}`, { lastname: 'L' })),
          () => undefined,
        );
        expect(proxy.hits).toEqual([1, 1]);
        expect(out.slice(0, 10).every((o) => o.status === 'done')).toBe(true);
        expect(out.slice(10)).toEqual(Array.from({ length: 5 }, () => expect.objectContaining(badResponse)));
        await a.close();
      },
    );

    it('checks each part: an upsert needs its OData-EntityId, a delete its 204, every operation its part', async () => {
      const s = await start();
      proxy = await startAnswerProxy(s.url, [
        {
          match: /^POST \/api\/data\/v9\.2\/\$batch/,
          forward: true,
          answer: rewriteParts((parts) => [
            { ...parts[0]!, headers: {} }, // 204 without OData-EntityId
            { ...parts[1]!, ...HTML_PART }, // 200 with an HTML page
            {
              ...parts[2]!,
              status: 503,
              body: JSON.stringify({ error: { code: '0x80040216', message: 'An unexpected error occurred.' } }),
            },
            { ...parts[3]!, ...HTML_PART }, // a delete answered 200 with HTML (documented: 204)
            parts[4]!, // as Dataverse answered it
            // parts[5] left out: the answer has fewer parts than operations
          ]),
        },
        {
          match: /^POST \/api\/data\/v9\.2\/\$batch/,
          forward: true,
          answer: rewriteParts((parts) => [...parts, parts[0]!]), // more parts than operations
        },
      ]);
      const a = adapterAt(s, proxy.url);
      await adapter(s).write([contact('9', { lastname: 'Z' })], () => undefined);
      const ops = [
        contact('1', { lastname: 'A' }),
        contact('2', { lastname: 'B' }),
        contact('3', { lastname: 'C' }),
        del('9'),
        contact('5', { lastname: 'E' }),
        contact('6', { lastname: 'F' }),
      ];
      const out = await a.write(ops, () => undefined);
      expect(out).toEqual([
        expect.objectContaining({ ...badResponse, message: expect.stringContaining('OData-EntityId') }),
        expect.objectContaining(badResponse),
        expect.objectContaining({ status: 'retry', code: 'HTTP_503', kind: 'server' }),
        expect.objectContaining(badResponse),
        expect.objectContaining({ status: 'done', crmId: expect.stringMatching(/^[0-9a-f-]{36}$/) }),
        expect.objectContaining(badResponse),
      ]);
      await expect(a.write([contact('7', { lastname: 'G' })], () => undefined)).rejects.toMatchObject({
        code: 'CRM_BAD_RESPONSE',
        retriable: true,
        message: expect.stringMatching(/2 parts for 1 operation/),
      });
      expect(proxy.hits).toEqual([1, 1]);
      await a.close();
    });

    it.each(KINDS)('ping() (pg2crm check) fails on a 200 with %s', async (kind) => {
      const s = await start();
      const a = adapter(s);
      await expectPingFailsOnGarbage(s, a, kind, 'WhoAmI');
      await a.close();
    });
  });

  it('throws retriable errors for 5xx and a permanent CRM_AUTH for a bad token', async () => {
    const s = await start();
    const a = adapter(s);
    await a.ping();
    await fetch(`${s.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ errors5xx: { requests: 1, status: 503 } }) });
    await expect(a.write([contact('1', { lastname: 'A' })], () => undefined)).rejects.toMatchObject({ retriable: true });
    await a.close();
    const bad = adapter(s, 'wrong');
    await expect(bad.ping()).rejects.toMatchObject({ code: 'CRM_AUTH', retriable: false });
    await expect(bad.write([contact('1', { lastname: 'A' })], () => undefined)).rejects.toMatchObject({
      code: 'CRM_AUTH',
      message: 'Dynamics 365 rejected the token (HTTP 401); check crm.auth.token',
    });
    await bad.close();
  });
});
