import type { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError } from '../../errors.ts';
import { badResponse, crmPool, header, isObject, sendJson, ThrottledCall, throttleWait, throttled } from '../http.ts';
import { tokenProviderFor } from '../auth/oauth-flows.ts';
import { type TokenProvider, withToken } from '../auth/token-provider.ts';
import type { CrmAdapter, CrmLookup, CrmTarget, CrmWrite, RateSignal, WriteOutcome } from '../crm-adapter.ts';
import { CrmCaches, remember } from '../crm-caches.ts';
import { HUBSPOT_ASSOCIATION_TYPES } from './association-types.ts';

/**
 * HubSpot CRM v3 adapter. One `write` call (records of one object) becomes:
 *   1. `POST /crm/v3/objects/{type}/batch/read` with `idProperty` for the HubSpot ids not cached
 *      yet: lookup targets (an order's contact) and records to delete, per object, 100 ids a call;
 *   2. `POST /crm/v3/objects/{type}/batch/upsert` for the upserts, 100 inputs a call. One invalid
 *      input fails the whole call with a 400 that does not say which input it was (multi-status
 *      207 is documented for batch create only,
 *      https://developers.hubspot.com/docs/api-reference/error-handling#multi-status-errors), so a
 *      refused batch is bisected: each half is sent again, down to single inputs, and only an
 *      input HubSpot refuses alone is rejected (dead-lettered); the others are written. The calls
 *      of a bisect are not in `cost()` (nobody knows in advance which batch fails): each is
 *      reported through `onSignal` as `extraRequests: 1`, which the rate budget counts as spent,
 *      on top of the rate headers every response carries. Worst case (every input invalid)
 *      2n - 1 calls for n inputs; a 429 stops the bisect (the undecided inputs are retried). Before
 *      bisecting, the idProperty's definition is read once (cached): a property without unique
 *      values fails every call, which no bisect can fix, so the adapter stops with the fix
 *      (`pg2crm check` reports it too, see preflight());
 *   3. `POST /crm/v4/associations/{type}/{toType}/batch/create` for lookups: the upsert input has
 *      no `associations` field (only batch/create takes one, and it cannot upsert), so links are a
 *      follow-up call, skipped when this adapter already created the same link;
 *   4. `POST /crm/v4/associations/{type}/{toType}/batch/archive` for lookups that moved
 *      (`previousExternalId`, e.g. a deal moved to another company): associations are
 *      many-to-many, so creating the new link leaves the old one unless it is removed. Only the
 *      pairs record -> previous target and record -> stale targets (`staleExternalIds`: targets
 *      a redelivered window may have linked, or a deleted-and-re-inserted row's) are archived;
 *      other links of the record stay;
 *   5. `POST /crm/v3/objects/{type}/batch/archive` for the deletes.
 * A lookup whose column became NULL (`externalId: null`) is a move to nothing: no read, no link,
 * only step 4 for its `previousExternalId`. Without one (the table lacks REPLICA IDENTITY FULL,
 * as for moves) the adapter cannot tell which association was pg2crm's, so it removes none and
 * the old link stays: set REPLICA IDENTITY FULL on tables whose lookups may become NULL.
 * A 429 (HubSpot sends no Retry-After: the wait is the 10 s interval, or for the DAILY policy
 * until the daily counter resets: midnight in the ACCOUNT's time zone, read as `resetsAt` from
 * `GET /account-info/v3/api-usage/daily/private-apps`, cached until it passes; 00:00 UTC only
 * when that is unavailable) turns every undecided record into a `retry`. Lookups name the association:
 * the HUBSPOT_DEFINED type for the object pair (deals -> contacts = 3, ...).
 */
const MAX_BATCH = 100;
const MAX_ASSOCIATION_BATCH = 2000;
const TEN_SECONDS = 10;
const USAGE_PATH = '/account-info/v3/api-usage/daily/private-apps';
/**
 * Read the daily reset while calls still get through: once fewer than this share of the daily
 * limit (or DAILY_LOW_MIN calls) is left. Past the limit the usage call itself may be refused.
 */
const DAILY_LOW_SHARE = 0.05;
const DAILY_LOW_MIN = 100;
/** After the usage API failed, how long the UTC-midnight guess stands before it is tried again. */
const USAGE_RETRY_MS = 3_600_000;
/** Per-record error categories no retry can fix. */
const PERMANENT = new Set([
  'VALIDATION_ERROR',
  'OBJECT_NOT_FOUND',
  'INVALID_EMAIL',
  'PROPERTY_DOESNT_EXIST',
  'CONFLICT',
  'INVALID_OPTION',
  'INVALID_INTEGER',
  'INVALID_DATE',
]);

interface HubSpotResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

interface BatchError {
  status?: string;
  category?: string;
  message?: string;
  context?: Record<string, string[] | undefined>;
}

interface BatchBody {
  results?: { id: string; properties?: Record<string, string | null>; new?: boolean; objectWriteTraceId?: string }[];
  errors?: BatchError[];
  message?: string;
  category?: string;
  policyName?: string;
}

interface Association {
  index: number;
  toObject: string;
  toIdField: string;
  toExternalId: string;
  toId: string;
  typeId: number;
}

/** A link to remove: the record `index` and the HubSpot id of the lookup's previous target. */
interface Unlink {
  index: number;
  toObject: string;
  toId: string;
}

/**
 * Targets whose links to remove: the lookup's previous target when it moved, and the stale
 * targets the sink names (a redelivered window may have linked them, see CrmLookup).
 */
