import { randomUUID } from 'node:crypto';
import type { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError, errorMessage } from '../../errors.ts';
import { type CrmAdapter, type CrmTarget, type CrmWrite, type RateSignal, retryOutcomeOf, type WriteOutcome } from '../crm-adapter.ts';
import { CrmCaches, remember } from '../crm-caches.ts';
import { badResponse, crmPool, header, isObject, parseRetryAfter, type RetryOutcome, sendJson, ThrottledCall, throttled } from '../http.ts';
import { tokenProviderFor } from '../auth/oauth-flows.ts';
import { type TokenProvider, withToken } from '../auth/token-provider.ts';

/**
 * Zendesk Sell API v2 adapter. Sell has no bulk write endpoint, so each record is one request:
 * `POST /v2/<object>/upsert?<externalIdFilter>` (a delete first finds the record by its
 * external id, then `DELETE /v2/<object>/<id>`). Lookups (a deal's contact_id) resolve the
 * other record's Sell id by its external id, cached.
 *
 * The records of one `write` call are sent one after another in order: they may be several
 * changes to the same record, whose order matters. The sink runs calls for different records
 * concurrently, up to `limits.concurrency`.
 *
 * A search by external id is trusted only when its hits hold that value: a custom field that is
 * not marked Filterable in Sell may not filter at all (the custom fields page,
 * https://developer.zendesk.com/api-reference/sales-crm/resources/custom-fields/, exposes no
 * filterable flag, so `preflight` probes it), and the first hit of an unfiltered list is somebody
 * else's record — a delete would remove it, a lookup would link to it.
 */

interface SellResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** A 429: the outcome of the record it refused, already signalled to the budget. */
  throttle?: RetryOutcome;
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

/** The id of a `{data: {id}}` resource, or undefined when the body is not one. */
function resourceId(body: unknown): number | undefined {
  const id = isObject(body) && isObject(body.data) ? body.data.id : undefined;
  return typeof id === 'number' && Number.isSafeInteger(id) ? id : undefined;
}

interface Hit {
  id: number;
  data: Record<string, unknown>;
}

/** The records of a `{items: [{data: {id, ...}}]}` collection, in order, or undefined when the body is not one. */
function collectionItems(body: unknown): Hit[] | undefined {
  if (!isObject(body) || !Array.isArray(body.items)) return undefined;
  const hits: Hit[] = [];
  for (const item of body.items) {
    const id = resourceId(item);
    if (id === undefined) return undefined;
    hits.push({ id, data: (item as { data: Record<string, unknown> }).data });
  }
  return hits;
}

/** A record's value of a field as pg2crm names it (`custom_fields.erp_id` or a plain attribute). */
function fieldValue(data: Record<string, unknown>, field: string): unknown {
  const cf = /^custom_fields\.(.+)$/.exec(field);
  if (!cf) return data[field];
  const custom = data.custom_fields;
  return isObject(custom) ? custom[cf[1]!] : undefined;
}

/** Sell's largest page (`per_page` at most 100). */
const LIST_PAGE = 100;

/** The record's values of `fields`, as pg2crm names them. */
function pick(data: Record<string, unknown>, fields: string[]): Record<string, unknown> {
  return Object.fromEntries(fields.map((f) => [f, fieldValue(data, f)]));
}

/** A custom field as GET /v2/:resource_type/custom_fields describes it (the parts read here). */
interface CustomField {
  name: string;
  type?: unknown;
}

/** `contacts` -> `contact`: the resource type of the custom fields API (GET /v2/:resource_type/custom_fields). */
const RESOURCE_TYPES: Record<string, string> = { contacts: 'contact', leads: 'lead', deals: 'deal' };

/**
 * The fix named to operators. Only Sell's settings can change it: the custom fields API neither
 * creates fields ("You can't create new custom fields via the API") nor shows the flag.
 */
const FILTERABLE_FIX = "mark it Filterable in Zendesk Sell's custom field settings";

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

/**
 * The wait after a 429 when no Retry-After header names one (`throttled` reads that first:
 * seconds or an HTTP-date; Zendesk's rate-limits page documents it in seconds): the body's
 * `retry_after` (field report), else 60 s. Sell's own rate-limits page documents neither, only the 429.
 */
function documentedWait(body: unknown): number {
  return parseRetryAfter((isObject(body) ? body.retry_after : undefined) as string | number | undefined) ?? 60;
}

export class ZendeskSellAdapter implements CrmAdapter {
  readonly kind = 'zendesk-sell';
  private readonly pool: Pool;
  /** The credential's token: a personal access token (static) or an OAuth token, refreshed. */
  private readonly auth: TokenProvider;
  private readonly timeoutMs: number;
  private readonly caches: CrmCaches;
  /** object, external id -> Sell id (shared by the process's adapters, see crm-caches.ts). */
  private readonly ids: Map<string, number>;

