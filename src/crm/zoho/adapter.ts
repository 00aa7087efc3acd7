import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError } from '../../errors.ts';
import { CrmCaches, remember } from '../crm-caches.ts';
import { componentLogger } from '../../logger.ts';
import { badResponse, crmPool, header, isObject, type RetryOutcome, safeJson, send, ThrottledCall, throttled } from '../http.ts';
import { tokenProviderFor } from '../auth/oauth-flows.ts';
import { type TokenProvider, withToken } from '../auth/token-provider.ts';
import { type CrmAdapter, type CrmTarget, type CrmWrite, type RateSignal, retryOutcomeOf, type WriteOutcome } from '../crm-adapter.ts';
import { parseCsvRows, toCsv, ZOHO_CSV } from '../csv.ts';
import { unzip, zip } from './zip.ts';

/**
 * Zoho CRM REST API adapter (https://www.zoho.com/crm/developer/docs/api/v7/).
 *
 * - Upserts go 100 at a time to `POST /crm/{v}/{Module}/upsert` with the external-id field as
 *   `duplicate_check_fields` (it must be a unique field in Zoho); one result per record, in order.
 * - Deletes find the Zoho ids by searching the external-id field, then `DELETE ?ids=` (100 a call).
 * - Lookups (a deal's `Contact_Name`) take `{id}` of the other record: ids come from earlier
 *   upsert results or from a search by external id (10 ids per search with `or`), cached.
 *   A lookup whose column became NULL is sent as null (no search), never through Bulk Write.
 * - A call with at least `bulkThreshold` upserts of the same field set goes through Bulk Write:
 *   zipped CSV upload -> job -> poll -> zipped result CSV matched by external id. Lookups there
 *   use the field mapping's `find_by`, so they cost no searches. Each poll is one call bounded by
 *   `crm.timeoutMs`; the job may run `crm.bulkJobTimeoutMinutes` (jobs can take minutes). A job
 *   costs 500 credits and Zoho can neither cancel nor list Bulk Write jobs (the Bulk Write API is
 *   upload, create, job details and result download:
 *   https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/overview.html), so a job whose call
 *   ended early (throttled, stopping, past the job timeout) is remembered with what it carries,
 *   and records that come back with the same cells wait for it instead of paying for another.
 *   That memory is the process's: after a restart the redelivered records go into a new job
 *   (the old one still writes the same values).
 *
 * The budget unit is API CREDITS (`limits.requests` per `limits.windowSeconds`, and
 * `limits.daily`): an upsert call costs ceil(records/10), a Bulk Write job 500, every other call 1.
 * Zoho sends no Retry-After: a 429 with `X-API-CREDITS-REMAINING` below the call's cost means the
 * credits ran out (they come back as the 24 h window rolls: wait long), any other 429 is the
 * concurrency limit (it clears as calls finish: retry soon).
 */
const UPSERT_MAX = 100;
const DELETE_MAX = 100;
const SEARCH_CRITERIA_MAX = 10;
/** Bulk Write takes up to 25,000 records per file (crm-apis.md). */
const BULK_MAX = 25_000;
const CREDITS_PER_BULK_JOB = 500;
const CREDITS_EXHAUSTED_WAIT_SECONDS = 300;
const CONCURRENCY_WAIT_SECONDS = 1;
/** Poll schedule of a Bulk Write job: 250 ms, doubling, at most 10 s apart (a poll costs a credit). */
const POLL_FIRST_MS = 250;
const POLL_MAX_MS = 10_000;
/** Garbled job status answers in a row that give up on a job (one alone is polled past). */
const BAD_POLLS_TOLERATED = 3;
/** For cost estimates only: a job starts after ~0.1 s and writes ~5,000 rows/s. */
const BULK_START_SECONDS = 0.1;
const BULK_ROWS_PER_SECOND = 5000;
const PERMANENT_CODES = new Set([
  'INVALID_DATA',
  'MANDATORY_NOT_FOUND',
  'DUPLICATE_DATA',
  'DEPENDENT_MISMATCH',
  'EXPECTED_FIELD_MISSING',
  'DEPENDENT_FIELD_MISSING',
  'LIMIT_EXCEEDED',
  'NO_PERMISSION',
  'INVALID_MODULE',
]);
/**
 * Bulk Write result errors no retry fixes: a record held for approval or blocked needs a person
 * (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/download-result.html lists
 * MANDATORY_NOT_FOUND, INVALID_DATA, DUPLICATE_DATA, NOT_APPROVED, BLOCKED_RECORD, CANNOT_PROCESS,
 * LIMIT_EXCEEDED, RESOURCE_NOT_FOUND; CANNOT_PROCESS is retried).
 */
const BULK_PERMANENT_CODES = new Set([...PERMANENT_CODES, 'NOT_APPROVED', 'BLOCKED_RECORD']);

/**
 * A Bulk Write result row's ERRORS cell: `<errorCode>-<column_header>` per error, several joined
 * by `:`, a code naming several columns as `CODE-ColA,ColB` (e.g.
 * `MANDATORY_NOT_FOUND-Company,Last_Name:DUPLICATE_DATA-Email`,
 * https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/download-result.html).
 */
export function parseBulkErrors(cell: string): { code: string; columns: string[] }[] {
  return cell
    .split(':')
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part) => {
      const dash = part.indexOf('-');
      if (dash < 0) return { code: part, columns: [] };
      return {
        code: part.slice(0, dash),
        columns: part
          .slice(dash + 1)
          .split(',')
          .map((c) => c.trim())
          .filter(Boolean),
      };
    });
}

const log = componentLogger('crm.zoho');

interface ZohoResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** The body as received, for naming a bad answer. */
  text: string;
}

interface ZohoResult {
  code?: string;
  action?: string;
  details?: { id?: string; api_name?: string; [k: string]: unknown };
  message?: string;
  status?: string;
}

/*
 * What Zoho CRM documents as its answers. A 2xx whose body is not one of these (an HTML page from
 * a proxy, JSON cut off, an empty body) is not Zoho's answer and never counts as written: the
 * whole call is a retriable CRM_BAD_RESPONSE, a malformed result of one record a retry of that
 * record with the same code.
 */
const isId = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
const is2xx = (status: number): boolean => status >= 200 && status < 300;

