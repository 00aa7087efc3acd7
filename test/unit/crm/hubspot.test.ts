import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmAdapter, CrmWrite, RateSignal, WriteOutcome } from '../../../src/crm/crm-adapter.ts';
import { CrmCaches } from '../../../src/crm/crm-caches.ts';
import { HubSpotAdapter, retryAfterOf } from '../../../src/crm/hubspot/adapter.ts';
import { type HubSpotSimOptions, nextMidnight, startHubSpotSimulator } from '../../../src/crm/hubspot/simulator.ts';
import type { CrmSimulator, SimStats } from '../../../src/crm/sim-server.ts';
import { RateBudget } from '../../../src/sink/rate-budget.ts';
import { type AnswerProxy, GARBAGE, startAnswerProxy } from '../../helpers/answer-proxy.ts';
import { expectPingFailsOnGarbage, simCall } from './sim-harness.ts';

let sim: CrmSimulator | undefined;
let adapters: HubSpotAdapter[] = [];
let proxy: AnswerProxy | undefined;
afterEach(async () => {
  for (const a of adapters) await a.close();
  adapters = [];
  await proxy?.close();
  proxy = undefined;
  await sim?.close();
  sim = undefined;
});

async function start(opts: Partial<HubSpotSimOptions> = {}): Promise<CrmSimulator> {
  sim = await startHubSpotSimulator({ port: 0, control: true, ...opts });
  return sim;
}

const call = simCall;

const records = async (s: CrmSimulator, object: string) =>
  (await (await fetch(`${s.url}/__sim/records/${object}`)).json()) as Record<string, unknown>[];
const stats = async (s: CrmSimulator) => (await (await fetch(`${s.url}/__sim/stats`)).json()) as SimStats;
const advance = (s: CrmSimulator, seconds: number) => call(s, 'POST', '/__sim/clock', { advanceSeconds: seconds });
const ping = (s: CrmSimulator, token?: string) => call(s, 'GET', '/crm/v3/objects/contacts?limit=1', undefined, token);

const upsertBody = (inputs: { id: string; properties: Record<string, unknown>; trace?: string }[]) => ({
  inputs: inputs.map((i) => ({
    id: i.id,
    idProperty: 'erp_id',
    properties: i.properties,
    ...(i.trace ? { objectWriteTraceId: i.trace } : {}),
  })),
});