  constructor(config: CrmConfig, caches: CrmCaches = new CrmCaches()) {
    this.caches = caches;
    this.ids = caches.map('zendesk-sell.ids');
    const base = new URL(config.baseUrl);
    this.pool = crmPool(base.origin, config.tls, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    this.auth = tokenProviderFor(config, config.auth);
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
        for (const l of Object.values(r.lookups ?? {}))
          if (l.externalId !== null && !this.ids.has(this.cacheKey(l.object, l.externalId))) n += 1;
      }
    }
    return n;
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', '/v2/users/self', undefined, () => undefined);
    if (res.status !== 200)
      throw new ConnectorError('CRM_PING', `Zendesk Sell answered HTTP ${res.status} to GET /v2/users/self; check crm.baseUrl`);
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
          return (
            id ?? {
              status: 'retry',
              code: 'LOOKUP_PENDING',
              kind: 'pending',
              message: `${l.object} with ${l.externalIdField}=${l.externalId} is not in Zendesk Sell yet`,
            }
          );
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
      return retryOutcomeOf(err) ?? { status: 'retry', code: 'NETWORK', message: errorMessage(err) };
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

  /**
   * The Sell id of the one record with this external id; undefined when none; an outcome on
   * failure or when several records hold it. Throws CRM_FILTER_IGNORED (permanent: the connector
   * stops) when a hit does not hold the value: the filter did not filter.
   */
  private async find(
    object: string,
    field: string,
    externalId: string,
    onSignal: (s: RateSignal) => void,
  ): Promise<number | undefined | WriteOutcome> {
    const cached = this.ids.get(this.cacheKey(object, externalId));
    if (cached !== undefined) return cached;
    const res = await this.request('GET', `/v2/${object}?${filterParam(field, externalId)}`, undefined, onSignal);
    if (res.status !== 200) return this.failure(res);
    // Not an empty list: a garbage answer must not make a delete "already gone" or a lookup pending.
    const hits = collectionItems(res.body);
    if (hits === undefined) return this.badAnswer(`GET /v2/${object} by ${field}`, res, COLLECTION);
    const other = hits.find((h) => String(fieldValue(h.data, field) ?? '') !== externalId);
    if (other) {
      // Every later search of this object would do the same: stopping keeps the records in
      // Kafka until the field filters, where dead-lettering would take every delete and lookup
      // of the object (and then need a replay). An ignored filter also leaves the list
      // unfiltered and paginated: "no hit equal to the value" would not mean "not in Sell".
      throw new ConnectorError(
        'CRM_FILTER_IGNORED',
        `Zendesk Sell did not filter ${object} by ${field}: searching ${field}=${externalId} returned ${object} ${other.id} holding ${JSON.stringify(fieldValue(other.data, field) ?? null)}; ` +
          `nothing was written or deleted. The field must filter exactly: ${FILTERABLE_FIX}, then restart (pg2crm check verifies it)`,
        { retriable: false },
      );
    }
    if (hits.length > 1) {
      return {
        status: 'rejected',
        code: 'DUPLICATE_EXTERNAL_ID',
        message: `${hits.length} ${object} in Zendesk Sell hold ${field}=${externalId} (ids ${hits.map((h) => h.id).join(', ')}); merge or delete the duplicates in Sell, then replay this dead letter`,
      };
    }
    const id = hits[0]?.id;
    if (id !== undefined) this.remember(object, externalId, id);
    return id;
  }

  /**
   * `pg2crm check`: every external-id field the mappings and lookups search by must exist and
   * must filter. Sell's custom fields API lists the fields (GET /v2/:resource_type/custom_fields)
   * but has no filterable flag, so a probe searches for a value no record holds: a filter that
   * works answers no hit; one that is ignored answers the unfiltered list.
   */
  async preflight(targets: CrmTarget[]): Promise<{ name: string; ok: boolean; detail: string }[]> {
    const out: { name: string; ok: boolean; detail: string }[] = [];
    const fieldsOf = new Map<string, Promise<CustomField[] | string>>();
    for (const t of targets) {
      const name = `Zendesk Sell ${t.object} searchable by ${t.externalIdField}`;
      try {
        out.push({ name, ...(await this.checkTarget(t, fieldsOf)) });
      } catch (err) {
        if (err instanceof ConnectorError && err.code === 'CRM_AUTH') throw err;
        out.push({ name, ok: false, detail: errorMessage(err) });
      }
    }
    return out;
  }