function movedFrom(l: CrmLookup): string[] {
  return [...new Set([l.previousExternalId, ...(l.staleExternalIds ?? [])])].filter(
    (t): t is string => t !== undefined && t !== l.externalId,
  );
}

/*
 * The documented success answers
 * (https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/objects/batch/get-objects and
 * the batch upsert/create pages; https://developers.hubspot.com/docs/api-reference/legacy/crm/associations/associate-records/batch/create-associations-labeled):
 * batch read/upsert answer `{status, results: [{id: "<string>", properties: {...}, ...}], errors?: [...]}`
 * (200, or 207 with errors), association batch/create `{status, results: [...], errors?}` (201 or 207),
 * the list `GET /crm/v3/objects/{type}` `{results: [...], paging?}`, and both batch/archive calls
 * `204 No Content`. Anything else on a 2xx (an HTML page from a proxy, JSON cut off, an empty
 * body) is not HubSpot's answer: nothing is known to be written, so it is a retriable
 * CRM_BAD_RESPONSE, never `done`.
 */
const BATCH_SHAPE = '{"results":[{"id":"<string>",…}],"errors"?:[…]}';

interface BatchResult {
  id: string;
  properties?: Record<string, string | null>;
  new?: boolean;
  objectWriteTraceId?: string;
}

/** A batch answer's `errors`, when the body has the documented envelope (`results` an array, `errors` absent or an array). */
function isBatchEnvelope(body: unknown): body is { results: unknown[]; errors?: BatchError[] } {
  return isObject(body) && Array.isArray(body.results) && (body.errors === undefined || Array.isArray(body.errors));
}

/** The results of a batch read/upsert answer, or undefined when the body is not one. */
function batchResults(body: unknown): BatchResult[] | undefined {
  if (!isBatchEnvelope(body)) return undefined;
  for (const r of body.results) {
    if (!isObject(r) || typeof r.id !== 'string' || r.id === '') return undefined;
    if (r.properties !== undefined && !isObject(r.properties)) return undefined;
  }
  return body.results as BatchResult[];
}

/** The body as the text it came as, for quoting in a CRM_BAD_RESPONSE (sendJson parsed it). */
function textOf(body: unknown): string {
  return body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
}

function numberHeader(res: HubSpotResponse, name: string): number | undefined {
  const v = header(res.headers, name);
  return v === undefined || v === '' || !Number.isFinite(Number(v)) ? undefined : Number(v);
}

/**
 * Seconds to wait after a 429: what `throttled` (http.ts) will take. HubSpot sends no Retry-After
 * (should one come, seconds or an HTTP-date, it wins); its body names the policy hit.
 */
export function retryAfterOf(res: HubSpotResponse, now = Date.now(), dailyResetAt?: number): number {
  return throttleWait(res.headers, documentedWait(res, now, dailyResetAt), now)!;
}

/**
 * HubSpot's wait for the policy a 429 names. DAILY: until `dailyResetAt` (the account's
 * documented reset, epoch ms) when known and ahead, else until 00:00 UTC, the only guess left;
 * the rolling ones: the interval the headers name, else ten seconds.
 */
function documentedWait(res: HubSpotResponse, now: number, dailyResetAt?: number): number {
  if ((res.body as BatchBody | undefined)?.policyName === 'DAILY') {
    const reset = dailyResetAt !== undefined && dailyResetAt > now ? dailyResetAt : (Math.floor(now / 86_400_000) + 1) * 86_400_000;
    return Math.max(1, Math.ceil((reset - now) / 1000));
  }
  const interval = numberHeader(res, 'x-hubspot-ratelimit-interval-milliseconds');
  return interval !== undefined ? Math.max(1, Math.ceil(interval / 1000)) : TEN_SECONDS;
}

/** The daily usage answer's `resetsAt` (epoch ms), or undefined when the body is not the documented one. */
function resetsAtOf(body: unknown): number | undefined {
  if (!isObject(body) || !Array.isArray(body.results)) return undefined;
  for (const r of body.results) {
    if (!isObject(r) || typeof r.resetsAt !== 'string') continue;
    const at = Date.parse(r.resetsAt);
    if (Number.isFinite(at)) return at;
  }
  return undefined;
}

/** `Property values were not valid: [{...name, error, message}]` -> the first invalid property. */
function propertyProblem(message: string | undefined): { name?: string; error?: string } {
  const json = /Property values were not valid: (\[.*\])$/s.exec(message ?? '')?.[1];
  if (!json) return {};
  try {
    const list = JSON.parse(json) as { name?: string; error?: string }[];
    return list[0] ?? {};
  } catch {
    return {};
  }
}