describe('HubSpot simulator', () => {
  it('throttles past 100 requests per rolling 10 s with the documented 429 and no Retry-After', async () => {
    const s = await start({ limit: { requests: 3, windowSeconds: 10 } });
    const remaining: (string | null)[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await ping(s);
      expect(res.status).toBe(200);
      remaining.push(res.headers.get('x-hubspot-ratelimit-remaining'));
    }
    expect(remaining).toEqual(['2', '1', '0']);
    const res = await ping(s);
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBeNull();
    expect(res.headers.get('x-hubspot-ratelimit-max')).toBe('3');
    expect(res.headers.get('x-hubspot-ratelimit-interval-milliseconds')).toBe('10000');
    expect(res.headers.get('x-hubspot-ratelimit-daily')).toBe('250000');
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      status: 'error',
      message: 'You have reached your ten_secondly_rolling limit.',
      errorType: 'RATE_LIMIT',
      policyName: 'TEN_SECONDLY_ROLLING',
    });
    expect(typeof body.correlationId).toBe('string');
    // The window rolls: 10 s later the requests are allowed again.
    await advance(s, 10);
    expect((await ping(s)).status).toBe(200);
    expect(await stats(s)).toMatchObject({ requests: 5, throttled: 1 });
  });

  it('defaults to the documented limits: 100 per 10 s and 250,000 a day', async () => {
    const s = await start();
    const res = await ping(s);
    expect(res.headers.get('x-hubspot-ratelimit-max')).toBe('100');
    expect(res.headers.get('x-hubspot-ratelimit-remaining')).toBe('99');
    expect(res.headers.get('x-hubspot-ratelimit-daily-remaining')).toBe('249999');
  });

  it('enforces the daily limit with policy DAILY until midnight', async () => {
    const s = await start({ daily: 2 });
    expect((await ping(s)).headers.get('x-hubspot-ratelimit-daily-remaining')).toBe('1');
    expect((await ping(s)).status).toBe(200);
    await advance(s, 20); // a fresh 10 s window does not help
    const res = await ping(s);
    expect(res.status).toBe(429);
    expect(await res.json()).toMatchObject({ message: 'You have reached your daily limit.', errorType: 'RATE_LIMIT', policyName: 'DAILY' });
    await advance(s, 86_400);
    expect((await ping(s)).status).toBe(200);
  });

  it('batch/upsert creates, then updates the record found by its idProperty', async () => {
    const s = await start();
    const first = await call(
      s,
      'POST',
      '/crm/v3/objects/contacts/batch/upsert',
      upsertBody([{ id: '1', properties: { lastname: 'A', email: 'a@x.io' } }]),
    );
    expect(first.status).toBe(200);
    const created = (await first.json()) as { status: string; results: { id: string; new: boolean; properties: Record<string, string> }[] };
    expect(created.status).toBe('COMPLETE');
    expect(created.results[0]).toMatchObject({ new: true, properties: { lastname: 'A', erp_id: '1' } });
    const second = (await (
      await call(s, 'POST', '/crm/v3/objects/contacts/batch/upsert', upsertBody([{ id: '1', properties: { lastname: 'B' } }]))
    ).json()) as typeof created;
    expect(second.results[0]).toMatchObject({ id: created.results[0]!.id, new: false, properties: { lastname: 'B', email: 'a@x.io' } });
    const stored = await records(s, 'contacts');
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ erp_id: '1', lastname: 'B', email: 'a@x.io' });
    expect((await stats(s)).recordsWritten).toBe(2);
  });

  it('batch/upsert: one invalid input fails the whole batch with 400 VALIDATION_ERROR, trace ids or not; nothing is written', async () => {
    const s = await start();
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'lastname', contains: 'bad' } });
    const inputs = [
      { id: '1', properties: { lastname: 'ok' }, trace: 'a' },
      { id: '2', properties: { lastname: 'x', email: 'nope' }, trace: 'b' },
      { id: '3', properties: { lastname: 'bad' }, trace: 'c' },
    ];
    // Multi-status 207 is documented for batch create only: upsert is all or nothing.
    const res = await call(s, 'POST', '/crm/v3/objects/contacts/batch/upsert', upsertBody(inputs));
    expect(res.status).toBe(400);
    const body = (await res.json()) as {
      status: string;
      category: string;
      message: string;
      correlationId: string;
      errors: { message: string; code: string; in: string }[];
    };
    expect(body).toMatchObject({ status: 'error', category: 'VALIDATION_ERROR' });
    expect(typeof body.correlationId).toBe('string');
    expect(body.message).toMatch(/^Property values were not valid: .*INVALID_EMAIL/);
    expect(body.errors.map((e) => [e.code, e.in])).toEqual([
      ['INVALID_EMAIL', 'email'],
      ['INVALID_PROPERTY_VALUE', 'lastname'],
    ]);
    expect(await records(s, 'contacts')).toHaveLength(0);
    // Without objectWriteTraceId the same.
    const atomic = await call(
      s,
      'POST',
      '/crm/v3/objects/contacts/batch/upsert',
      upsertBody([
        { id: '4', properties: { lastname: 'y' } },
        { id: '5', properties: { lastname: 'bad' } },
      ]),
    );
    expect(atomic.status).toBe(400);
    expect(await records(s, 'contacts')).toHaveLength(0);
    // The valid inputs alone are written; the trace id is echoed.
    const ok = await call(s, 'POST', '/crm/v3/objects/contacts/batch/upsert', upsertBody([inputs[0]!]));
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { results: { objectWriteTraceId: string }[] }).results.map((r) => r.objectWriteTraceId)).toEqual(['a']);
    // Deals require a name; more than 100 inputs or duplicate ids are refused.
    expect(
      (
        await call(s, 'POST', '/crm/v3/objects/deals/batch/upsert', {
          inputs: [{ id: '9', idProperty: 'erp_order_id', properties: { amount: 1 } }],
        })
      ).status,
    ).toBe(400);
    const many = upsertBody(Array.from({ length: 101 }, (_, i) => ({ id: String(i), properties: { lastname: 'z' } })));
    expect((await call(s, 'POST', '/crm/v3/objects/contacts/batch/upsert', many)).status).toBe(400);
    expect(
      (
        await call(
          s,
          'POST',
          '/crm/v3/objects/contacts/batch/upsert',
          upsertBody([
            { id: '7', properties: {} },
            { id: '7', properties: {} },
          ]),
        )
      ).status,
    ).toBe(400);
  });

  it('properties API: GET a definition with hasUniqueValue, 404 for none, POST creates; upsert/read by a non-unique idProperty is a 400', async () => {
    const s = await start({ properties: { contacts: { erp_ref: { hasUniqueValue: false } } } });
    const erpId = await call(s, 'GET', '/crm/v3/properties/contacts/erp_id');
    expect(erpId.status).toBe(200);
    expect(await erpId.json()).toMatchObject({ name: 'erp_id', type: 'string', fieldType: 'text', hasUniqueValue: true });
    expect(await (await call(s, 'GET', '/crm/v3/properties/contacts/erp_ref')).json()).toMatchObject({
      name: 'erp_ref',
      hasUniqueValue: false,
    });
    expect(await (await call(s, 'GET', '/crm/v3/properties/contacts/lastname')).json()).toMatchObject({ hasUniqueValue: false });
    const missing = await call(s, 'GET', '/crm/v3/properties/contacts/nope');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ status: 'error', category: 'OBJECT_NOT_FOUND' });
    const created = await call(s, 'POST', '/crm/v3/properties/deals', {
      name: 'sap_no',
      label: 'SAP no',
      type: 'string',
      fieldType: 'text',
      groupName: 'dealinformation',
      hasUniqueValue: true,
    });
    expect(created.status).toBe(201);
    expect(await (await call(s, 'GET', '/crm/v3/properties/deals/sap_no')).json()).toMatchObject({ hasUniqueValue: true });
    expect(
      (await call(s, 'POST', '/crm/v3/properties/deals', { name: 'sap_no', label: 'x', type: 'string', fieldType: 'text', groupName: 'g' }))
        .status,
    ).toBe(409);
    // Upsert and read by a property without unique values (or none at all): 400, nothing written.
    for (const idProperty of ['erp_ref', 'lastname', 'nope']) {
      const res = await call(s, 'POST', '/crm/v3/objects/contacts/batch/upsert', {
        inputs: [{ id: '1', idProperty, properties: { firstname: 'A' } }],
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        status: 'error',
        category: 'VALIDATION_ERROR',
        message: expect.stringContaining('hasUniqueValue'),
      });
      expect(
        (await call(s, 'POST', '/crm/v3/objects/contacts/batch/read', { idProperty, properties: [idProperty], inputs: [{ id: '1' }] }))
          .status,
      ).toBe(400);
    }
    expect(await records(s, 'contacts')).toHaveLength(0);
    expect(
      (
        await call(s, 'POST', '/crm/v3/objects/deals/batch/upsert', {
          inputs: [{ id: '1', idProperty: 'sap_no', properties: { dealname: 'D' } }],
        })
      ).status,
    ).toBe(200);
  });

  it('daily limit resets at midnight in the account time zone; the usage API says when (resetsAt)', async () => {
    const s = await start({ daily: 3, timeZone: 'Pacific/Honolulu' });
    const res = await call(s, 'GET', '/account-info/v3/api-usage/daily/private-apps');
    expect(res.status).toBe(200);
    const usage = ((await res.json()) as { results: Record<string, unknown>[] }).results[0]!;
    expect(usage).toMatchObject({ name: 'private-apps-api-calls-daily', usageLimit: 3, currentUsage: 1, fetchStatus: 'SUCCESS' });
    // Honolulu is UTC-10 all year: its midnight is 10:00 UTC.
    const resetsAt = Date.parse(String(usage.resetsAt));
    expect(new Date(resetsAt).getUTCHours()).toBe(10);
    expect(resetsAt - Date.now()).toBeGreaterThan(0);
    expect(resetsAt - Date.now()).toBeLessThanOrEqual(86_400_000);
    await ping(s);
    await ping(s);
    const refused = await ping(s);
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ policyName: 'DAILY' });
    // One second before the reset: still refused; at the reset: allowed again.
    const now = Date.parse(((await (await call(s, 'POST', '/__sim/clock', { advanceSeconds: 0 })).json()) as { now: string }).now);
    await advance(s, Math.floor((resetsAt - now) / 1000) - 1);
    expect((await ping(s)).status).toBe(429);
    await advance(s, 2);
    expect((await ping(s)).status).toBe(200);
  });

  it('batch/read by idProperty answers 207 OBJECT_NOT_FOUND for missing ids; batch/archive answers 204', async () => {
    const s = await start();
    await call(s, 'POST', '/crm/v3/objects/contacts/batch/upsert', upsertBody([{ id: '1', properties: { lastname: 'A' } }]));
    const res = await call(s, 'POST', '/crm/v3/objects/contacts/batch/read', {
      idProperty: 'erp_id',
      properties: ['erp_id'],
      inputs: [{ id: '1' }, { id: '2' }],
    });
    expect(res.status).toBe(207);
    const body = (await res.json()) as {
      results: { id: string; properties: Record<string, string> }[];
      errors: { category: string; context: { ids: string[] } }[];
    };
    expect(body.results[0]!.properties.erp_id).toBe('1');
    expect(body.results[0]!.properties.lastname).toBeUndefined(); // only the properties asked for
    expect(body.errors[0]).toMatchObject({ category: 'OBJECT_NOT_FOUND', context: { ids: ['2'] } });
    const archived = await call(s, 'POST', '/crm/v3/objects/contacts/batch/archive', {
      inputs: [{ id: body.results[0]!.id }, { id: '999' }],
    });
    expect(archived.status).toBe(204);
    expect(await records(s, 'contacts')).toHaveLength(0);
    expect((await stats(s)).recordsDeleted).toBe(1);
  });

  it('v4 associations batch/archive answers 204 and removes only the named pairs, both directions', async () => {
    const s = await start();
    await call(
      s,
      'POST',
      '/crm/v3/objects/contacts/batch/upsert',
      upsertBody([
        { id: '1', properties: { lastname: 'A' } },
        { id: '2', properties: { lastname: 'B' } },
      ]),
    );
    await call(s, 'POST', '/crm/v3/objects/deals/batch/upsert', {
      inputs: [{ id: '9', idProperty: 'erp_order_id', properties: { dealname: 'D' } }],
    });
    const [c1, c2] = (await records(s, 'contacts')).map((r) => String(r.id));
    const dealId = String((await records(s, 'deals'))[0]!.id);
    const link = (from: string, fromId: string, to: string, toId: string, type: number) =>
      call(s, 'POST', `/crm/v4/associations/${from}/${to}/batch/create`, {
        inputs: [{ from: { id: fromId }, to: { id: toId }, types: [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: type }] }],
      });
    await link('deals', dealId, 'contacts', c1!, 3);
    await link('contacts', c1!, 'deals', dealId, 4);
    await link('deals', dealId, 'contacts', c2!, 3);
    const res = await call(s, 'POST', '/crm/v4/associations/deals/contacts/batch/archive', {
      inputs: [{ from: { id: dealId }, to: [{ id: c1 }, { id: '999' }] }],
    });
    expect(res.status).toBe(204);
    expect((await records(s, 'associations')).map((l) => [l.fromObjectType, l.toObjectId])).toEqual([['deals', c2]]);
    // The link removed can be made again; a malformed body is a 400.
    expect((await link('deals', dealId, 'contacts', c1!, 3)).status).toBe(201);
    expect(await records(s, 'associations')).toHaveLength(2);
    expect(
      (await call(s, 'POST', '/crm/v4/associations/deals/contacts/batch/archive', { inputs: [{ from: { id: dealId }, to: { id: c1 } }] }))
        .status,
    ).toBe(400);
  });

  it('rejects unknown tokens with 401 INVALID_AUTHENTICATION, uncounted by the rate limit', async () => {
    const s = await start({ limit: { requests: 1, windowSeconds: 10 } });
    const res = await ping(s, 'stolen');
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({
      status: 'error',
      category: 'INVALID_AUTHENTICATION',
      message: expect.stringMatching(/^Authentication credentials not found/),
    });
    expect((await ping(s)).status).toBe(200);
  });

  it('injected throttle storms answer HubSpot 429s; 5xx storms too', async () => {
    const s = await start();
    await call(s, 'POST', '/__sim/faults', { throttle: { requests: 1, retryAfterSeconds: 30 }, errors5xx: { requests: 1, status: 502 } });
    const res = await ping(s);
    expect(res.status).toBe(429);
    expect(await res.json()).toMatchObject({ policyName: 'TEN_SECONDLY_ROLLING', errorType: 'RATE_LIMIT' });
    expect((await ping(s)).status).toBe(502);
    expect((await ping(s)).status).toBe(200);
  });
});

