import type { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError, errorMessage } from '../../errors.ts';
import { componentLogger } from '../../logger.ts';
import { badResponse, crmPool, header, isObject, type RetryOutcome, safeJson, send, ThrottledCall, throttled } from '../http.ts';
import { tokenProviderFor } from '../auth/oauth-flows.ts';
import { type TokenProvider, withToken } from '../auth/token-provider.ts';
import { type CrmAdapter, type CrmTarget, type CrmWrite, type RateSignal, retryOutcomeOf, type WriteOutcome } from '../crm-adapter.ts';
import {
  type BatchItemResponse,
  type BatchOperation,
  boundaryOf,
  buildBatchRequest,
  newBoundary,
  parseBatchResponse,
} from './multipart.ts';

/**
 * Microsoft Dataverse (Dynamics 365) Web API adapter. Every write is an operation of a `$batch`
 * (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api):
 *
 * - upsert: `PATCH /api/data/v9.2/<object>(<externalIdField>='<externalId>')`, i.e. by the
 *   alternate key whose single column is the mapping's `externalId.field` (define that key on the
 *   table in Dataverse; make the column text, since the key is sent as a string literal).
 * - delete: `DELETE` of the same URL; 404 (already gone) counts as done.
 * - lookups: a mapping lookup `<navprop>: {object: <entity set>, column}` becomes
 *   `"<navprop>@odata.bind": "/<entity set>(<its externalId.field>='<value>')"`, so Dataverse
 *   resolves the reference by alternate key in the same operation, no extra request. Name the
 *   single-valued navigation property, e.g. `parentcontactid` or, for the polymorphic customer
 *   lookup of an opportunity, `customerid_contact`. A lookup whose column is NULL disassociates:
 *   `"<navprop>@odata.bind": null` in the same PATCH (no lookup of a target, so never pending)
 *   (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/associate-disassociate-entities-using-web-api#disassociate-with-a-single-valued-navigation-property).
 *
 * Alternate-key values holding `/ # < > * % & : \ ? +` cannot be used in a key segment: "If the
 * data within a column that is used in an alternate key contains one of the following characters
 * /, #, <, >, *, %, &, :, \\, ?, + then GET or PATCH actions won't work"
 * (https://learn.microsoft.com/power-apps/maker/data-platform/define-alternate-keys-portal), and an
 * `@odata.bind` is such a URL too. ERP keys like `ORD/2024/1` are therefore resolved first, in one
 * `$batch` of `GET <set>?$filter=<key> eq '<value>'&$select=<primary id>` (special characters
 * URL-encoded, https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/filter-rows),
 * then written by GUID: `PATCH <set>(<guid>)` with `If-Match: *` (update only), `POST <set>` with
 * the key column in the body when absent
 * (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/create-entity-web-api),
 * `DELETE <set>(<guid>)`, and binds to `/<set>(<guid>)`. The primary id column's name is read once
 * per table from `EntityDefinitions` (PrimaryIdAttribute,
 * https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api).
 * Every other key keeps the one-operation path above.
 *
 * The batch carries `Prefer: odata.continue-on-error`, so one invalid record does not stop the
 * others and the response has one part per operation, in order. A `$batch` is ONE request toward
 * the 6,000 per 5 minutes: see `cost()`.
 *
 * Microsoft advises starting with small batches and growing them while they stay fast
 * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits#how-to-maximize-throughput):
 * the adapter sends a call's records as consecutive `$batch` requests of `batchSize` operations,
 * starting at 10, doubling after each quick success up to 1,000, halving on a throttle or a slow batch.
 */
const API_MAX_BATCH = 1000;
const FIRST_BATCH = 10;
/** Dataverse's execution-time limit: seconds per window of seconds (api-limits). */
const EXECUTION_SECONDS = 1200;
const EXECUTION_WINDOW_SECONDS = 300;
const log = componentLogger('crm.dynamics');

interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** A 429 (service protection): the outcome of the records it refused, already signalled to the budget. */
  throttle?: RetryOutcome;
}

/** `erp_id='O''Brien'` with the value percent-encoded for the URL (quotes doubled per OData). */
export function keySegment(field: string, value: string): string {
  return `${field}='${encodeURIComponent(value.replace(/'/g, "''"))}'`;
}

