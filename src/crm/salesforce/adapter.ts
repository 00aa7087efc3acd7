import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError } from '../../errors.ts';
import { componentLogger } from '../../logger.ts';
import { badResponse, crmPool, header, isObject, type RetryOutcome, safeJson, send, ThrottledCall, throttled } from '../http.ts';
import { tokenProviderFor } from '../auth/oauth-flows.ts';
import { type TokenProvider, withToken } from '../auth/token-provider.ts';
import { assertInstance } from './auth.ts';
import { type CrmAdapter, type CrmTarget, type CrmWrite, type RateSignal, retryOutcomeOf, type WriteOutcome } from '../crm-adapter.ts';
import { parseCsv, SALESFORCE_CSV, SALESFORCE_CSV_NULL, toCsv } from '../csv.ts';

/**
 * Salesforce REST API adapter (reference/crm-apis.md).
 *
 * Upserts: below `crm.bulkThreshold` records, sObject Collections upsert by external id,
 * 200 records a request, `allOrNone:false` so one bad record does not sink its batch
 * (PATCH /services/data/{v}/composite/sobjects/{Object}/{ExternalIdField}). From the threshold
 * on, one Bulk API 2.0 ingest job: create (operation upsert, externalIdFieldName) -> PUT CSV ->
 * PATCH UploadComplete -> poll the job (the only waiting this adapter does: each poll one call
 * bounded by `crm.timeoutMs`, the job by `crm.bulkJobTimeoutMinutes`) -> GET successfulResults /
 * failedResults / unprocessedrecords, matched back to the records by external id (Salesforce does
 * not keep row order).
 *
 * A job outlives the call that created it when the call ends early (a throttled poll, the
 * process stopping or crashing): the records come back (redelivered), and the job must be found
 * again rather than paid for twice while the first one still runs. The adapter remembers its
 * unsettled jobs and what each carries; after a restart it lists the org's ingest jobs once per
 * object and external-id field (`GET /jobs/ingest`,
 * https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_all_jobs.htm)
 * and takes up the upsert jobs of the integration user (`/services/oauth2/userinfo` user_id =
 * the job's createdById) still running, created within the job timeout before it started
 * (a job that completed meanwhile is not read: its records go into a new job, same values). A resumed job covers
 * a record only when its result row holds exactly the cells this call would upload; the records
 * it does not cover go into a new job.
 *
 * Deletes (always through the REST API; CDC deletes are few, and Bulk delete also needs Ids):
 * one SOQL query finds the Ids of up to 200 external ids, then one
 * DELETE /composite/sobjects?ids=...&allOrNone=false removes them.
 *
 * Lookups need no request: Salesforce resolves a parent by its external id inside the write.
 * A mapping names the lookup field, e.g. `lookups: {Customer__c: {object: Contact, column: customer_id}}`
 * or `AccountId`; the adapter sends the relationship `Customer__r: {attributes:{type:"Contact"}, ERP_Id__c:"42"}`
 * (`Account: {...}` for `AccountId`), and in Bulk CSV the column `Customer__r.ERP_Id__c`.
 * Naming the relationship itself (`Customer__r`, `Account`) works too.
 * https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_upsert.htm
 *
 * A lookup whose column is NULL clears the field: the lookup ID field set to JSON null
 * (`"Customer__c": null`, `"AccountId": null`; a JSON null sets a nillable field to null, the
 * REST counterpart of SOAP's fieldsToNull), never the relationship, which names a parent to find.
 * Such a record always goes through sObject Collections, even past `crm.bulkThreshold`: the
 * Bulk CSV form would be `#N/A` in an `AccountId` column beside the `Account.ERP_Id__c` column of
 * the other rows, and Salesforce refuses a record that names both the relationship and the Id
 * field (INVALID_FIELD "Cannot specify both an external ID reference ... and a salesforce id");
 * the documentation does not say whether an empty cell counts, so the job is not risked on it.
 * https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_csv_valid_record_rows.htm
 *
 * Quota: a rolling 24 h count of API calls; `Sforce-Limit-Info: api-usage=used/limit` becomes
 * `dailyRemaining`. Two limits answer 403 REQUEST_LIMIT_EXCEEDED without Retry-After, told apart
 * by the message (https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html):
 * the daily allocation ("TotalRequests Limit exceeded.") frees only as the rolling 24 h moves on,
 * so the records wait DAILY_LIMIT_WAIT_SECONDS; the concurrent long-running request limit
 * ("ConcurrentPerOrgLongTxn Limit exceeded." / "ConcurrentRequests ... Limit exceeded.") frees
 * as soon as one of the org's requests of 20 s or more ends: CONCURRENCY_WAIT_SECONDS.
 */
const COLLECTION_MAX = 200;
/** Largest Bulk API 2.0 job this adapter builds (a job may hold 150 MB of CSV; 10k rows stays far below). */
const BULK_JOB_MAX = 10_000;
/** Waits between job polls: quick for small jobs, then every 10 s. */
const POLL_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 10_000];
/**
 * Past the daily allocation: Salesforce says neither when the rolling 24 h frees calls nor how
 * many (Sforce-Limit-Info gives used/limit only). Calls made a day ago leave the window
 * continuously, so a few minutes frees some; a retry that finds none waits again.
 */
const DAILY_LIMIT_WAIT_SECONDS = 300;
/** Past the concurrent long-running request limit: a request of >= 20 s ends within seconds. */
const CONCURRENCY_WAIT_SECONDS = 5;
/** Pages of `GET /jobs/ingest` (1,000 jobs each) read when looking for jobs to resume. */
const JOB_LIST_PAGES_MAX = 5;
/** Garbled job info answers in a row that give up on a job (one alone is polled past). */
const BAD_POLLS_TOLERATED = 3;
/**
 * What `cost()` assumes of a job's run time (Salesforce documents none): a queueing delay plus
 * a processing rate. The simulator's defaults are the same numbers.
 */
const ASSUMED_JOB_START_MS = 1000;
const ASSUMED_ROWS_PER_SECOND = 2000;
/** Per-record errors that can pass when the record is sent again. */
const TRANSIENT = new Set([
  'UNABLE_TO_LOCK_ROW',
  'REQUEST_RUNNING_TOO_LONG',
  'SERVER_UNAVAILABLE',
  'ALL_OR_NONE_OPERATION_ROLLED_BACK',
  'TXN_SECURITY_METERING_ERROR',
]);
/** Of those, the ones that say Salesforce itself is failing, not the record (its row locked): the circuit breaker counts them. */
const SERVER_FAILING = new Set(['SERVER_UNAVAILABLE']);

const log = componentLogger('crm.salesforce');

/*
 * What Salesforce documents as its answers. A 2xx whose body is not one of these (an HTML page
 * from a proxy, JSON cut off, an empty body) is not Salesforce's answer and never counts as
 * written: the whole call is a retriable CRM_BAD_RESPONSE, a malformed result of one record is a
 * retry of that record with the same code.
 */

