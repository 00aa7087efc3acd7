import { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError, errorMessage } from '../../errors.ts';
import type { CrmAdapter, CrmWrite, RateSignal, RetryKind, WriteOutcome } from '../crm-adapter.ts';
import { CrmCaches, remember } from '../crm-caches.ts';
import { badResponse, header, sendJson } from '../http.ts';

/**
 * Zendesk Sell API v2 adapter. Sell has no bulk write endpoint, so each record is one request:
 * `POST /v2/<object>/upsert?<externalIdFilter>` (a delete first finds the record by its
 * external id, then `DELETE /v2/<object>/<id>`). Lookups (a deal's contact_id) resolve the
 * other record's Sell id by its external id, cached.
 *
 * The records of one `write` call are sent one after another in order: they may be several
 * changes to the same record, whose order matters. The sink runs calls for different records
 * concurrently, up to `limits.concurrency`.
 */

interface SellResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

interface SellError {
  error?: { code?: string; field?: string; message?: string };
}

/*
 * The documented success answers (https://developer.zendesk.com/api-reference/sales-crm/requests/
 * and the resources' pages, e.g. .../resources/contacts/): a single resource is
 * `{data: {id: <number>, ...}, meta: {type}}` (GET /v2/users/self, POST .../upsert); a collection
 * is `{items: [{data: {id, ...}, meta}], meta}`; DELETE is `204 No Content`. Anything else on a
 * 2xx (an HTML page from a proxy, JSON cut off, an empty body) is not Sell's answer: nothing is
 * known to be written, so it is a retriable CRM_BAD_RESPONSE, never `done`.
 */
const RESOURCE = '{"data":{"id":<number>,…}}';
const COLLECTION = '{"items":[{"data":{"id":<number>,…}},…]}';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The id of a `{data: {id}}` resource, or undefined when the body is not one. */
function resourceId(body: unknown): number | undefined {
  const id = isObject(body) && isObject(body.data) ? body.data.id : undefined;
  return typeof id === 'number' && Number.isSafeInteger(id) ? id : undefined;
}

/** The ids of a `{items: [{data: {id}}]}` collection, in order, or undefined when the body is not one. */
function collectionIds(body: unknown): number[] | undefined {
  if (!isObject(body) || !Array.isArray(body.items)) return undefined;
  const ids: number[] = [];
  for (const item of body.items) {
    const id = resourceId(item);
    if (id === undefined) return undefined;
    ids.push(id);
  }
  return ids;
}

/** The body as the text it came as, for quoting in a CRM_BAD_RESPONSE (sendJson parsed it). */
function textOf(body: unknown): string {
  return body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
}

/** `custom_fields.erp_id` -> `custom_fields[erp_id]`; a plain attribute stays as it is. */
function filterParam(field: string, value: string): string {
  const cf = /^custom_fields\.(.+)$/.exec(field);
  const name = cf ? `custom_fields[${cf[1]}]` : field;
  return `${encodeURIComponent(name)}=${encodeURIComponent(value)}`;
}

/** Mapped fields -> Sell's `data`, custom fields nested under `custom_fields`. */
function toData(fields: Record<string, unknown>): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  const custom: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k.startsWith('custom_fields.')) custom[k.slice('custom_fields.'.length)] = v;
    else data[k] = v;
  }
  if (Object.keys(custom).length) data.custom_fields = custom;
  return data;
}

/** The retry kind of a whole-request error turned into a record's outcome. */
function kindOf(code: string): { kind?: RetryKind } {
  return code === 'CRM_BAD_RESPONSE' ? { kind: 'bad-response' } : {};
}

export class ZendeskSellAdapter implements CrmAdapter {
  readonly kind = 'zendesk-sell';
  private readonly pool: Pool;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly caches: CrmCaches;
  /** object, external id -> Sell id (shared by the process's adapters, see crm-caches.ts). */
  private readonly ids: Map<string, number>;