/** Characters Dataverse cannot take in an alternate-key value of a key segment (define-alternate-keys-portal). */
const KEY_UNSAFE = /[/#<>*%&:\\?+]/;

/** External ids per `$filter` read (pg2crm verify). */
const READ_BATCH = 50;
/** Records per page of a verify listing (`Prefer: odata.maxpagesize`; Dataverse's default and most is 5,000). */
const LIST_PAGE = 1000;

/** Whether `value` can be sent as `(<key>='<value>')`; otherwise the record is resolved by `$filter`. */
export function keySegmentUsable(value: string): boolean {
  return !KEY_UNSAFE.test(value);
}

/** A record to find by `$filter` before the write: table, key column, value. */
interface KeyRef {
  object: string;
  field: string;
  value: string;
}

const refId = (r: KeyRef): string => `${r.object}\u0000${r.field}\u0000${r.value}`;

/** A write operation of the `$batch`; `byGuid` when its record was found by `$filter` first. */
interface Planned {
  op: BatchOperation;
  byGuid: boolean;
}

/** What a `$filter` look-up found: the GUID, nothing, or an outcome for the records that needed it. */
type Resolved = { guid: string } | { absent: true } | { outcome: WriteOutcome };

/** The key look-ups one chunk of records needs (own keys and lookup targets not usable in a URL). */
function keyRefs(chunk: CrmWrite[]): KeyRef[] {
  const refs = new Map<string, KeyRef>();
  const add = (r: KeyRef): void => void refs.set(refId(r), r);
  for (const r of chunk) {
    if (!keySegmentUsable(r.externalId)) add({ object: r.object, field: r.externalIdField, value: r.externalId });
    if (r.op === 'delete') continue;
    for (const l of Object.values(r.lookups ?? {})) {
      if (l.externalId !== null && !keySegmentUsable(l.externalId))
        add({ object: l.object, field: l.externalIdField, value: l.externalId });
    }
  }
  return [...refs.values()];
}

function odataError(text: string): { code?: string; message?: string } {
  try {
    return (JSON.parse(text) as { error?: { code?: string; message?: string } }).error ?? {};
  } catch {
    return {};
  }
}

/** The attribute a Dataverse validation message names ('<name>' attribute / property named '<name>'). */
function fieldOf(message: string | undefined): string | undefined {
  const m = /'([A-Za-z0-9_]+)' attribute|property named '([A-Za-z0-9_]+)'/.exec(message ?? '');
  return m ? (m[1] ?? m[2]) : undefined;
}

/*
 * The documented success answers: `GET WhoAmI` is `{BusinessUnitId, UserId, OrganizationId}`
 * (GUIDs; https://learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/whoami);
 * `$batch` is 200 `multipart/mixed` with one part per operation under `odata.continue-on-error`
 * (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api);
 * an upsert (PATCH) part is `204 No Content` with `OData-EntityId: <url>(<guid>)` and a DELETE
 * part `204 No Content`
 * (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/update-delete-entities-using-web-api).
 * Anything else on a 2xx (an HTML page from a proxy, JSON cut off, an empty body, a part missing)
 * is not Dataverse's answer: nothing is known to be written, so it is a retriable
 * CRM_BAD_RESPONSE, never `done`.
 */
const GUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

function isWhoAmI(text: string): boolean {
  try {
    const body = JSON.parse(text) as unknown;
    return (
      typeof body === 'object' &&
      body !== null &&
      typeof (body as { UserId?: unknown }).UserId === 'string' &&
      GUID.test((body as { UserId: string }).UserId)
    );
  } catch {
    return false;
  }
}

/**
 * What an upsert part's OData-EntityId names: `<url>/<set>(<guid>)` -> the GUID; a key other
 * than a GUID (not expected, but not garbage either) -> ''; no such header -> undefined.
 */
function entityIdOf(part: BatchItemResponse): string | undefined {
  const key = /\(([^()]+)\)\s*$/.exec(part.headers['odata-entityid'] ?? '')?.[1];
  return key === undefined ? undefined : GUID.test(key) ? key : '';
}

export class DynamicsAdapter implements CrmAdapter {
  readonly kind = 'dynamics';
  private readonly pool: Pool;
  /** The credential's token: static, or Microsoft Entra client credentials renewed ahead of expiry. */
  private readonly auth: TokenProvider;
  private readonly timeoutMs: number;
  private readonly apiPath: string;
  /** Operations per `$batch` request right now (Microsoft: start small, grow while fast). */
  batchSize = FIRST_BATCH;
  /** Entity set -> its primary id column (`contacts` -> `contactid`), read from EntityDefinitions. */
  private readonly primaryIds = new Map<string, string>();

  constructor(config: CrmConfig) {
    const base = new URL(config.baseUrl);
    this.pool = crmPool(base.origin, config.tls, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    this.auth = tokenProviderFor(config, config.auth);
    this.timeoutMs = config.timeoutMs;
    this.apiPath = `${base.pathname.replace(/\/+$/, '')}/api/data/${config.apiVersion ?? 'v9.2'}`;
  }

  maxBatchSize(): number {
    return API_MAX_BATCH;
  }

  /**
   * Requests `write(records)` sends: one per `$batch`, not one per operation. Microsoft's service
   * protection page, "Number of requests" (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits):
   * "Combine the selected operations into a batch. A batch can contain up to 1000 operations and
   * will avoid the number of requests limit. However, you will need to be prepared for the
   * execution time limit." The execution-time limit (1,200 s per 5 minutes) is paced by the
   * sink, which counts its calls' durations against it (`executionSeconds`), by the batch-size
   * controller (halving on a slow batch) and by Retry-After on its 429, never by the
   * `x-ms-ratelimit-*` headers, which "are intended for debugging purposes" (same page).
   *
   * Counted as `write` will split the records: batches of `batchSize` doubling after each full
   * (quick) batch, plus one look-up `$batch` for every batch with keys not usable in a URL, plus
   * one EntityDefinitions request per table whose primary id column is not known yet.
   */
  cost(records: CrmWrite[]): number {
    let requests = 0;
    let size = this.batchSize;
    const tables = new Set<string>();
    for (let i = 0; i < records.length; ) {
      const chunk = records.slice(i, i + size);
      requests++;
      const refs = keyRefs(chunk);
      if (refs.length) requests++;
      for (const r of refs) if (!this.primaryIds.has(r.object)) tables.add(r.object);
      i += chunk.length;
      if (chunk.length === size) size = Math.min(API_MAX_BATCH, size * 2);
    }
    return requests + tables.size;
  }

  /**
   * Dataverse's combined execution time: 1,200 s per user per 5-minute sliding window
   * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits), at the same rate
   * for a window configured otherwise (benches scale the window down). The sink measures its own
   * `$batch` durations against it (sink/execution-meter.ts): Microsoft's
   * `x-ms-ratelimit-time-remaining-xrm-requests` header is for debugging, not for pacing.
   */
  executionSeconds(windowSeconds: number): number {
    return (EXECUTION_SECONDS * windowSeconds) / EXECUTION_WINDOW_SECONDS;
  }

  /** As `write` grows the batch size: doubled after each full $batch that was quick. */
  warm(records: CrmWrite[]): void {
    for (let i = 0; i < records.length; ) {
      const chunk = Math.min(this.batchSize, records.length - i);
      i += chunk;
      if (chunk === this.batchSize) this.batchSize = Math.min(API_MAX_BATCH, this.batchSize * 2);
    }
  }

  /**
   * The daily entitlement (Power Platform requests) counts every CRUD operation, batched or not:
   * "Batch operations are not a valid strategy to bypass entitlement limits. Entitlement limits are
   * based on CRUD operations and accrue whether or not they are included in a batch operation."
   * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits, 2020 revision;
   * likewise https://learn.microsoft.com/power-apps/maker/data-platform/api-limits-overview: "operations
   * performed by ... $batch (ExecuteMultiple)"). So: one per record, plus one per key look-up.
   */
  dailyCost(records: CrmWrite[]): number {
    return records.length + keyRefs(records).length;
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', `${this.apiPath}/WhoAmI`, {}, undefined, () => undefined);
    if (res.status !== 200) {
      throw new ConnectorError(
        'CRM_PING',
        `Dynamics 365 answered HTTP ${res.status} to GET ${this.apiPath}/WhoAmI; check crm.baseUrl (the environment URL, e.g. https://org.crm.dynamics.com) and crm.apiVersion`,
      );
    }
    // A proxy or captive portal answering 200 must not pass `pg2crm check`.
    if (!isWhoAmI(res.text)) throw badResponse(`Dynamics 365 GET ${this.apiPath}/WhoAmI`, res.status, res.text, '{"UserId":"<guid>",…}');
  }

  async write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]> {
    const out: WriteOutcome[] = [];
    while (out.length < records.length) {
      const chunk = records.slice(out.length, out.length + this.batchSize);
      let results: WriteOutcome[];
      try {
        results = await this.writeChunk(chunk, onSignal);
      } catch (err) {
        // Outcomes already known are kept; the rest is retried (or the whole call fails first time).
        const rest = out.length > 0 ? retryOutcomeOf(err) : undefined;
        if (!rest) throw err;
        while (out.length < records.length) out.push(rest);
        break;
      }
      out.push(...results);
      const throttle = results.find((r) => r.status === 'retry' && r.kind === 'throttle');
      if (throttle && out.length < records.length) {
        while (out.length < records.length) out.push(throttle);
      }
    }
    return out;
  }

  /** One chunk of `batchSize` records: look up the keys a URL cannot carry, then one `$batch` of writes. */
  private async writeChunk(chunk: CrmWrite[], onSignal: (s: RateSignal) => void): Promise<WriteOutcome[]> {
    const full = chunk.length === this.batchSize;
    const started = Date.now();
    const refs = keyRefs(chunk);
    let found = new Map<string, Resolved>();
    if (refs.length) {
      const r = await this.resolve(refs, onSignal);
      if ('throttled' in r) return chunk.map(() => r.throttled);
      found = r.found;
    }
    const plans = chunk.map((r) => this.plan(r, found));
    const send = plans.flatMap((p, i) => ('op' in p ? [i] : []));
    const sent = send.length
      ? await this.sendBatch(
          send.map((i) => chunk[i]!),
          send.map((i) => plans[i] as Planned),
          onSignal,
        )
      : [];
    let next = 0;
    const results = plans.map((p) => ('outcome' in p ? p.outcome : sent[next++]!));
    if (!results.some((r) => r.status === 'retry' && r.kind === 'throttle')) {
      const elapsed = Date.now() - started;
      if (elapsed > this.timeoutMs / 2) this.resize(Math.floor(this.batchSize / 2), 'slow batch');
      else if (full) this.resize(this.batchSize * 2, 'fast batch');
    }
    return results;
  }

  /** The write of one record: an operation of the `$batch`, or an outcome known without one. */
  private plan(r: CrmWrite, found: Map<string, Resolved>): Planned | { outcome: WriteOutcome } {
    const set = `${this.apiPath}/${r.object}`;
    const own = keySegmentUsable(r.externalId)
      ? undefined
      : found.get(refId({ object: r.object, field: r.externalIdField, value: r.externalId }));
    if (own && 'outcome' in own) return { outcome: own.outcome };
    const byKey = `${set}(${keySegment(r.externalIdField, r.externalId)})`;
    if (r.op === 'delete') {
      if (!own) return { op: { method: 'DELETE', url: byKey }, byGuid: false };
      // Nothing has that key: nothing to delete, the same as a 404.
      if ('absent' in own) return { outcome: { status: 'done' } };
      return { op: { method: 'DELETE', url: `${set}(${own.guid})` }, byGuid: true };
    }
    const body: Record<string, unknown> = { ...r.fields };
    for (const [nav, l] of Object.entries(r.lookups ?? {})) {
      if (l.externalId === null) body[`${nav}@odata.bind`] = null;
      else if (keySegmentUsable(l.externalId)) body[`${nav}@odata.bind`] = `/${l.object}(${keySegment(l.externalIdField, l.externalId)})`;
      else {
        const target = found.get(refId({ object: l.object, field: l.externalIdField, value: l.externalId }));
        // keyRefs() asks for every such lookup: a missing answer is a bug in this adapter.
        if (!target)
          throw new ConnectorError(
            'INTERNAL',
            `Dynamics 365 adapter: no look-up result for ${l.object} ${l.externalIdField}; this is a pg2crm bug, report it`,
          );
        if ('outcome' in target) return { outcome: target.outcome };
        if ('absent' in target) {
          return {
            outcome: {
              status: 'retry',
              code: 'LOOKUP_PENDING',
              kind: 'pending',
              message: `${nav}: Dynamics 365 has no ${l.object} record whose ${l.externalIdField} is ${JSON.stringify(l.externalId)} yet`,
            },
          };
        }
        body[`${nav}@odata.bind`] = `/${l.object}(${target.guid})`;
      }
    }
    const json = { 'Content-Type': 'application/json' };
    if (!own) return { op: { method: 'PATCH', url: byKey, headers: json, body: JSON.stringify(body) }, byGuid: false };
    if ('absent' in own)
      return {
        op: { method: 'POST', url: set, headers: json, body: JSON.stringify({ ...body, [r.externalIdField]: r.externalId }) },
        byGuid: true,
      };
    // Update only: a record deleted since the look-up must not come back without its key.
    return {
      op: { method: 'PATCH', url: `${set}(${own.guid})`, headers: { ...json, 'If-Match': '*' }, body: JSON.stringify(body) },
      byGuid: true,
    };
  }

  /**
   * Finds the records whose key values cannot be sent in a URL, in one `$batch` of
   * `GET <set>?$filter=<key> eq '<value>'&$select=<primary id>,<key>`. String comparisons of
   * `$filter` are case-insensitive, like the alternate key's unique index; more than one hit means
   * the column is no alternate key, and the record cannot be told apart.
   */
  private async resolve(
    refs: KeyRef[],
    onSignal: (s: RateSignal) => void,
  ): Promise<{ throttled: WriteOutcome } | { found: Map<string, Resolved> }> {
    const found = new Map<string, Resolved>();
    const tables = await this.learnPrimaryIds([...new Set(refs.map((r) => r.object))], onSignal);
    if ('throttled' in tables) return tables;
    const ask = refs.filter((r) => {
      const failed = tables.failed.get(r.object);
      if (failed) found.set(refId(r), { outcome: failed });
      return !failed;
    });
    if (!ask.length) return { found };
    const ops: BatchOperation[] = ask.map((r) => {
      const filter = encodeURIComponent(`${r.field} eq '${r.value.replace(/'/g, "''")}'`);
      return { method: 'GET', url: `${this.apiPath}/${r.object}?$filter=${filter}&$select=${this.primaryIds.get(r.object)!},${r.field}` };
    });
    const answer = await this.postBatch(ops, onSignal);
    if ('throttled' in answer) return answer;
    ask.forEach((r, i) => {
      found.set(refId(r), this.lookedUp(r, answer.parts[i], answer.what, onSignal));
    });
    return { found };
  }

  /** One `$filter` look-up's answer. */
  private lookedUp(r: KeyRef, part: BatchItemResponse | undefined, what: string, onSignal: (s: RateSignal) => void): Resolved {
    const asked = `look-up of ${r.object} by ${r.field} ${JSON.stringify(r.value)}`;
    if (!part)
      return {
        outcome: {
          status: 'retry',
          code: 'CRM_BAD_RESPONSE',
          kind: 'bad-response',
          message: `${what}: no part for the ${asked}; the CRM or a proxy in front of it answered something else`,
        },
      };
    if (part.status === 200) {
      const pid = this.primaryIds.get(r.object)!;
      let rows: unknown;
      try {
        rows = (JSON.parse(part.body) as { value?: unknown }).value;
      } catch {
        rows = undefined;
      }
      const shape = `{"value":[{"${pid}":"<guid>","${r.field}":…}]}`;
      if (!Array.isArray(rows)) {
        const bad = badResponse(`${what} (${asked})`, part.status, part.body, shape);
        return { outcome: { status: 'retry', code: bad.code, kind: 'bad-response', message: bad.message } };
      }
      const hits = rows.filter(
        (x): x is Record<string, unknown> =>
          typeof x === 'object' && x !== null && String((x as Record<string, unknown>)[r.field]).toLowerCase() === r.value.toLowerCase(),
      );
      if (hits.length === 0) return { absent: true };
      if (hits.length > 1) {
        return {
          outcome: {
            status: 'rejected',
            code: 'CRM_KEY_NOT_UNIQUE',
            message: `Dynamics 365 has ${hits.length} ${r.object} records whose ${r.field} is ${JSON.stringify(r.value)}; define an alternate key on ${r.field} so each value names one record`,
          },
        };
      }
      const id = hits[0]![pid];
      if (typeof id !== 'string' || !GUID.test(id)) {
        const bad = badResponse(`${what} (${asked})`, part.status, part.body, shape);
        return { outcome: { status: 'retry', code: bad.code, kind: 'bad-response', message: bad.message } };
      }
      return { guid: id };
    }
    const err = odataError(part.body);
    const message = `Dynamics 365 ${asked}: HTTP ${part.status} ${err.code ?? ''}: ${err.message ?? part.body.slice(0, 200)}`;
    if (part.status === 429) return { outcome: throttled(part.headers, { message, onSignal }) };
    if (part.status >= 500) return { outcome: { status: 'retry', code: `HTTP_${part.status}`, kind: 'server', message } };
    return {
      outcome: {
        status: 'rejected',
        code: `HTTP_${part.status}_${err.code ?? 'error'}`,
        message: `${message}; check that ${r.field} is a column of ${r.object}`,
      },
    };
  }

  /**
   * The primary id column of each table (`contacts` -> `contactid`), from
   * `EntityDefinitions?$filter=EntitySetName eq '<set>'`; kept for the adapter's life (table
   * definitions do not change under a running connector). A table Dataverse does not know fails
   * its records, a throttle the whole chunk.
   */
  private async learnPrimaryIds(
    objects: string[],
    onSignal: (s: RateSignal) => void,
  ): Promise<{ throttled: WriteOutcome } | { failed: Map<string, WriteOutcome> }> {
    const failed = new Map<string, WriteOutcome>();
    for (const object of objects) {
      if (this.primaryIds.has(object)) continue;
      const path = `${this.apiPath}/EntityDefinitions?$select=EntitySetName,PrimaryIdAttribute&$filter=${encodeURIComponent(`EntitySetName eq '${object.replace(/'/g, "''")}'`)}`;
      const res = await this.request('GET', path, {}, undefined, onSignal);
      if (res.throttle) return { throttled: this.throttled(res.throttle) };
      const what = `Dynamics 365 GET ${this.apiPath}/EntityDefinitions (table ${object})`;
      if (res.status >= 500)
        throw new ConnectorError(
          'CRM_UNAVAILABLE',
          `${what}: HTTP ${res.status}: ${odataError(res.text).message ?? res.text.slice(0, 200)}`,
          { retriable: true },
        );
      if (res.status !== 200) {
        const err = odataError(res.text);
        failed.set(object, {
          status: 'rejected',
          code: `HTTP_${res.status}_${err.code ?? 'error'}`,
          message: `${what}: HTTP ${res.status}: ${err.message ?? res.text.slice(0, 200)}`,
        });
        continue;
      }
      let rows: unknown;
      try {
        rows = (JSON.parse(res.text) as { value?: unknown }).value;
      } catch {
        rows = undefined;
      }
      const row = Array.isArray(rows)
        ? (rows as { EntitySetName?: unknown; PrimaryIdAttribute?: unknown }[]).find((x) => x?.EntitySetName === object)
        : undefined;
      if (Array.isArray(rows) && !row) {
        failed.set(object, {
          status: 'rejected',
          code: 'CRM_UNKNOWN_TABLE',
          message: `${what}: Dynamics 365 has no table whose entity set is '${object}'; a mapping's object must be the entity set name (e.g. contacts, accounts)`,
        });
        continue;
      }
      if (!row || typeof row.PrimaryIdAttribute !== 'string' || !/^[a-z_][a-z0-9_]*$/.test(row.PrimaryIdAttribute)) {
        throw badResponse(what, res.status, res.text, '{"value":[{"EntitySetName":"<set>","PrimaryIdAttribute":"<column>"}]}');
      }
      this.primaryIds.set(object, row.PrimaryIdAttribute);
    }
    return { failed };
  }

  private resize(next: number, why: string): void {
    const size = Math.max(1, Math.min(API_MAX_BATCH, next));
    if (size !== this.batchSize) log.debug({ from: this.batchSize, to: size, why }, 'batch size changed');
    this.batchSize = size;
  }

  /** A whole request throttled (429, signalled by `request`): the outcome of every record it carried; the batch halves. */
  private throttled(throttle: RetryOutcome): WriteOutcome {
    this.resize(Math.floor(this.batchSize / 2), 'throttled');
    return throttle;
  }

  /** One `$batch` request: its parts in order, or the throttle that refused it. */
  private async postBatch(
    ops: BatchOperation[],
    onSignal: (s: RateSignal) => void,
  ): Promise<{ throttled: WriteOutcome } | { parts: BatchItemResponse[]; status: number; what: string }> {
    const boundary = newBoundary('batch');
    const res = await this.request(
      'POST',
      `${this.apiPath}/$batch`,
      { 'content-type': `multipart/mixed; boundary=${boundary}`, prefer: 'odata.continue-on-error' },
      buildBatchRequest(boundary, ops),
      onSignal,
    );
    if (res.throttle) return { throttled: this.throttled(res.throttle) };
    if (res.status >= 500) {
      throw new ConnectorError(
        'CRM_UNAVAILABLE',
        `Dynamics 365 answered HTTP ${res.status} to $batch: ${odataError(res.text).message ?? res.text.slice(0, 200)}`,
        { retriable: true },
      );
    }
    const what = `Dynamics 365 POST ${this.apiPath}/$batch`;
    const multipart = 'multipart/mixed with one part per operation';
    const inner = boundaryOf(header(res.headers, 'content-type'));
    if (!inner) {
      // A 2xx that is not multipart is not Dataverse's answer (a proxy's page, a cut-off body).
      if (res.status >= 200 && res.status < 300) throw badResponse(what, res.status, res.text, multipart);
      const err = odataError(res.text);
      throw new ConnectorError(
        'CRM_BATCH_REJECTED',
        `Dynamics 365 rejected the $batch request (HTTP ${res.status} ${err.code ?? ''}): ${err.message ?? res.text.slice(0, 200)}; this is a pg2crm bug or an unsupported environment, report it`,
      );
    }
    let parts: BatchItemResponse[];
    try {
      parts = parseBatchResponse(res.text, inner);
    } catch (err) {
      const bad = badResponse(what, res.status, res.text, `${multipart} (${errorMessage(err)})`);
      throw new ConnectorError('CRM_BAD_RESPONSE', bad.message, { retriable: true, cause: err });
    }
    // More answers than operations: which part is whose cannot be told, so none is trusted.
    if (parts.length > ops.length) {
      throw new ConnectorError(
        'CRM_BAD_RESPONSE',
        `${what}: HTTP ${res.status} with ${parts.length} parts for ${ops.length} operations, expected one part per operation; the CRM or a proxy in front of it answered something else`,
        { retriable: true },
      );
    }
    return { parts, status: res.status, what };
  }

  /** The write `$batch`: one outcome per record, in order. */
  private async sendBatch(chunk: CrmWrite[], planned: Planned[], onSignal: (s: RateSignal) => void): Promise<WriteOutcome[]> {
    const answer = await this.postBatch(
      planned.map((p) => p.op),
      onSignal,
    );
    if ('throttled' in answer) return chunk.map(() => answer.throttled);
    const { parts, status, what } = answer;
    const last = parts.at(-1);
    const stopped = last !== undefined && (last.status < 200 || last.status >= 300);
    return chunk.map((r, i) => {
      const part = parts[i];
      if (!part) {
        // Dataverse stops at a failure only without continue-on-error (always sent): after a
        // failed part that is what happened; after a successful one, the answer is cut short.
        if (stopped) return { status: 'retry', code: 'BATCH_STOPPED', message: 'Dynamics 365 stopped the batch before this operation' };
        return {
          status: 'retry',
          code: 'CRM_BAD_RESPONSE',
          kind: 'bad-response',
          message: `${what}: HTTP ${status} with ${parts.length} parts for ${chunk.length} operations, none for operation ${i + 1}; the CRM or a proxy in front of it answered something else`,
        };
      }
      return this.outcome(r, part, planned[i]!, onSignal, i);
    });
  }

  private outcome(r: CrmWrite, part: BatchItemResponse, planned: Planned, onSignal: (s: RateSignal) => void, index: number): WriteOutcome {
    const method = planned.op.method;
    if (part.status >= 200 && part.status < 300) {
      const what = `Dynamics 365 $batch part ${index + 1} (${method} ${r.object})`;
      if (r.op === 'delete') {
        if (part.status === 204) return { status: 'done' };
        const bad = badResponse(what, part.status, part.body, '204 No Content');
        return { status: 'retry', code: bad.code, kind: 'bad-response', message: bad.message };
      }
      const id = entityIdOf(part);
      if (part.status !== 204 || id === undefined) {
        const bad = badResponse(what, part.status, part.body, '204 No Content with OData-EntityId: <url>/<set>(<guid>)');
        return { status: 'retry', code: bad.code, kind: 'bad-response', message: bad.message };
      }
      return { status: 'done', ...(id ? { crmId: id } : {}), ...(method === 'POST' ? { created: true } : {}) };
    }
    if (part.status === 404 && r.op === 'delete') return { status: 'done' };
    const err = odataError(part.body);
    const message = err.message ?? `HTTP ${part.status}`;
    // Only a bind to a record can miss its target; a null bind (disassociate) looks nothing up.
    if (part.status === 404 && Object.values(r.lookups ?? {}).some((l) => l.externalId !== null)) {
      return {
        status: 'retry',
        code: 'LOOKUP_PENDING',
        kind: 'pending',
        message: `${message} (a referenced record is not in Dynamics 365 yet)`,
      };
    }
    // Written by GUID after a look-up: the record was deleted (404 to the update-only PATCH) or
    // created by someone else (412 duplicate key to the POST) in between; look it up again.
    if (planned.byGuid && (part.status === 404 || part.status === 412)) {
      return {
        status: 'retry',
        code: 'CRM_RECORD_CHANGED',
        message: `${message} (${r.object} ${r.externalIdField} ${JSON.stringify(r.externalId)} changed in Dynamics 365 since it was looked up; it is looked up again)`,
      };
    }
    if (part.status === 429) return throttled(part.headers, { message, onSignal });
    if (part.status >= 500) return { status: 'retry', code: `HTTP_${part.status}`, kind: 'server', message };
    if (part.status === 408) return { status: 'retry', code: `HTTP_${part.status}`, kind: 'timeout', message };
    const field = fieldOf(err.message);
    return { status: 'rejected', code: `HTTP_${part.status}_${err.code ?? 'error'}`, message, ...(field ? { field } : {}) };
  }

  private async request(
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string>,
    body: string | undefined,
    onSignal: (s: RateSignal) => void,
  ): Promise<HttpResponse> {
    // An Entra token Dataverse no longer accepts (expired: they live 60-90 minutes) is answered
    // 401; refresh once and retry, stop only when a fresh token is refused too.
    const out: HttpResponse = await withToken(
      this.auth,
      'Dynamics 365',
      (token) =>
        send(this.pool, {
          method,
          path,
          headers: {
            authorization: `Bearer ${token.value}`,
            accept: 'application/json',
            'odata-version': '4.0',
            'odata-maxversion': '4.0',
            ...headers,
          },
          body,
          timeoutMs: this.timeoutMs,
          what: 'Dynamics 365 request',
        }),
      (res) => res.status === 401,
    );
    // Pacing comes from Retry-After (and the batch-size controller's execution time), never from
    // `x-ms-ratelimit-*-remaining-*`: "You should not depend on these values to control how many
    // requests you send. They are intended for debugging purposes."
    // (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits#http-response-headers)
    // Microsoft sends Retry-After with every 429 (same page): no default wait of our own.
    if (out.status === 429) {
      const err = odataError(out.text);
      out.throttle = throttled(out.headers, {
        message: `Dynamics 365 service protection limit ${err.code ?? ''}: ${err.message ?? 'too many requests'}`.trim(),
        onSignal,
      });
    } else onSignal({});
    if (out.status === 403) {
      throw new ConnectorError(
        'CRM_AUTH',
        `Dynamics 365 refused the request of ${this.auth.credential} (HTTP 403); give the application user a security role that may write these tables`,
        { retriable: false },
      );
    }
    return out;
  }

  /**
   * `pg2crm verify`: key values per `$filter` of `eq` comparisons joined by `or` (filter-rows,
   * https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/filter-rows); 50
   * keep the URL far below the Web API's length limit. `$filter` works for any value, where a key
   * segment refuses `/ < > * % & : \\ ? +` (the Corrections of reference/crm-apis.md).
   */
  readBatchSize(): number {
    return READ_BATCH;
  }

  async readByExternalIds(
    target: CrmTarget,
    ids: string[],
    fields: string[],
    onSignal: (s: RateSignal) => void,
  ): Promise<Map<string, Record<string, unknown>>> {
    const f = target.externalIdField;
    const filter = ids.map((id) => `${f} eq '${id.replace(/'/g, "''")}'`).join(' or ');
    const page = await this.readPage(
      `${this.apiPath}/${target.object}?$filter=${encodeURIComponent(filter)}&$select=${[f, ...fields].join(',')}`,
      target,
      fields,
      onSignal,
    );
    return new Map(page.records.map((r) => [r.externalId, r.fields]));
  }

  /**
   * `GET <set>?$filter=<key> ne null&$select=…` with `Prefer: odata.maxpagesize=<n>`, then
   * `@odata.nextLink` page by page, each one request of the service protection limit
   * (page-results, https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results).
   */
  async listRecords(target: CrmTarget, fields: string[], cursor: string | undefined, onSignal: (s: RateSignal) => void) {
    const f = target.externalIdField;
    const first = `${this.apiPath}/${target.object}?$filter=${encodeURIComponent(`${f} ne null`)}&$select=${[f, ...fields].join(',')}`;
    // The nextLink is an absolute URL of the same environment: only its path and query are sent.
    const path = cursor
      ? (() => {
          const u = new URL(cursor);
          return `${u.pathname}${u.search}`;
        })()
      : first;
    return this.readPage(path, target, fields, onSignal);
  }

  private async readPage(path: string, target: CrmTarget, fields: string[], onSignal: (s: RateSignal) => void) {
    const res = await this.request('GET', path, { prefer: `odata.maxpagesize=${LIST_PAGE}` }, undefined, onSignal);
    if (res.throttle) throw new ThrottledCall(res.throttle);
    const what = `Dynamics 365 GET ${path.split('?')[0]}`;
    if (res.status !== 200) {
      throw new ConnectorError(
        res.status >= 500 ? 'CRM_UNAVAILABLE' : 'CRM_CALL',
        `${what} answered HTTP ${res.status}: ${res.text.slice(0, 200)}; check mappings[].object (the entity set), externalId.field and fields`,
        {
          retriable: res.status >= 500,
        },
      );
    }
    const body = safeJson(res.text);
    if (!isObject(body) || !Array.isArray(body.value) || !body.value.every(isObject))
      throw badResponse(what, res.status, res.text, '{"value":[{…}],"@odata.nextLink"?:"<url>"}');
    const records: { externalId: string; fields: Record<string, unknown> }[] = [];
    for (const row of body.value as Record<string, unknown>[]) {
      const id = row[target.externalIdField];
      if (id !== undefined && id !== null && id !== '')
        records.push({ externalId: String(id), fields: Object.fromEntries(fields.map((k) => [k, row[k]])) });
    }
    const next = body['@odata.nextLink'];
    return typeof next === 'string' && next !== '' ? { records, next } : { records };
  }

  describeAuth(): string {
    return this.auth.describe();
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