/**
 * One record's result of an upsert or delete, `{code, details, message, status}` (upsert adds
 * `action`); a success names the record id in `details.id`.
 * https://www.zoho.com/crm/developer/docs/api/v7/upsert-records.html
 * https://www.zoho.com/crm/developer/docs/api/v7/delete-records.html
 */
function isRecordResult(v: unknown, upsert: boolean): v is ZohoResult {
  if (!isObject(v) || typeof v.code !== 'string' || (v.details !== undefined && !isObject(v.details))) return false;
  if (v.status === 'error') return true;
  if (v.status !== 'success' || !isObject(v.details) || !isId(v.details.id)) return false;
  return !upsert || v.action === 'insert' || v.action === 'update';
}

/** `{data: [...]}`: the envelope of upsert, delete and search answers. */
function dataOf(body: unknown): unknown[] | undefined {
  return isObject(body) && Array.isArray(body.data) ? body.data : undefined;
}

/**
 * Bulk Write job status values (the documentation writes `IN PROGRESS`, the simulator
 * `INPROGRESS`: both mean "poll again").
 * https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/job-details.html
 */
const JOB_STATUSES = new Set(['ADDED', 'IN PROGRESS', 'INPROGRESS', 'COMPLETED', 'FAILED']);

/** A record's result that is not in the documented shape: try it again, counted like a 5xx. */
function badRecord(message: string): WriteOutcome {
  return { status: 'retry', code: 'CRM_BAD_RESPONSE', kind: 'bad-response', message };
}

/** A request failed for every record that depends on it (e.g. a search the CRM refused). */
class CallFailed {
  readonly outcome: WriteOutcome;
  constructor(outcome: WriteOutcome) {
    this.outcome = outcome;
  }
}

/** Search criteria values escape `(`, `)`, `,` and `\` with a backslash. */
function criterionValue(v: string): string {
  return v.replace(/[\\(),]/g, (c) => `\\${c}`);
}

function upsertCredits(n: number): number {
  return Math.max(1, Math.ceil(n / 10));
}

function lookupEntries(r: CrmWrite): [string, NonNullable<CrmWrite['lookups']>[string]][] {
  return Object.entries(r.lookups ?? {});
}

/** The records a write's lookups point to; a cleared (null) lookup points to none, so needs no search. */
function lookupTargets(r: CrmWrite): { object: string; externalIdField: string; externalId: string }[] {
  return lookupEntries(r).flatMap(([, l]) =>
    l.externalId === null ? [] : [{ object: l.object, externalIdField: l.externalIdField, externalId: l.externalId }],
  );
}

function clearsLookup(r: CrmWrite): boolean {
  return lookupEntries(r).some(([, l]) => l.externalId === null);
}

/** Records with the same fields (and lookups) can share one Bulk Write file. */
function signature(r: CrmWrite): string {
  return JSON.stringify([Object.keys(r.fields).sort(), Object.keys(r.lookups ?? {}).sort()]);
}

/** A Bulk Write job not settled yet, with the row it carries for each external id. */
interface OpenJob {
  id: string;
  object: string;
  idField: string;
  /** Epoch ms the job was created; the job timeout counts from here. */
  createdAt: number;
  rows: Map<string, string>;
}

/** A skipped Bulk Write row: a pending lookup, a permanent rejection or a retry, from its ERRORS. */
function skippedOutcome(r: CrmWrite, cell: string): WriteOutcome {
  const errors = parseBulkErrors(cell);
  const message = `Bulk Write skipped the record: ${cell || 'no ERRORS given'}`;
  // A lookup column whose value names no record: the parent may not be written yet.
  const lookupMissing = (e: { code: string; columns: string[] }): boolean =>
    (e.code === 'INVALID_DATA' || e.code === 'RESOURCE_NOT_FOUND') && e.columns.some((c) => r.lookups?.[c] !== undefined);
  const others = errors.filter((e) => !lookupMissing(e));
  if (errors.length > 0 && others.length === 0) {
    const field = errors[0]!.columns.find((c) => r.lookups?.[c] !== undefined)!;
    const l = r.lookups![field]!;
    return {
      status: 'retry',
      code: 'LOOKUP_PENDING',
      kind: 'pending',
      message: `${l.object} with ${l.externalIdField}=${l.externalId} is not in Zoho CRM yet`,
    };
  }
  // One error no retry fixes rejects the record, whatever else is wrong with it.
  const permanent = others.find((e) => BULK_PERMANENT_CODES.has(e.code));
  if (permanent)
    return { status: 'rejected', code: permanent.code, message, ...(permanent.columns[0] ? { field: permanent.columns[0] } : {}) };
  return { status: 'retry', code: others[0]?.code || 'SKIPPED', message };
}

export class ZohoAdapter implements CrmAdapter {
  readonly kind = 'zoho';
  private readonly pool: Pool;
  private readonly contentPool: Pool;
  private readonly origin: string;
  /** The credential's token: Zoho's refresh-token grant at the data centre's accounts server (or a static token). */
  private readonly auth: TokenProvider;
  private readonly timeoutMs: number;
  /** crm.tls, for the download pools made later. */
  private readonly tls: CrmConfig['tls'];
  private readonly version: string;
  private readonly bulkThreshold: number;
  private readonly jobTimeoutMs: number;
  /** Bulk Write jobs not settled yet, by id (see the class comment). */
  private readonly openJobs = new Map<string, OpenJob>();
  /** Pools for result downloads from another host (download-accl.zoho.com), by origin. */
  private readonly downloadPools = new Map<string, Pool>();
  private closed = false;
  private readonly caches: CrmCaches;
  /** `<Module>\0<externalId>` -> Zoho record id (shared by the process's adapters, see crm-caches.ts). */
  private readonly ids: Map<string, string>;
  private orgId: string | undefined;