  private async checkTarget(
    t: CrmTarget,
    fieldsOf: Map<string, Promise<CustomField[] | string>>,
  ): Promise<{ ok: boolean; detail: string }> {
    const resourceType = RESOURCE_TYPES[t.object];
    if (!resourceType) return { ok: false, detail: `Zendesk Sell has no object ${t.object} pg2crm writes; use contacts, leads or deals` };
    const cf = /^custom_fields\.(.+)$/.exec(t.externalIdField);
    let found = '';
    if (cf) {
      let fields = fieldsOf.get(resourceType);
      if (!fields) fieldsOf.set(resourceType, (fields = this.customFields(resourceType)));
      const list = await fields;
      if (typeof list === 'string') return { ok: false, detail: list };
      const field = list.find((f) => f.name === cf[1]);
      if (!field) {
        const names = list.map((f) => f.name).join(', ') || 'none';
        return {
          ok: false,
          detail: `custom field ${cf[1]} is not defined on ${resourceType} (defined: ${names}); create it in Zendesk Sell as a text field and ${FILTERABLE_FIX}`,
        };
      }
      found = `custom field ${cf[1]} (type ${String(field.type)}) exists; `;
    }
    const probe = `pg2crm-filter-probe-${randomUUID()}`;
    const filtered = await this.list(`/v2/${t.object}?${filterParam(t.externalIdField, probe)}&per_page=1`);
    if (typeof filtered === 'string') return { ok: false, detail: filtered };
    if (filtered.length > 0) {
      return {
        ok: false,
        detail: `${found}searching ${t.externalIdField}=<a value no record holds> returned ${t.object} ${filtered[0]!.id}: Sell ignored the filter, so lookups and deletes cannot find records by it; ${FILTERABLE_FIX}`,
      };
    }
    const any = await this.list(`/v2/${t.object}?per_page=1`);
    if (typeof any === 'string') return { ok: false, detail: any };
    if (any.length === 0) {
      return {
        ok: true,
        detail: `${found}no ${t.object} in Zendesk Sell yet, so whether the filter is honoured could not be probed; make sure the field is Filterable (the connector checks every search hit and stops if the filter is ignored)`,
      };
    }
    return { ok: true, detail: `${found}the filter is honoured (a probe value matched none of the ${t.object})` };
  }

  /** The custom fields of a resource type, or a sentence saying why they could not be read. */
  private async customFields(resourceType: string): Promise<CustomField[] | string> {
    const path = `/v2/${resourceType}/custom_fields`;
    const res = await this.request('GET', path, undefined, () => undefined);
    if (res.status !== 200) return `Zendesk Sell answered HTTP ${res.status} to GET ${path}`;
    const hits = collectionItems(res.body);
    if (hits === undefined) throw badResponse(`Zendesk Sell GET ${path}`, res.status, textOf(res.body), COLLECTION);
    return hits.map((h) => ({ name: String(h.data.name ?? ''), type: h.data.type }));
  }

  /** A list request's records, or a sentence saying why there are none to look at. (`check` has no budget to tell.) */
  private async list(path: string): Promise<Hit[] | string> {
    const res = await this.request('GET', path, undefined, () => undefined);
    if (res.status !== 200) return `Zendesk Sell answered HTTP ${res.status} to GET ${path.split('?')[0]}`;
    const hits = collectionItems(res.body);
    if (hits === undefined) throw badResponse(`Zendesk Sell GET ${path.split('?')[0]}`, res.status, textOf(res.body), COLLECTION);
    return hits;
  }

  /**
   * `pg2crm verify`: Sell filters a list by one custom field value at a time
   * (`GET /v2/<object>?custom_fields[<name>]=<value>`,
   * https://developer.zendesk.com/api-reference/sales-crm/requests/), so one id per read.
   */
  readBatchSize(): number {
    return 1;
  }

  async readByExternalIds(
    target: CrmTarget,
    ids: string[],
    fields: string[],
    onSignal: (s: RateSignal) => void,
  ): Promise<Map<string, Record<string, unknown>>> {
    const out = new Map<string, Record<string, unknown>>();
    for (const id of ids) {
      // per_page=2: a second hit means a duplicate, which the write path rejects too; reported as found here.
      const hits = await this.readList(`/v2/${target.object}?${filterParam(target.externalIdField, id)}&per_page=2`, onSignal);
      const other = hits.find((h) => String(fieldValue(h.data, target.externalIdField) ?? '') !== id);
      if (other) {
        throw new ConnectorError(
          'CRM_FILTER_IGNORED',
          `Zendesk Sell did not filter ${target.object} by ${target.externalIdField} (a search for ${id} returned ${target.object} ${other.id}); ${FILTERABLE_FIX}`,
        );
      }
      if (hits[0]) out.set(id, pick(hits[0].data, fields));
    }
    return out;
  }