describe('HubSpotAdapter', () => {
  function adapter(s: CrmSimulator, token = 'sim-token', caches?: CrmCaches, now?: () => number): HubSpotAdapter {
    const config = parseConfig({
      name: 't',
      postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
      kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
      crm: { kind: 'hubspot', baseUrl: s.url, auth: { token }, limits: { requests: 100, windowSeconds: 10, daily: 250000 } },
      mappings: [{ table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { lastname: 'l' } }],
    });
    const a = new HubSpotAdapter(config.crm, caches, now);
    adapters.push(a);
    return a;
  }
  const contact = (id: string, fields: Record<string, unknown>): CrmWrite => ({
    op: 'upsert',
    object: 'contacts',
    externalIdField: 'erp_id',
    externalId: id,
    fields,
  });
  const removeContact = (id: string): CrmWrite => ({
    op: 'delete',
    object: 'contacts',
    externalIdField: 'erp_id',
    externalId: id,
    fields: {},
  });
  const deal = (id: string, customer: string, fields: Record<string, unknown> = { dealname: `Order ${id}`, amount: 10 }): CrmWrite => ({
    op: 'upsert',
    object: 'deals',
    externalIdField: 'erp_order_id',
    externalId: id,
    fields,
    lookups: { contact: { object: 'contacts', externalIdField: 'erp_id', externalId: customer } },
  });

  const company = (id: string): CrmWrite => ({
    op: 'upsert',
    object: 'companies',
    externalIdField: 'erp_company_id',
    externalId: id,
    fields: { name: `Co ${id}` },
  });
  /** Deal `id` (`Order <id>`) whose company lookup points to `customer`, moved from `previous` when given. */
  const companyDeal = (id: string, customer: string | null, previous?: string): CrmWrite => ({
    op: 'upsert',
    object: 'deals',
    externalIdField: 'erp_order_id',
    externalId: id,
    fields: { dealname: `Order ${id}` },
    lookups: {
      company: {
        object: 'companies',
        externalIdField: 'erp_company_id',
        externalId: customer,
        ...(previous !== undefined ? { previousExternalId: previous } : {}),
      },
    },
  });

  it('round trip: N records written in one call equal /__sim/records; cost equals the requests counted', async () => {
    const s = await start();
    const a = adapter(s);
    const writes = Array.from({ length: 150 }, (_, i) =>
      contact(String(i + 1), { firstname: `F${i}`, lastname: `L${i}`, email: `u${i}@example.com` }),
    );
    expect((a as CrmAdapter).maxBatchSize('contacts')).toBe(100);
    const expected = a.cost(writes);
    expect(expected).toBe(2);
    const out = await a.write(writes, () => undefined);
    expect(out.every((o) => o.status === 'done' && o.created === true && o.crmId)).toBe(true);
    const stored = await records(s, 'contacts');
    const strip = (r: Record<string, unknown>) => ({ erp_id: r.erp_id, firstname: r.firstname, lastname: r.lastname, email: r.email });
    expect(stored.map(strip)).toEqual(writes.map((w) => ({ erp_id: w.externalId, ...w.fields })));
    expect((await stats(s)).requests).toBe(expected);
    // An update of the same records reports created: false.
    expect((await a.write([contact('1', { lastname: 'New' })], () => undefined))[0]).toMatchObject({ status: 'done', created: false });
  });

  it('a batch HubSpot refuses whole (400) is bisected: only the inputs refused alone are rejected, with the field; the rest written', async () => {
    const s = await start();
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'lastname', contains: 'bad' } });
    const writes = [
      contact('1', { lastname: 'A' }),
      contact('2', { lastname: 'B', email: 'nope' }),
      contact('3', { lastname: 'C', email: null }),
      contact('4', { lastname: 'bad' }),
    ];
    const cost = a.cost(writes);
    expect(cost).toBe(1);
    const signals: RateSignal[] = [];
    const before = (await stats(s)).requests;
    const out = await a.write(writes, (x) => signals.push(x));
    expect(out.map((o) => o.status)).toEqual(['done', 'rejected', 'done', 'rejected']);
    expect(out[1]).toMatchObject({ code: 'HUBSPOT_INVALID_EMAIL', field: 'email' });
    expect(out[3]).toMatchObject({ code: 'HUBSPOT_INVALID_PROPERTY_VALUE', field: 'lastname' });
    expect((await records(s, 'contacts')).map((r) => r.erp_id)).toEqual(['1', '3']);
    // null is sent as HubSpot's empty string, which clears the property (read back as null).
    expect((await records(s, 'contacts'))[1]).toMatchObject({ lastname: 'C', email: null });
    // [1,2,3,4] 400 -> property check -> [1,2] 400 -> [1] ok, [2] 400 -> [3,4] 400 -> [3] ok, [4] 400.
    const spent = (await stats(s)).requests - before;
    expect(spent).toBe(8);
    // The budget is honest: what cost() announced plus what was reported as extra is what HubSpot counted.
    expect(cost + signals.reduce((n, x) => n + (x.extraRequests ?? 0), 0)).toBe(spent);
    expect(signals.filter((x) => x.extraRequests === undefined)).toHaveLength(cost);
    const budget = new RateBudget({ requests: 1000, windowSeconds: 10, daily: 250_000 });
    const taken = budget.take(cost)!;
    for (const x of signals) budget.observe({ ...x, remaining: undefined, dailyRemaining: undefined });
    budget.complete(taken);
    expect(budget.used()).toBe(spent);
  });

  it('bisects a full batch of 100 with one bad input in 2 log2(100) + 2 calls or fewer', async () => {
    const s = await start();
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'lastname', contains: 'bad' } });
    const writes = Array.from({ length: 100 }, (_, i) => contact(String(i + 1), { lastname: i === 62 ? 'bad' : `L${i}` }));
    const before = (await stats(s)).requests;
    const out = await a.write(writes, () => undefined);
    expect(out.filter((o) => o.status === 'done')).toHaveLength(99);
    expect(out[62]).toMatchObject({ status: 'rejected', field: 'lastname' });
    expect(await records(s, 'contacts')).toHaveLength(99);
    expect((await stats(s)).requests - before).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(100)) + 2);
  });

  it('a 429 in the middle of a bisect: what was written stays done, what was rejected stays rejected, the rest is a throttle retry', async () => {
    // 3 calls per 10 s: [1..4] 400, property check, [1,2] 400 -> the 4th call is throttled.
    const s = await start({ limit: { requests: 3, windowSeconds: 10 } });
    const a = adapter(s);
    await call(s, 'POST', '/__sim/faults', { rejectWhen: { field: 'lastname', contains: 'bad' } });
    const out = await a.write(
      [
        contact('1', { lastname: 'bad' }),
        contact('2', { lastname: 'B' }),
        contact('3', { lastname: 'C' }),
        contact('4', { lastname: 'D' }),
      ],
      () => undefined,
    );
    expect(out.map((o) => (o.status === 'retry' ? o.kind : o.status))).toEqual(['throttle', 'throttle', 'throttle', 'throttle']);
    await advance(s, 10);
    const next = await a.write(
      [
        contact('1', { lastname: 'bad' }),
        contact('2', { lastname: 'B' }),
        contact('3', { lastname: 'C' }),
        contact('4', { lastname: 'D' }),
      ],
      () => undefined,
    );
    // [1..4] 400, [1,2] 400, [1] 400 -> rejected; the 4th call is throttled: 2, 3, 4 wait.
    expect(next.map((o) => (o.status === 'retry' ? o.kind : o.status))).toEqual(['rejected', 'throttle', 'throttle', 'throttle']);
    await advance(s, 10);
    const last = await a.write(
      [contact('2', { lastname: 'B' }), contact('3', { lastname: 'C' }), contact('4', { lastname: 'D' })],
      () => undefined,
    );
    expect(last.map((o) => o.status)).toEqual(['done', 'done', 'done']);
    expect((await records(s, 'contacts')).map((r) => r.erp_id)).toEqual(['2', '3', '4']);
  });

  it('parses the rate headers of every response into signals', async () => {
    const s = await start({ limit: { requests: 5, windowSeconds: 10 }, daily: 1000 });
    const a = adapter(s);
    const signals: RateSignal[] = [];
    await a.write([contact('1', { lastname: 'A' })], (x) => signals.push(x));
    await a.write([contact('2', { lastname: 'B' })], (x) => signals.push(x));
    expect(signals).toEqual([
      { remaining: 4, dailyRemaining: 999 },
      { remaining: 3, dailyRemaining: 998 },
    ]);
  });

  it('throttled: signals throttled with the 10 s interval and returns RATE_LIMITED retries', async () => {
    const s = await start({ limit: { requests: 1, windowSeconds: 10 } });
    const a = adapter(s);
    await a.ping();
    const signals: RateSignal[] = [];
    const out = await a.write([contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' })], (x) => signals.push(x));
    expect(out).toEqual([
      {
        status: 'retry',
        code: 'RATE_LIMITED',
        kind: 'throttle',
        message: expect.stringContaining('TEN_SECONDLY_ROLLING'),
        retryAfterSeconds: 10,
      },
      {
        status: 'retry',
        code: 'RATE_LIMITED',
        kind: 'throttle',
        message: expect.stringContaining('TEN_SECONDLY_ROLLING'),
        retryAfterSeconds: 10,
      },
    ]);
    expect(signals).toEqual([{ remaining: 0, dailyRemaining: 249_999, throttled: true, retryAfterSeconds: 10 }]);
    await advance(s, 10);
    expect((await a.write([contact('1', { lastname: 'A' })], () => undefined))[0]?.status).toBe('done');
  });

  it('daily limit: waits until the documented reset in the account time zone (resetsAt), not 00:00 UTC', async () => {
    // Honolulu (UTC-10): the reset is at 10:00 UTC, never at 00:00 UTC.
    const s = await start({ daily: 3, timeZone: 'Pacific/Honolulu' });
    const a = adapter(s);
    const signals: RateSignal[] = [];
    expect((await a.write([contact('1', { lastname: 'A' })], (x) => signals.push(x)))[0]?.status).toBe('done');
    let outcome: WriteOutcome | undefined;
    for (let i = 2; i < 6 && (outcome === undefined || outcome.status === 'done'); i++)
      [outcome] = await a.write([contact(String(i), { lastname: 'B' })], (x) => signals.push(x));
    expect(outcome).toMatchObject({ status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', message: expect.stringContaining('DAILY') });
    const wait = (outcome as { retryAfterSeconds: number }).retryAfterSeconds;
    const expected = Math.ceil((nextMidnight(Date.now(), 'Pacific/Honolulu') - Date.now()) / 1000);
    expect(Math.abs(wait - expected)).toBeLessThanOrEqual(2);
    expect(signals.at(-1)).toMatchObject({ throttled: true, retryAfterSeconds: wait });
    // Read once, while calls still got through, and reported as a call cost() did not count.
    expect(signals.filter((x) => x.extraRequests === 1)).toHaveLength(1);
    expect((await stats(s)).byEndpoint['GET /account-info/v3/api-usage/daily/private-apps']).toBe(1);
  });

  it('daily limit: resetsAt is cached until it passes, then read again; without the usage API the wait is until 00:00 UTC', async () => {
    const s = await start({ timeZone: 'Asia/Tokyo' });
    const daily429 = () => ({
      status: 429,
      headers: { 'content-type': 'application/json' },
      text: JSON.stringify({
        status: 'error',
        message: 'You have reached your daily limit.',
        errorType: 'RATE_LIMIT',
        policyName: 'DAILY',
      }),
    });
    proxy = await startAnswerProxy(s.url, [{ match: /^POST \/crm\/v3\/objects\/contacts\/batch\/upsert/, times: 10, answer: daily429 }]);
    let clock = Date.now();
    const a = adapter({ ...s, url: proxy.url }, 'sim-token', undefined, () => clock);
    const usageCalls = async () => (await stats(s)).byEndpoint['GET /account-info/v3/api-usage/daily/private-apps'] ?? 0;
    const waitOf = async () =>
      ((await a.write([contact('1', { lastname: 'A' })], () => undefined))[0] as { retryAfterSeconds: number }).retryAfterSeconds;
    const first = await waitOf();
    // Tokyo (UTC+9) midnight is 15:00 UTC.
    expect(new Date(clock + first * 1000).getUTCHours()).toBe(15);
    expect(await usageCalls()).toBe(1);
    expect(Math.abs((await waitOf()) - first)).toBeLessThanOrEqual(1);
    expect(await usageCalls()).toBe(1); // cached
    // Past the reset the next DAILY 429 reads it again: a day later.
    clock += first * 1000 + 1000;
    await advance(s, Math.ceil((clock - Date.now()) / 1000));
    const again = await waitOf();
    expect(await usageCalls()).toBe(2);
    expect(again).toBeGreaterThan(86_000);
    expect(again).toBeLessThanOrEqual(86_400);
    // No usage API (e.g. an OAuth app, or the scope missing): the UTC-midnight guess.
    await proxy.close();
    proxy = await startAnswerProxy(s.url, [
      { match: /^POST \/crm\/v3\/objects\/contacts\/batch\/upsert/, answer: daily429 },
      {
        match: /^GET \/account-info\//,
        answer: () => ({
          status: 403,
          headers: { 'content-type': 'application/json' },
          text: JSON.stringify({ status: 'error', category: 'MISSING_SCOPES', message: 'missing scopes' }),
        }),
      },
    ]);
    const c = adapter({ ...s, url: proxy.url });
    const before = Date.now();
    const [guess] = await c.write([contact('1', { lastname: 'A' })], () => undefined);
    const toMidnight = Math.ceil(((Math.floor(before / 86_400_000) + 1) * 86_400_000 - before) / 1000);
    expect(Math.abs((guess as { retryAfterSeconds: number }).retryAfterSeconds - toMidnight)).toBeLessThanOrEqual(2);
    expect(proxy.hits).toEqual([1, 1]);
  });

  it('Retry-After, should HubSpot send one, is read by the shared parser: seconds or an HTTP-date; negative or non-finite ignored', () => {
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    expect(retryAfterOf({ status: 429, headers: { 'retry-after': '7' }, body: {} }, now)).toBe(7);
    expect(retryAfterOf({ status: 429, headers: { 'retry-after': 'Thu, 01 Jan 2026 12:02:00 GMT' }, body: {} }, now)).toBe(120);
    expect(retryAfterOf({ status: 429, headers: { 'retry-after': '-5' }, body: {} }, now)).toBe(10);
    expect(retryAfterOf({ status: 429, headers: { 'retry-after': '1e999' }, body: {} }, now)).toBe(10);
    expect(retryAfterOf({ status: 429, headers: {}, body: { policyName: 'DAILY' } }, Date.UTC(2026, 0, 1, 23, 59, 0))).toBe(60);
    expect(retryAfterOf({ status: 429, headers: {}, body: { policyName: 'DAILY' } }, now, Date.UTC(2026, 0, 2, 5, 0, 0))).toBe(17 * 3600);
  });

  it('preflight (pg2crm check): every idProperty must have unique values; says which and how to fix it', async () => {
    const s = await start({ properties: { contacts: { erp_ref: { hasUniqueValue: false } } } });
    const a = adapter(s);
    const checks = await a.preflight([
      { object: 'contacts', externalIdField: 'erp_id' },
      { object: 'deals', externalIdField: 'erp_order_id' },
      { object: 'contacts', externalIdField: 'erp_id' },
      { object: 'contacts', externalIdField: 'erp_ref' },
      { object: 'deals', externalIdField: 'erp_nope' },
    ]);
    expect(checks.map((c) => [c.name, c.ok])).toEqual([
      ['HubSpot idProperty contacts.erp_id', true],
      ['HubSpot idProperty deals.erp_order_id', true],
      ['HubSpot idProperty contacts.erp_ref', false],
      ['HubSpot idProperty deals.erp_nope', false],
      ['HubSpot daily limit reset', true],
    ]);
    expect(checks[2]!.detail).toMatch(
      /hasUniqueValue false.*make erp_ref a unique-value property in HubSpot settings .*or choose another idProperty/,
    );
    expect(checks[3]!.detail).toMatch(/deals has no property erp_nope .*make erp_nope a unique-value property/);
    expect(checks[4]!.detail).toMatch(/^resets at \d{4}-\d\d-\d\dT00:00:00\.000Z/);
  });

  it('a write by a non-unique idProperty stops the connector with the fix (no dead letters, no bisect)', async () => {
    const s = await start({ properties: { contacts: { erp_ref: { hasUniqueValue: false } } } });
    const a = adapter(s);
    const byRef = (id: string): CrmWrite => ({
      op: 'upsert',
      object: 'contacts',
      externalIdField: 'erp_ref',
      externalId: id,
      fields: { lastname: id },
    });
    const signals: RateSignal[] = [];
    await expect(a.write([byRef('1'), byRef('2'), byRef('3')], (x) => signals.push(x))).rejects.toMatchObject({
      code: 'HUBSPOT_ID_PROPERTY_NOT_UNIQUE',
      retriable: false,
      message: expect.stringContaining('make erp_ref a unique-value property in HubSpot settings or choose another idProperty'),
    });
    expect((await stats(s)).requests).toBe(2); // the upsert and the property definition
    expect(signals.filter((x) => x.extraRequests === 1)).toHaveLength(1);
    expect(await records(s, 'contacts')).toHaveLength(0);
    // A lookup whose target is found by that property: the batch/read fails the same way (the definition is cached).
    const order: CrmWrite = {
      ...deal('7', '1'),
      lookups: { contact: { object: 'contacts', externalIdField: 'erp_ref', externalId: '1' } },
    };
    await expect(a.write([order], () => undefined)).rejects.toMatchObject({ code: 'HUBSPOT_ID_PROPERTY_NOT_UNIQUE', retriable: false });
    expect((await stats(s)).requests).toBe(3);
  });

  it('deletes by external id (read ids, then archive), mixed with upserts in one call; unknown ids are done', async () => {
    const s = await start();
    const a = adapter(s);
    await a.write([contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' })], () => undefined);
    // A fresh adapter has no cached ids: it reads them by idProperty first.
    const b = adapter(s);
    const writes = [removeContact('1'), contact('3', { lastname: 'C' }), removeContact('404')];
    const cost = b.cost(writes);
    expect(cost).toBe(3); // batch/read + batch/upsert + batch/archive
    const before = (await stats(s)).requests;
    const out = await b.write(writes, () => undefined);
    expect(out.map((o) => o.status)).toEqual(['done', 'done', 'done']);
    expect((await stats(s)).requests - before).toBe(cost);
    expect((await records(s, 'contacts')).map((r) => r.erp_id).sort()).toEqual(['2', '3']);
    // The adapter that wrote record 2 knows its id: deleting it costs one call.
    expect(a.cost([removeContact('2')])).toBe(1);
    expect((await a.write([removeContact('2')], () => undefined))[0]?.status).toBe('done');
    expect((await stats(s)).recordsDeleted).toBe(2);
  });

  it('lookups: a deal waits for its contact, then is upserted and associated (deal -> contact, type 3)', async () => {
    const s = await start();
    const a = adapter(s);
    expect(a.cost([deal('7', '5')])).toBe(3); // read contact id + upsert + association
    expect((await a.write([deal('7', '5')], () => undefined))[0]).toMatchObject({
      status: 'retry',
      code: 'LOOKUP_PENDING',
      kind: 'pending',
    });
    expect(await records(s, 'deals')).toHaveLength(0);
    await a.write([contact('5', { lastname: 'E' })], () => undefined);
    const contactId = String((await records(s, 'contacts'))[0]!.id);
    const cost = a.cost([deal('7', '5'), deal('8', '5')]);
    expect(cost).toBe(2); // the contact id is cached since its upsert
    const before = (await stats(s)).requests;
    const out = await a.write([deal('7', '5'), deal('8', '5')], () => undefined);
    expect(out.map((o) => o.status)).toEqual(['done', 'done']);
    expect((await stats(s)).requests - before).toBe(cost);
    const deals = await records(s, 'deals');
    expect(deals.map((d) => ({ erp_order_id: d.erp_order_id, dealname: d.dealname }))).toEqual([
      { erp_order_id: '7', dealname: 'Order 7' },
      { erp_order_id: '8', dealname: 'Order 8' },
    ]);
    const links = await records(s, 'associations');
    expect(
      links.map((l) => ({ from: l.fromObjectId, to: l.toObjectId, type: l.associationTypeId, category: l.associationCategory })),
    ).toEqual(deals.map((d) => ({ from: String(d.id), to: contactId, type: 3, category: 'HUBSPOT_DEFINED' })));
    // Updating a deal whose link exists already costs one upsert, no association call.
    expect(a.cost([deal('7', '5', { amount: 20 })])).toBe(1);
    const n = (await stats(s)).requests;
    expect((await a.write([deal('7', '5', { amount: 20 })], () => undefined))[0]?.status).toBe('done');
    expect((await stats(s)).requests - n).toBe(1);
    // A lookup HubSpot has no association type for is rejected with a clear message.
    const odd: CrmWrite = { ...deal('9', '5'), lookups: { x: { object: 'products', externalIdField: 'sku', externalId: '1' } } };
    expect((await a.write([odd], () => undefined))[0]).toMatchObject({ status: 'rejected', code: 'HUBSPOT_NO_ASSOCIATION_TYPE' });
    // Archiving the contact removes its associations, as in HubSpot.
    expect((await a.write([removeContact('5')], () => undefined))[0]?.status).toBe('done');
    expect(await records(s, 'associations')).toHaveLength(0);
  });

  it('adapters of one process (one per credential) share what they know of links and ids; forget() drops it', async () => {
    const s = await start();
    const caches = new CrmCaches();
    const [a, b] = [adapter(s, 'sim-token', caches), adapter(s, 'sim-token', caches)];
    const order = (customer: string, previous?: string): CrmWrite => companyDeal('9', customer, previous);
    await a.write([company('A'), company('B')], () => undefined);
    const companyId = new Map((await records(s, 'companies')).map((c) => [String(c.erp_company_id), String(c.id)]));
    const linked = async () =>
      (await records(s, 'associations')).map((l) => (companyId.get('A') === String(l.toObjectId) ? 'A' : 'B')).sort();
    expect((await a.write([order('A')], () => undefined))[0]?.status).toBe('done');
    // The sink spreads calls over the credentials: the move to B goes through the other adapter,
    expect((await b.write([order('B', 'A')], () => undefined))[0]?.status).toBe('done');
    expect(await linked()).toEqual(['B']);
    // ... and the move back through the first, which must not take deal -> A as still linked.
    expect((await a.write([order('A', 'B')], () => undefined))[0]?.status).toBe('done');
    expect(await linked()).toEqual(['A']);
    // Known link and ids: an unchanged write is the upsert alone; after forget() (a rebalance)
    // the target is read and the link made again.
    expect(a.cost([order('A')])).toBe(1);
    b.forget();
    expect(a.cost([order('A')])).toBe(3);
  });

  it('a rebalance dropping the id cache in the middle of a call does not turn a delete into "already gone"', async () => {
    const s = await start();
    const a = adapter(s);
    await a.write([contact('1', { lastname: 'One' })], () => undefined);
    // Upsert 2, then delete 1 by its cached id: the cache is dropped when the upsert answers.
    const outcomes = await a.write([contact('2', { lastname: 'Two' }), removeContact('1')], () => a.forget());
    expect(outcomes.map((o) => o.status)).toEqual(['done', 'done']);
    expect((await records(s, 'contacts')).map((r) => r.erp_id)).toEqual(['2']);
  });

  it('a lookup that moved (previousExternalId) removes the old association only, once the new one exists', async () => {
    const s = await start();
    const a = adapter(s);
    const order = (customer: string, previous?: string): CrmWrite => companyDeal('7', customer, previous);
    await a.write([company('A'), company('B'), company('C')], () => undefined);
    const companyId = new Map((await records(s, 'companies')).map((c) => [String(c.erp_company_id), String(c.id)]));
    expect((await a.write([order('A')], () => undefined))[0]?.status).toBe('done');
    const dealId = String((await records(s, 'deals'))[0]!.id);
    // A link made by hand in HubSpot (deal -> company C) is not pg2crm's to remove.
    expect(
      (
        await call(s, 'POST', '/crm/v4/associations/deals/companies/batch/create', {
          inputs: [
            {
              from: { id: dealId },
              to: { id: companyId.get('C') },
              types: [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 341 }],
            },
          ],
        })
      ).status,
    ).toBe(201);
    const linked = async () =>
      (await records(s, 'associations'))
        .map((l) => `${String(l.fromObjectType)}:${String(l.fromObjectId)}->${String(l.toObjectType)}:${String(l.toObjectId)}`)
        .sort();
    const dealTo = (c: string) => `deals:${dealId}->companies:${companyId.get(c)!}`;
    expect(await linked()).toEqual([dealTo('A'), dealTo('C')].sort());

    // A fresh adapter (nothing cached) reads both companies' ids in one call, then upsert, create, archive.
    const b = adapter(s);
    const moved = order('B', 'A');
    const cost = b.cost([moved]);
    expect(cost).toBe(4);
    const before = (await stats(s)).requests;
    expect((await b.write([moved], () => undefined))[0]).toMatchObject({ status: 'done', crmId: dealId, created: false });
    expect((await stats(s)).requests - before).toBe(cost);
    expect(await linked()).toEqual([dealTo('B'), dealTo('C')].sort());

    // Delivered again: the archive is repeated (HubSpot answers 204 for a pair with no link) and changes nothing.
    expect((await b.write([moved], () => undefined))[0]?.status).toBe('done');
    expect(await linked()).toEqual([dealTo('B'), dealTo('C')].sort());

    // A previous target that is not in HubSpot has no link to remove: no archive call.
    const n = (await stats(s)).requests;
    expect((await b.write([order('A', 'gone')], () => undefined))[0]?.status).toBe('done');
    expect((await stats(s)).requests - n).toBe(3); // read of 'gone' + upsert + create deal -> A
    expect(await linked()).toEqual([dealTo('A'), dealTo('B'), dealTo('C')].sort());
    // The adapter's link cache follows the moves: back to B costs upsert + create + archive.
    expect(b.cost([order('B', 'A')])).toBe(3);
    expect((await b.write([order('B', 'A')], () => undefined))[0]?.status).toBe('done');
    expect(await linked()).toEqual([dealTo('B'), dealTo('C')].sort());

    // Stale targets only (a redelivered window may have linked B; this write points to A): B's link is archived too.
    const back: CrmWrite = {
      ...order('A'),
      lookups: { company: { ...order('A').lookups!.company!, staleExternalIds: ['A', 'B', 'gone'] } },
    };
    expect((await b.write([back], () => undefined))[0]?.status).toBe('done');
    expect(await linked()).toEqual([dealTo('A'), dealTo('C')].sort());
  });

  it('a lookup whose column became NULL archives the link to its previous target only; without previousExternalId no call', async () => {
    const s = await start();
    const a = adapter(s);
    const order = companyDeal;
    await a.write([company('A'), company('C')], () => undefined);
    const companyId = new Map((await records(s, 'companies')).map((c) => [String(c.erp_company_id), String(c.id)]));
    expect((await a.write([order('7', 'A')], () => undefined))[0]?.status).toBe('done');
    const dealId = String((await records(s, 'deals'))[0]!.id);
    // A link made by hand in HubSpot (deal -> company C) is not pg2crm's to remove.
    await call(s, 'POST', '/crm/v4/associations/deals/companies/batch/create', {
      inputs: [
        {
          from: { id: dealId },
          to: { id: companyId.get('C') },
          types: [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 341 }],
        },
      ],
    });
    const linked = async () =>
      (await records(s, 'associations'))
        .map((l) => `${String(l.fromObjectType)}:${String(l.fromObjectId)}->${String(l.toObjectType)}:${String(l.toObjectId)}`)
        .sort();
    const dealTo = (c: string) => `deals:${dealId}->companies:${companyId.get(c)!}`;
    expect(await linked()).toEqual([dealTo('A'), dealTo('C')].sort());

    // Fresh adapter: read the previous target's id, upsert, archive deal -> A. No read of a
    // target, no association create, no LOOKUP_PENDING.
    const b = adapter(s);
    const cleared = order('7', null, 'A');
    expect(b.cost([cleared])).toBe(3);
    let before = (await stats(s)).requests;
    expect((await b.write([cleared], () => undefined))[0]).toMatchObject({ status: 'done', crmId: dealId, created: false });
    expect((await stats(s)).requests - before).toBe(3);
    expect(await linked()).toEqual([dealTo('C')]);

    // Without previousExternalId nothing can be told apart from hand-made links: the upsert only,
    // and the old link stays (REPLICA IDENTITY FULL is what avoids this).
    expect((await b.write([order('7', 'A')], () => undefined))[0]?.status).toBe('done');
    expect(await linked()).toEqual([dealTo('A'), dealTo('C')].sort());
    expect(b.cost([order('7', null)])).toBe(1);
    before = (await stats(s)).requests;
    expect((await b.write([order('7', null)], () => undefined))[0]?.status).toBe('done');
    expect((await stats(s)).requests - before).toBe(1);
    expect(await linked()).toEqual([dealTo('A'), dealTo('C')].sort());

    // One batch: a create with a null lookup (even with a previous target: a new record has no
    // links), deal 7 cleared from A, and deal 9 -> A. One upsert, one create, one archive.
    const c = adapter(s);
    const batch = [order('8', null, 'A'), order('7', null, 'A'), order('9', 'A')];
    expect(c.cost(batch)).toBe(4); // + the read of A, shared by all three
    before = (await stats(s)).requests;
    const out = await c.write(batch, () => undefined);
    expect(out.map((o) => [o.status, o.status === 'done' ? o.created : undefined])).toEqual([
      ['done', true],
      ['done', false],
      ['done', true],
    ]);
    expect((await stats(s)).requests - before).toBe(4);
    const deals = new Map((await records(s, 'deals')).map((d) => [String(d.erp_order_id), String(d.id)]));
    expect(await linked()).toEqual([dealTo('C'), `deals:${deals.get('9')!}->companies:${companyId.get('A')!}`].sort());
  });

  describe("answers that are not HubSpot's (HTML, truncated JSON, empty)", () => {
    const KINDS = ['html', 'truncated', 'empty'] as const;
    const badResponse = { status: 'retry', code: 'CRM_BAD_RESPONSE', kind: 'bad-response' };
    const garbage = (s: CrmSimulator, kind: (typeof KINDS)[number], status?: number) =>
      call(s, 'POST', '/__sim/faults', { garbage: { requests: 1, kind, ...(status !== undefined ? { status } : {}) } });
    /** An adapter talking to the simulator through a proxy that answers `match` itself, once. */
    async function through(s: CrmSimulator, match: RegExp, kind: (typeof KINDS)[number], status = 200): Promise<HubSpotAdapter> {
      proxy = await startAnswerProxy(s.url, [{ match, answer: () => ({ ...GARBAGE[kind], status }) }]);
      return adapter({ ...s, url: proxy.url });
    }

    it.each([...KINDS.map((k) => [k, 200] as const), ['html', 207] as const, ['truncated', 207] as const])(
      'batch/upsert answered %s with HTTP %i: every record is a CRM_BAD_RESPONSE retry',
      async (kind, status) => {
        const s = await start();
        const a = adapter(s);
        await garbage(s, kind, status);
        const out = await a.write([contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' })], () => undefined);
        expect(out).toEqual([expect.objectContaining(badResponse), expect.objectContaining(badResponse)]);
        expect(out[0]).toMatchObject({ message: expect.stringMatching(/HubSpot.*batch\/upsert.*HTTP \d{3}.*expected/) });
        expect(await records(s, 'contacts')).toHaveLength(0);
        expect((await a.write([contact('1', { lastname: 'A' })], () => undefined))[0]).toMatchObject({
          status: 'done',
          crmId: expect.stringMatching(/^\d+$/),
        });
      },
    );

    it.each(KINDS)(
      'batch/read answered 200 with %s: the call fails CRM_BAD_RESPONSE; no delete passes for "already gone"',
      async (kind) => {
        const s = await start();
        await adapter(s).write([contact('1', { lastname: 'A' })], () => undefined);
        const b = adapter(s); // no cached ids: reads them first
        await garbage(s, kind);
        await expect(b.write([removeContact('1')], () => undefined)).rejects.toMatchObject({
          code: 'CRM_BAD_RESPONSE',
          retriable: true,
          message: expect.stringContaining('batch/read'),
        });
        expect(await records(s, 'contacts')).toHaveLength(1);
        // A lookup whose read is garbage is not "pending" either.
        await garbage(s, kind);
        await expect(b.write([deal('7', '1')], () => undefined)).rejects.toMatchObject({ code: 'CRM_BAD_RESPONSE' });
        expect(await records(s, 'deals')).toHaveLength(0);
        expect((await b.write([removeContact('1')], () => undefined))[0]?.status).toBe('done');
        expect(await records(s, 'contacts')).toHaveLength(0);
      },
    );

    it.each(KINDS)(
      'association batch/create answered 200 with %s: the record is a CRM_BAD_RESPONSE retry and the link is made on the retry',
      async (kind) => {
        const s = await start();
        await adapter(s).write([contact('5', { lastname: 'E' })], () => undefined);
        const b = await through(s, /^POST \/crm\/v4\/associations\/deals\/contacts\/batch\/create/, kind);
        expect((await b.write([deal('7', '5')], () => undefined))[0]).toMatchObject(badResponse);
        expect(proxy!.hits).toEqual([1]);
        expect(await records(s, 'associations')).toHaveLength(0);
        expect((await b.write([deal('7', '5')], () => undefined))[0]?.status).toBe('done');
        expect(await records(s, 'associations')).toHaveLength(1);
      },
    );

    it.each(KINDS)(
      'association batch/archive answered 200 with %s (documented: 204): the record is a CRM_BAD_RESPONSE retry, the old link stays',
      async (kind) => {
        const s = await start();
        const order = (customer: string | null, previous?: string): CrmWrite => companyDeal('7', customer, previous);
        const a = adapter(s);
        await a.write([company('A')], () => undefined);
        expect((await a.write([order('A')], () => undefined))[0]?.status).toBe('done');
        const b = await through(s, /^POST \/crm\/v4\/associations\/deals\/companies\/batch\/archive/, kind);
        expect((await b.write([order(null, 'A')], () => undefined))[0]).toMatchObject(badResponse);
        expect(await records(s, 'associations')).toHaveLength(1);
        expect((await b.write([order(null, 'A')], () => undefined))[0]?.status).toBe('done');
        expect(await records(s, 'associations')).toHaveLength(0);
      },
    );

    it.each(KINDS)('objects batch/archive answered 200 with %s (documented: 204): the delete is a CRM_BAD_RESPONSE retry', async (kind) => {
      const s = await start();
      await adapter(s).write([contact('1', { lastname: 'A' })], () => undefined);
      const b = await through(s, /^POST \/crm\/v3\/objects\/contacts\/batch\/archive/, kind);
      expect((await b.write([removeContact('1')], () => undefined))[0]).toMatchObject(badResponse);
      expect(await records(s, 'contacts')).toHaveLength(1);
      expect((await b.write([removeContact('1')], () => undefined))[0]?.status).toBe('done');
      expect(await records(s, 'contacts')).toHaveLength(0);
    });

    it('a batch/upsert answer that names an input neither in results nor in errors leaves that record a CRM_BAD_RESPONSE retry', async () => {
      const s = await start();
      proxy = await startAnswerProxy(s.url, [
        {
          match: /^POST \/crm\/v3\/objects\/contacts\/batch\/upsert/,
          forward: true,
          answer: (real) => {
            const body = JSON.parse(real!.text) as { results: { objectWriteTraceId?: string }[] };
            return { ...real!, text: JSON.stringify({ ...body, results: body.results.filter((r) => r.objectWriteTraceId !== '1') }) };
          },
        },
      ]);
      const a = adapter({ ...s, url: proxy.url });
      const out = await a.write(
        [contact('1', { lastname: 'A' }), contact('2', { lastname: 'B' }), contact('3', { lastname: 'C' })],
        () => undefined,
      );
      expect(out.map((o) => o.status)).toEqual(['done', 'retry', 'done']);
      expect(out[1]).toMatchObject({ ...badResponse, message: expect.stringContaining('input 1') });
    });

    it.each(KINDS)('ping() (pg2crm check) fails on a 200 with %s', async (kind) => {
      const s = await start();
      await expectPingFailsOnGarbage(s, adapter(s), kind, '/crm/v3/objects/contacts');
    });
  });

  it('throws a retriable error for 5xx and a permanent CRM_AUTH for a bad token', async () => {
    const s = await start();
    await call(s, 'POST', '/__sim/faults', { errors5xx: { requests: 1, status: 503 } });
    const a = adapter(s);
    await expect(a.write([contact('1', { lastname: 'A' })], () => undefined)).rejects.toMatchObject({ code: 'HTTP_503', retriable: true });
    const bad = adapter(s, 'wrong');
    await expect(bad.ping()).rejects.toMatchObject({
      code: 'CRM_AUTH',
      retriable: false,
      message: 'HubSpot rejected the token (HTTP 401); check crm.auth.token',
    });
    await expect(bad.write([contact('1', { lastname: 'A' })], () => undefined)).rejects.toMatchObject({
      code: 'CRM_AUTH',
      retriable: false,
    });
  });
});