  constructor(config: CrmConfig, caches: CrmCaches = new CrmCaches()) {
    this.caches = caches;
    this.ids = caches.map('zoho.ids');
    const base = new URL(config.baseUrl);
    this.origin = base.origin;
    this.pool = crmPool(base.origin, config.tls, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    // Uploads go to the content host (www.zohoapis.com -> content.zohoapis.com); a simulator or
    // proxy serves both on one origin.
    const content = new URL(base.origin);
    if (/^(www\.)?zohoapis\./.test(content.hostname)) content.hostname = content.hostname.replace(/^(www\.)?/, 'content.');
    this.contentPool =
      content.origin === base.origin ? this.pool : crmPool(content.origin, config.tls, { connections: 2, keepAliveTimeout: 30_000 });
    this.auth = tokenProviderFor(config, config.auth);
    this.timeoutMs = config.timeoutMs;
    this.tls = config.tls;
    this.version = config.apiVersion ?? 'v7';
    this.bulkThreshold = config.bulkThreshold;
    this.jobTimeoutMs = config.bulkJobTimeoutMinutes * 60_000;
  }

  forget(): void {
    this.caches.clear();
  }

  maxBatchSize(): number {
    // With Bulk Write on, the sink must be able to hand over enough records to cross the threshold.
    return this.bulkThreshold > 0 ? BULK_MAX : UPSERT_MAX;
  }

  private key(object: string, externalId: string): string {
    return `${object}\u0000${externalId}`;
  }

  private remember(object: string, externalId: string, id: string): void {
    remember(this.ids, this.key(object, externalId), id);
  }

  /** Which records go through Bulk Write (the largest group of one field set, if big enough). */
  private plan(records: CrmWrite[]): { bulk: number[]; upserts: number[]; deletes: number[] } {
    const deletes: number[] = [];
    const upserts: number[] = [];
    records.forEach((r, i) => {
      (r.op === 'delete' ? deletes : upserts).push(i);
    });
    if (this.bulkThreshold <= 0 || upserts.length < this.bulkThreshold) return { bulk: [], upserts, deletes };
    const groups = new Map<string, number[]>();
    // A record that clears a lookup always takes the regular upsert (null in the record JSON).
    // The Bulk Write docs describe ignore_empty only by what true does (empty cells are skipped)
    // and say nothing of what an empty cell of a find_by lookup column does, so a job is not
    // trusted to unlink
    // (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/create-job.html).
    for (const i of upserts) {
      if (clearsLookup(records[i]!)) continue;
      const s = `${records[i]!.object}|${signature(records[i]!)}`;
      groups.set(s, [...(groups.get(s) ?? []), i]);
    }
    const largest = [...groups.values()].sort((a, b) => b.length - a.length)[0] ?? [];
    if (largest.length < this.bulkThreshold) return { bulk: [], upserts, deletes };
    const inBulk = new Set(largest.slice(0, BULK_MAX));
    return { bulk: [...inBulk], upserts: upserts.filter((i) => !inBulk.has(i)), deletes };
  }

  /** Searches needed for these external ids (10 per search), counting the cache. */
  private searchCredits(targets: { object: string; field: string; externalId: string }[]): number {
    const uncached = new Map<string, Set<string>>();
    for (const t of targets) {
      if (this.ids.has(this.key(t.object, t.externalId))) continue;
      const g = `${t.object}\u0000${t.field}`;
      if (!uncached.has(g)) uncached.set(g, new Set());
      uncached.get(g)!.add(t.externalId);
    }
    let n = 0;
    for (const s of uncached.values()) n += Math.ceil(s.size / SEARCH_CRITERIA_MAX);
    return n;
  }

  /** Polls a job of `rows` rows is expected to need with the poll schedule (an estimate). */
  static estimatedPolls(rows: number): number {
    return ZohoAdapter.expectedPolling(rows).polls;
  }

  /** The polls of a job of `rows` rows and the seconds they span. */
  private static expectedPolling(rows: number): { polls: number; seconds: number } {
    const done = BULK_START_SECONDS + rows / BULK_ROWS_PER_SECOND;
    let t = POLL_FIRST_MS / 1000;
    let wait = POLL_FIRST_MS / 1000;
    let polls = 1;
    while (t < done) {
      wait = Math.min(wait * 2, POLL_MAX_MS / 1000);
      t += wait;
      polls++;
    }
    return { polls, seconds: t };
  }

  jobSeconds(records: CrmWrite[]): number {
    const { bulk } = this.plan(records);
    return bulk.length ? ZohoAdapter.expectedPolling(bulk.length).seconds : 0;
  }

  cost(records: CrmWrite[]): number {
    const { bulk, upserts, deletes } = this.plan(records);
    let credits = 0;
    if (bulk.length) {
      // org id (once), upload, the job, its polls, the result download
      credits += (this.orgId ? 0 : 1) + 1 + CREDITS_PER_BULK_JOB + ZohoAdapter.estimatedPolls(bulk.length) + 1;
    }
    for (let i = 0; i < upserts.length; i += UPSERT_MAX) credits += upsertCredits(Math.min(UPSERT_MAX, upserts.length - i));
    credits += this.searchCredits(
      upserts.flatMap((i) =>
        lookupTargets(records[i]!).map((l) => ({ object: l.object, field: l.externalIdField, externalId: l.externalId })),
      ),
    );
    if (deletes.length) {
      const targets = deletes.map((i) => ({
        object: records[i]!.object,
        field: records[i]!.externalIdField,
        externalId: records[i]!.externalId,
      }));
      credits += this.searchCredits(targets);
      // Records already gone cost no delete call; without a search we cannot know: count the calls.
      credits += Math.ceil(deletes.length / DELETE_MAX);
    }
    return credits;
  }

  dailyCost(records: CrmWrite[]): number {
    // Zoho's one quota is the rolling 24 h credit count: the same unit as `cost`.
    return this.cost(records);
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', `/crm/${this.version}/users?type=CurrentUser`, { onSignal: () => undefined, credits: 1 });
    if (res.status !== 200)
      throw new ConnectorError(
        'CRM_PING',
        `Zoho CRM answered HTTP ${res.status} to GET /crm/${this.version}/users; check crm.baseUrl and crm.apiVersion`,
      );
    // `{users: [{id, ...}]}` (https://www.zoho.com/crm/developer/docs/api/v7/get-users.html): a
    // proxy's page or an empty 200 is not Zoho, and `pg2crm check` must not pass on it.
    const users = isObject(res.body) && Array.isArray(res.body.users) ? res.body.users : [];
    if (!users.some((u) => isObject(u) && isId(u.id)))
      throw badResponse(`Zoho CRM GET /crm/${this.version}/users`, res.status, res.text, 'a JSON object {users: [{id}]}');
  }

  async write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]> {
    const out: (WriteOutcome | undefined)[] = new Array(records.length);
    const { bulk, upserts, deletes } = this.plan(records);
    try {
      if (bulk.length) await this.bulkWrite(records, bulk, out, onSignal);
      if (upserts.length) await this.upsert(records, upserts, out, onSignal);
      if (deletes.length) await this.delete(records, deletes, out, onSignal);
    } catch (err) {
      // Part of the call is already written (say a Bulk Write job): keep those outcomes, so a
      // retry does not pay for them again. Nothing written yet: the call failed.
      const partial = out.some((o) => o !== undefined) ? retryOutcomeOf(err) : undefined;
      const outcome = err instanceof ThrottledCall || err instanceof CallFailed ? err.outcome : partial;
      if (!outcome) throw err;
      for (let i = 0; i < out.length; i++) out[i] ??= outcome;
    }
    return out.map((o) => o ?? { status: 'retry', code: 'NOT_SENT', message: 'record was not sent' });
  }