  constructor(config: CrmConfig, caches: CrmCaches = new CrmCaches()) {
    this.caches = caches;
    this.ids = caches.map('zendesk-sell.ids');
    const base = new URL(config.baseUrl);
    this.pool = new Pool(base.origin, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    this.token = config.auth.token;
    this.timeoutMs = config.timeoutMs;
  }

  forget(): void {
    this.caches.clear();
  }

  maxBatchSize(): number {
    return 1;
  }

  cost(records: CrmWrite[]): number {
    let n = 0;
    for (const r of records) {
      if (r.op === 'delete') n += this.ids.has(this.cacheKey(r.object, r.externalId)) ? 1 : 2;
      else {
        n += 1;
        // A cleared lookup (null) is sent as null: no id lookup to pay for.
        for (const l of Object.values(r.lookups ?? {})) if (l.externalId !== null && !this.ids.has(this.cacheKey(l.object, l.externalId))) n += 1;
      }
    }
    return n;
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', '/v2/users/self', undefined, () => undefined);
    if (res.status !== 200) throw new ConnectorError('CRM_PING', `Zendesk Sell answered HTTP ${res.status} to GET /v2/users/self; check crm.baseUrl`);
    // A proxy or captive portal answering 200 must not pass `pg2crm check`.
    if (resourceId(res.body) === undefined) throw badResponse('Zendesk Sell GET /v2/users/self', res.status, textOf(res.body), RESOURCE);
  }

  async write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]> {
    const out: WriteOutcome[] = [];
    for (const r of records) out.push(await this.writeOne(r, onSignal));
    return out;
  }

  private cacheKey(object: string, externalId: string): string {
    return `${object}\u0000${externalId}`;
  }

  private remember(object: string, externalId: string, id: number): void {
    remember(this.ids, this.cacheKey(object, externalId), id);
  }