/**
 * One element of an sObject Collections answer, in request order: `{id, success, errors[]}`,
 * plus `created` on upsert. A success names the record's Id.
 * https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm
 * https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_delete.htm
 */
interface SaveResult {
  id?: string | null;
  success: boolean;
  created?: boolean;
  errors: SfError[];
}
function isSaveResult(v: unknown, upsert: boolean): v is SaveResult {
  if (!isObject(v) || typeof v.success !== 'boolean' || !Array.isArray(v.errors)) return false;
  if (!v.success) return v.errors.length > 0 && v.errors.every(isObject);
  return typeof v.id === 'string' && v.id.length > 0 && (!upsert || typeof v.created === 'boolean');
}

/**
 * A SOQL query answer `{totalSize, done, records[]}`, every record with its `Id`.
 * https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
 */
interface QueryResult {
  totalSize: number;
  done: boolean;
  nextRecordsUrl?: string;
  records: (Record<string, unknown> & { Id: string })[];
}
function isQueryResult(v: unknown): v is QueryResult {
  return (
    isObject(v) &&
    typeof v.totalSize === 'number' &&
    typeof v.done === 'boolean' &&
    Array.isArray(v.records) &&
    v.records.every((r) => isObject(r) && typeof r.Id === 'string' && r.Id.length > 0) &&
    (v.done || typeof v.nextRecordsUrl === 'string')
  );
}

/**
 * Bulk API 2.0 job info (create, UploadComplete, Get Job Info): `{id, state, ...}`.
 * https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm
 */
const JOB_STATES = new Set(['Open', 'UploadComplete', 'InProgress', 'JobComplete', 'Failed', 'Aborted']);
interface JobInfo {
  id: string;
  state: string;
  errorMessage?: string;
}
function isJobInfo(v: unknown): v is JobInfo {
  return (
    isObject(v) &&
    typeof v.id === 'string' &&
    v.id.length > 0 &&
    typeof v.state === 'string' &&
    JOB_STATES.has(v.state) &&
    (v.errorMessage === undefined || v.errorMessage === null || typeof v.errorMessage === 'string')
  );
}

/**
 * The columns each Bulk API 2.0 result CSV starts with (then the uploaded columns, so the
 * external id too). https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_successful_results.htm,
 * .../get_job_failed_results.htm, .../get_job_unprocessed_results.htm
 */
const RESULT_COLUMNS = {
  successfulResults: ['sf__Id', 'sf__Created'],
  failedResults: ['sf__Id', 'sf__Error'],
  unprocessedrecords: [],
} as const;

/**
 * `GET /limits`: an object of limits, `DailyApiRequests: {Max, Remaining}` among them.
 * https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm
 */
function isLimits(v: unknown): boolean {
  return (
    isObject(v) &&
    isObject(v.DailyApiRequests) &&
    typeof v.DailyApiRequests.Max === 'number' &&
    typeof v.DailyApiRequests.Remaining === 'number'
  );
}

/** A record's result that is not in the documented shape: try it again, counted like a 5xx. */
function badRecord(message: string): WriteOutcome {
  return { status: 'retry', code: 'CRM_BAD_RESPONSE', kind: 'bad-response', message };
}

interface SfResponse {
  status: number;
  body: unknown;
  text: string;
  /** A 403 REQUEST_LIMIT_EXCEEDED: the outcome of the records it refused (already signalled to the budget). */
  throttle?: RetryOutcome;
}

/** The REQUEST_LIMIT_EXCEEDED error of a 403 body `[{errorCode, message}]`, if it is one. */
function limitError(body: unknown): SfError | undefined {
  return Array.isArray(body) ? (body as SfError[]).find((e) => isObject(e) && e.errorCode === 'REQUEST_LIMIT_EXCEEDED') : undefined;
}

interface SfError {
  statusCode?: string;
  errorCode?: string;
  message?: string;
  fields?: string[];
}

/** The relationship name of a lookup field: `Customer__c` -> `Customer__r`, `AccountId` -> `Account`. */
export function relationshipName(field: string): string {
  if (field.endsWith('__c')) return `${field.slice(0, -3)}__r`;
  if (field.length > 2 && field.endsWith('Id')) return field.slice(0, -2);
  return field;
}

/** The Id field of a lookup: `Customer__r` -> `Customer__c`, `Account` -> `AccountId` (ID fields stay). */
export function lookupIdField(field: string): string {
  if (field.endsWith('__c')) return field;
  if (field.endsWith('__r')) return `${field.slice(0, -3)}__c`;
  if (field.length > 2 && field.endsWith('Id')) return field;
  return `${field}Id`;
}

/** A record that clears a lookup: it cannot go through a Bulk job (see the class comment). */
function clearsLookup(r: CrmWrite): boolean {
  return Object.values(r.lookups ?? {}).some((l) => l.externalId === null);
}

/** A result row (or remembered upload) holds every cell of `cells` as given. */
function sameCells(row: Record<string, string> | undefined, cells: Record<string, string>): boolean {
  return row !== undefined && Object.entries(cells).every(([h, v]) => (row[h] ?? '') === v);
}

function pollDelay(attempt: number): number {
  return POLL_DELAYS_MS[Math.min(attempt, POLL_DELAYS_MS.length - 1)]!;
}

/** Polls a job of `rows` rows is expected to need under the assumed run time, and the time they span. */
function expectedPolling(rows: number): { polls: number; waitedMs: number } {
  const expected = ASSUMED_JOB_START_MS + (rows / ASSUMED_ROWS_PER_SECOND) * 1000;
  let waitedMs = 0;
  let polls = 0;
  while (waitedMs < expected) waitedMs += pollDelay(polls++);
  return { polls: Math.max(1, polls), waitedMs };
}

/** Polls a job of `rows` rows is expected to need under the assumed run time. */
export function estimatedPolls(rows: number): number {
  return expectedPolling(rows).polls;
}

/** A field of a query record: SOQL answers field names as the schema spells them, whatever case the query used. */
function caseless(record: Record<string, unknown>, field: string): unknown {
  if (field in record) return record[field];
  const key = Object.keys(record).find((k) => k.toLowerCase() === field.toLowerCase());
  return key === undefined ? undefined : record[key];
}

