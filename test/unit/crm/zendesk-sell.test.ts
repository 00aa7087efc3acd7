import { request as httpRequest } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmWrite, RateSignal } from '../../../src/crm/crm-adapter.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { ZendeskSellAdapter } from '../../../src/crm/zendesk-sell/adapter.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';
import { parseLimit } from '../../../src/cli/sim-command.ts';
import { QuotaLanes } from '../../../src/sink/quota-lanes.ts';
import { RateBudget } from '../../../src/sink/rate-budget.ts';
import { expectPingFailsOnGarbage, GARBAGE_KINDS, simCall } from './sim-harness.ts';

let sim: CrmSimulator | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

async function start(opts: Partial<Parameters<typeof startZendeskSellSimulator>[0]> = {}): Promise<CrmSimulator> {
  sim = await startZendeskSellSimulator({ port: 0, control: true, ...opts });
  return sim;
}

const call = simCall;

const contact = (last: string) => ({ data: { last_name: last, custom_fields: { erp_id: '1' } } });

describe('Zendesk Sell simulator', () => {
  it('throttles past the limit with the documented 429 and locks the account for retry_after', async () => {
    const s = await start({ limit: { requests: 3, windowSeconds: 60 }, tokens: ['a', 'b'], retryAfterSeconds: 3600 });
    const remaining: (string | null)[] = [];
    for (const token of ['a', 'b', 'a'])
      remaining.push((await call(s, 'GET', '/v2/users/self', undefined, token)).headers.get('x-ratelimit-remaining'));
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
    const first = (await (await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=1', contact('A'))).json()) as {
      data: { id: number };
    };
    const second = (await (await call(s, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=1', contact('B'))).json()) as {
      data: { id: number; last_name: string };
    };
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
    await call(s, 'POST', '/__sim/faults', {
      errors5xx: { requests: 1, status: 503 },
      rejectWhen: { field: 'last_name', contains: 'bad' },
    });
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
      mappings: [
        {
          table: 'erp.customers',
          object: 'contacts',
          externalId: { column: 'id', field: 'custom_fields.erp_id' },
          fields: { last_name: 'l' },
        },
      ],
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
    const out = await a.write(
      [
        upsert('1', { last_name: 'A', 'custom_fields.tier': 'gold' }),
        upsert('2', { last_name: '' }),
        upsert('3', { last_name: 'C' }),
        upsert('4', { last_name: 'D' }),
      ],
      (x) => signals.push(x),
    );
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
    expect((await a.write([upsert('1', { last_name: 'A' })], () => undefined))[0]).toMatchObject({
      status: 'retry',
      code: 'HTTP_503',
      kind: 'server',
    });
    const deal: CrmWrite = {
      op: 'upsert',
      object: 'deals',
      externalIdField: 'custom_fields.erp_order_id',
      externalId: '7',
      fields: { name: 'Deal' },
      lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: '5' } },
    };
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
      upsert(
        id,
        { last_name: `P${id}` },
        {
          contact_id: {
            object: 'contacts',
            externalIdField: 'custom_fields.erp_id',
            externalId: orgId,
            ...(orgId === null ? { previousExternalId: 'O1' } : {}),
          },
        },
      );
    expect((await a.write([org('O1'), person('1', 'O1')], () => undefined)).map((o) => o.status)).toEqual(['done', 'done']);
    const stored = async (): Promise<Map<string, unknown>> => {
      const all = (await (await fetch(`${s.url}/__sim/records/contacts`)).json()) as {
        contact_id?: unknown;
        custom_fields: { erp_id: string };
      }[];
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
    const deal: CrmWrite = {
      op: 'upsert',
      object: 'deals',
      externalIdField: 'custom_fields.erp_order_id',
      externalId: '7',
      fields: { name: 'Deal' },
      lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: null } },
    };
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
    expect((await a.write([upsert('1', { last_name: 'A' })], () => undefined))[0]).toMatchObject({
      status: 'done',
      crmId: expect.stringMatching(/^\d+$/),
    });
    await a.close();
  });

  it.each(['html', 'truncated', 'empty'] as const)(
    'a search by external id answered %s is a CRM_BAD_RESPONSE retry: no delete passes for "already gone", no lookup for pending',
    async (kind) => {
      const s = await start();
      const writer = adapter(s);
      expect((await writer.write([upsert('5', { last_name: 'E' })], () => undefined))[0]?.status).toBe('done');
      await writer.close();
      const a = adapter(s); // empty id cache: the delete and the lookup search first
      await garbage(s, kind);
      expect((await a.write([{ ...upsert('5', {}), op: 'delete' }], () => undefined))[0]).toMatchObject(badResponse);
      expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(1);
      const deal: CrmWrite = {
        op: 'upsert',
        object: 'deals',
        externalIdField: 'custom_fields.erp_order_id',
        externalId: '7',
        fields: { name: 'Deal' },
        lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: '5' } },
      };
      await garbage(s, kind);
      expect((await a.write([deal], () => undefined))[0]).toMatchObject(badResponse);
      expect(await (await fetch(`${s.url}/__sim/records/deals`)).json()).toHaveLength(0);
      await a.close();
    },
  );

  it.each(['html', 'truncated', 'empty'] as const)(
    'a DELETE answered 200 with %s (documented: 204) is a CRM_BAD_RESPONSE retry',
    async (kind) => {
      const s = await start();
      const a = adapter(s);
      expect((await a.write([upsert('5', { last_name: 'E' })], () => undefined))[0]?.status).toBe('done');
      await garbage(s, kind); // the id is cached: the DELETE is the next request
      expect((await a.write([{ ...upsert('5', {}), op: 'delete' }], () => undefined))[0]).toMatchObject(badResponse);
      expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(1);
      expect((await a.write([{ ...upsert('5', {}), op: 'delete' }], () => undefined))[0]?.status).toBe('done');
      expect(await (await fetch(`${s.url}/__sim/records/contacts`)).json()).toHaveLength(0);
      await a.close();
    },
  );

  it.each(GARBAGE_KINDS)('ping() (pg2crm check) fails on a 200 with %s', async (kind) => {
    const s = await start();
    const a = adapter(s);
    await expectPingFailsOnGarbage(s, a, kind, 'GET /v2/users/self');
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

/*
 * Issue 11 (Zendesk Sell): the simulator follows Sell's documentation (User-Agent required,
 * custom fields API without a filterable flag, X-RateLimit-* only as a field-report option) and
 * the adapter trusts no search hit it has not checked.
 */
describe('Zendesk Sell as documented (issue 11)', () => {
  function sellConfig(s: CrmSimulator, limits: { requests: number; windowSeconds: number } = { requests: 100, windowSeconds: 60 }) {
    return parseConfig({
      name: 't',
      postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
      kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
      crm: { kind: 'zendesk-sell', baseUrl: s.url, auth: { token: 'sim-token' }, limits },
      mappings: [
        {
          table: 'erp.customers',
          object: 'contacts',
          externalId: { column: 'id', field: 'custom_fields.erp_id' },
          fields: { last_name: 'l' },
        },
      ],
    }).crm;
  }
  const contactWrite = (id: string, fields: Record<string, unknown> = {}, op: CrmWrite['op'] = 'upsert'): CrmWrite => ({
    op,
    object: 'contacts',
    externalIdField: 'custom_fields.erp_id',
    externalId: id,
    fields,
  });
  const dealFor = (contactId: string): CrmWrite => ({
    op: 'upsert',
    object: 'deals',
    externalIdField: 'custom_fields.erp_order_id',
    externalId: `o-${contactId}`,
    fields: { name: 'Deal' },
    lookups: { contact_id: { object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: contactId } },
  });
  const stored = async (s: CrmSimulator, object: string) =>
    (await (await fetch(`${s.url}/__sim/records/${object}`)).json()) as { id: number; custom_fields: Record<string, unknown> }[];

  /** A request with no User-Agent at all (fetch and undici always add one; node:http adds none). */
  function bare(s: CrmSimulator, path: string): Promise<{ status: number; body: unknown }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(`${s.url}${path}`, { headers: { authorization: 'Bearer sim-token', accept: 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('refuses a request without a User-Agent (400 invalid_user_agent); the adapter sends one and goes through', async () => {
    const s = await start();
    const res = await bare(s, '/v2/users/self');
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ errors: [{ error: { code: 'invalid_user_agent' } }], meta: { type: 'errors' } });
    const a = new ZendeskSellAdapter(sellConfig(s));
    await a.ping();
    expect((await a.write([contactWrite('1', { last_name: 'A' })], () => undefined))[0]?.status).toBe('done');
    await a.close();
  });

  it('serves GET /v2/:resource_type/custom_fields in the documented format: no filterable flag', async () => {
    const s = await start({ customFields: { contact: ['erp_id', 'tier'], deal: ['erp_order_id'] } });
    const res = await call(s, 'GET', '/v2/contact/custom_fields');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { items: { data: Record<string, unknown>; meta: { type: string } }[]; meta: { type: string } };
    expect(body.meta.type).toBe('collection');
    expect(body.items.map((i) => i.data.name)).toEqual(['erp_id', 'tier']);
    expect(body.items[0]).toMatchObject({
      data: { id: expect.any(Number), type: 'string', for_contact: true, for_company: true },
      meta: { type: 'custom_field' },
    });
    expect(Object.keys(body.items[0]!.data).sort()).toEqual([
      'created_at',
      'for_company',
      'for_contact',
      'id',
      'name',
      'type',
      'updated_at',
    ]);
    expect((await call(s, 'GET', '/v2/lead/custom_fields')).status).toBe(200);
  });

  it('lists 25 per page by default; a filter on an unfilterable custom field (fault) is ignored: the unfiltered page', async () => {
    const s = await start({ unfilterable: { contacts: ['erp_id'] } });
    for (let i = 1; i <= 30; i++)
      await call(s, 'POST', `/v2/contacts/upsert?custom_fields[erp_id]=${i}`, {
        data: { last_name: `L${i}`, custom_fields: { erp_id: String(i) } },
      });
    expect(await stored(s, 'contacts')).toHaveLength(30); // upsert is not affected by the fault
    const page = (await (await call(s, 'GET', '/v2/contacts?custom_fields[erp_id]=7')).json()) as {
      items: { data: { custom_fields: { erp_id: string } } }[];
    };
    expect(page.items).toHaveLength(25);
    expect(page.items[0]?.data.custom_fields.erp_id).toBe('1');
    const s2 = await startZendeskSellSimulator({ port: 0, control: true });
    try {
      await call(s2, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=7', { data: { last_name: 'L7', custom_fields: { erp_id: '7' } } });
      await call(s2, 'POST', '/v2/contacts/upsert?custom_fields[erp_id]=8', { data: { last_name: 'L8', custom_fields: { erp_id: '8' } } });
      const filtered = (await (await call(s2, 'GET', '/v2/contacts?custom_fields[erp_id]=8')).json()) as { items: unknown[] };
      expect(filtered.items).toHaveLength(1); // by default the filter is honoured
    } finally {
      await s2.close();
    }
  });

  it('a search whose hits do not hold the external id (filter ignored) deletes nothing and stops with the fix', async () => {
    const s = await start({ unfilterable: { contacts: ['erp_id'] } });
    const writer = new ZendeskSellAdapter(sellConfig(s));
    expect(
      (await writer.write([contactWrite('1', { last_name: 'A' }), contactWrite('2', { last_name: 'B' })], () => undefined)).map(
        (o) => o.status,
      ),
    ).toEqual(['done', 'done']);
    await writer.close();
    const a = new ZendeskSellAdapter(sellConfig(s)); // empty id cache: the delete searches first
    const err = await a
      .write([contactWrite('3', {}, 'delete')], () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toMatchObject({ code: 'CRM_FILTER_IGNORED', retriable: false });
    expect((err as Error).message).toMatch(/custom_fields\.erp_id.*contacts.*Filterable/s);
    expect(await stored(s, 'contacts')).toHaveLength(2); // nobody else's record deleted
    // A lookup is no better: the deal must not point to contact 1 for customer 2.
    await expect(a.write([dealFor('2')], () => undefined)).rejects.toMatchObject({ code: 'CRM_FILTER_IGNORED', retriable: false });
    expect(await stored(s, 'deals')).toHaveLength(0);
    await a.close();
  });

  it('several records holding the external id: the delete and the lookup are rejected naming the duplicates', async () => {
    const s = await start();
    // Two contacts with erp_id 5, written by someone else (upserts matched on other filters).
    const ids: number[] = [];
    for (const last of ['X', 'Y']) {
      const res = (await (
        await call(s, 'POST', `/v2/contacts/upsert?last_name=${last}`, { data: { last_name: last, custom_fields: { erp_id: '5' } } })
      ).json()) as { data: { id: number } };
      ids.push(res.data.id);
    }
    const a = new ZendeskSellAdapter(sellConfig(s));
    const [del] = await a.write([contactWrite('5', {}, 'delete')], () => undefined);
    expect(del).toMatchObject({ status: 'rejected', code: 'DUPLICATE_EXTERNAL_ID' });
    for (const id of ids) expect((del as { message: string }).message).toContain(String(id));
    expect(await stored(s, 'contacts')).toHaveLength(2);
    const [deal] = await a.write([dealFor('5')], () => undefined);
    expect(deal).toMatchObject({ status: 'rejected', code: 'DUPLICATE_EXTERNAL_ID' });
    expect((deal as { message: string }).message).toMatch(/contacts.*custom_fields\.erp_id=5/);
    expect(await stored(s, 'deals')).toHaveLength(0);
    // Zero hits: not found (a delete is done, a lookup waits).
    expect((await a.write([contactWrite('9', {}, 'delete')], () => undefined))[0]?.status).toBe('done');
    expect((await a.write([dealFor('9')], () => undefined))[0]).toMatchObject({ status: 'retry', code: 'LOOKUP_PENDING' });
    await a.close();
  });

  it('preflight (pg2crm check): names a missing custom field and one whose filter is ignored, with the fix', async () => {
    const s = await start({ customFields: { contact: ['erp_id'], deal: [] }, unfilterable: { contacts: ['erp_id'] } });
    const a = new ZendeskSellAdapter(sellConfig(s));
    expect(typeof a.preflight).toBe('function');
    const targets = [
      { object: 'contacts', externalIdField: 'custom_fields.erp_id' },
      { object: 'deals', externalIdField: 'custom_fields.erp_order_id' },
    ];
    // No contact yet: the probe cannot tell an ignored filter from an empty list.
    let checks = await a.preflight!(targets);
    expect(checks).toHaveLength(2);
    expect(checks[0]).toMatchObject({ ok: true, detail: expect.stringMatching(/no contacts.*could not/i) });
    expect(checks[1]).toMatchObject({ ok: false, detail: expect.stringMatching(/erp_order_id.*not.*deal.*create/i) });
    expect((await a.write([contactWrite('1', { last_name: 'A' })], () => undefined))[0]?.status).toBe('done');
    checks = await a.preflight!(targets);
    expect(checks[0]).toMatchObject({ ok: false, detail: expect.stringMatching(/erp_id.*ignored.*Filterable/s) });
    await a.close();
  });

  it('preflight passes for a defined, filterable external-id field', async () => {
    const s = await start({ customFields: { contact: ['erp_id'] } });
    const a = new ZendeskSellAdapter(sellConfig(s));
    expect((await a.write([contactWrite('1', { last_name: 'A' })], () => undefined))[0]?.status).toBe('done');
    const checks = await a.preflight!([{ object: 'contacts', externalIdField: 'custom_fields.erp_id' }]);
    expect(checks).toEqual([{ name: expect.stringContaining('contacts'), ok: true, detail: expect.stringMatching(/filter/i) }]);
    await a.close();
  });

  it('without X-RateLimit-* headers (Sell documents none) the sink pacing keeps under the limit', async () => {
    const limits = { requests: 10, windowSeconds: 1 };
    const s = await start({ limit: limits, rateLimitHeaders: false });
    const crm = sellConfig(s, limits);
    const lanes = new QuotaLanes(crm, () => new ZendeskSellAdapter(crm));
    const signals: RateSignal[] = [];
    const started = Date.now();
    for (let i = 1; i <= 30; ) {
      const w = [contactWrite(String(i), { last_name: `L${i}` })];
      const t = lanes.take(w, { priority: 5, who: 'p0' });
      if (!t) {
        await new Promise((r) => setTimeout(r, Math.max(1, lanes.waitMs(w))));
        continue;
      }
      const [out] = await t.adapter.write(w, (sig) => {
        signals.push(sig);
        t.lane.budget.observe(sig);
      });
      t.lane.budget.complete(t.spent);
      expect(out?.status).toBe('done');
      i++;
    }
    expect(signals.every((sig) => sig.remaining === undefined && !sig.throttled)).toBe(true);
    const stats = (await (await fetch(`${s.url}/__sim/stats`)).json()) as { throttled: number };
    expect(stats.throttled).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900); // 30 calls at 10/s, paced
    // Checked last: a request the budget does not know of would be someone else's spending,
    // which without the headers nothing reports (the next throttle does).
    const raw = await call(s, 'GET', '/v2/users/self');
    expect([...raw.headers.keys()].filter((h) => h.startsWith('x-ratelimit'))).toEqual([]);
    await lanes.close();
  }, 20_000);

  // The three forms of the simulator's 429: an HTTP-date is read against the clock (1 s
  // resolution, plus the time the call took), so it may come out up to 2 s short.
  it.each([
    ['seconds', 3600, 0],
    ['http-date', 3600, 2],
    ['none', 3600, 0],
  ] as const)('reads a Retry-After given as %s (body retry_after the fallback)', async (retryAfterHeader, seconds, slack) => {
    const s = await start({ limit: { requests: 1, windowSeconds: 60 }, retryAfterSeconds: seconds, retryAfterHeader });
    const a = new ZendeskSellAdapter(sellConfig(s));
    const signals: RateSignal[] = [];
    const out = await a.write([contactWrite('1', { last_name: 'A' }), contactWrite('2', { last_name: 'B' })], (x) => signals.push(x));
    expect(out[1]).toMatchObject({ status: 'retry', code: 'RATE_LIMITED', kind: 'throttle' });
    const after = (out[1] as { retryAfterSeconds: number }).retryAfterSeconds;
    expect(after).toBeGreaterThanOrEqual(seconds - slack);
    expect(after).toBeLessThanOrEqual(seconds);
    expect(signals.at(-1)?.retryAfterSeconds).toBe(after);
    await a.close();
  });

  it('a 429 carrying X-RateLimit-Remaining: 0 makes the budget wait its Retry-After, not a whole window', async () => {
    const s = await start();
    await call(s, 'POST', '/__sim/faults', { throttle: { requests: 1, retryAfterSeconds: 2 } });
    // Sell's documented quota: 36,000 per hour.
    const budget = new RateBudget({ requests: 36_000, windowSeconds: 3600 });
    const a = new ZendeskSellAdapter(sellConfig(s));
    const [out] = await a.write([contactWrite('1', { last_name: 'A' })], (sig) => budget.observe(sig));
    expect(out).toMatchObject({ status: 'retry', kind: 'throttle', retryAfterSeconds: 2 });
    expect(budget.waitMs(1)).toBeLessThanOrEqual(2000);
    await a.close();
  });
});