  // ---- upsert ----------------------------------------------------------------------------

  private async upsert(
    records: CrmWrite[],
    indexes: number[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    // This call's ids come from `found`, not from the shared cache, which a rebalance may drop
    // while the call runs.
    const found = await this.resolveLookups(
      indexes.map((i) => records[i]!),
      onSignal,
    );
    const ready: number[] = [];
    const lookupData = new Map<number, Record<string, unknown>>();
    for (const i of indexes) {
      const r = records[i]!;
      const l = lookupTargets(r).find((t) => !found.has(this.key(t.object, t.externalId)));
      if (l) {
        out[i] = {
          status: 'retry',
          code: 'LOOKUP_PENDING',
          kind: 'pending',
          message: `${l.object} with ${l.externalIdField}=${l.externalId} is not in Zoho CRM yet`,
        };
        continue;
      }
      ready.push(i);
      const d: Record<string, unknown> = {};
      // A field left out of the record JSON keeps its value; a lookup is cleared by sending it
      // as null instead of `{id}` (record JSON of
      // https://www.zoho.com/crm/developer/docs/api/v7/upsert-records.html).
      for (const [field, t] of lookupEntries(r))
        d[field] = t.externalId === null ? null : { id: found.get(this.key(t.object, t.externalId)) };
      lookupData.set(i, d);
    }
    for (let c = 0; c < ready.length; c += UPSERT_MAX) {
      const chunk = ready.slice(c, c + UPSERT_MAX);
      const object = records[chunk[0]!]!.object;
      const data = chunk.map((i) => {
        const r = records[i]!;
        return { ...r.fields, [r.externalIdField]: r.externalId, ...lookupData.get(i) };
      });
      const fields = [...new Set(chunk.map((i) => records[i]!.externalIdField))];
      const res = await this.request('POST', `/crm/${this.version}/${object}/upsert`, {
        body: { data, duplicate_check_fields: fields },
        onSignal,
        credits: upsertCredits(chunk.length),
      });
      const results = dataOf(res.body);
      const what = `Zoho CRM POST /crm/${this.version}/${object}/upsert`;
      if (!results && !is2xx(res.status)) {
        const outcome = this.callFailure(res, `upsert of ${chunk.length} ${object}`);
        for (const i of chunk) out[i] = outcome;
        continue;
      }
      // One result per record, in request order: any other count cannot be matched to the records.
      if (!results || results.length !== chunk.length)
        throw badResponse(what, res.status, res.text, `a JSON object {data: [${chunk.length} results {code, action, details, status}]}`);
      chunk.forEach((i, k) => {
        const r = records[i]!;
        const result = results[k];
        if (!isRecordResult(result, true)) {
          out[i] = badRecord(`${what}: result ${k} is not {code, action, details: {id}, status}: ${JSON.stringify(result)?.slice(0, 120)}`);
          return;
        }
        if (result.status === 'success') this.remember(r.object, r.externalId, String(result.details!.id));
        out[i] = this.recordOutcome(result);
      });
    }
  }

  private recordOutcome(result: ZohoResult): WriteOutcome {
    if (result.status === 'success') {
      return {
        status: 'done',
        ...(result.details?.id ? { crmId: String(result.details.id) } : {}),
        ...(result.action ? { created: result.action === 'insert' } : {}),
      };
    }
    const code = result.code ?? 'UNKNOWN';
    const field = result.details?.api_name;
    const message = `${result.message ?? code}${field ? ` (${field})` : ''}`;
    if (PERMANENT_CODES.has(code)) return { status: 'rejected', code, message, ...(field ? { field } : {}) };
    return { status: 'retry', code, message };
  }

  /** A whole request answered without per-record results: 4xx other than 401/429. */
  private callFailure(res: ZohoResponse, what: string): WriteOutcome {
    const b = res.body as ZohoResult | undefined;
    const code = b?.code ?? `HTTP_${res.status}`;
    const message = `Zoho CRM refused the ${what} (HTTP ${res.status}): ${b?.message ?? 'no message'}`;
    if (res.status >= 400 && res.status < 500)
      return { status: 'rejected', code, message, ...(b?.details?.api_name ? { field: b.details.api_name } : {}) };
    return { status: 'retry', code, message };
  }

  // ---- lookups and ids -------------------------------------------------------------------

  private async resolveLookups(records: CrmWrite[], onSignal: (s: RateSignal) => void): Promise<Map<string, string>> {
    const targets = records.flatMap((r) =>
      lookupTargets(r).map((l) => ({ object: l.object, field: l.externalIdField, externalId: l.externalId })),
    );
    return this.resolveIds(targets, onSignal);
  }

  /**
   * The Zoho ids of `targets`: cached ones, and the others found by one search per 10 ids
   * (criteria joined by `or`) and cached. Absent = no such record.
   */
  private async resolveIds(
    targets: { object: string; field: string; externalId: string }[],
    onSignal: (s: RateSignal) => void,
  ): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    const groups = new Map<string, { object: string; field: string; ids: Set<string> }>();
    for (const t of targets) {
      const cached = this.ids.get(this.key(t.object, t.externalId));
      if (cached !== undefined) {
        found.set(this.key(t.object, t.externalId), cached);
        continue;
      }
      const g = `${t.object}\u0000${t.field}`;
      if (!groups.has(g)) groups.set(g, { object: t.object, field: t.field, ids: new Set() });
      groups.get(g)!.ids.add(t.externalId);
    }
    for (const { object, field, ids } of groups.values()) {
      const list = [...ids];
      for (let c = 0; c < list.length; c += SEARCH_CRITERIA_MAX) {
        const part = list.slice(c, c + SEARCH_CRITERIA_MAX).map((v) => `(${field}:equals:${criterionValue(v)})`);
        const criteria = part.length === 1 ? part[0]! : `(${part.join('or')})`;
        const res = await this.request('GET', `/crm/${this.version}/${object}/search?criteria=${encodeURIComponent(criteria)}`, {
          onSignal,
          credits: 1,
        });
        if (res.status === 204) continue; // nothing matched
        if (res.status !== 200) throw new CallFailed(this.callFailure(res, `search of ${object} by ${field}`));
        // `{data: [{id, <field>, ...}], info}` (https://www.zoho.com/crm/developer/docs/api/v7/search-records.html):
        // anything else must not read as "no such record" (a delete already done, a lookup pending).
        const rows = dataOf(res.body);
        if (!rows?.every((row) => isObject(row) && isId(row.id))) {
          throw badResponse(
            `Zoho CRM GET /crm/${this.version}/${object}/search`,
            res.status,
            res.text,
            `a JSON object {data: [{id, ${field}}]} (or 204 when nothing matches)`,
          );
        }
        for (const row of rows as Record<string, unknown>[]) {
          const v = row[field];
          if (v === undefined || v === null) continue;
          found.set(this.key(object, String(v)), String(row.id));
          this.remember(object, String(v), String(row.id));
        }
      }
    }
    return found;
  }