/** HubSpot clears a property given an empty string (null is not a documented property value). */
function toProperties(fields: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = v === null || v === undefined ? '' : v;
  return out;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export class HubSpotAdapter implements CrmAdapter {
  readonly kind = 'hubspot';
  private readonly pool: Pool;
  /** The credential's token: a private-app token (static) or an OAuth app's, refreshed. */
  private readonly auth: TokenProvider;
  private readonly timeoutMs: number;
  private readonly caches: CrmCaches;
  /** object, idProperty, external id -> HubSpot record id. */
  private readonly ids: Map<string, string>;
  /** from object, from id, to object -> the to id last associated (by any adapter sharing `caches`). */
  private readonly links: Map<string, string>;
  /** `object\u0000property` -> whether that idProperty has unique values (read once, after a 400). */
  private readonly uniqueIdProperty = new Map<string, boolean>();
  /** The account's next daily reset (epoch ms), from the usage API; `failedAt` when it could not be read. */
  private dailyReset: { at?: number; failedAt?: number } = {};
  private readingDailyReset: Promise<void> | undefined;
  private readonly now: () => number;

  constructor(config: CrmConfig, caches: CrmCaches = new CrmCaches(), now: () => number = Date.now) {
    this.now = now;
    this.caches = caches;
    this.ids = caches.map('hubspot.ids');
    this.links = caches.map('hubspot.links');
    const base = new URL(config.baseUrl);
    this.pool = crmPool(base.origin, config.tls, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    this.auth = tokenProviderFor(config, config.auth, now);
    this.timeoutMs = config.timeoutMs;
  }

  forget(): void {
    this.caches.clear();
  }

  maxBatchSize(): number {
    return MAX_BATCH;
  }

  private key(object: string, field: string, externalId: string): string {
    return `${object}\u0000${field}\u0000${externalId}`;
  }

  private linkKey(object: string, fromId: string, toObject: string): string {
    return `${object}\u0000${fromId}\u0000${toObject}`;
  }

  /** Requests `write(records)` spends: an upper bound (a lookup that finds nothing saves a call). */
  cost(records: CrmWrite[]): number {
    const reads = new Map<string, Set<string>>();
    const toRead = (object: string, field: string, externalId: string): void => {
      if (this.ids.has(this.key(object, field, externalId))) return;
      const group = `${object}\u0000${field}`;
      let set = reads.get(group);
      if (!set) reads.set(group, (set = new Set()));
      set.add(externalId);
    };
    let upserts = 0;
    let deletes = 0;
    const links = new Map<string, number>();
    const unlinks = new Map<string, number>();
    for (const r of records) {
      if (r.op === 'delete') {
        deletes++;
        toRead(r.object, r.externalIdField, r.externalId);
        continue;
      }
      upserts++;
      const selfId = this.ids.get(this.key(r.object, r.externalIdField, r.externalId));
      for (const l of Object.values(r.lookups ?? {})) {
        // A lookup with no association type is rejected before any call.
        if (HUBSPOT_ASSOCIATION_TYPES[`${r.object}/${l.object}`] === undefined) continue;
        if (l.externalId !== null) {
          toRead(l.object, l.externalIdField, l.externalId);
          const toId = this.ids.get(this.key(l.object, l.externalIdField, l.externalId));
          const known = selfId !== undefined && toId !== undefined && this.links.get(this.linkKey(r.object, selfId, l.object)) === toId;
          if (!known) links.set(l.object, (links.get(l.object) ?? 0) + 1);
        }
        for (const previous of movedFrom(l)) {
          // Upper bound: a previous target that is gone, or a record created now, saves the call.
          toRead(l.object, l.externalIdField, previous);
          unlinks.set(l.object, (unlinks.get(l.object) ?? 0) + 1);
        }
      }
    }
    let n = 0;
    for (const set of reads.values()) n += Math.ceil(set.size / MAX_BATCH);
    n += Math.ceil(upserts / MAX_BATCH) + Math.ceil(deletes / MAX_BATCH);
    for (const count of links.values()) n += Math.ceil(count / MAX_ASSOCIATION_BATCH);
    for (const count of unlinks.values()) n += Math.ceil(count / MAX_ASSOCIATION_BATCH);
    return n;
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', '/crm/v3/objects/contacts?limit=1', undefined, () => undefined);
    if (res.status !== 200)
      throw new ConnectorError('CRM_PING', `HubSpot answered HTTP ${res.status} to GET /crm/v3/objects/contacts; check crm.baseUrl`);
    // A proxy or captive portal answering 200 must not pass `pg2crm check`.
    if (!isBatchEnvelope(res.body))
      throw badResponse('HubSpot GET /crm/v3/objects/contacts', res.status, textOf(res.body), '{"results":[…]}');
  }

  /**
   * What `pg2crm check` verifies in HubSpot: every idProperty (the mappings' external ids and
   * lookups' targets) is a property with unique values (`hasUniqueValue`), read with
   * `GET /crm/v3/properties/{objectType}/{propertyName}`
   * (https://developers.hubspot.com/docs/api-reference/crm-properties-v3/core/get-crm-v3-properties-objectType-propertyName);
   * batch/upsert and batch/read by any other property answer 400 for every call. And when the
   * daily limit resets (the account's time zone), which is informational.
   */
  async preflight(targets: CrmTarget[]): Promise<{ name: string; ok: boolean; detail: string }[]> {
    const out: { name: string; ok: boolean; detail: string }[] = [];
    const seen = new Set<string>();
    for (const t of targets) {
      const key = `${t.object}\u0000${t.externalIdField}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const name = `HubSpot idProperty ${t.object}.${t.externalIdField}`;
      const fix = `make ${t.externalIdField} a unique-value property in HubSpot settings (Properties > ${t.object} > ${t.externalIdField} > "Require unique values") or choose another idProperty (mappings[].externalId.field)`;
      try {
        const res = await this.request(
          'GET',
          `/crm/v3/properties/${encodeURIComponent(t.object)}/${encodeURIComponent(t.externalIdField)}`,
          undefined,
          () => undefined,
        );
        const body = res.body as { hasUniqueValue?: unknown; message?: string } | undefined;
        if (res.status === 404)
          out.push({ name, ok: false, detail: `${t.object} has no property ${t.externalIdField} (HTTP 404); create it and ${fix}` });
        else if (res.status !== 200 || !isObject(body) || typeof body.hasUniqueValue !== 'boolean') {
          out.push({
            name,
            ok: false,
            detail: `cannot read the property definition: HTTP ${res.status} ${body?.message ?? textOf(res.body).slice(0, 120)}; grant the private app the crm.schemas.${t.object}.read scope, or check crm.baseUrl`,
          });
        } else if (!body.hasUniqueValue) {
          out.push({
            name,
            ok: false,
            detail: `${t.externalIdField} has hasUniqueValue false: HubSpot refuses batch upsert/read by it (HTTP 400 on every call); ${fix}`,
          });
        } else {
          this.uniqueIdProperty.set(key, true);
          out.push({ name, ok: true, detail: `${t.externalIdField} is a unique-value property (hasUniqueValue true)` });
        }
      } catch (err) {
        out.push({ name, ok: false, detail: err instanceof Error ? err.message : String(err) });
      }
    }
    await this.readDailyReset(() => undefined, false);
    const at = this.dailyReset.at;
    out.push({
      name: 'HubSpot daily limit reset',
      ok: true,
      detail:
        at !== undefined
          ? `resets at ${new Date(at).toISOString()} (midnight in the account's time zone, from ${USAGE_PATH})`
          : `${USAGE_PATH} unavailable; after a DAILY 429 the connector waits until 00:00 UTC, which may be before or after the account's reset`,
    });
    return out;
  }

  async write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]> {
    // Not `new Array(n)`: map() skips holes, and a record must never come back without an outcome.
    const out: (WriteOutcome | undefined)[] = Array.from({ length: records.length }, () => undefined);
    try {
      // This call's ids come from `found`, not from the shared cache, which a rebalance may drop
      // while the call runs: a delete must not then pass for "not in HubSpot".
      const found = await this.resolveIds(records, onSignal);
      const deletes = records.flatMap((r, i) =>
        r.op === 'delete' ? [{ index: i, id: found.get(this.key(r.object, r.externalIdField, r.externalId)) }] : [],
      );
      const upserts: number[] = [];
      const associations: Association[] = [];
      const unlinks: Unlink[] = [];
      records.forEach((r, i) => {
        if (r.op !== 'upsert') return;
        const lookups = Object.values(r.lookups ?? {});
        for (const l of lookups) {
          const typeId = HUBSPOT_ASSOCIATION_TYPES[`${r.object}/${l.object}`];
          if (typeId === undefined) {
            out[i] = {
              status: 'rejected',
              code: 'HUBSPOT_NO_ASSOCIATION_TYPE',
              message: `HubSpot defines no association type from ${r.object} to ${l.object}; remove this lookup from the mapping`,
            };
            return;
          }
          // null: the record points to nothing now; only the link to the previous target goes.
          if (l.externalId !== null) {
            const toId = found.get(this.key(l.object, l.externalIdField, l.externalId));
            if (toId === undefined) {
              out[i] = {
                status: 'retry',
                code: 'LOOKUP_PENDING',
                kind: 'pending',
                message: `${l.object} with ${l.externalIdField}=${l.externalId} is not in HubSpot yet`,
              };
              return;
            }
            associations.push({ index: i, toObject: l.object, toIdField: l.externalIdField, toExternalId: l.externalId, toId, typeId });
          }
          for (const previous of movedFrom(l)) {
            // A previous target not in HubSpot (deleted meanwhile) has no link left to remove.
            const previousId = found.get(this.key(l.object, l.externalIdField, previous));
            // Never unlink a target another lookup of the same record points to now.
            const stillWanted = lookups.some(
              (o) =>
                o.object === l.object &&
                o.externalId !== null &&
                found.get(this.key(o.object, o.externalIdField, o.externalId)) === previousId,
            );
            if (previousId !== undefined && !stillWanted) unlinks.push({ index: i, toObject: l.object, toId: previousId });
          }
        }
        upserts.push(i);
      });
      for (const chunk of chunks(upserts, MAX_BATCH)) await this.upsert(records, chunk, out, onSignal);
      await this.associate(
        records,
        associations.filter((a) => out[a.index]?.status === 'done'),
        out,
        onSignal,
      );
      // Only once the new link is made (a record HubSpot just created has no old links).
      await this.unlink(
        records,
        unlinks.filter((u) => out[u.index]?.status === 'done' && (out[u.index] as { created?: boolean }).created !== true),
        out,
        onSignal,
      );
      await this.archive(records, deletes, out, onSignal);
    } catch (err) {
      if (!(err instanceof ThrottledCall)) throw err;
      // Throttled part-way: what was written stays done; the rest waits for the window.
      for (let i = 0; i < out.length; i++) if (out[i] === undefined) out[i] = err.outcome;
    }
    return out.map((o) => o ?? { status: 'retry', code: 'HUBSPOT_NO_RESULT', message: 'HubSpot returned no result for this record' });
  }

  /**
   * The HubSpot ids of lookup targets (current and previous) and records to delete, by their
   * external ids: cached ones, and the others read (and cached). Absent = no such record.
   */
  private async resolveIds(records: CrmWrite[], onSignal: (s: RateSignal) => void): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    const groups = new Map<string, { object: string; field: string; ids: Set<string> }>();
    const want = (object: string, field: string, externalId: string): void => {
      const cached = this.ids.get(this.key(object, field, externalId));
      if (cached !== undefined) {
        found.set(this.key(object, field, externalId), cached);
        return;
      }
      const g = `${object}\u0000${field}`;
      let group = groups.get(g);
      if (!group) groups.set(g, (group = { object, field, ids: new Set() }));
      group.ids.add(externalId);
    };
    for (const r of records) {
      if (r.op === 'delete') want(r.object, r.externalIdField, r.externalId);
      else {
        for (const l of Object.values(r.lookups ?? {})) {
          // Rejected without a call (no association type): nothing to read for it.
          if (HUBSPOT_ASSOCIATION_TYPES[`${r.object}/${l.object}`] === undefined) continue;
          if (l.externalId !== null) want(l.object, l.externalIdField, l.externalId);
          for (const previous of movedFrom(l)) want(l.object, l.externalIdField, previous);
        }
      }
    }
    for (const { object, field, ids } of groups.values()) {
      for (const chunk of chunks([...ids], MAX_BATCH)) {
        const res = await this.request(
          'POST',
          `/crm/v3/objects/${object}/batch/read`,
          { idProperty: field, properties: [field], inputs: chunk.map((id) => ({ id })) },
          onSignal,
        );
        // A 400 by a property without unique values would repeat forever: stop with the fix.
        if (res.status === 400) await this.requireUniqueIdProperties(object, [field], onSignal);
        // 207: some ids have no record (OBJECT_NOT_FOUND); they stay unresolved.
        if (res.status !== 200 && res.status !== 207) this.fail(res, `batch/read of ${object}`);
        // Not "no such record": a garbage answer must not make a delete "already gone" or a lookup pending.
        const results = batchResults(res.body);
        if (!results) throw badResponse(`HubSpot POST /crm/v3/objects/${object}/batch/read`, res.status, textOf(res.body), BATCH_SHAPE);
        for (const result of results) {
          const value = result.properties?.[field];
          if (value === undefined || value === null) continue;
          found.set(this.key(object, field, value), result.id);
          remember(this.ids, this.key(object, field, value), result.id);
        }
      }
    }
    return found;
  }

  /**
   * Upserts `chunk` (indexes into `records`, one object) in one call. A 400 refuses the whole
   * call without naming the input at fault, so the chunk is bisected (see the class comment);
   * `extra` marks a call `cost()` did not count (the halves of a bisect).
   */
  private async upsert(
    records: CrmWrite[],
    chunk: number[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
    extra = false,
  ): Promise<void> {
    const object = records[chunk[0]!]!.object;
    const inputs = chunk.map((i) => {
      const r = records[i]!;
      return { id: r.externalId, idProperty: r.externalIdField, objectWriteTraceId: String(i), properties: toProperties(r.fields) };
    });
    const res = await this.request('POST', `/crm/v3/objects/${object}/batch/upsert`, { inputs }, onSignal, extra);
    const body = res.body as BatchBody | undefined;
    if (res.status === 400) {
      // A property without unique values fails every call: no split can help (and 2n - 1 calls would be spent finding that out).
      await this.requireUniqueIdProperties(object, [...new Set(chunk.map((i) => records[i]!.externalIdField))], onSignal);
      if (chunk.length > 1) {
        const half = Math.ceil(chunk.length / 2);
        await this.upsert(records, chunk.slice(0, half), out, onSignal, true);
        await this.upsert(records, chunk.slice(half), out, onSignal, true);
        return;
      }
      // Refused alone: this input is what HubSpot rejects.
      const problem = propertyProblem(body?.message);
      out[chunk[0]!] = {
        status: 'rejected',
        code: `HUBSPOT_${problem.error ?? body?.category ?? 'HTTP_400'}`,
        message: body?.message ?? 'HubSpot answered HTTP 400',
        ...(problem.name ? { field: problem.name } : {}),
      };
      return;
    }
    if (res.status !== 200 && res.status !== 207) this.fail(res, `batch/upsert of ${object}`);
    const results = batchResults(body);
    if (!results) {
      // Other chunks of this call may be written: only this chunk's records wait.
      const bad = this.badAnswer(`POST /crm/v3/objects/${object}/batch/upsert`, res, BATCH_SHAPE);
      for (const i of chunk) out[i] = bad;
      return;
    }
    for (const e of body?.errors ?? []) {
      const problem = propertyProblem(e.message);
      const category = e.category ?? 'ERROR';
      const outcome: WriteOutcome = PERMANENT.has(category)
        ? {
            status: 'rejected',
            code: `HUBSPOT_${problem.error ?? category}`,
            message: e.message ?? category,
            ...(problem.name ? { field: problem.name } : {}),
          }
        : { status: 'retry', code: `HUBSPOT_${category}`, message: e.message ?? category };
      for (const trace of e.context?.objectWriteTraceId ?? []) if (chunk.includes(Number(trace))) out[Number(trace)] = outcome;
    }
    // Results echo the objectWriteTraceId; should one not, its idProperty value names the input.
    const byExternalId = new Map(chunk.map((i) => [records[i]!.externalId, i]));
    for (const result of results) {
      const i =
        result.objectWriteTraceId !== undefined
          ? Number(result.objectWriteTraceId)
          : byExternalId.get(result.properties?.[records[chunk[0]!]!.externalIdField] ?? '');
      if (i === undefined || !chunk.includes(i)) continue;
      const r = records[i]!;
      remember(this.ids, this.key(r.object, r.externalIdField, r.externalId), result.id);
      out[i] = { status: 'done', crmId: result.id, ...(result.new !== undefined ? { created: result.new } : {}) };
    }
    // An input the answer names neither in results nor in errors was not confirmed written.
    for (const i of chunk) {
      if (out[i] === undefined)
        out[i] = {
          status: 'retry',
          code: 'CRM_BAD_RESPONSE',
          kind: 'bad-response',
          message: `HubSpot POST /crm/v3/objects/${object}/batch/upsert: HTTP ${res.status} names input ${i} neither in results nor in errors; the record is retried`,
        };
    }
  }

  /**
   * Stops the connector (CrmAdapter: a non-retriable error is fatal) when an idProperty of
   * `object` is not a unique-value property: HubSpot refuses every batch upsert/read by it.
   * Read once per property (cached); a definition that cannot be read (no schema scope, a 5xx)
   * proves nothing, so the bisect goes on.
   */
  private async requireUniqueIdProperties(object: string, properties: string[], onSignal: (s: RateSignal) => void): Promise<void> {
    for (const property of properties) {
      const key = `${object}\u0000${property}`;
      let unique = this.uniqueIdProperty.get(key);
      if (unique === undefined) {
        let res: HubSpotResponse;
        try {
          res = await this.request(
            'GET',
            `/crm/v3/properties/${encodeURIComponent(object)}/${encodeURIComponent(property)}`,
            undefined,
            onSignal,
            true,
          );
        } catch (err) {
          if (err instanceof ThrottledCall || (err instanceof ConnectorError && !err.retriable)) throw err;
          continue;
        }
        const body = res.body as { hasUniqueValue?: unknown } | undefined;
        if (res.status === 404) unique = false;
        else if (res.status === 200 && isObject(body) && typeof body.hasUniqueValue === 'boolean') unique = body.hasUniqueValue;
        else continue;
        this.uniqueIdProperty.set(key, unique);
      }
      if (!unique) {
        throw new ConnectorError(
          'HUBSPOT_ID_PROPERTY_NOT_UNIQUE',
          `HubSpot refuses batch upsert and read of ${object} by idProperty ${property}: it is not a unique-value property (hasUniqueValue false or no such property), so every call fails with HTTP 400; make ${property} a unique-value property in HubSpot settings or choose another idProperty (mappings[].externalId.field)`,
          { retriable: false },
        );
      }
    }
  }

  /**
   * Reads when the daily limit resets (`resetsAt`, midnight in the account's time zone) from the
   * daily usage API (https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/get-usage-details),
   * unless a reset still ahead is known, or the API failed less than an hour ago. Never throws:
   * without it the DAILY wait falls back to 00:00 UTC. `report` marks the call as one `cost()`
   * did not count. One read at a time.
   */
  private async readDailyReset(onSignal: (s: RateSignal) => void, report = true): Promise<void> {
    const now = this.now();
    if (this.dailyReset.at !== undefined && this.dailyReset.at > now) return;
    if (this.dailyReset.failedAt !== undefined && now - this.dailyReset.failedAt < USAGE_RETRY_MS) return;
    if (!this.readingDailyReset) {
      this.readingDailyReset = (async () => {
        try {
          const res: HubSpotResponse = await this.send('GET', USAGE_PATH, undefined);
          onSignal({ ...this.signalOf(res), ...(report ? { extraRequests: 1 } : {}) });
          const at = res.status === 200 ? resetsAtOf(res.body) : undefined;
          this.dailyReset = at !== undefined && at > this.now() ? { at } : { failedAt: this.now() };
        } catch {
          this.dailyReset = { failedAt: this.now() };
        } finally {
          this.readingDailyReset = undefined;
        }
      })();
    }
    await this.readingDailyReset;
  }

  /** A 2xx that is not HubSpot's documented answer: retry the record, counted as a bad response. */
  private badAnswer(what: string, res: HubSpotResponse, expected: string): WriteOutcome {
    const err = badResponse(`HubSpot ${what}`, res.status, textOf(res.body), expected);
    return { status: 'retry', code: err.code, kind: 'bad-response', message: err.message };
  }

  private async associate(
    records: CrmWrite[],
    wanted: Association[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    const byTarget = new Map<string, (Association & { fromId: string })[]>();
    for (const a of wanted) {
      const fromId = (out[a.index] as { crmId?: string }).crmId;
      if (fromId === undefined) continue;
      if (this.links.get(this.linkKey(records[a.index]!.object, fromId, a.toObject)) === a.toId) continue;
      let list = byTarget.get(a.toObject);
      if (!list) byTarget.set(a.toObject, (list = []));
      list.push({ ...a, fromId });
    }
    for (const [toObject, list] of byTarget) {
      const object = records[list[0]!.index]!.object;
      for (const chunk of chunks(list, MAX_ASSOCIATION_BATCH)) {
        const inputs = chunk.map((a) => ({
          from: { id: a.fromId },
          to: { id: a.toId },
          types: [{ associationCategory: 'HUBSPOT_DEFINED', associationTypeId: a.typeId }],
        }));
        let res: HubSpotResponse;
        try {
          res = await this.request('POST', `/crm/v4/associations/${object}/${toObject}/batch/create`, { inputs }, onSignal);
        } catch (err) {
          // The records are written; only their links wait. Re-upserting them later is harmless.
          if (err instanceof ThrottledCall) for (const a of chunk) out[a.index] = undefined;
          throw err;
        }
        if (res.status >= 300 && res.status !== 207) {
          const body = res.body as BatchBody | undefined;
          for (const a of chunk)
            out[a.index] = {
              status: 'rejected',
              code: `HUBSPOT_ASSOCIATION_${body?.category ?? res.status}`,
              message: body?.message ?? `HubSpot answered HTTP ${res.status}`,
            };
          continue;
        }
        if (!isBatchEnvelope(res.body)) {
          // The records are written, their links unconfirmed: the retry re-upserts and links them.
          const bad = this.badAnswer(`POST /crm/v4/associations/${object}/${toObject}/batch/create`, res, '{"results":[…],"errors"?:[…]}');
          for (const a of chunk) out[a.index] = bad;
          continue;
        }
        const failed = new Map<string, BatchError>();
        for (const e of res.body.errors ?? []) for (const id of e.context?.fromObjectId ?? []) failed.set(id, e);
        for (const a of chunk) {
          const e = failed.get(a.fromId);
          if (e) {
            // Most likely the target was deleted meanwhile: the next attempt looks it up again.
            this.ids.delete(this.key(toObject, a.toIdField, a.toExternalId));
            out[a.index] = {
              status: 'retry',
              code: `HUBSPOT_ASSOCIATION_${e.category ?? 'ERROR'}`,
              message: e.message ?? 'association failed',
            };
          } else {
            remember(this.links, this.linkKey(object, a.fromId, toObject), a.toId);
          }
        }
      }
    }
  }

  /**
   * Removes the links to lookups' previous targets: `POST /crm/v4/associations/{from}/{to}/batch/archive`
   * `{inputs:[{from:{id}, to:[{id}]}]}`, 204
   * (https://developers.hubspot.com/docs/api-reference/crm-associations-v4/batch/post-crm-v4-associations-fromObjectType-toObjectType-batch-archive).
   * It removes every association type between that pair only, so links to other records stay.
   */
  private async unlink(
    records: CrmWrite[],
    wanted: Unlink[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    const byTarget = new Map<string, (Unlink & { fromId: string })[]>();
    for (const u of wanted) {
      const fromId = (out[u.index] as { crmId?: string }).crmId;
      if (fromId === undefined) continue;
      let list = byTarget.get(u.toObject);
      if (!list) byTarget.set(u.toObject, (list = []));
      list.push({ ...u, fromId });
    }
    for (const [toObject, list] of byTarget) {
      const object = records[list[0]!.index]!.object;
      for (const chunk of chunks(list, MAX_ASSOCIATION_BATCH)) {
        const inputs = chunk.map((u) => ({ from: { id: u.fromId }, to: [{ id: u.toId }] }));
        let res: HubSpotResponse;
        try {
          res = await this.request('POST', `/crm/v4/associations/${object}/${toObject}/batch/archive`, { inputs }, onSignal);
        } catch (err) {
          // The records and their new links are written; the old links wait for the retry.
          if (err instanceof ThrottledCall) for (const u of chunk) out[u.index] = undefined;
          throw err;
        }
        if (res.status >= 300 && res.status !== 207) {
          const body = res.body as BatchBody | undefined;
          for (const u of chunk)
            out[u.index] = {
              status: 'rejected',
              code: `HUBSPOT_ASSOCIATION_${body?.category ?? res.status}`,
              message: body?.message ?? `HubSpot answered HTTP ${res.status} removing the old association`,
            };
          continue;
        }
        if (res.status !== 204) {
          // Documented: 204. Any other 2xx is some other server's answer; the old link may stay.
          const bad = this.badAnswer(`POST /crm/v4/associations/${object}/${toObject}/batch/archive`, res, '204 No Content');
          for (const u of chunk) out[u.index] = bad;
          continue;
        }
        for (const u of chunk) {
          const link = this.linkKey(object, u.fromId, toObject);
          if (this.links.get(link) === u.toId) this.links.delete(link);
        }
      }
    }
  }

  /** Deletes the records by the HubSpot ids resolveIds found (none: not in HubSpot, already gone). */
  private async archive(
    records: CrmWrite[],
    deletes: { index: number; id: string | undefined }[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    const known: { index: number; id: string }[] = [];
    for (const { index, id } of deletes) {
      if (id === undefined) out[index] = { status: 'done' };
      else known.push({ index, id });
    }
    for (const chunk of chunks(known, MAX_BATCH)) {
      const object = records[chunk[0]!.index]!.object;
      const res = await this.request(
        'POST',
        `/crm/v3/objects/${object}/batch/archive`,
        { inputs: chunk.map((k) => ({ id: k.id })) },
        onSignal,
      );
      if (res.status < 200 || res.status >= 300) this.fail(res, `batch/archive of ${object}`);
      if (res.status !== 204) {
        // Documented: 204. Any other 2xx is some other server's answer; the records may still be there.
        const bad = this.badAnswer(`POST /crm/v3/objects/${object}/batch/archive`, res, '204 No Content');
        for (const k of chunk) out[k.index] = bad;
        continue;
      }
      for (const k of chunk) {
        const r = records[k.index]!;
        this.ids.delete(this.key(r.object, r.externalIdField, r.externalId));
        out[k.index] = { status: 'done', crmId: k.id };
      }
    }
  }

  /** A failure of a whole request: retriable for 5xx and unknown answers, permanent for 403. */
  private fail(res: HubSpotResponse, what: string): never {
    const body = res.body as BatchBody | undefined;
    const detail = body?.message ?? `HTTP ${res.status}`;
    if (res.status === 403) {
      throw new ConnectorError(
        'CRM_FORBIDDEN',
        `HubSpot refused ${what} (HTTP 403: ${detail}); grant the private app the crm.objects.*.read/write scopes`,
        { retriable: false },
      );
    }
    throw new ConnectorError(`HTTP_${res.status}`, `HubSpot answered HTTP ${res.status} to ${what}: ${detail}`, {
      retriable: true,
      status: res.status,
    });
  }

  /** The rate information of a response (headers; the wait after a 429 is added by `request`). */
  private signalOf(res: HubSpotResponse): RateSignal {
    const signal: RateSignal = {};
    const remaining = numberHeader(res, 'x-hubspot-ratelimit-remaining');
    const dailyRemaining = numberHeader(res, 'x-hubspot-ratelimit-daily-remaining');
    if (remaining !== undefined) signal.remaining = remaining;
    if (dailyRemaining !== undefined) signal.dailyRemaining = dailyRemaining;
    return signal;
  }

  /** `extra`: a call `cost()` did not count (a bisect half, a property read), reported as `extraRequests`. */
  private async request(
    method: string,
    path: string,
    body: unknown,
    onSignal: (s: RateSignal) => void,
    extra = false,
  ): Promise<HubSpotResponse> {
    const out: HubSpotResponse = await this.send(method, path, body);
    const signal = this.signalOf(out);
    if (extra) signal.extraRequests = 1;
    if (out.status === 429) {
      const policy = (out.body as BatchBody | undefined)?.policyName ?? 'TEN_SECONDLY_ROLLING';
      if (policy === 'DAILY') await this.readDailyReset(onSignal);
      const now = this.now();
      throw new ThrottledCall(
        throttled(out.headers, {
          message: `HubSpot rate limit reached (${policy})`,
          defaultSeconds: documentedWait(out, now, this.dailyReset.at),
          signal,
          onSignal,
          now,
        }),
      );
    }
    onSignal(signal);
    if (out.status >= 500) this.fail(out, `${method} ${path}`);
    // Learn the daily reset while calls still get through (past the limit the usage call may be refused too).
    const daily = numberHeader(out, 'x-hubspot-ratelimit-daily');
    if (
      signal.dailyRemaining !== undefined &&
      daily !== undefined &&
      signal.dailyRemaining <= Math.max(DAILY_LOW_MIN, daily * DAILY_LOW_SHARE)
    )
      await this.readDailyReset(onSignal);
    return out;
  }

  /**
   * One request with the credential's token. An OAuth access token past its `expires_in` is
   * answered 401; it is refreshed once and the request retried; a fresh token refused stops the
   * connector (CRM_AUTH naming the credential), as does a refused private-app token.
   */
  private send(method: string, path: string, body: unknown): Promise<HubSpotResponse> {
    return withToken(
      this.auth,
      'HubSpot',
      (token) =>
        sendJson(this.pool, {
          method,
          path,
          token: token.value,
          body,
          timeoutMs: this.timeoutMs,
          what: `HubSpot request ${method} ${path}`,
        }),
      (res) => res.status === 401,
    );
  }

  /** `pg2crm verify`: batch/read takes as many inputs as batch/upsert. */
  readBatchSize(): number {
    return MAX_BATCH;
  }

  /**
   * `POST /crm/v3/objects/{type}/batch/read` with `idProperty` (the mapping's unique-value
   * external id) and the mapped `properties`: 200, or 207 listing the ids with no record
   * (https://developers.hubspot.com/docs/guides/crm/using-object-apis, "retrieve a batch of
   * specific records by record ID or a custom unique identifier property"). Properties come
   * back as strings; verify compares numbers as numbers.
   */
  async readByExternalIds(
    target: CrmTarget,
    ids: string[],
    fields: string[],
    onSignal: (s: RateSignal) => void,
  ): Promise<Map<string, Record<string, unknown>>> {
    const { object, externalIdField: field } = target;
    const path = `/crm/v3/objects/${object}/batch/read`;
    const res = await this.request(
      'POST',
      path,
      { idProperty: field, properties: [field, ...fields], inputs: ids.map((id) => ({ id })) },
      onSignal,
    );
    if (res.status === 400) await this.requireUniqueIdProperties(object, [field], onSignal);
    if (res.status !== 200 && res.status !== 207) this.fail(res, `batch/read of ${object}`);
    const results = batchResults(res.body);
    if (!results) throw badResponse(`HubSpot POST ${path}`, res.status, textOf(res.body), BATCH_SHAPE);
    const out = new Map<string, Record<string, unknown>>();
    for (const r of results) {
      const id = r.properties?.[field];
      if (id !== undefined && id !== null && id !== '') out.set(id, Object.fromEntries(fields.map((f) => [f, r.properties?.[f]])));
    }
    return out;
  }

  /**
   * `GET /crm/v3/objects/{type}?limit=100&properties=…&after=<cursor>`: a page of records and
   * `paging.next.after` while there are more (the objects API's list,
   * https://developers.hubspot.com/docs/api-reference/latest/crm/objects/custom-objects/get-custom-objects).
   * Records without the external id property are not pg2crm's and are left out.
   */
  async listRecords(target: CrmTarget, fields: string[], cursor: string | undefined, onSignal: (s: RateSignal) => void) {
    const field = target.externalIdField;
    const properties = encodeURIComponent([field, ...fields].join(','));
    const path = `/crm/v3/objects/${target.object}?limit=${MAX_BATCH}&properties=${properties}${cursor ? `&after=${encodeURIComponent(cursor)}` : ''}`;
    const res = await this.request('GET', path, undefined, onSignal);
    if (res.status !== 200) this.fail(res, `the list of ${target.object}`);
    const results = batchResults(res.body);
    if (!results) throw badResponse(`HubSpot GET /crm/v3/objects/${target.object}`, res.status, textOf(res.body), BATCH_SHAPE);
    const records = results
      .filter((r) => r.properties?.[field] !== undefined && r.properties?.[field] !== null && r.properties?.[field] !== '')
      .map((r) => ({ externalId: String(r.properties![field]), fields: Object.fromEntries(fields.map((f) => [f, r.properties?.[f]])) }));
    const paging = isObject(res.body) && isObject(res.body.paging) && isObject(res.body.paging.next) ? res.body.paging.next : undefined;
    return typeof paging?.after === 'string' && paging.after !== '' ? { records, next: paging.after } : { records };
  }

  describeAuth(): string {
    return this.auth.describe();
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
