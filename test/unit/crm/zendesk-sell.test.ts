import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmWrite, RateSignal } from '../../../src/crm/crm-adapter.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { ZendeskSellAdapter } from '../../../src/crm/zendesk-sell/adapter.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';
import { parseLimit } from '../../../src/cli/sim-command.ts';

let sim: CrmSimulator | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

async function start(opts: Partial<Parameters<typeof startZendeskSellSimulator>[0]> = {}): Promise<CrmSimulator> {
  sim = await startZendeskSellSimulator({ port: 0, ...opts });
  return sim;
}

function call(s: CrmSimulator, method: string, path: string, body?: unknown, token = 'sim-token') {
  return fetch(`${s.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
}

const contact = (last: string) => ({ data: { last_name: last, custom_fields: { erp_id: '1' } } });

describe('Zendesk Sell simulator', () => {
  it('throttles past the limit with the documented 429 and locks the account for retry_after', async () => {
    const s = await start({ limit: { requests: 3, windowSeconds: 60 }, tokens: ['a', 'b'], retryAfterSeconds: 3600 });
    const remaining: (string | null)[] = [];
    for (const token of ['a', 'b', 'a']) remaining.push((await call(s, 'GET', '/v2/users/self', undefined, token)).headers.get('x-ratelimit-remaining'));
    expect(remaining).toEqual(['2', '1', '0']);
    // Token b shares a's bucket: the 4th request of the account is throttled.
    const res = await call(s, 'GET', '/v2/users/self', undefined, 'b');
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('3600');
    expect(await res.json()).toEqual({ error: 'rate_limit_exceeded', retry_after: 3600, message: 'API rate limit reached' });
    // The window frees after 60 s, but the lockout lasts retry_after.
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 120 });
    expect((await call(s, 'GET', '/v2/users/self', undefined, 'a')).status).toBe(429);
    await call(s, 'POST', '/__sim/clock', { advanceSeconds: 3600 });
    expect((await call(s, 'GET', '/v2/users/self', undefined, 'a')).status).toBe(200);
    const stats = (await (await fetch(`${s.url}/__sim/stats`)).json()) as { throttled: number; requests: number };
    expect(stats).toMatchObject({ throttled: 2, requests: 6 });
  });

  it('upserts by custom-field filter: create, then update the same record', async () => {
    const s = await start();
    const first = (await (await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=1', contact('A'))).json()) as { data: { id: number } };
    const second = (await (await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=1', contact('B'))).json()) as { data: { id: number; last_name: string } };
    expect(second.data.id).toBe(first.data.id);
    expect(second.data.last_name).toBe('B');
    expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(1);
  });

  it('answers 409 when several records match, 422 with field errors, 401 without a valid token', async () => {
    const s = await start();
    await call(s, 'POST', '/v2/contacts/upsert?email=x@y.io', { data: { last_name: 'A', email: 'x@y.io' } });
    await call(s, 'POST', '/v2/contacts/upsert?last_name=B', { data: { last_name: 'B', email: 'x@y.io' } });
    expect((await call(s, 'POST', '/v2/contacts/upsert?email=x@y.io', { data: { last_name: 'C' } })).status).toBe(409);
    const invalid = await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=9', { data: { email: 'nope' } });
    expect(invalid.status).toBe(422);
    const body = (await invalid.json()) as { errors: { error: { field: string } }[] };
    expect(body.errors.map((e) => e.error.field).sort()).toEqual(['email', 'last_name']);
    expect((await call(s, 'POST', '/v2/deals/upsert?name=D', { data: { name: 'D', contact_id: 999 } })).status).toBe(422);
    expect((await call(s, 'GET', '/v2/users/self', undefined, 'stolen')).status).toBe(401);
  });

  it('injects throttle storms, 5xx and per-record rejections', async () => {
    const s = await start();
    await call(s, 'POST', '/__sim/faults', { throttle: { requests: 2, retryAfterSeconds: 60 } });
    expect((await call(s, 'GET', '/v2/users/self')).status).toBe(429);
    expect((await call(s, 'GET', '/v2/users/self')).headers.get('retry-after')).toBe('60');
    await call(s, 'POST', '/__sim/faults', { errors5xx: { requests: 1, status: 503 }, rejectWhen: { field: 'last_name', contains: 'bad' } });
    expect((await call(s, 'GET', '/v2/users/self')).status).toBe(503);
    expect((await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=1', contact('bad'))).status).toBe(422);
    expect((await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=1', contact('good'))).status).toBe(200);
  });
});

describe('ZendeskSellAdapter', () => {
  function adapter(s: CrmSimulator, token = 'sim-token'): ZendeskSellAdapter {
    const config = parseConfig({
      name: 't',
      postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
      kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
      crm: { kind: 'zendesk-sell', baseUrl: s.url, auth: { token }, limits: { requests: 100, windowSeconds: 60 } },
      mappings: [{ table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'custom_fields.erp_id' }, fields: { last_name: 'l' } }],
    });
    return new ZendeskSellAdapter(config.crm);
  }
  const upsert = (id: string, fields: Record<string, unknown>, lookups?: CrmWrite['lookups']): CrmWrite => ({
    op: 'upsert',
    object: 'contacts',
    externalIdField: 'custom_fields.erp_id',
    externalId: id,
    fields,
    ...(lookups ? { lookups } : {}),
  });

  it('writes, rejects with the field, and retries throttles with Retry-After', async () => {
    const s = await start({ limit: { requests: 3, windowSeconds: 60 }, retryAfterSeconds: 3600 });
    const a = adapter(s);
    const signals: RateSignal[] = [];
    const out = await a.write([upsert('1', { last_name: 'A', 'custom_fields.tier': 'gold' }), upsert('2', { last_name: '' }), upsert('3', { last_name: 'C' }), upsert('4', { last_name: 'D' })], (x) => signals.push(x));
    expect(out.map((o) => o.status)).toEqual(['done', 'rejected', 'done', 'retry']);
    expect(out[1]).toMatchObject({ field: 'last_name' });
    expect(out[3]).toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 3600, kind: 'throttle' });
    expect(signals.at(-1)).toMatchObject({ throttled: true, retryAfterSeconds: 3600 });
    expect(signals[0]).toMatchObject({ remaining: 2 });
    const stored = (await (await fetch(`${s.url}/__sim/records/contacts`)).json()) as { custom_fields: Record<string, unknown> }[];
    expect(stored[0]?.custom_fields).toEqual({ tier: 'gold', erp_id: '1' });
    await a.close();
  });

  it('retries 5xx, resolves lookups once the other record exists, deletes by external id', async () => {
    const s = await start();
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { errors5xx: { requests: 1, status: 503 } });
    expect((await a.write([upsert('1', { last_name: 'A' })], () => undefined))[0]).toMatchObject({ status: 'retry', code: 'HTTP_503', kind: 'server' });
    const deal: CrmWrite = { op: 'upsert', object: 'deals', externalIdField: 'custom_fields.erp_order_id', externalId: '7', fields: { name: 'Deal' }, lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: '5' } } };
    expect(a.cost([deal])).toBe(2);
    expect((await a.write([deal], () => undefined))[0]).toMatchObject({ status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending' });
    expect((await a.write([upsert('5', { last_name: 'E' })], () => undefined))[0]?.status).toBe('done');
    expect(a.cost([deal])).toBe(1); // the contact's id is cached since its upsert
    expect((await a.write([deal], () => undefined))[0]?.status).toBe('done');
    const del: CrmWrite = { ...upsert('5', {}), op: 'delete' };
    expect((await a.write([del, del], () => undefined)).map((o) => o.status)).toEqual(['done', 'done']);
    expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(0);
    await a.close();
  });

  it('clears a lookup whose column became NULL, on update and on create, without an id lookup', async () => {
    const s = await start();
    const a = adapter(s);
    const org = (id: string): CrmWrite => upsert(id, { name: `Org ${id}`, is_organization: true });
    const person = (id: string, orgId: string | null): CrmWrite =>
      upsert(id, { last_name: `P${id}` }, { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: orgId, ...(orgId === null ? { previousExternalId: 'O1' } : {}) } });
    expect((await a.write([org('O1'), person('1', 'O1')], () => undefined)).map((o) => o.status)).toEqual(['done', 'done']);
    const stored = async (): Promise<Map<string, unknown>> => {
      const all = (await (await fetch(`${s.url}/__sim/records/contacts`)).json()) as { contact_id?: unknown; custom_fields: { erp_id: string } }[];
      return new Map(all.map((r) => [r.custom_fields.erp_id, r.contact_id]));
    };
    const orgId = (await stored()).get('1');
    expect(typeof orgId).toBe('number');
    // A null lookup costs no id lookup, even when the target is not cached.
    const cleared = person('1', null);
    const fresh = adapter(s); // empty id cache
    expect(fresh.cost([cleared])).toBe(1);
    await fresh.close();
    const before = ((await (await fetch(`${s.url}/__sim/stats`)).json()) as { requests: number }).requests;
    // A batch mixing a cleared lookup (update of 1, create of 2) and a set one (create of 3).
    const out = await a.write([cleared, person('2', null), person('3', 'O1')], () => undefined);
    expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done']);
    const after = ((await (await fetch(`${s.url}/__sim/stats`)).json()) as { requests: number }).requests;
    expect(after - before).toBe(3); // one upsert each: O1's id is cached, null needs no lookup
    const now = await stored();
    expect(now.get('1')).toBeNull();
    expect(now.get('2')).toBeNull();
    expect(now.get('3')).toBe(orgId);
    // A deal's contact_id is required in Sell: clearing it is a validation error naming the field.
    const deal: CrmWrite = { op: 'upsert', object: 'deals', externalIdField: 'custom_fields.erp_order_id', externalId: '7', fields: { name: 'Deal' }, lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: null } } };
    expect((await a.write([deal], () => undefined))[0]).toMatchObject({ status: 'rejected', field: 'contact_id' });
    await a.close();
  });

  const garbage = (s: CrmSimulator, kind: 'html' | 'truncated' | 'empty', status?: number) =>
    call(s, 'POST', '/__sim/faults', { garbage: { requests: 1, kind, ...(status !== undefined ? { status } : {}) } });
  const badResponse = { status: 'retry', code: 'CRM_BAD_RESPONSE', kind: 'bad-response' };

  it.each([
    ['html', 200],
    ['truncated', 200],
    ['empty', 200],
    ['html', 201],
    ['truncated', 201],
    ['empty', 201],
  ] as const)('an upsert answered %s with HTTP %i is a CRM_BAD_RESPONSE retry, not done', async (kind, status) => {
    const s = await start();
    const a = adapter(s);
    await garbage(s, kind, status);
    const [out] = await a.write([upsert('1', { last_name: 'A' })], () => undefined);
    expect(out).toMatchObject({ ...badResponse, message: expect.stringMatching(/Zendesk Sell.*HTTP \d{3}.*expected/) });
    expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(0);
    // Nothing was remembered of the garbage: the retry writes the record.
    expect((await a.write([upsert('1', { last_name: 'A' })], () => undefined))[0]).toMatchObject({ status: 'done', crmId: expect.stringMatching(/^\d+$/) });
    await a.close();
  });

  it.each(['html', 'truncated', 'empty'] as const)('a search by external id answered %s is a CRM_BAD_RESPONSE retry: no delete passes for "already gone", no lookup for pending', async (kind) => {
    const s = await start();
    const writer = adapter(s);
    expect((await writer.write([upsert('5', { last_name: 'E' })], () => undefined))[0]?.status).toBe('done');
    await writer.close();
    const a = adapter(s); // empty id cache: the delete and the lookup search first
    await garbage(s, kind);
    expect((await a.write([{ ...upsert('5', {}), op: 'delete' }], () => undefined))[0]).toMatchObject(badResponse);
    expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(1);
    const deal: CrmWrite = { op: 'upsert', object: 'deals', externalIdField: 'custom_fields.erp_order_id', externalId: '7', fields: { name: 'Deal' }, lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: '5' } } };
    await garbage(s, kind);
    expect((await a.write([deal], () => undefined))[0]).toMatchObject(badResponse);
    expect(await (await fetch(`${s.url}/__sim/records/deals`)).json()).toHaveLength(0);
    await a.close();
  });

  it.each(['html', 'truncated', 'empty'] as const)('a DELETE answered 200 with %s (documented: 204) is a CRM_BAD_RESPONSE retry', async (kind) => {
    const s = await start();
    const a = adapter(s);
    expect((await a.write([upsert('5', { last_name: 'E' })], () => undefined))[0]?.status).toBe('done');
    await garbage(s, kind); // the id is cached: the DELETE is the next request
    expect((await a.write([{ ...upsert('5', {}), op: 'delete' }], () => undefined))[0]).toMatchObject(badResponse);
    expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(1);
    expect((await a.write([{ ...upsert('5', {}), op: 'delete' }], () => undefined))[0]?.status).toBe('done');
    expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(0);
    await a.close();
  });

  it.each(['html', 'truncated', 'empty'] as const)('ping() (pg2crm check) fails on a 200 with %s', async (kind) => {
    const s = await start();
    const a = adapter(s);
    await garbage(s, kind);
    await expect(a.ping()).rejects.toMatchObject({ code: 'CRM_BAD_RESPONSE', retriable: true, message: expect.stringContaining('GET /v2/users/self') });
    await a.ping();
    await a.close();
  });

  it('throws a permanent CRM_AUTH error for a bad token', async () => {
    const s = await start();
    const a = adapter(s, 'wrong');
    await expect(a.ping()).rejects.toMatchObject({ code: 'CRM_AUTH', retriable: false });
    await expect(a.write([upsert('1', { last_name: 'A' })], () => undefined)).rejects.toMatchObject({ code: 'CRM_AUTH' });
    await a.close();
  });
});

describe('parseLimit', () => {
  it('reads requests per window', () => {
    expect(parseLimit('200/60s')).toEqual({ requests: 200, windowSeconds: 60 });
    expect(parseLimit('36000/1h')).toEqual({ requests: 36000, windowSeconds: 3600 });
    expect(parseLimit('200/min')).toEqual({ requests: 200, windowSeconds: 60 });
    expect(() => parseLimit('fast')).toThrow(/write <requests>\/<window>/);
  });
});