  /**
   * Every record page by page, `sort_by=id` so that records written meanwhile (new ids, at the
   * end) do not shift the pages already read: `page` and `per_page` (at most 100) are Sell's
   * pagination, `sort_by` its ordering (https://developer.zendesk.com/api-reference/sales-crm/requests/).
   * Records without the external id are not pg2crm's and are left out.
   */
  async listRecords(target: CrmTarget, fields: string[], cursor: string | undefined, onSignal: (s: RateSignal) => void) {
    const page = Number(cursor ?? 1);
    const hits = await this.readList(`/v2/${target.object}?sort_by=id&page=${page}&per_page=${LIST_PAGE}`, onSignal);
    const records: { externalId: string; fields: Record<string, unknown> }[] = [];
    for (const h of hits) {
      const id = fieldValue(h.data, target.externalIdField);
      if (id !== undefined && id !== null && id !== '') records.push({ externalId: String(id), fields: pick(h.data, fields) });
    }
    return hits.length === LIST_PAGE ? { records, next: String(page + 1) } : { records };
  }

  /** A read's records; a throttle as a ThrottledCall (already signalled), other failures as errors. */
  private async readList(path: string, onSignal: (s: RateSignal) => void): Promise<Hit[]> {
    const res = await this.request('GET', path, undefined, onSignal);
    if (res.throttle) throw new ThrottledCall(res.throttle);
    const what = `Zendesk Sell GET ${path.split('?')[0]}`;
    if (res.status !== 200) {
      throw new ConnectorError(
        res.status >= 500 ? 'CRM_UNAVAILABLE' : 'CRM_CALL',
        `${what} answered HTTP ${res.status}; check crm.baseUrl and the mapping's object`,
        {
          retriable: res.status >= 500,
        },
      );
    }
    const hits = collectionItems(res.body);
    if (hits === undefined) throw badResponse(what, res.status, textOf(res.body), COLLECTION);
    return hits;
  }

  /** A 2xx that is not Sell's documented answer: retry the record, counted as a bad response. */
  private badAnswer(what: string, res: SellResponse, expected: string): WriteOutcome {
    const err = badResponse(`Zendesk Sell ${what}`, res.status, textOf(res.body), expected);
    return { status: 'retry', code: err.code, kind: 'bad-response', message: err.message };
  }

  private failure(res: SellResponse): WriteOutcome {
    const body = res.body as { errors?: SellError[]; retry_after?: number; message?: string } | undefined;
    if (res.throttle) return res.throttle;
    const first = body?.errors?.[0]?.error;
    if (res.status === 422 || res.status === 400 || res.status === 409) {
      const all = (body?.errors ?? []).map((e) => `${e.error?.field ?? ''} ${e.error?.message ?? ''}`.trim()).join('; ');
      return {
        status: 'rejected',
        code: `HTTP_${res.status}_${first?.code ?? 'invalid'}`,
        message: all || `HTTP ${res.status}`,
        ...(first?.field ? { field: first.field } : {}),
      };
    }
    return {
      status: 'retry',
      code: `HTTP_${res.status}`,
      ...(res.status >= 500 ? { kind: 'server' as const } : {}),
      message: first?.message ?? `Zendesk Sell answered HTTP ${res.status}`,
    };
  }

  private async request(method: string, path: string, body: unknown, onSignal: (s: RateSignal) => void): Promise<SellResponse> {
    // An OAuth token past its expiry is answered 401: refreshed once and retried. A personal
    // access token refused, or a fresh OAuth token refused, stops the connector (below, in withToken).
    const out: SellResponse = await withToken(
      this.auth,
      'Zendesk Sell',
      (token) => sendJson(this.pool, { method, path, token: token.value, body, timeoutMs: this.timeoutMs, what: 'Zendesk Sell request' }),
      (res) => res.status === 401,
    );
    if (out.status === 429) {
      // The throttle and its wait say it all. An X-RateLimit-Remaining: 0 beside them would make
      // the budget count its whole window as spent from now: with Sell's documented hourly quota
      // an hour of silence after a 429 whose lockout is seconds.
      const message =
        (isObject(out.body) && typeof out.body.message === 'string' ? out.body.message : undefined) ?? 'API rate limit reached';
      out.throttle = throttled(out.headers, { message, defaultSeconds: documentedWait(out.body), onSignal });
    } else {
      const signal: RateSignal = {};
      // Field report only (Sell documents no rate-limit header): used when present, never needed.
      const remaining = header(out.headers, 'x-ratelimit-remaining')?.trim();
      if (remaining && Number.isFinite(Number(remaining))) signal.remaining = Number(remaining);
      onSignal(signal);
    }
    if (out.status === 401 || out.status === 403) {
      throw new ConnectorError(
        'CRM_AUTH',
        `Zendesk Sell rejected the token of ${this.auth.credential} (HTTP ${out.status}); check ${this.auth.credential}${this.auth.isStatic ? '.token' : ' (the OAuth grant and its scope)'}`,
        { retriable: false },
      );
    }
    return out;
  }

  describeAuth(): string {
    return this.auth.describe();
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