  // ---- delete ----------------------------------------------------------------------------

  private async delete(
    records: CrmWrite[],
    indexes: number[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    const found = await this.resolveIds(
      indexes.map((i) => ({ object: records[i]!.object, field: records[i]!.externalIdField, externalId: records[i]!.externalId })),
      onSignal,
    );
    const byObject = new Map<string, { index: number; id: string }[]>();
    for (const i of indexes) {
      const r = records[i]!;
      const id = found.get(this.key(r.object, r.externalId));
      if (id === undefined) {
        out[i] = { status: 'done' }; // not in Zoho: already gone
        continue;
      }
      if (!byObject.has(r.object)) byObject.set(r.object, []);
      byObject.get(r.object)!.push({ index: i, id });
    }
    for (const [object, list] of byObject) {
      for (let c = 0; c < list.length; c += DELETE_MAX) {
        const chunk = list.slice(c, c + DELETE_MAX);
        const res = await this.request('DELETE', `/crm/${this.version}/${object}?ids=${chunk.map((x) => x.id).join(',')}`, {
          onSignal,
          credits: 1,
        });
        const results = dataOf(res.body);
        const what = `Zoho CRM DELETE /crm/${this.version}/${object}`;
        if (!results && !is2xx(res.status)) {
          const outcome = this.callFailure(res, `delete of ${chunk.length} ${object}`);
          for (const x of chunk) out[x.index] = outcome;
          continue;
        }
        if (!results || results.length !== chunk.length)
          throw badResponse(what, res.status, res.text, `a JSON object {data: [${chunk.length} results {code, details: {id}, status}]}`);
        const byId = new Map<string, ZohoResult>();
        for (const r of results) if (isRecordResult(r, false) && r.details?.id !== undefined) byId.set(String(r.details.id), r);
        for (const x of chunk) {
          const r = records[x.index]!;
          const result = byId.get(x.id);
          // "record not deleted" for an id that no longer exists: someone deleted it first.
          if (result?.status === 'success' || result?.code === 'INVALID_DATA') {
            this.ids.delete(this.key(r.object, r.externalId));
            out[x.index] = { status: 'done' };
          } else
            out[x.index] = result
              ? this.recordOutcome(result)
              : badRecord(`${what}: no result {code, details: {id: ${x.id}}, status} for ${object} ${x.id}`);
        }
      }
    }
  }

  // ---- Bulk Write ------------------------------------------------------------------------

  private async bulkWrite(
    records: CrmWrite[],
    indexes: number[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    const sheet = bulkSheet(records, indexes);
    const { object, idField, lineOf } = sheet;
    await this.resumeOpenJobs(sheet, records, indexes, out, onSignal);
    const todo = indexes.filter((i) => out[i] === undefined);
    if (todo.length === 0) return;
    const fileId = await this.uploadSheet(sheet, todo, onSignal);
    const jobId = await this.createJob(sheet, fileId, todo.length, onSignal);
    log.debug({ jobId, object, records: todo.length }, 'bulk write job created');
    // Running now: remembered until its result is read (see the class comment).
    const job: OpenJob = {
      id: jobId,
      object,
      idField,
      createdAt: Date.now(),
      rows: new Map(todo.map((i) => [records[i]!.externalId, lineOf.get(i)!])),
    };
    this.openJobs.set(jobId, job);
    await this.settleJob(job, records, todo, out, onSignal);
  }

  /**
   * Jobs of earlier calls that carry some of these records with the same cells: waits for them.
   * One past the job timeout is given up (its records went elsewhere, or are retried now).
   */
  private async resumeOpenJobs(
    sheet: BulkSheet,
    records: CrmWrite[],
    indexes: number[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    for (const [id, job] of this.openJobs) if (Date.now() >= job.createdAt + this.jobTimeoutMs) this.openJobs.delete(id);
    for (const job of [...this.openJobs.values()]) {
      if (job.object !== sheet.object || job.idField !== sheet.idField) continue;
      const carried = indexes.filter((i) => out[i] === undefined && job.rows.get(records[i]!.externalId) === sheet.lineOf.get(i));
      if (carried.length === 0) continue;
      log.info({ jobId: job.id, object: sheet.object, records: carried.length }, 'resuming bulk write job');
      await this.settleJob(job, records, carried, out, onSignal);
    }
  }

  /** Uploads the rows of `todo` as a zipped CSV; returns the file id. */
  private async uploadSheet(sheet: BulkSheet, todo: number[], onSignal: (s: RateSignal) => void): Promise<string> {
    const { object, columns, lineOf } = sheet;
    const file = zip([
      { name: `${object}.csv`, data: Buffer.from(toCsv([columns], ZOHO_CSV) + todo.map((i) => lineOf.get(i)!).join(''), 'utf8') },
    ]);
    const org = await this.org(onSignal);
    const boundary = `----pg2crm${randomUUID()}`;
    const multipart = Buffer.concat([
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${object}.zip"\r\nContent-Type: application/zip\r\n\r\n`,
      ),
      file,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const uploaded = await this.request('POST', `/crm/${this.version}/upload`, {
      raw: multipart,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, feature: 'bulk-write', 'x-crm-org': org },
      onSignal,
      credits: 1,
      pool: this.contentPool,
    });
    // `{status: "success", code: "FILE_UPLOAD_SUCCESS", details: {file_id}}`
    // (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/upload-file.html)
    const fileId = isObject(uploaded.body) && isObject(uploaded.body.details) ? uploaded.body.details.file_id : undefined;
    if (uploaded.status !== 200) throw this.bulkError(uploaded, `upload of ${todo.length} ${object}`);
    if (!isId(fileId))
      throw badResponse(
        `Zoho CRM POST /crm/${this.version}/upload`,
        uploaded.status,
        uploaded.text,
        'a JSON object {status, code, details: {file_id}}',
      );
    return fileId;
  }

  /** Creates the upsert job over the uploaded file; returns its id. */
  private async createJob(sheet: BulkSheet, fileId: string, count: number, onSignal: (s: RateSignal) => void): Promise<string> {
    const { object, idField, columns, first } = sheet;
    const created = await this.request('POST', `/crm/bulk/${this.version}/write`, {
      body: {
        operation: 'upsert',
        ignore_empty: false,
        resource: [
          {
            type: 'data',
            module: { api_name: object },
            file_id: fileId,
            find_by: idField,
            field_mappings: columns.map((api_name, index) => {
              const l = first.lookups?.[api_name];
              return l ? { api_name, index, find_by: l.externalIdField } : { api_name, index };
            }),
          },
        ],
      },
      onSignal,
      credits: CREDITS_PER_BULK_JOB,
    });
    // 201 `{status: "success", code: "SUCCESS", details: {id}}`
    // (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/create-job.html)
    const jobId = isObject(created.body) && isObject(created.body.details) ? created.body.details.id : undefined;
    if (!is2xx(created.status)) throw this.bulkError(created, `job for ${count} ${object}`);
    if (created.status !== 201 || !isId(jobId))
      throw badResponse(
        `Zoho CRM POST /crm/bulk/${this.version}/write`,
        created.status,
        created.text,
        'HTTP 201 with a JSON object {status, code, details: {id}}',
      );
    return jobId;
  }

  /** Waits for `job` (within the job timeout), reads its result and settles the records of `indexes`. */
  private async settleJob(
    job: OpenJob,
    records: CrmWrite[],
    indexes: number[],
    out: (WriteOutcome | undefined)[],
    onSignal: (s: RateSignal) => void,
  ): Promise<void> {
    const { id: jobId, object, idField } = job;
    const url = await this.poll(job, onSignal);
    const result = await this.download(url, onSignal);
    // A zip holding a CSV of the first three mapped columns (the external id is the first) plus
    // STATUS, RECORD_ID and ERRORS (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/download-result.html).
    const resultWhat = `Zoho CRM Bulk Write job ${jobId} result download`;
    const expected = `a zip holding a CSV with the columns ${idField}, STATUS, RECORD_ID, ERRORS`;
    let entries: ReturnType<typeof unzip>;
    try {
      entries = unzip(result);
    } catch {
      throw badResponse(resultWhat, 200, result.subarray(0, 200).toString('utf8'), expected);
    }
    const entry = entries.find((e) => e.name.toLowerCase().endsWith('.csv'));
    if (!entry) throw badResponse(resultWhat, 200, entries.map((e) => e.name).join(', '), expected);
    const text = entry.data.toString('utf8');
    const [cols = [], ...lines] = parseCsvRows(text);
    const at = (name: string): number => cols.indexOf(name);
    const [idCol, statusCol, recordCol, errorsCol] = [at(idField), at('STATUS'), at('RECORD_ID'), at('ERRORS')];
    if (idCol < 0 || statusCol < 0 || recordCol < 0 || errorsCol < 0) throw badResponse(resultWhat, 200, text, expected);
    // Read in full: nothing more will come of the job.
    this.openJobs.delete(jobId);
    // Row order is not promised: match rows by external id.
    const byExternalId = new Map(lines.map((l) => [l[idCol] ?? '', l]));
    for (const i of indexes) {
      const r = records[i]!;
      const line = byExternalId.get(r.externalId);
      const status = line?.[statusCol]?.toLowerCase();
      const crmId = line?.[recordCol];
      if (status === 'added' || status === 'updated') {
        if (!crmId) {
          out[i] = badRecord(`Bulk Write job ${jobId}: the row of ${r.externalId} is ${status} without a RECORD_ID`);
          continue;
        }
        this.remember(object, r.externalId, crmId);
        out[i] = { status: 'done', crmId, created: status === 'added' };
      } else if (status === 'skipped') {
        out[i] = skippedOutcome(r, line?.[errorsCol] ?? '');
      } else if (status === 'unprocessed') {
        out[i] = { status: 'retry', code: 'BULK_UNPROCESSED', message: `Bulk Write job ${jobId} did not process the record` };
      } else {
        // A completed job lists every uploaded row with one of the documented statuses.
        out[i] = badRecord(
          `Bulk Write job ${jobId}: ${line ? `the row of ${r.externalId} has STATUS ${JSON.stringify(line[statusCol])}` : `no result row for ${r.externalId}`}`,
        );
      }
    }
  }

  /** A Bulk Write step failed: the whole call is retried (the records themselves were not judged). */
  private bulkError(res: ZohoResponse, what: string): ConnectorError {
    const b = res.body as ZohoResult | undefined;
    return new ConnectorError(
      'CRM_BULK_WRITE',
      `Zoho CRM refused the Bulk Write ${what} (HTTP ${res.status} ${b?.code ?? ''}): ${b?.message ?? 'no message'}`,
      { retriable: true },
    );
  }

  private async org(onSignal: (s: RateSignal) => void): Promise<string> {
    if (this.orgId) return this.orgId;
    const res = await this.request('GET', `/crm/${this.version}/org`, { onSignal, credits: 1 });
    // `{org: [{zgid, id, ...}]}` (https://www.zoho.com/crm/developer/docs/api/v7/get-org-data.html)
    const org = isObject(res.body) && Array.isArray(res.body.org) && isObject(res.body.org[0]) ? res.body.org[0] : undefined;
    const id = org?.zgid ?? org?.id;
    if (res.status !== 200) throw this.bulkError(res, 'org lookup (GET /org)');
    if ((typeof id !== 'string' && typeof id !== 'number') || id === '')
      throw badResponse(`Zoho CRM GET /crm/${this.version}/org`, res.status, res.text, 'a JSON object {org: [{zgid}]}');
    this.orgId = String(id);
    return this.orgId;
  }

  /**
   * The one wait inside the adapter: polling the job until COMPLETED, each poll one call bounded
   * by `timeoutMs`, the job by `bulkJobTimeoutMinutes`. A poll without an answer (timeout,
   * reset, 5xx) or a throttled one says nothing about the job, which keeps running: poll on.
   */
  private async poll(job: OpenJob, onSignal: (s: RateSignal) => void): Promise<string> {
    const { id: jobId } = job;
    const deadline = job.createdAt + this.jobTimeoutMs;
    const path = `/crm/bulk/${this.version}/write/${jobId}`;
    let wait = POLL_FIRST_MS;
    let badPolls = 0;
    for (;;) {
      if (Date.now() >= deadline) {
        // Zoho cannot cancel a Bulk Write job: give up on it (its records are retried).
        this.openJobs.delete(jobId);
        throw new ConnectorError(
          'CRM_BULK_TIMEOUT',
          `Zoho Bulk Write job ${jobId} did not complete within crm.bulkJobTimeoutMinutes=${this.jobTimeoutMs / 60_000}; its records will be retried. Raise crm.bulkJobTimeoutMinutes or lower crm.bulkThreshold`,
          { retriable: true },
        );
      }
      await sleep(Math.max(0, Math.min(wait, deadline - Date.now())));
      wait = Math.min(wait * 2, POLL_MAX_MS);
      if (this.closed)
        throw new ConnectorError('CRM_UNREACHABLE', `Zoho Bulk Write job ${jobId}: the connector is stopping`, { retriable: true });
      let res: ZohoResponse;
      try {
        res = await this.request('GET', path, { onSignal, credits: 1, polling: true });
      } catch (err) {
        if (err instanceof ConnectorError && err.retriable && !this.closed) {
          log.warn({ jobId, err }, 'bulk write job poll failed; polling on');
          continue;
        }
        throw err;
      }
      if (res.status === 429) continue;
      if (res.status !== 200) {
        this.openJobs.delete(jobId);
        throw this.bulkError(res, `status of job ${jobId}`);
      }
      // `{status, result: {download_url}}`, the URL once COMPLETED (JOB_STATUSES).
      const body = isObject(res.body) ? res.body : {};
      const status = typeof body.status === 'string' ? body.status : '';
      const url = isObject(body.result) ? body.result.download_url : undefined;
      if (!JOB_STATUSES.has(status) || (status === 'COMPLETED' && !isId(url))) {
        // A garbled status answer says nothing about the job, which keeps running (it has cost
        // 500 credits): poll again; only a run of them gives up on it.
        if (++badPolls >= BAD_POLLS_TOLERATED) {
          throw badResponse(
            `Zoho CRM GET ${path}`,
            res.status,
            res.text,
            'a JSON object {status: ADDED|IN PROGRESS|COMPLETED|FAILED, result: {download_url}}',
          );
        }
        continue;
      }
      badPolls = 0;
      if (status === 'COMPLETED') return url as string;
      if (status === 'FAILED') {
        this.openJobs.delete(jobId);
        throw new ConnectorError('CRM_BULK_FAILED', `Zoho Bulk Write job ${jobId} failed`, { retriable: true });
      }
    }
  }

  /** The result zip, from the URL the job named (another host in Zoho's cloud: download-accl.zoho.com). */
  private async download(url: string, onSignal: (s: RateSignal) => void): Promise<Buffer> {
    const u = new URL(url, this.origin);
    let pool = u.origin === this.origin ? this.pool : this.downloadPools.get(u.origin);
    if (!pool) this.downloadPools.set(u.origin, (pool = crmPool(u.origin, this.tls, { connections: 2, keepAliveTimeout: 30_000 })));
    // Through `send`: one deadline over the whole download, and the User-Agent.
    const from = pool;
    const res = await withToken(
      this.auth,
      'Zoho CRM',
      (token) =>
        send(from, {
          method: 'GET',
          path: u.pathname + u.search,
          headers: { authorization: `Zoho-oauthtoken ${token.value}` },
          timeoutMs: this.timeoutMs,
          what: 'Zoho CRM Bulk Write result download',
          binary: true,
        }),
      (r) => r.status === 401,
    );
    const answer: ZohoResponse = { status: res.status, headers: res.headers, body: undefined, text: '' };
    const throttled = this.signal(answer, 1, onSignal);
    if (res.status === 401) throw this.authError();
    if (throttled) throw new ThrottledCall(throttled);
    if (res.status !== 200)
      throw new ConnectorError('CRM_BULK_RESULT', `Zoho CRM answered HTTP ${res.status} to the Bulk Write result download`, {
        retriable: true,
      });
    return res.bytes ?? Buffer.alloc(0);
  }

  // ---- HTTP ------------------------------------------------------------------------------

  private authError(): ConnectorError {
    return this.auth.refused('Zoho CRM');
  }

  /** Reports the response's rate information; returns the throttle outcome for a 429. */
  private signal(res: ZohoResponse, credits: number, onSignal: (s: RateSignal) => void): RetryOutcome | undefined {
    const s: RateSignal = {};
    const remaining = header(res.headers, 'x-api-credits-remaining');
    if (remaining !== undefined && remaining !== '' && Number.isFinite(Number(remaining))) {
      // The credit window is Zoho's only quota: it is both the window and the daily budget.
      s.remaining = Number(remaining);
      s.dailyRemaining = Number(remaining);
    }
    if (res.status !== 429) {
      onSignal(s);
      return undefined;
    }
    const creditsOut = s.remaining !== undefined && s.remaining < credits;
    const message = (res.body as ZohoResult | undefined)?.message ?? 'Too many requests';
    return throttled(res.headers, {
      message: `Zoho CRM: ${message}`,
      defaultSeconds: creditsOut ? CREDITS_EXHAUSTED_WAIT_SECONDS : CONCURRENCY_WAIT_SECONDS,
      signal: s,
      onSignal,
    });
  }

  private async request(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    opts: {
      body?: unknown;
      raw?: Buffer;
      headers?: Record<string, string>;
      onSignal: (s: RateSignal) => void;
      credits: number;
      polling?: boolean;
      pool?: Pool;
    },
  ): Promise<ZohoResponse> {
    const payload = opts.raw ?? (opts.body !== undefined ? JSON.stringify(opts.body) : undefined);
    // An access token past its hour is answered 401 INVALID_TOKEN: refreshed once, retried once.
    const res = await withToken(
      this.auth,
      'Zoho CRM',
      (token) =>
        send(opts.pool ?? this.pool, {
          method,
          path,
          headers: {
            authorization: `Zoho-oauthtoken ${token.value}`,
            accept: 'application/json',
            ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...opts.headers,
          },
          body: payload,
          timeoutMs: this.timeoutMs,
          what: `Zoho CRM request ${method} ${path.split('?')[0]}`,
        }),
      (r) => r.status === 401,
    );
    const out: ZohoResponse = { status: res.status, headers: res.headers, body: res.text ? safeJson(res.text) : undefined, text: res.text };
    const throttled = this.signal(out, opts.credits, opts.onSignal);
    if (out.status === 401) throw this.authError();
    if (throttled && !opts.polling) throw new ThrottledCall(throttled);
    if (out.status >= 500) {
      throw new ConnectorError(
        `CRM_HTTP_${out.status}`,
        `Zoho CRM answered HTTP ${out.status} to ${method} ${path.split('?')[0]}; retrying later`,
        { retriable: true, status: out.status },
      );
    }
    return out;
  }

  /** `pg2crm verify`: a search takes up to 10 criteria joined by `or`, 1 credit. */
  readBatchSize(): number {
    return SEARCH_CRITERIA_MAX;
  }

  /**
   * `GET /crm/{v}/{Module}/search?criteria=((F:equals:a)or(F:equals:b)…)`: 200 `{data}`, 204 when
   * nothing matches (https://www.zoho.com/crm/developer/docs/api/v7/search-records.html).
   */
  async readByExternalIds(
    target: CrmTarget,
    ids: string[],
    fields: string[],
    onSignal: (s: RateSignal) => void,
  ): Promise<Map<string, Record<string, unknown>>> {
    const f = target.externalIdField;
    const part = ids.map((v) => `(${f}:equals:${criterionValue(v)})`);
    const criteria = part.length === 1 ? part[0]! : `(${part.join('or')})`;
    const path = `/crm/${this.version}/${target.object}/search?criteria=${encodeURIComponent(criteria)}`;
    const page = await this.readRows(path, target, fields, onSignal);
    return new Map(page.records.map((r) => [r.externalId, r.fields]));
  }

  /**
   * Get Records, `GET /crm/{v}/{Module}?fields=…&per_page=200`, then `page_token=<info.next_page_token>`
   * while `info.more_records` (https://www.zoho.com/crm/developer/docs/api/v7/get-records.html:
   * `fields` is required, at most 200 a page, a page token beyond the first 2,000 records). 1 credit a call.
   */
  async listRecords(target: CrmTarget, fields: string[], cursor: string | undefined, onSignal: (s: RateSignal) => void) {
    const columns = encodeURIComponent([target.externalIdField, ...fields].join(','));
    const path = `/crm/${this.version}/${target.object}?fields=${columns}&per_page=200${cursor ? `&page_token=${encodeURIComponent(cursor)}` : ''}`;
    return this.readRows(path, target, fields, onSignal);
  }

  private async readRows(path: string, target: CrmTarget, fields: string[], onSignal: (s: RateSignal) => void) {
    const res = await this.request('GET', path, { onSignal, credits: 1 });
    if (res.status === 204) return { records: [] };
    const what = `Zoho CRM GET ${path.split('?')[0]}`;
    if (res.status !== 200) {
      const body = res.body as ZohoResult | undefined;
      throw new ConnectorError(
        'CRM_CALL',
        `${what} answered HTTP ${res.status} ${body?.code ?? ''}: ${body?.message ?? res.text.slice(0, 200)}; check mappings[].object (the module API name), externalId.field and fields`,
      );
    }
    const rows = dataOf(res.body);
    if (!rows?.every((row) => isObject(row) && isId(row.id)))
      throw badResponse(what, res.status, res.text, '{"data":[{"id":…}],"info":{…}}');
    const records: { externalId: string; fields: Record<string, unknown> }[] = [];
    for (const row of rows as Record<string, unknown>[]) {
      const id = row[target.externalIdField];
      if (id !== undefined && id !== null && id !== '')
        records.push({ externalId: String(id), fields: Object.fromEntries(fields.map((k) => [k, row[k]])) });
    }
    const info = isObject(res.body) && isObject(res.body.info) ? res.body.info : {};
    const next = info.more_records === true && typeof info.next_page_token === 'string' ? info.next_page_token : undefined;
    return next ? { records, next } : { records };
  }

  describeAuth(): string {
    return this.auth.describe();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.downloadPools.values()) await p.close();
    if (this.contentPool !== this.pool) await this.contentPool.close();
    await this.pool.close();
  }
}

/** The CSV of one bulk write: columns (external id first), and each record's line by its index. */
interface BulkSheet {
  first: CrmWrite;
  object: string;
  idField: string;
  columns: string[];
  lineOf: Map<number, string>;
}

function bulkSheet(records: CrmWrite[], indexes: number[]): BulkSheet {
  const first = records[indexes[0]!]!;
  const idField = first.externalIdField;
  const fields = Object.keys(first.fields)
    .filter((f) => f !== idField)
    .sort();
  const lookups = lookupEntries(first).sort(([a], [b]) => a.localeCompare(b));
  const columns = [idField, ...fields, ...lookups.map(([f]) => f)];
  const lineOf = new Map<number, string>();
  for (const i of indexes) {
    const r = records[i]!;
    const row = [r.externalId, ...fields.map((f) => r.fields[f]), ...lookups.map(([f]) => r.lookups?.[f]?.externalId)];
    lineOf.set(i, toCsv([row], ZOHO_CSV));
  }
  return { first, object: first.object, idField, columns, lineOf };
}