function soqlString(v: string): string {
  return `'${v.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/**
 * Longest request URI a SOQL `IN (...)` GET may build. Salesforce refuses a request whose URI
 * and headers together exceed 16,384 bytes (HTTP 414; https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm);
 * the headers pg2crm sends (host, bearer token, content type) stay well under the 2,384 left.
 */
const MAX_QUERY_URI = 14_000;

/**
 * `items` split into runs whose `IN (...)` lists keep `uri(list)` within MAX_QUERY_URI bytes;
 * `value` is an item's external id. A single value too long for any URI still gets its own run
 * (Salesforce then refuses it, visibly).
 */
function splitByUri<T>(items: T[], value: (item: T) => string, uri: (inList: string) => string): T[][] {
  const room = MAX_QUERY_URI - uri('').length;
  const out: T[][] = [];
  let run: T[] = [];
  let used = 0;
  for (const item of items) {
    // The list's text is encoded once, as a whole: the sum of the encoded parts is its length.
    const cost = encodeURIComponent(soqlString(value(item))).length + (run.length > 0 ? encodeURIComponent(', ').length : 0);
    if (run.length > 0 && used + cost > room) {
      out.push(run);
      run = [];
      used = 0;
      used += cost - encodeURIComponent(', ').length;
    } else used += cost;
    run.push(item);
  }
  if (run.length > 0) out.push(run);
  return out;
}

/** A cell of Bulk CSV: empty keeps the field, `#N/A` clears it (an empty string clears it too, as in the REST API). */
function csvCell(v: unknown): string {
  if (v === undefined) return '';
  if (v === null || v === '') return SALESFORCE_CSV_NULL;
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** `REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --` -> its parts. */
export function parseBulkError(text: string): SfError {
  const t = text.replace(/\s*--\s*$/, '');
  const first = t.indexOf(':');
  const last = t.lastIndexOf(':');
  if (first < 0) return { statusCode: 'BULK_ERROR', message: text };
  const statusCode = t.slice(0, first);
  if (last === first) return { statusCode, message: t.slice(first + 1) };
  const fields = t
    .slice(last + 1)
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean);
  return { statusCode, message: t.slice(first + 1, last), fields };
}

/** One `write` call in progress: the outcomes so far and whether Salesforce throttled it. */
interface Call {
  records: CrmWrite[];
  out: (WriteOutcome | undefined)[];
  onSignal: (s: RateSignal) => void;
  /** Set once Salesforce throttled the call: the outcome of every record left. */
  throttle?: WriteOutcome;
}

/**
 * Which limit a 403 REQUEST_LIMIT_EXCEEDED names, by its message, and how long to wait when no
 * Retry-After says (Salesforce sends none; something in front of it might): the concurrency
 * limit briefly, the daily allocation (and any message not known) long.
 */
export function requestLimit(message: string | undefined): { limit: 'concurrent' | 'daily'; waitSeconds: number; message: string } {
  const limit = /Concurrent/i.test(message ?? '') ? 'concurrent' : 'daily';
  const what = limit === 'concurrent' ? 'concurrent long-running request limit' : 'daily API request allocation';
  return {
    limit,
    waitSeconds: limit === 'concurrent' ? CONCURRENCY_WAIT_SECONDS : DAILY_LIMIT_WAIT_SECONDS,
    message: `Salesforce ${what} exceeded (403 REQUEST_LIMIT_EXCEEDED: ${message ?? 'no message'})`,
  };
}

/**
 * A Bulk API job not settled yet: created by this process (`cells` = what it carries, by external
 * id) or found by listing after a restart (`cells` unknown until its results are read).
 */
interface OpenJob {
  id: string;
  object: string;
  extField: string;
  /** Epoch ms the job was created; the job timeout counts from here. */
  createdAt: number;
  cells?: Map<string, Record<string, string>>;
}

/** A job's result rows by external id, with the file they came from. */
type JobResults = Map<string, { kind: 'successfulResults' | 'failedResults' | 'unprocessedrecords'; row: Record<string, string> }>;

export class SalesforceAdapter implements CrmAdapter {
  readonly kind = 'salesforce';
  private readonly pool: Pool;
  /** The credential's token: client credentials or JWT bearer (renewed on INVALID_SESSION_ID), or static. */
  private readonly auth: TokenProvider;
  private readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly bulkThreshold: number;
  private readonly prefix: string;
  private readonly basePath: string;
  private readonly jobTimeoutMs: number;
  private readonly resumeMax: number;
  private readonly startedAt = Date.now();
  /** Unsettled Bulk API jobs by id (see the class comment). */
  private readonly openJobs = new Map<string, OpenJob>();
  /** `<object>\0<extField>` whose jobs from before this process were looked for already. */
  private readonly listed = new Set<string>();
  private userId: string | undefined;
  private closed = false;

  constructor(config: CrmConfig) {
    const base = new URL(config.baseUrl);
    this.pool = crmPool(base.origin, config.tls, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    this.auth = tokenProviderFor(config, config.auth);
    this.baseUrl = config.baseUrl;
    this.timeoutMs = config.timeoutMs;
    this.bulkThreshold = config.bulkThreshold;
    this.prefix = `${base.pathname.replace(/\/+$/, '')}/services/data/${config.apiVersion ?? 'v62.0'}`;
    this.basePath = base.pathname.replace(/\/+$/, '');
    this.jobTimeoutMs = config.bulkJobTimeoutMinutes * 60_000;
    // Jobs one redelivered window may have had in flight: at most one per call in flight.
    this.resumeMax = config.limits.concurrency;
  }

  maxBatchSize(_object: string): number {
    return this.bulkThreshold > 0 ? Math.max(COLLECTION_MAX, BULK_JOB_MAX, this.bulkThreshold) : COLLECTION_MAX;
  }

  private useBulk(upserts: number): boolean {
    return this.bulkThreshold > 0 && upserts >= this.bulkThreshold;
  }

  cost(records: CrmWrite[]): number {
    let n = 0;
    for (const group of this.groups(records).values()) {
      const { bulk, collection, deletes } = this.plan(records, group);
      // Bulk: the job list once per object after a start, create + upload + UploadComplete +
      // polls + three result downloads.
      if (bulk.length > 0)
        n +=
          (this.listed.has(`${records[bulk[0]!]!.object}\u0000${records[bulk[0]!]!.externalIdField}`) ? 0 : 1) +
          3 +
          estimatedPolls(bulk.length) +
          3;
      n += Math.ceil(collection.length / COLLECTION_MAX);
      n += 2 * Math.ceil(deletes.length / COLLECTION_MAX);
    }
    return n;
  }

  jobSeconds(records: CrmWrite[]): number {
    let ms = 0;
    for (const group of this.groups(records).values()) {
      const { bulk } = this.plan(records, group);
      if (bulk.length > 0) ms += expectedPolling(bulk.length).waitedMs;
    }
    return ms / 1000;
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', `${this.prefix}/limits`, undefined, () => undefined);
    if (res.status !== 200) {
      throw new ConnectorError(
        'CRM_PING',
        `Salesforce answered HTTP ${res.status} to GET ${this.prefix}/limits; check crm.baseUrl (the instance URL) and crm.apiVersion`,
      );
    }
    // A proxy's login page or an empty 200 is not Salesforce: `pg2crm check` must not pass on it.
    if (!isLimits(res.body))
      throw badResponse(
        `Salesforce GET ${this.prefix}/limits`,
        res.status,
        res.text,
        'a JSON object of limits with DailyApiRequests {Max, Remaining}',
      );
  }

  async write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]> {
    const call: Call = { records, out: new Array<WriteOutcome | undefined>(records.length), onSignal };
    try {
      for (const group of this.groups(records).values()) {
        const { bulk, collection, deletes } = this.plan(records, group);
        if (bulk.length > 0) await this.bulkUpsert(call, bulk);
        for (let i = 0; i < collection.length; i += COLLECTION_MAX)
          await this.collectionUpsert(call, collection.slice(i, i + COLLECTION_MAX));
        for (let i = 0; i < deletes.length; i += COLLECTION_MAX) await this.deleteChunk(call, deletes.slice(i, i + COLLECTION_MAX));
      }
    } catch (err) {
      // The CRM failing part-way (a bad answer, a 5xx, no answer): the records already settled
      // keep their outcomes (a retry would pay for them again); the rest retry. Nothing settled
      // yet: the call failed.
      const rest = retryOutcomeOf(err);
      if (!rest?.kind || !call.out.some((o) => o !== undefined)) throw err;
      this.settle(
        call,
        records.map((_, i) => i),
        rest,
      );
    }
    return call.out.map((o) => o ?? { status: 'retry', code: 'NOT_SENT', message: 'record was not sent to Salesforce' });
  }

  /**
   * How one group is sent: upserts in a Bulk job from `crm.bulkThreshold` on, except those that
   * clear a lookup, which go through sObject Collections with the rest below the threshold.
   */
  private plan(records: CrmWrite[], group: number[]): { bulk: number[]; collection: number[]; deletes: number[] } {
    const upserts = group.filter((i) => records[i]!.op === 'upsert');
    const deletes = group.filter((i) => records[i]!.op === 'delete');
    const bulkable = upserts.filter((i) => !clearsLookup(records[i]!));
    if (!this.useBulk(bulkable.length)) return { bulk: [], collection: upserts, deletes };
    return { bulk: bulkable, collection: upserts.filter((i) => clearsLookup(records[i]!)), deletes };
  }

  /** Record indexes by (object, external-id field): one URL (or job) each. */
  private groups(records: CrmWrite[]): Map<string, number[]> {
    const groups = new Map<string, number[]>();
    records.forEach((r, i) => {
      const key = `${r.object}\u0000${r.externalIdField}`;
      const g = groups.get(key);
      if (g) g.push(i);
      else groups.set(key, [i]);
    });
    return groups;
  }

  /** The record as Salesforce reads it: fields, the external id, lookups as relationships. */
  private body(r: CrmWrite): Record<string, unknown> {
    const out: Record<string, unknown> = { attributes: { type: r.object } };
    for (const [k, v] of Object.entries(r.fields)) if (v !== undefined) out[k] = v;
    out[r.externalIdField] = r.externalId;
    for (const [field, l] of Object.entries(r.lookups ?? {})) {
      if (l.externalId === null) out[lookupIdField(field)] = null;
      else out[relationshipName(field)] = { attributes: { type: l.object }, [l.externalIdField]: l.externalId };
    }
    return out;
  }

  private settle(call: Call, indexes: number[], outcome: WriteOutcome): void {
    for (const i of indexes) call.out[i] ??= outcome;
  }

  private async collectionUpsert(call: Call, idx: number[]): Promise<void> {
    if (call.throttle) return this.settle(call, idx, call.throttle);
    const first = call.records[idx[0]!]!;
    const path = `${this.prefix}/composite/sobjects/${encodeURIComponent(first.object)}/${encodeURIComponent(first.externalIdField)}`;
    const res = await this.request(
      'PATCH',
      path,
      { allOrNone: false, records: idx.map((i) => this.body(call.records[i]!)) },
      call.onSignal,
    );
    if (!this.checkWhole(call, idx, res, path)) return;
    // One result per record, in request order: any other count cannot be matched to the records.
    if (!Array.isArray(res.body) || res.body.length !== idx.length) {
      throw badResponse(
        `Salesforce PATCH ${path}`,
        res.status,
        res.text,
        `a JSON array of ${idx.length} results {id, success, created, errors}`,
      );
    }
    const results: unknown[] = res.body;
    idx.forEach((i, k) => {
      const r = results[k];
      if (!isSaveResult(r, true))
        call.out[i] = badRecord(
          `Salesforce PATCH ${path}: result ${k} is not {id, success, created, errors}: ${JSON.stringify(r)?.slice(0, 120)}`,
        );
      else if (r.success) call.out[i] = { status: 'done', crmId: r.id!, created: r.created! };
      else call.out[i] = this.recordError(r.errors);
    });
  }

  /** Deletes by external id: the records' Ids looked up by SOQL, then one collection DELETE. */
  private async deleteChunk(call: Call, idx: number[]): Promise<void> {
    if (call.throttle) return this.settle(call, idx, call.throttle);
    const first = call.records[idx[0]!]!;
    const field = first.externalIdField;
    const queryUri = (list: string) =>
      `${this.prefix}/query?q=${encodeURIComponent(`SELECT Id, ${field} FROM ${first.object} WHERE ${field} IN (${list})`)}`;
    const parts = splitByUri(idx, (i) => call.records[i]!.externalId, queryUri);
    // Long external ids: fewer than COLLECTION_MAX fit one URI. cost() counted one query and
    // one delete per COLLECTION_MAX records; every further part is two calls it did not count.
    for (const [k, part] of parts.entries()) {
      if (call.throttle) this.settle(call, part, call.throttle);
      else {
        if (k > 0) call.onSignal({ extraRequests: 2 });
        await this.deleteRun(call, part, queryUri);
      }
    }
  }

  private async deleteRun(call: Call, idx: number[], queryUri: (inList: string) => string): Promise<void> {
    const first = call.records[idx[0]!]!;
    const field = first.externalIdField;
    const q = await this.request(
      'GET',
      queryUri(idx.map((i) => soqlString(call.records[i]!.externalId)).join(', ')),
      undefined,
      call.onSignal,
    );
    if (!this.checkWhole(call, idx, q, 'query')) return;
    // Only a real query answer may say "not there": anything else would turn deletes into no-ops.
    // (A Number external id field comes back as a JSON number.)
    if (!isQueryResult(q.body) || !q.body.records.every((r) => typeof r[field] === 'string' || typeof r[field] === 'number')) {
      throw badResponse(
        `Salesforce GET ${this.prefix}/query`,
        q.status,
        q.text,
        `a JSON object {totalSize, done, records: [{Id, ${field}}]}`,
      );
    }
    if (!q.body.done) {
      // 200 external ids matched more rows than one page (2,000): the external id is not unique.
      // The rows on later pages would be missed and their records reported deleted.
      // Dead-letter them (visible, replayable) rather than guess.
      return this.settle(call, idx, {
        status: 'rejected',
        code: 'DELETE_AMBIGUOUS',
        message: `Salesforce found more than ${q.body.records.length} ${first.object} records for ${idx.length} values of ${field}; make ${field} a unique external id field`,
        field,
      });
    }
    const found = q.body.records;
    const idsByExt = new Map<string, string[]>();
    for (const r of found) {
      const ext = String(r[field]);
      idsByExt.set(ext, [...(idsByExt.get(ext) ?? []), r.Id]);
    }
    const ids = found.map((r) => r.Id);
    // Not there (any more): the delete is done already.
    for (const i of idx) if (!idsByExt.has(call.records[i]!.externalId)) call.out[i] = { status: 'done' };
    if (ids.length === 0) return;
    const waiting = idx.filter((i) => call.out[i] === undefined);
    const res = await this.request(
      'DELETE',
      `${this.prefix}/composite/sobjects?ids=${ids.map(encodeURIComponent).join(',')}&allOrNone=false`,
      undefined,
      call.onSignal,
    );
    if (!this.checkWhole(call, waiting, res, 'composite/sobjects')) return;
    // One result per id, in the order of `ids` (a failed one may carry no id).
    if (!Array.isArray(res.body) || res.body.length !== ids.length) {
      throw badResponse(
        `Salesforce DELETE ${this.prefix}/composite/sobjects`,
        res.status,
        res.text,
        `a JSON array of ${ids.length} results {id, success, errors}`,
      );
    }
    const results: unknown[] = res.body;
    const byId = new Map<string, SaveResult | undefined>(
      ids.map((id, k) => {
        const r = results[k];
        return [id, isSaveResult(r, false) && (!r.success || r.id === id) ? r : undefined];
      }),
    );
    for (const i of waiting) {
      const mine = (idsByExt.get(call.records[i]!.externalId) ?? []).map((id) => byId.get(id));
      if (mine.some((r) => r === undefined)) {
        call.out[i] = badRecord(
          `Salesforce DELETE ${this.prefix}/composite/sobjects: the result for ${call.records[i]!.externalId} is not {id, success, errors} in request order`,
        );
        continue;
      }
      const failures = mine.filter((r) => !r!.success && r!.errors[0]?.statusCode !== 'ENTITY_IS_DELETED');
      call.out[i] = failures.length === 0 ? { status: 'done' } : this.recordError(failures[0]!.errors);
    }
  }

  private async bulkUpsert(call: Call, idx: number[]): Promise<void> {
    const first = call.records[idx[0]!]!;
    const extField = first.externalIdField;
    const columns = new Map<string, (r: CrmWrite) => unknown>([[extField, (r) => r.externalId]]);
    for (const i of idx) {
      const r = call.records[i]!;
      for (const k of Object.keys(r.fields)) if (!columns.has(k)) columns.set(k, (x) => x.fields[k]);
      for (const [field, l] of Object.entries(r.lookups ?? {})) {
        const col = `${relationshipName(field)}.${l.externalIdField}`;
        if (!columns.has(col)) columns.set(col, (x) => x.lookups?.[field]?.externalId);
      }
    }
    const header = [...columns.keys()];
    const cellsOf = (i: number): Record<string, string> =>
      Object.fromEntries(header.map((h) => [h, csvCell(columns.get(h)!(call.records[i]!))]));
    const wanted = new Map<number, Record<string, string>>(idx.map((i) => [i, cellsOf(i)]));

    // Jobs that may already carry these records (an earlier call's, or one from before a restart).
    for (const job of await this.resumable(call, first.object, extField, idx, wanted)) {
      const waiting = idx.filter((i) => call.out[i] === undefined);
      if (waiting.length === 0 || call.throttle) break;
      log.info({ jobId: job.id, object: first.object, records: waiting.length }, 'resuming bulk job');
      await this.settleJob(call, job, waiting, wanted, false);
    }
    const todo = idx.filter((i) => call.out[i] === undefined);
    if (todo.length === 0) return;
    if (call.throttle) return this.settle(call, todo, call.throttle);

    const csv = toCsv([header, ...todo.map((i) => header.map((h) => wanted.get(i)![h]!))], SALESFORCE_CSV);
    const jobs = `${this.prefix}/jobs/ingest`;
    const created = await this.request(
      'POST',
      jobs,
      { object: first.object, externalIdFieldName: extField, contentType: 'CSV', operation: 'upsert', lineEnding: 'LF' },
      call.onSignal,
    );
    if (!this.checkWhole(call, todo, created, 'jobs/ingest')) return;
    if (!isJobInfo(created.body)) throw badResponse(`Salesforce POST ${jobs}`, created.status, created.text, 'a JSON job info {id, state}');
    const jobId = created.body.id;
    // From here on a bad answer abandons the job: abort it first, so a late finish cannot
    // overwrite the newer values the retry will write.
    const abandon = async (res: SfResponse, what: string, expected: string): Promise<never> => {
      await this.abort(jobId, call.onSignal);
      throw badResponse(`Salesforce ${what}`, res.status, res.text, expected);
    };
    const uploaded = await this.request('PUT', `${jobs}/${jobId}/batches`, csv, call.onSignal, 'text/csv');
    if (!this.checkWhole(call, todo, uploaded, 'jobs/ingest batches')) return;
    // Upload Job Data answers 201 Created with no body; any other 2xx is not Salesforce's answer.
    // https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/upload_job_data.htm
    if (uploaded.status !== 201) await abandon(uploaded, `PUT ${jobs}/${jobId}/batches`, 'HTTP 201 Created');
    const closed = await this.request('PATCH', `${jobs}/${jobId}`, { state: 'UploadComplete' }, call.onSignal);
    if (!this.checkWhole(call, todo, closed, 'jobs/ingest UploadComplete')) return;
    if (!isJobInfo(closed.body) || closed.body.id !== jobId)
      await abandon(closed, `PATCH ${jobs}/${jobId}`, `a JSON job info {id: ${jobId}, state}`);
    // Running now: remembered until its results are read, so a call that ends early (throttled,
    // stopping) leaves it to the redelivered records instead of paying for a second job.
    const job: OpenJob = {
      id: jobId,
      object: first.object,
      extField,
      createdAt: Date.now(),
      cells: new Map(todo.map((i) => [call.records[i]!.externalId, wanted.get(i)!])),
    };
    this.openJobs.set(jobId, job);
    log.debug({ jobId, object: first.object, records: todo.length }, 'bulk job uploaded');
    await this.settleJob(call, job, todo, wanted, true);
  }

  /**
   * Unsettled jobs that may carry some of `idx`: this process's own that hold one of them with
   * the same cells, and, the first time after a start, the integration user's upsert jobs of
   * this object and field created within the job timeout before the start (contents unknown
   * until read: the most recent `resumeMax`).
   */
  private async resumable(
    call: Call,
    object: string,
    extField: string,
    idx: number[],
    wanted: Map<number, Record<string, string>>,
  ): Promise<OpenJob[]> {
    const key = `${object}\u0000${extField}`;
    // A job past the job timeout that no call took up again is forgotten (its records went to
    // another instance, or were dead-lettered); a call still polling it aborts it at the deadline.
    for (const [id, job] of this.openJobs) if (Date.now() >= job.createdAt + this.jobTimeoutMs) this.openJobs.delete(id);
    if (!this.listed.has(key)) {
      for (const job of await this.listJobs(call, object, extField)) if (!this.openJobs.has(job.id)) this.openJobs.set(job.id, job);
      this.listed.add(key);
    }
    return [...this.openJobs.values()]
      .filter((j) => j.object === object && j.extField === extField)
      .filter((j) => !j.cells || idx.some((i) => sameCells(j.cells!.get(call.records[i]!.externalId), wanted.get(i)!)))
      .sort((a, b) => a.createdAt - b.createdAt);
  }

  /** `GET /jobs/ingest` (paged by nextRecordsUrl): this user's running upsert jobs of `object` from before this start. */
  private async listJobs(call: Call, object: string, extField: string): Promise<OpenJob[]> {
    const userId = await this.currentUser();
    // Without the user, another user's jobs could be taken for ours: resume nothing.
    if (!userId) return [];
    const found: OpenJob[] = [];
    let path: string | undefined = `${this.prefix}/jobs/ingest?jobType=V2Ingest`;
    for (let page = 0; path && page < JOB_LIST_PAGES_MAX; page++) {
      const res = await this.request('GET', path, undefined, call.onSignal);
      // Not allowed to list (or throttled): nothing to resume; the write goes on with a new job.
      if (res.status !== 200) {
        if (res.throttle) call.throttle = res.throttle;
        break;
      }
      const body = res.body;
      if (!isObject(body) || !Array.isArray(body.records) || typeof body.done !== 'boolean') {
        throw badResponse(
          `Salesforce GET ${this.prefix}/jobs/ingest`,
          res.status,
          res.text,
          'a JSON object {done, records: [job info], nextRecordsUrl}',
        );
      }
      for (const j of body.records) {
        if (!isJobInfo(j)) continue;
        const info = j as JobInfo & Record<string, unknown>;
        const createdAt = Date.parse(String(info.createdDate ?? ''));
        if (info.object !== object || info.externalIdFieldName !== extField || info.operation !== 'upsert') continue;
        // Still running: a complete job's records are simply written again (same values, one job).
        if (info.createdById !== userId || !['UploadComplete', 'InProgress'].includes(info.state)) continue;
        // Jobs of other instances started since are theirs; older ones would have been given up.
        if (!Number.isFinite(createdAt) || createdAt > this.startedAt || createdAt < this.startedAt - this.jobTimeoutMs) continue;
        found.push({ id: info.id, object, extField, createdAt });
      }
      const next = body.nextRecordsUrl;
      path = !body.done && typeof next === 'string' && next.startsWith('/') ? `${this.basePath}${next}` : undefined;
    }
    return found.sort((a, b) => b.createdAt - a.createdAt).slice(0, this.resumeMax);
  }

  /**
   * The integration user's Id (the createdById of its jobs), from the OpenID Connect UserInfo
   * endpoint: https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_using_userinfo_endpoint.htm
   */
  private async currentUser(): Promise<string | undefined> {
    if (this.userId) return this.userId;
    try {
      // Not through request(): a token without the scope UserInfo wants must not read as a
      // rejected token (401/403 here only means nothing is resumed).
      const res = await send(this.pool, {
        method: 'GET',
        path: `${this.basePath}/services/oauth2/userinfo`,
        headers: { authorization: `Bearer ${(await this.auth.token()).value}`, accept: 'application/json' },
        timeoutMs: this.timeoutMs,
        what: 'Salesforce request GET /services/oauth2/userinfo',
      });
      const body = res.status === 200 ? safeJson(res.text) : undefined;
      const id = isObject(body) ? body.user_id : undefined;
      if (typeof id === 'string' && id) this.userId = id;
      else log.warn({ status: res.status }, 'cannot tell the integration user (UserInfo); bulk jobs from before the start are not resumed');
    } catch (err) {
      log.warn({ err }, 'cannot tell the integration user (UserInfo); bulk jobs from before the start are not resumed');
    }
    return this.userId;
  }

  private async abort(jobId: string, onSignal: (s: RateSignal) => void): Promise<void> {
    this.openJobs.delete(jobId);
    await this.request('PATCH', `${this.prefix}/jobs/ingest/${jobId}`, { state: 'Aborted' }, onSignal).catch(() => undefined);
  }

  /**
   * Polls `job` until it ends, within the job timeout, and settles the records its results
   * account for. `own`: this call created the job for exactly `idx`, so every record must be in
   * its results; a resumed job settles only the records it carries with the same cells.
   */
  private async settleJob(
    call: Call,
    job: OpenJob,
    idx: number[],
    wanted: Map<number, Record<string, string>>,
    own: boolean,
  ): Promise<void> {
    const ended = await this.pollJob(call, job, idx, own);
    if (!ended) return;
    const { state, errorText } = ended;
    const jobId = job.id;
    const results = await this.readResults(call, job, idx, wanted, own, state);
    if (!results) return;
    // Read in full: the job is settled, whatever of it this call could use.
    this.openJobs.delete(jobId);
    this.settleResults(call, idx, jobId, state, results, own ? undefined : wanted);
    if (state !== 'JobComplete') log.warn({ jobId, state, errorMessage: errorText }, 'bulk job did not complete');
    if (!own) return;
    const missing: WriteOutcome =
      state === 'Failed'
        ? {
            status: 'rejected',
            code: 'BULK_JOB_FAILED',
            message: `Salesforce Bulk API job ${jobId} failed: ${errorText || 'no reason given'}`,
          }
        : state === 'JobComplete'
          ? // A complete job lists every record in one of the three files: one missing is a bad answer.
            badRecord(`Salesforce Bulk API job ${jobId} (JobComplete) returned no result row for the record`)
          : {
              status: 'retry',
              code: 'BULK_NO_RESULT',
              message: `Salesforce Bulk API job ${jobId} (${state}) returned no result for the record`,
            };
    this.settle(call, idx, missing);
  }

  /**
   * Polls `job` until it ends (JobComplete, Failed, Aborted) within the job timeout: its final
   * state, or undefined when the poll settled the records itself (throttled, the job gone).
   */
  private async pollJob(call: Call, job: OpenJob, idx: number[], own: boolean): Promise<{ state: string; errorText: string } | undefined> {
    const jobs = `${this.prefix}/jobs/ingest`;
    const jobId = job.id;
    const deadline = job.createdAt + this.jobTimeoutMs;
    let badPolls = 0;
    for (let attempt = 0; ; attempt++) {
      if (Date.now() >= deadline) {
        // Abort, so a late finish cannot overwrite the newer values the retry will write.
        await this.abort(jobId, call.onSignal);
        throw new ConnectorError(
          'CRM_BULK_TIMEOUT',
          `Salesforce Bulk API job ${jobId} (${job.object}) did not finish within crm.bulkJobTimeoutMinutes=${this.jobTimeoutMs / 60_000}; it was aborted and its records will be retried. Raise crm.bulkJobTimeoutMinutes or lower crm.bulkThreshold`,
          { retriable: true },
        );
      }
      await sleep(Math.min(pollDelay(attempt), Math.max(0, deadline - Date.now())));
      if (this.closed)
        throw new ConnectorError(
          'CRM_UNREACHABLE',
          `Salesforce Bulk API job ${jobId}: the connector is stopping; the job runs on and is taken up again after the restart`,
          { retriable: true },
        );
      let polled: SfResponse;
      try {
        polled = await this.request('GET', `${jobs}/${jobId}`, undefined, call.onSignal);
      } catch (err) {
        // One poll that got no answer (timeout, reset, 5xx) says nothing about the job: poll on.
        if (err instanceof ConnectorError && err.retriable && !this.closed) {
          log.warn({ jobId, err }, 'bulk job poll failed; polling on');
          continue;
        }
        throw err;
      }
      if (polled.status === 404) {
        // Deleted meanwhile (DELETE /jobs/ingest/{id} by someone): it will write nothing more.
        this.openJobs.delete(jobId);
        if (own)
          this.settle(call, idx, { status: 'retry', code: 'BULK_JOB_GONE', message: `Salesforce Bulk API job ${jobId} no longer exists` });
        return undefined;
      }
      if (!this.checkWhole(call, idx, polled, 'jobs/ingest poll')) return undefined;
      if (!isJobInfo(polled.body) || polled.body.id !== jobId) {
        // A garbled job info says nothing about the job, which keeps running: poll again (the
        // result files, checked below, decide what is done); only a run of them gives up on it.
        if (++badPolls < BAD_POLLS_TOLERATED) continue;
        await this.abort(jobId, call.onSignal);
        throw badResponse(`Salesforce GET ${jobs}/${jobId}`, polled.status, polled.text, `a JSON job info {id: ${jobId}, state}`);
      }
      badPolls = 0;
      const state = polled.body.state;
      if (state === 'JobComplete' || state === 'Failed' || state === 'Aborted') return { state, errorText: polled.body.errorMessage ?? '' };
    }
  }

  /**
   * The three result files of an ended job, by external id: undefined when a download settled
   * the records itself (throttled, refused). A file without its header row is not a result of
   * this job: the records an earlier, good file accounted for keep their outcomes, and the call
   * fails with a CRM_BAD_RESPONSE.
   */
  private async readResults(
    call: Call,
    job: OpenJob,
    idx: number[],
    wanted: Map<number, Record<string, string>>,
    own: boolean,
    state: string,
  ): Promise<JobResults | undefined> {
    const path = `${this.prefix}/jobs/ingest/${job.id}`;
    const results: JobResults = new Map();
    for (const kind of ['successfulResults', 'failedResults', 'unprocessedrecords'] as const) {
      const res = await this.request('GET', `${path}/${kind}/`, undefined, call.onSignal, undefined, 'text/csv');
      if (!this.checkWhole(call, idx, res, `jobs/ingest ${kind}`)) return undefined;
      const { header: columns, rows } = parseCsv(res.text);
      // Every result file has a header row (also when it has no rows): its sf__ columns, then
      // the uploaded ones.
      const expected = [...RESULT_COLUMNS[kind], job.extField];
      if (!expected.every((c) => columns.includes(c))) {
        this.settleResults(call, idx, job.id, state, results, own ? undefined : wanted);
        throw badResponse(`Salesforce GET ${path}/${kind}/`, res.status, res.text, `CSV with the columns ${expected.join(', ')}`);
      }
      for (const row of rows) {
        const ext = row[job.extField] ?? '';
        if (!results.has(ext)) results.set(ext, { kind, row });
      }
    }
    return results;
  }

  /** Settles each record of `idx` the results name (`wanted`: the cells a resumed job must carry). */
  private settleResults(
    call: Call,
    idx: number[],
    jobId: string,
    state: string,
    results: JobResults,
    wanted: Map<number, Record<string, string>> | undefined,
  ): void {
    for (const i of idx) {
      const r = results.get(call.records[i]!.externalId);
      if (r) this.settleResult(call, i, jobId, state, r, wanted?.get(i));
    }
  }

  /**
   * One record's result row. `cells`: the record came to a resumed job, which settles it only
   * when the row holds what this call would upload (otherwise it goes into a new job).
   */
  private settleResult(
    call: Call,
    i: number,
    jobId: string,
    state: string,
    r: { kind: keyof typeof RESULT_COLUMNS; row: Record<string, string> },
    cells?: Record<string, string>,
  ): void {
    if (call.out[i] !== undefined) return;
    const { kind, row } = r;
    const ext = call.records[i]!.externalId;
    if (cells && !sameCells(row, cells)) return;
    // A resumed job's unprocessed record is simply sent again in the new job.
    if (cells && kind === 'unprocessedrecords') return;
    if (kind === 'successfulResults') {
      // sf__Id may be empty (marketing objects), sf__Created is `true` or `false`.
      call.out[i] =
        row.sf__Created === 'true' || row.sf__Created === 'false'
          ? { status: 'done', ...(row.sf__Id ? { crmId: row.sf__Id } : {}), created: row.sf__Created === 'true' }
          : badRecord(`Salesforce Bulk API job ${jobId}: sf__Created of ${ext} is ${JSON.stringify(row.sf__Created)}, not true or false`);
    } else if (kind === 'failedResults') call.out[i] = this.recordError([parseBulkError(row.sf__Error ?? '')]);
    else
      call.out[i] = { status: 'retry', code: 'BULK_UNPROCESSED', message: `Salesforce did not process the record (job ${jobId} ${state})` };
  }

  /**
   * Handles what is wrong with a response as a whole; true when the caller should read it.
   * Throttle -> retry for these records (and every later one of the call); a request error
   * Salesforce explains (400: bad field, bad SOQL) -> rejected.
   */
  private checkWhole(call: Call, idx: number[], res: SfResponse, what: string): boolean {
    if (res.status >= 200 && res.status < 300) return true;
    const e = (Array.isArray(res.body) ? (res.body as SfError[])[0] : undefined) ?? {};
    if (res.throttle) {
      call.throttle = res.throttle;
      this.settle(call, idx, call.throttle);
      return false;
    }
    if (res.status === 403) {
      throw new ConnectorError(
        'CRM_FORBIDDEN',
        `Salesforce refused ${what} (HTTP 403 ${e.errorCode ?? ''}: ${e.message ?? res.text.slice(0, 200)}); check the integration user's object and field permissions`,
        { retriable: false },
      );
    }
    if (res.status === 404) {
      throw new ConnectorError(
        'CRM_NOT_FOUND',
        `Salesforce answered HTTP 404 to ${what} (${e.message ?? 'not found'}); check crm.baseUrl, crm.apiVersion and mappings[].object / externalId.field`,
        { retriable: false },
      );
    }
    if (res.status === 400 && e.errorCode) {
      this.settle(call, idx, { status: 'rejected', code: e.errorCode, message: e.message ?? `Salesforce rejected ${what}` });
      return false;
    }
    this.settle(call, idx, {
      status: 'retry',
      code: `HTTP_${res.status}`,
      message: `Salesforce answered HTTP ${res.status} to ${what}: ${res.text.slice(0, 200)}`,
    });
    return false;
  }

  private recordError(errors: SfError[]): WriteOutcome {
    const first = errors[0] ?? {};
    const code = first.statusCode ?? first.errorCode ?? 'UNKNOWN';
    const message =
      errors
        .map((e) => e.message ?? '')
        .filter(Boolean)
        .join('; ') || code;
    if (TRANSIENT.has(code)) return { status: 'retry', code, message, ...(SERVER_FAILING.has(code) ? { kind: 'server' as const } : {}) };
    // The parent is not in Salesforce yet (its change may still be on the way): try again later.
    if (code === 'INVALID_FIELD' && /Foreign key external ID: .* not found/.test(message))
      return { status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending', message };
    const field = first.fields?.[0];
    return { status: 'rejected', code, message, ...(field ? { field } : {}) };
  }

  private async request(
    method: string,
    path: string,
    body: unknown,
    onSignal: (s: RateSignal) => void,
    contentType = 'application/json',
    accept = 'application/json',
  ): Promise<SfResponse> {
    // A session past its timeout is answered 401 INVALID_SESSION_ID: a new token, one retry.
    const res = await withToken(
      this.auth,
      'Salesforce',
      (token) => {
        assertInstance(token, this.baseUrl, this.auth.credential);
        return send(this.pool, {
          method,
          path,
          headers: {
            authorization: `Bearer ${token.value}`,
            accept,
            ...(body !== undefined ? { 'content-type': contentType } : {}),
          },
          body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
          timeoutMs: this.timeoutMs,
          what: `Salesforce request ${method} ${path.split('?')[0]}`,
        });
      },
      (r) => r.status === 401,
    );
    const text = res.text;
    // Bulk API results are CSV: only a JSON answer is parsed.
    const parsed = String(header(res.headers, 'content-type') ?? '').includes('json') && text ? safeJson(text) : text;
    const out: SfResponse = { status: res.status, body: parsed, text };
    const signal: RateSignal = {};
    const usage = /api-usage=(\d+)\/(\d+)/.exec(String(res.headers['sforce-limit-info'] ?? ''));
    if (usage) signal.dailyRemaining = Math.max(0, Number(usage[2]) - Number(usage[1]));
    const limit = out.status === 403 ? limitError(parsed) : undefined;
    if (limit) {
      const { waitSeconds, message } = requestLimit(limit.message);
      out.throttle = throttled(res.headers, { message, defaultSeconds: waitSeconds, signal, onSignal });
    } else onSignal(signal);
    if (out.status >= 500) {
      throw new ConnectorError(
        `CRM_HTTP_${out.status}`,
        `Salesforce answered HTTP ${out.status} to ${method} ${path.split('?')[0]}; will retry`,
        { retriable: true, status: out.status },
      );
    }
    return out;
  }

  /** `pg2crm verify`: external ids per SOQL `IN (...)` read, as many as a delete looks up at once. */
  readBatchSize(): number {
    return COLLECTION_MAX;
  }

  /**
   * SOQL `SELECT <external id>, <fields> FROM <Object> WHERE <external id> IN (...)` through
   * `GET /services/data/vXX.X/query` (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm).
   * An answer may hold fewer records than matched (`done: false`): the rest is read from its
   * `nextRecordsUrl`. Long external ids split the `IN (...)` list so that the URI fits
   * (splitByUri). Each request beyond the first is reported as `extraRequests`, so the read
   * budget counts every call made.
   */
  async readByExternalIds(
    target: CrmTarget,
    ids: string[],
    fields: string[],
    onSignal: (s: RateSignal) => void,
  ): Promise<Map<string, Record<string, unknown>>> {
    const field = target.externalIdField;
    const queryUri = (list: string) =>
      `${this.prefix}/query?q=${encodeURIComponent(`SELECT Id, ${[field, ...fields].join(', ')} FROM ${target.object} WHERE ${field} IN (${list})`)}`;
    const out = new Map<string, Record<string, unknown>>();
    let requests = 0;
    const signal = (s: RateSignal) => onSignal(requests > 1 ? { ...s, extraRequests: (s.extraRequests ?? 0) + 1 } : s);
    for (const part of splitByUri(ids, (id) => id, queryUri)) {
      let path: string | undefined = queryUri(part.map(soqlString).join(', '));
      while (path !== undefined) {
        requests++;
        const page = await this.queryPage(path, target, fields, signal);
        for (const r of page.records) out.set(r.externalId, r.fields);
        path = page.next === undefined ? undefined : `${this.basePath}${page.next}`;
      }
    }
    return out;
  }

  /**
   * Every record holding an external id: SOQL `WHERE <external id> != null`, then the answer's
   * `nextRecordsUrl` (the cursor) page by page, each one API call (same page as above).
   */
  async listRecords(target: CrmTarget, fields: string[], cursor: string | undefined, onSignal: (s: RateSignal) => void) {
    const field = target.externalIdField;
    const soql = `SELECT Id, ${[field, ...fields].join(', ')} FROM ${target.object} WHERE ${field} != null`;
    const path = cursor ? `${this.basePath}${cursor}` : `${this.prefix}/query?q=${encodeURIComponent(soql)}`;
    return this.queryPage(path, target, fields, onSignal);
  }

  private async queryPage(path: string, target: CrmTarget, fields: string[], onSignal: (s: RateSignal) => void) {
    const res = await this.request('GET', path, undefined, onSignal);
    if (res.throttle) throw new ThrottledCall(res.throttle);
    const what = `Salesforce GET ${this.prefix}/query`;
    if (res.status !== 200) {
      const e = (Array.isArray(res.body) ? (res.body as SfError[])[0] : undefined) ?? {};
      throw new ConnectorError(
        res.status === 403 ? 'CRM_FORBIDDEN' : 'CRM_CALL',
        `${what} answered HTTP ${res.status} ${e.errorCode ?? ''}: ${e.message ?? res.text.slice(0, 200)}; check mappings[].object, externalId.field and fields, and the integration user's read permissions`,
      );
    }
    if (!isQueryResult(res.body)) throw badResponse(what, res.status, res.text, 'a JSON object {totalSize, done, records: [{Id, …}]}');
    const records: { externalId: string; fields: Record<string, unknown> }[] = [];
    for (const r of res.body.records) {
      const id = caseless(r, target.externalIdField);
      if (id !== undefined && id !== null && id !== '')
        records.push({ externalId: String(id), fields: Object.fromEntries(fields.map((f) => [f, caseless(r, f)])) });
    }
    if (res.body.done) return { records };
    const next = res.body.nextRecordsUrl;
    // Only a path on this instance is followed (as the job listing does): the bearer token must
    // not go to whatever host an answer names, and stopping early would miss records.
    if (typeof next !== 'string' || !next.startsWith('/'))
      throw badResponse(what, res.status, res.text, 'a nextRecordsUrl that is a path on this instance ("/services/data/…")');
    return { records, next };
  }

  describeAuth(): string {
    return this.auth.describe();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.close();
  }
}