  private async writeOne(r: CrmWrite, onSignal: (s: RateSignal) => void): Promise<WriteOutcome> {
    try {
      if (r.op === 'delete') return await this.deleteOne(r, onSignal);
      // The external id is written too, so the record can be found by it (filters match data).
      const data = toData({ ...r.fields, [r.externalIdField]: r.externalId });
      for (const [field, l] of Object.entries(r.lookups ?? {})) {
        if (l.externalId === null) {
          // An upsert changes only the attributes in `data`, so an omitted lookup keeps pointing
          // to the old record; Sell's optional id attributes (a contact's `contact_id`, its
          // organization) are cleared by sending them as null
          // (https://developer.zendesk.com/api-reference/sales-crm/resources/contacts/). A deal's
          // `contact_id` is required, so Sell answers 422 there and the record is dead-lettered.
          data[field] = null;
          continue;
        }
        const id = await this.find(l.object, l.externalIdField, l.externalId, onSignal);
        if (typeof id !== 'number') {
          return id ?? { status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending', message: `${l.object} with ${l.externalIdField}=${l.externalId} is not in Zendesk Sell yet` };
        }
        data[field] = id;
      }
      const res = await this.request('POST', `/v2/${r.object}/upsert?${filterParam(r.externalIdField, r.externalId)}`, { data }, onSignal);
      if (res.status === 200 || res.status === 201) {
        const id = resourceId(res.body);
        if (id === undefined) return this.badAnswer(`POST /v2/${r.object}/upsert`, res, RESOURCE);
        this.remember(r.object, r.externalId, id);
        return { status: 'done', crmId: String(id) };
      }
      return this.failure(res);
    } catch (err) {
      if (err instanceof ConnectorError && !err.retriable) throw err;
      return { status: 'retry', code: err instanceof ConnectorError ? err.code : 'NETWORK', message: errorMessage(err), ...(err instanceof ConnectorError ? kindOf(err.code) : {}) };
    }
  }

  private async deleteOne(r: CrmWrite, onSignal: (s: RateSignal) => void): Promise<WriteOutcome> {
    const id = await this.find(r.object, r.externalIdField, r.externalId, onSignal);
    if (id === undefined) return { status: 'done' }; // already gone
    if (typeof id !== 'number') return id;
    const res = await this.request('DELETE', `/v2/${r.object}/${id}`, undefined, onSignal);
    // Documented: 204. A 200 is some other server's answer (the record may still be there).
    if (res.status === 204 || res.status === 404) {
      this.ids.delete(this.cacheKey(r.object, r.externalId));
      return { status: 'done' };
    }
    if (res.status >= 200 && res.status < 300) return this.badAnswer(`DELETE /v2/${r.object}/${id}`, res, '204 No Content');
    return this.failure(res);
  }

  /** The Sell id of the record with this external id; undefined when none; an outcome on failure. */
  private async find(object: string, field: string, externalId: string, onSignal: (s: RateSignal) => void): Promise<number | undefined | WriteOutcome> {
    const cached = this.ids.get(this.cacheKey(object, externalId));
    if (cached !== undefined) return cached;
    const res = await this.request('GET', `/v2/${object}?${filterParam(field, externalId)}`, undefined, onSignal);
    if (res.status !== 200) return this.failure(res);
    // Not an empty list: a garbage answer must not make a delete "already gone" or a lookup pending.
    const ids = collectionIds(res.body);
    if (ids === undefined) return this.badAnswer(`GET /v2/${object} by ${field}`, res, COLLECTION);
    const id = ids[0];
    if (id !== undefined) this.remember(object, externalId, id);
    return id;
  }

  /** A 2xx that is not Sell's documented answer: retry the record, counted as a bad response. */
  private badAnswer(what: string, res: SellResponse, expected: string): WriteOutcome {
    const err = badResponse(`Zendesk Sell ${what}`, res.status, textOf(res.body), expected);
    return { status: 'retry', code: err.code, kind: 'bad-response', message: err.message };
  }

  private failure(res: SellResponse): WriteOutcome {
    const body = res.body as { errors?: SellError[]; retry_after?: number; message?: string } | undefined;
    if (res.status === 429) {
      const retryAfterSeconds = Number(header(res.headers, 'retry-after') ?? body?.retry_after ?? 60);
      return { status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', message: body?.message ?? 'API rate limit reached', retryAfterSeconds };
    }
    const first = body?.errors?.[0]?.error;
    if (res.status === 422 || res.status === 400 || res.status === 409) {
      const all = (body?.errors ?? []).map((e) => `${e.error?.field ?? ''} ${e.error?.message ?? ''}`.trim()).join('; ');
      return { status: 'rejected', code: `HTTP_${res.status}_${first?.code ?? 'invalid'}`, message: all || `HTTP ${res.status}`, ...(first?.field ? { field: first.field } : {}) };
    }
    return { status: 'retry', code: `HTTP_${res.status}`, ...(res.status >= 500 ? { kind: 'server' as const } : {}), message: first?.message ?? `Zendesk Sell answered HTTP ${res.status}` };
  }

  private async request(method: string, path: string, body: unknown, onSignal: (s: RateSignal) => void): Promise<SellResponse> {
    const out: SellResponse = await sendJson(this.pool, { method, path, token: this.token, body, timeoutMs: this.timeoutMs, what: 'Zendesk Sell request' });
    const remaining = header(out.headers, 'x-ratelimit-remaining');
    const signal: RateSignal = {};
    if (remaining !== undefined && remaining !== '') signal.remaining = Number(remaining);
    if (out.status === 429) {
      signal.throttled = true;
      signal.retryAfterSeconds = Number(header(out.headers, 'retry-after') ?? (out.body as { retry_after?: number } | undefined)?.retry_after ?? 60);
    }
    onSignal(signal);
    if (out.status === 401 || out.status === 403) {
      throw new ConnectorError('CRM_AUTH', `Zendesk Sell rejected the API token (HTTP ${out.status}); check crm.auth.token`, { retriable: false });
    }
    return out;
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
