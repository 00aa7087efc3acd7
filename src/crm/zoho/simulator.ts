import { ConnectorError } from '../../errors.ts';
import { SimTokens, type SimOAuthOptions, tokenParams } from '../auth/token-sim.ts';
import { type CrmSimulator, RollingWindow, type SimRecord, type SimRequest, type SimResponse, SimServer } from '../sim-server.ts';
import { parseCsvRows, toCsv, ZOHO_CSV } from '../csv.ts';
import { unzip, zip } from './zip.ts';

/**
 * Zoho CRM (REST API v2-v8) as documented (reference/crm-apis.md;
 * https://www.zoho.com/crm/developer/docs/api/v7/api-limits.html, .../status-codes.html,
 * .../upsert-records.html, .../search-records.html, .../delete-records.html,
 * .../bulk-write/overview.html):
 * - OAuth: `Authorization: Zoho-oauthtoken <token>`; an unknown token is 401
 *   `{code:"INVALID_TOKEN", details:{}, message:"invalid oauth token", status:"error"}`.
 *   An expired access token gets the same 401 INVALID_TOKEN. Access tokens come from the accounts
 *   server's `POST /oauth/v2/token` (served here; accounts.zoho.<dc> in production), refresh-token
 *   grant `grant_type=refresh_token&client_id&client_secret&refresh_token` (query parameters as
 *   documented, or a form body): 200 `{access_token, api_domain, token_type:"Bearer", expires_in:3600}`
 *   (https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html; lifetime
 *   `tokenTtlSeconds`). "Using a refresh token, your app can create up to ten access tokens in a
 *   span of ten minutes. If the limit is reached, the access token creation will be blocked for the
 *   rest of the ten minutes" (same page): past it, 400 `{error:"Access Denied", error_description:
 *   "You have made too many requests continuously. Please try again after some time."}`. A wrong
 *   client id or secret is answered HTTP 200 `{error:"invalid_client"}`, an unknown refresh token
 *   200 `{error:"invalid_code"}`. Token requests go to the accounts server and cost no API credits.
 * - API CREDITS over a rolling 24 h per org (default 50,000): insert/update/upsert cost 1 credit
 *   per 10 records, a Bulk Write job 500, other calls (search, delete, upload, job status,
 *   result download, org, users) 1. `X-API-CREDITS-REMAINING` appears on responses once 50% of
 *   the credits are used. Past the credits, or past the org's concurrency limit per app (5 Free,
 *   10 Standard, 15 Professional, 20 Enterprise, 25 Ultimate), 429
 *   `{code:"TOO_MANY_REQUESTS", details:{}, message, status:"error"}` — Zoho documents no
 *   Retry-After, so none is sent.
 * - Upsert: `POST /crm/{v}/{Module}/upsert {data:[<=100], duplicate_check_fields}`; a result per
 *   record in request order, `{code, duplicate_field, action, details, message, status}`; HTTP
 *   201/200 when all succeeded, 202 when some failed, 400 when all failed.
 * - Search: `GET /crm/{v}/{Module}/search?criteria=(Field:equals:value)` (up to 10 criteria joined
 *   by `or`/`and`); 204 without a body when nothing matches.
 * - Delete: `DELETE /crm/{v}/{Module}?ids=1,2` (<= 100).
 * - Get Records: `GET /crm/{v}/{Module}?fields=a,b&per_page=<=200&page=n|page_token=t`, 1 credit
 *   (https://www.zoho.com/crm/developer/docs/api/v7/get-records.html).
 * - Bulk Write: `POST /crm/{v}/upload` (header `feature: bulk-write`, `X-CRM-ORG`, multipart field
 *   `file` = zipped CSV <= 25 MB / 25,000 rows) -> file_id; `POST /crm/bulk/{v}/write` -> job id;
 *   `GET /crm/bulk/{v}/write/{id}` ADDED -> IN PROGRESS -> COMPLETED
 *   (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/job-details.html), with
 *   `result.download_url` of a zipped CSV: the uploaded columns plus RECORD_ID, STATUS
 *   (added/updated/skipped/unprocessed) and ERRORS, `<errorCode>-<column_header>` per error,
 *   several joined by `:`, one code over several columns as `CODE-ColA,ColB`
 *   (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/download-result.html). Jobs
 *   progress with the simulator clock: `bulkQueueSeconds` in ADDED, then `rows / bulkRowsPerSecond`
 *   IN PROGRESS, so a job can take minutes. Zoho documents no call that lists or cancels Bulk
 *   Write jobs (https://www.zoho.com/crm/developer/docs/api/v7/bulk-write/overview.html): none here.
 *
 * Records are stored flat, keyed by the field API names as sent (lookups as `{id}`), so
 * `GET /__sim/records/<Module>` compares directly with the source rows.
 */
export interface ZohoSimOptions extends SimOAuthOptions {
  port: number;
  host?: string;
  /** API credits per rolling window; default 50,000 per 24 h (the base allowance of every paid edition). */
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  /** Concurrent calls per org per app; default 10 (Standard edition). */
  concurrency?: number;
  /** How long each call stays in flight (ms): makes the concurrency limit observable. Default 0. */
  serviceMs?: number;
  /** Zoho sends no Retry-After; set this to make 429s carry one anyway (for clients that honour it). */
  retryAfterSeconds?: number;
  /** Bulk Write throughput (rows per second of simulated time) after the queueing delay. Default 5,000. */
  bulkRowsPerSecond?: number;
  /** How long a Bulk Write job stays ADDED before it runs (simulated seconds). Default 0.1. */
  bulkQueueSeconds?: number;
}

const ORG_ID = '1000000000';
const UPSERT_MAX = 100;
const DELETE_MAX = 100;
const BULK_ROWS_MAX = 25_000;
const BULK_BYTES_MAX = 25 * 1024 * 1024;
const CREDITS_PER_BULK_JOB = 500;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const MODULES = new Set([
  'Leads',
  'Contacts',
  'Accounts',
  'Deals',
  'Products',
  'Vendors',
  'Campaigns',
  'Cases',
  'Quotes',
  'Sales_Orders',
  'Purchase_Orders',
  'Invoices',
]);
const MANDATORY: Record<string, string[]> = {
  Leads: ['Last_Name'],
  Contacts: ['Last_Name'],
  Accounts: ['Account_Name'],
  Deals: ['Deal_Name', 'Stage'],
  Products: ['Product_Name'],
  Vendors: ['Vendor_Name'],
  Campaigns: ['Campaign_Name'],
};
/** System-defined duplicate check fields, used by an upsert without `duplicate_check_fields`. */
const SYSTEM_DUPLICATE_CHECK: Record<string, string[]> = {
  Leads: ['Email'],
  Contacts: ['Email'],
  Accounts: ['Account_Name'],
  Deals: ['Deal_Name'],
  Campaigns: ['Campaign_Name'],
  Products: ['Product_Name'],
  Vendors: ['Vendor_Name'],
};
/** Lookup fields of the standard modules and the module they point to. */
const LOOKUPS: Record<string, Record<string, string>> = {
  Contacts: { Account_Name: 'Accounts', Vendor_Name: 'Vendors' },
  Deals: { Account_Name: 'Accounts', Contact_Name: 'Contacts', Campaign_Source: 'Campaigns' },
  Cases: { Account_Name: 'Accounts', Related_To: 'Contacts', Deal_Name: 'Deals' },
};
const USER = { name: 'Simulator', id: '1000000000001' };

type Json = Record<string, unknown>;

interface RecordResult {
  code: string;
  duplicate_field?: string | null;
  action?: 'insert' | 'update';
  details: Json;
  message: string;
  status: 'success' | 'error';
}

interface BulkJob {
  id: string;
  module: string;
  operation: 'insert' | 'update' | 'upsert';
  findBy: string | undefined;
  /** `ignore_empty`: true = empty cells leave the field as it is; false (default) = they clear it. */
  ignoreEmpty: boolean;
  mappings: { api_name: string; index: number; find_by?: string }[];
  header: string[];
  rows: string[][];
  fileName: string;
  createdAt: number;
  result?: { csv: Buffer; added: number; updated: number; skipped: number };
}

function error(status: number, code: string, message: string, details: Json = {}): SimResponse {
  return { status, body: { code, details, message, status: 'error' } };
}

/**
 * A CSV cell as the field's type. The simulator has no field metadata, so canonical numbers and
 * booleans become numbers and booleans (what the sink sends as JSON for numeric and boolean
 * columns), everything else stays text; the find_by column is always text.
 */
function typed(cell: string): unknown {
  if (cell === 'true' || cell === 'false') return cell === 'true';
  const n = Number(cell);
  return cell.trim() !== '' && Number.isFinite(n) && String(n) === cell ? n : cell;
}

function blank(v: unknown): boolean {
  return v === undefined || v === null || String(v).trim() === '';
}

class ZohoSim extends SimServer {
  private readonly credits: RollingWindow;
  readonly tokens: SimTokens;
  /** Access tokens created per refresh token in the last ten minutes (Zoho's token limit). */
  private readonly tokenWindows = new Map<string, RollingWindow>();
  private readonly concurrency: number;
  private readonly serviceMs: number;
  private readonly bulkRowsPerSecond: number;
  private readonly bulkQueueMs: number;
  private readonly retryAfterSeconds: number | undefined;
  private inFlight = 0;
  private nextFile = 1;
  private readonly files = new Map<string, { name: string; header: string[]; rows: string[][] }>();
  private readonly jobs = new Map<string, BulkJob>();

  constructor(opts: ZohoSimOptions) {
    super();
    const limit = opts.limit ?? { requests: 50_000, windowSeconds: 86_400 };
    this.credits = new RollingWindow(limit.requests, limit.windowSeconds * 1000);
    this.tokens = new SimTokens(opts.tokens ?? ['sim-token'], opts, 3600, () => this.now());
    this.concurrency = opts.concurrency ?? 10;
    this.serviceMs = opts.serviceMs ?? 0;
    this.bulkRowsPerSecond = opts.bulkRowsPerSecond ?? 5000;
    this.bulkQueueMs = (opts.bulkQueueSeconds ?? 0.1) * 1000;
    this.retryAfterSeconds = opts.retryAfterSeconds;
  }

  protected resetLimits(): void {
    this.credits.clear();
    this.files.clear();
    this.jobs.clear();
  }

  /** An injected storm: Zoho's 429 carries no Retry-After unless the simulator was asked to add one. */
  protected throttleResponse(retryAfterSeconds: number): SimResponse {
    return this.throttled('Too many requests. Please try again later.', retryAfterSeconds);
  }

  private throttled(message: string, retryAfterSeconds = this.retryAfterSeconds): SimResponse {
    const headers: Record<string, number> = this.creditHeaders(this.now());
    if (this.retryAfterSeconds !== undefined && retryAfterSeconds !== undefined) headers['Retry-After'] = retryAfterSeconds;
    return { ...error(429, 'TOO_MANY_REQUESTS', message), headers };
  }

  /** `X-API-CREDITS-REMAINING` only once half of the credits are used, as documented. */
  private creditHeaders(now: number): Record<string, number> {
    const remaining = this.credits.remaining(now);
    return remaining <= this.credits.limit / 2 ? { 'X-API-CREDITS-REMAINING': remaining } : {};
  }

  /** The accounts server's refresh-token grant (see the header). */
  private issueToken(req: SimRequest): SimResponse {
    const p = tokenParams(req);
    if (p.get('grant_type') !== 'refresh_token') return { status: 200, body: { error: 'unsupported_grant_type' } };
    const client = this.tokens.client(p.get('client_id'));
    if (!client || p.get('client_secret') !== client.clientSecret) return { status: 200, body: { error: 'invalid_client' } };
    const refresh = p.get('refresh_token') ?? '';
    if (refresh !== client.refreshToken) return { status: 200, body: { error: 'invalid_code' } };
    let window = this.tokenWindows.get(refresh);
    if (!window) this.tokenWindows.set(refresh, (window = new RollingWindow(10, 600_000)));
    if (!window.tryAcquire(this.now())) {
      return {
        status: 400,
        body: {
          error_description: 'You have made too many requests continuously. Please try again after some time.',
          error: 'Access Denied',
          status: 'failure',
        },
      };
    }
    const t = this.tokens.issue('1000.');
    return {
      status: 200,
      body: {
        access_token: t.value,
        api_domain: `http://${req.headers.host ?? 'localhost'}`,
        token_type: 'Bearer',
        expires_in: t.expiresIn,
      },
    };
  }

  protected async handle(req: SimRequest): Promise<SimResponse> {
    if (req.method === 'POST' && req.path === '/oauth/v2/token') return this.issueToken(req);
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Zoho-oauthtoken ')) return error(401, 'AUTHENTICATION_FAILURE', 'Authentication failed');
    if (this.tokens.state(auth.slice('Zoho-oauthtoken '.length)) !== 'valid') return error(401, 'INVALID_TOKEN', 'invalid oauth token');
    if (this.inFlight >= this.concurrency) return this.throttled('API concurrency limit exceeded for the app in this organization');
    this.inFlight++;
    try {
      if (this.serviceMs > 0) await new Promise((r) => setTimeout(r, this.serviceMs));
      const now = this.now();
      const cost = this.creditCost(req);
      if (this.credits.remaining(now) < cost) return this.throttled('The API credits for the 24 hour period are exhausted');
      for (let i = 0; i < cost; i++) this.credits.tryAcquire(now);
      const res = await this.route(req);
      return { ...res, headers: { ...this.creditHeaders(now), ...res.headers } };
    } finally {
      this.inFlight--;
    }
  }

  private creditCost(req: SimRequest): number {
    if (req.method === 'POST' && /^\/crm\/v\d+\/[^/]+\/upsert$/.test(req.path)) {
      const n = Array.isArray((req.body as { data?: unknown } | undefined)?.data) ? (req.body as { data: unknown[] }).data.length : 0;
      // A call over the 100-record limit is refused before any record is processed: 1 credit.
      return n > UPSERT_MAX ? 1 : Math.max(1, Math.ceil(n / 10));
    }
    if (req.method === 'POST' && /^\/crm\/bulk\/v\d+\/write$/.test(req.path)) return CREDITS_PER_BULK_JOB;
    return 1;
  }

  private async route(req: SimRequest): Promise<SimResponse> {
    const p = req.path.split('/').filter(Boolean);
    if (p[0] === 'crm' && p[1] === 'bulk' && /^v\d+$/.test(p[2] ?? '') && p[3] === 'write') {
      if (p.length === 4 && req.method === 'POST') return this.createJob(req);
      if (p.length === 5 && req.method === 'GET') return this.jobStatus(p[4]!, req);
    }
    if (p[0] === 'v2' && p[1] === 'crm' && p[3] === 'bulk-write' && p.length === 6 && req.method === 'GET') return this.download(p[4]!);
    if (p[0] !== 'crm' || !/^v\d+$/.test(p[1] ?? ''))
      return error(404, 'INVALID_URL_PATTERN', 'Please check if the URL trying to access is a correct one');
    const what = p[2] ?? '';
    if (what === 'users' && p.length === 3 && req.method === 'GET') {
      return {
        status: 200,
        body: {
          users: [{ id: USER.id, full_name: USER.name, email: 'sim@example.com', status: 'active' }],
          info: { per_page: 200, count: 1, page: 1, more_records: false },
        },
      };
    }
    if (what === 'org' && p.length === 3 && req.method === 'GET') {
      return { status: 200, body: { org: [{ id: ORG_ID, zgid: ORG_ID, company_name: 'Simulator Org', currency: 'USD' }] } };
    }
    if (what === 'upload' && p.length === 3 && req.method === 'POST') return this.upload(req);
    if (!MODULES.has(what)) return error(400, 'INVALID_MODULE', 'the module name given seems to be invalid', { resource_path_index: 0 });
    if (p[3] === 'upsert' && p.length === 4 && req.method === 'POST') return this.upsert(what, req.body);
    if (p[3] === 'search' && p.length === 4 && req.method === 'GET') return this.search(what, req.query);
    if (p.length === 3 && req.method === 'DELETE') return this.delete(what, req.query);
    if (p.length === 3 && req.method === 'GET') return this.list(what, req.query);
    return error(405, 'INVALID_REQUEST_METHOD', 'The http request method type is not a valid one');
  }

  // ---- records -------------------------------------------------------------------------

  private find(module: string, field: string, value: unknown): SimRecord[] {
    if (blank(value)) return [];
    return [...this.records(module).values()].filter(
      (r) => r[field] !== undefined && r[field] !== null && String(r[field]) === String(value),
    );
  }

  private exists(id: unknown): boolean {
    for (const m of this.store.values()) if (m.has(Number(id))) return true;
    return false;
  }

  /** Validates and writes one record; the per-record result in Zoho's shape. */
  private writeOne(
    module: string,
    data: Json,
    index: number,
    dupFields: string[],
    operation: 'insert' | 'update' | 'upsert',
  ): RecordResult {
    const path = (field: string): Json => ({ api_name: field, json_path: `$.data[${index}].${field}` });
    let existing: SimRecord | undefined;
    let matchedOn: string | null = null;
    if (operation !== 'insert') {
      for (const f of dupFields) {
        const found = this.find(module, f, data[f]);
        if (found.length) {
          existing = found[0];
          matchedOn = f;
          break;
        }
      }
    }
    if (!existing && operation === 'update')
      return {
        code: 'INVALID_DATA',
        details: path(dupFields[0] ?? 'id'),
        message: 'the related id given seems to be invalid',
        status: 'error',
      };
    const merged: Json = { ...existing, ...data };
    for (const f of existing ? [] : (MANDATORY[module] ?? [])) {
      if (blank(merged[f])) return { code: 'MANDATORY_NOT_FOUND', details: path(f), message: 'required field not found', status: 'error' };
    }
    for (const [f, v] of Object.entries(data)) {
      if (/email/i.test(f) && !blank(v) && !EMAIL.test(String(v))) {
        return { code: 'INVALID_DATA', details: { expected_data_type: 'email', ...path(f) }, message: 'invalid data', status: 'error' };
      }
      const isLookup = LOOKUPS[module]?.[f] !== undefined || (v !== null && typeof v === 'object' && 'id' in (v as Json));
      if (isLookup && v !== null && v !== undefined) {
        const id = typeof v === 'object' ? (v as Json).id : v;
        const target = LOOKUPS[module]?.[f];
        const ok = target ? this.records(target).has(Number(id)) : this.exists(id);
        if (!ok)
          return { code: 'INVALID_DATA', details: { expected_data_type: 'lookup', ...path(f) }, message: 'invalid data', status: 'error' };
      }
    }
    // Every duplicate-check field is unique: another record holding the value is a duplicate.
    for (const f of dupFields) {
      const other = this.find(module, f, data[f]).find((r) => r.id !== existing?.id);
      if (other) {
        return {
          code: 'DUPLICATE_DATA',
          details: { ...path(f), duplicate_record: { id: String(other.id), module: { api_name: module } } },
          message: 'duplicate data',
          status: 'error',
        };
      }
    }
    const injected = this.rejected(merged);
    if (injected) return { code: 'INVALID_DATA', details: path(injected.field), message: injected.message, status: 'error' };
    const id = existing?.id ?? this.newId();
    this.records(module).set(id, { ...merged, id } as SimRecord);
    this.stats.recordsWritten++;
    const at = new Date(this.now()).toISOString();
    return {
      code: 'SUCCESS',
      duplicate_field: matchedOn,
      action: existing ? 'update' : 'insert',
      details: { Modified_Time: at, Modified_By: USER, Created_Time: at, id: String(id), Created_By: USER },
      message: existing ? 'record updated' : 'record added',
      status: 'success',
    };
  }

  private upsert(module: string, body: unknown): SimResponse {
    const b = (body ?? {}) as { data?: unknown; duplicate_check_fields?: unknown };
    if (!Array.isArray(b.data) || b.data.length === 0)
      return error(400, 'MANDATORY_NOT_FOUND', 'required field not found', { api_name: 'data', json_path: '$.data' });
    if (b.data.length > UPSERT_MAX)
      return error(400, 'LIMIT_EXCEEDED', `a maximum of ${UPSERT_MAX} records can be upserted per call`, {
        limit: UPSERT_MAX,
        api_name: 'data',
        json_path: '$.data',
      });
    const dup = Array.isArray(b.duplicate_check_fields) ? b.duplicate_check_fields.map(String) : (SYSTEM_DUPLICATE_CHECK[module] ?? []);
    const data = b.data.map((d, i) => this.writeOne(module, (d ?? {}) as Json, i, dup, 'upsert'));
    const failed = data.filter((d) => d.status === 'error').length;
    const status = failed === data.length ? 400 : failed > 0 ? 202 : data.some((d) => d.action === 'insert') ? 201 : 200;
    return { status, body: { data } };
  }

  /** `(F:equals:v)`, `((F:equals:a)or(F:equals:b))`; `\(`, `\)`, `\,` escape inside values. */
  private search(module: string, query: URLSearchParams): SimResponse {
    const criteria = query.get('criteria') ?? '';
    const atoms = [...criteria.matchAll(/\(([A-Za-z0-9_]+):(equals|starts_with):((?:\\.|[^()\\])*)\)/g)];
    if (!atoms.length)
      return error(400, 'INVALID_QUERY', 'invalid query formed', { reason: 'criteria must be (field:equals:value)', api_name: 'criteria' });
    if (atoms.length > 10) return error(400, 'LIMIT_EXCEEDED', 'a maximum of 10 criteria are allowed', { api_name: 'criteria' });
    const all = /\)\s*and\s*\(/i.test(criteria);
    const tests = atoms.map(([, field, op, value]) => {
      const v = value!.replace(/\\(.)/g, '$1');
      return (r: SimRecord): boolean => {
        const actual = r[field!];
        if (actual === undefined || actual === null) return false;
        return op === 'equals' ? String(actual) === v : String(actual).startsWith(v);
      };
    });
    const found = [...this.records(module).values()].filter((r) => (all ? tests.every((t) => t(r)) : tests.some((t) => t(r))));
    if (!found.length) return { status: 204 };
    const page = found.slice(0, 200).map((r) => ({ ...r, id: String(r.id) }));
    return { status: 200, body: { data: page, info: { per_page: 200, count: page.length, page: 1, more_records: found.length > 200 } } };
  }

  /**
   * Get Records (https://www.zoho.com/crm/developer/docs/api/v7/get-records.html): `fields`
   * required (the record's `id` always comes too), `per_page` at most 200, `page` (the first
   * 2,000 records) or `page_token` (the previous answer's `info.next_page_token`); 204 when
   * there is nothing. The simulator's token is an offset.
   */
  private list(module: string, query: URLSearchParams): SimResponse {
    const fields = query.get('fields')?.split(',').filter(Boolean);
    if (!fields?.length) return error(400, 'REQUIRED_PARAM_MISSING', 'One of the expected parameter is missing', { param: 'fields' });
    const perPage = Math.min(200, Math.max(1, Number(query.get('per_page') ?? 200) || 200));
    const token = query.get('page_token');
    const page = Math.max(1, Number(query.get('page') ?? 1) || 1);
    const from = token ? Number(token.replace(/^sim-/, '')) || 0 : (page - 1) * perPage;
    const all = [...this.records(module).values()];
    const rows = all
      .slice(from, from + perPage)
      .map((r) => ({ id: String(r.id), ...Object.fromEntries(fields.map((f) => [f, r[f] ?? null])) }));
    if (!rows.length) return { status: 204 };
    const more = from + perPage < all.length;
    const info = {
      per_page: perPage,
      count: rows.length,
      page,
      more_records: more,
      ...(more ? { next_page_token: `sim-${from + perPage}` } : {}),
    };
    return { status: 200, body: { data: rows, info } };
  }

  private delete(module: string, query: URLSearchParams): SimResponse {
    const ids = (query.get('ids') ?? '').split(',').filter(Boolean);
    if (!ids.length) return error(400, 'REQUIRED_PARAM_MISSING', 'One of the expected parameter is missing', { param: 'ids' });
    if (ids.length > DELETE_MAX)
      return error(400, 'LIMIT_EXCEEDED', `a maximum of ${DELETE_MAX} records can be deleted per call`, { limit: DELETE_MAX });
    const data = ids.map((id) => {
      if (!this.records(module).delete(Number(id)))
        return { code: 'INVALID_DATA', details: { id }, message: 'record not deleted', status: 'error' };
      this.stats.recordsDeleted++;
      return { code: 'SUCCESS', details: { id }, message: 'record deleted', status: 'success' };
    });
    const failed = data.filter((d) => d.status === 'error').length;
    return { status: failed === data.length ? 400 : failed ? 202 : 200, body: { data } };
  }

  // ---- Bulk Write ------------------------------------------------------------------------

  private async upload(req: SimRequest): Promise<SimResponse> {
    if (req.headers.feature !== 'bulk-write')
      return error(400, 'INVALID_DATA', 'the feature header must be bulk-write', { api_name: 'feature' });
    if (req.headers['x-crm-org'] !== ORG_ID)
      return error(400, 'INVALID_ORG', 'the X-CRM-ORG header must be the org id (zgid)', { api_name: 'X-CRM-ORG' });
    const type = req.headers['content-type'] ?? '';
    if (!type.startsWith('multipart/form-data') || !req.raw)
      return error(400, 'INVALID_DATA', 'upload the file as multipart/form-data field "file"', { api_name: 'file' });
    if (req.raw.length > BULK_BYTES_MAX)
      return error(400, 'FILE_SIZE_EXCEEDED', 'the file may be at most 25 MB', { limit: BULK_BYTES_MAX });
    let entries: ReturnType<typeof unzip>;
    try {
      const form = await new Response(new Uint8Array(req.raw), { headers: { 'content-type': type } }).formData();
      const file = form.get('file');
      if (!file || typeof file === 'string')
        return error(400, 'INVALID_DATA', 'upload the file as multipart/form-data field "file"', { api_name: 'file' });
      entries = unzip(Buffer.from(await file.arrayBuffer()));
    } catch (err) {
      return error(400, 'INVALID_FILE_FORMAT', err instanceof ConnectorError ? err.message : 'the file must be a zipped CSV', {
        api_name: 'file',
      });
    }
    const csv = entries.find((e) => e.name.toLowerCase().endsWith('.csv'));
    if (entries.length !== 1 || !csv)
      return error(400, 'INVALID_FILE_FORMAT', 'the zip must hold exactly one CSV file', { api_name: 'file' });
    const [header = [], ...rows] = parseCsvRows(csv.data.toString('utf8'));
    if (rows.length > BULK_ROWS_MAX)
      return error(400, 'LIMIT_EXCEEDED', `a file may hold at most ${BULK_ROWS_MAX} records`, { limit: BULK_ROWS_MAX });
    const fileId = String(2_000_000_000 + this.nextFile++);
    this.files.set(fileId, { name: csv.name, header, rows });
    return {
      status: 200,
      body: {
        status: 'success',
        code: 'FILE_UPLOAD_SUCCESS',
        message: 'file uploaded.',
        details: { file_id: fileId, created_time: new Date(this.now()).toISOString() },
      },
    };
  }

  private createJob(req: SimRequest): SimResponse {
    const b = (req.body ?? {}) as {
      operation?: string;
      ignore_empty?: boolean;
      resource?: {
        type?: string;
        module?: { api_name?: string };
        file_id?: string;
        find_by?: string;
        field_mappings?: BulkJob['mappings'];
      }[];
    };
    const op = b.operation;
    if (op !== 'insert' && op !== 'update' && op !== 'upsert')
      return error(400, 'INVALID_DATA', 'operation must be insert, update or upsert', { api_name: 'operation' });
    const r = b.resource?.[0];
    if (r?.type !== 'data') return error(400, 'MANDATORY_NOT_FOUND', 'required field not found', { api_name: 'resource' });
    const module = r.module?.api_name ?? '';
    if (!MODULES.has(module)) return error(400, 'INVALID_MODULE', 'the module name given seems to be invalid', { api_name: 'module' });
    const file = this.files.get(String(r.file_id));
    if (!file) return error(400, 'INVALID_DATA', 'the file_id given seems to be invalid', { api_name: 'file_id' });
    if (op !== 'insert' && !r.find_by)
      return error(400, 'MANDATORY_NOT_FOUND', 'find_by is required for update and upsert', { api_name: 'find_by' });
    const mappings = r.field_mappings ?? file.header.map((api_name, index) => ({ api_name, index }));
    const id = String(3_000_000_000 + this.newId());
    this.jobs.set(id, {
      id,
      module,
      operation: op,
      findBy: r.find_by,
      mappings,
      ignoreEmpty: b.ignore_empty === true,
      header: file.header,
      rows: file.rows,
      fileName: file.name,
      createdAt: this.now(),
    });
    this.files.delete(String(r.file_id));
    return { status: 201, body: { status: 'success', code: 'SUCCESS', message: 'success', details: { id, created_by: USER } } };
  }

  private state(job: BulkJob): 'ADDED' | 'IN PROGRESS' | 'COMPLETED' {
    const elapsed = this.now() - job.createdAt;
    if (elapsed < this.bulkQueueMs) return 'ADDED';
    if (elapsed < this.bulkQueueMs + (job.rows.length / this.bulkRowsPerSecond) * 1000) return 'IN PROGRESS';
    return 'COMPLETED';
  }

  private jobStatus(id: string, req: SimRequest): SimResponse {
    const job = this.jobs.get(id);
    if (!job) return error(400, 'RESOURCE_NOT_FOUND', 'the requested resource does not exist', { api_name: 'id' });
    const state = this.state(job);
    if (state === 'COMPLETED') this.run(job);
    const file: Json = { status: state, name: job.fileName, total_count: job.rows.length };
    if (job.result)
      Object.assign(file, { added_count: job.result.added, updated_count: job.result.updated, skipped_count: job.result.skipped });
    const body: Json = {
      status: state,
      character_encoding: 'UTF-8',
      resource: [{ status: state, type: 'data', module: { api_name: job.module }, field_mappings: job.mappings, file }],
      id: job.id,
      created_by: USER,
      operation: job.operation,
      created_time: new Date(job.createdAt).toISOString(),
    };
    if (job.result)
      body.result = { download_url: `http://${req.headers.host ?? '127.0.0.1'}/v2/crm/${ORG_ID}/bulk-write/${job.id}/${job.id}.zip` };
    return { status: 200, body };
  }

  /** Applies the job's rows once, when it completes. */
  private run(job: BulkJob): void {
    if (job.result) return;
    let added = 0;
    let updated = 0;
    let skipped = 0;
    // "The CSV file will contain the first three mapped columns from the uploaded file, and three
    // more columns" (download-result.html).
    const out: string[][] = [[...job.header.slice(0, 3), 'RECORD_ID', 'STATUS', 'ERRORS']];
    // ERRORS names the column header of the uploaded file.
    const column = (apiName: string): string => {
      const m = job.mappings.find((x) => x.api_name === apiName);
      return (m ? job.header[m.index] : undefined) ?? apiName;
    };
    for (const row of job.rows) {
      const data: Json = {};
      const lookupErrors: string[] = [];
      for (const m of job.mappings) {
        const v = row[m.index];
        if (v === undefined || v === '') {
          if (!job.ignoreEmpty && m.api_name !== job.findBy) data[m.api_name] = null;
          continue;
        }
        if (m.find_by) {
          const target = LOOKUPS[job.module]?.[m.api_name];
          const found = target ? this.find(target, m.find_by, v) : [...this.store.keys()].flatMap((mod) => this.find(mod, m.find_by!, v));
          if (!found[0]) lookupErrors.push(`INVALID_DATA-${column(m.api_name)}`);
          else data[m.api_name] = { id: String(found[0].id) };
        } else data[m.api_name] = m.api_name === job.findBy ? v : typed(v);
      }
      if (lookupErrors.length) {
        // Every error of the row, joined by `:`: the lookups, and mandatory fields left empty
        // (one code over several columns: `CODE-ColA,ColB`).
        const existing = job.findBy ? this.find(job.module, job.findBy, data[job.findBy])[0] : undefined;
        const missing = existing ? [] : (MANDATORY[job.module] ?? []).filter((f) => blank(data[f]));
        const errors = [...(missing.length ? [`MANDATORY_NOT_FOUND-${missing.map(column).join(',')}`] : []), ...lookupErrors];
        skipped++;
        out.push([...row.slice(0, 3), '', 'skipped', errors.join(':')]);
        continue;
      }
      const res = this.writeOne(job.module, data, 0, job.findBy ? [job.findBy] : [], job.operation);
      if (res.status === 'success') {
        if (res.action === 'insert') added++;
        else updated++;
        out.push([...row.slice(0, 3), String(res.details.id), res.action === 'insert' ? 'added' : 'updated', '']);
      } else {
        skipped++;
        out.push([...row.slice(0, 3), '', 'skipped', `${res.code}-${column(String(res.details.api_name ?? ''))}`]);
      }
    }
    const csv = zip([{ name: `${job.id}.csv`, data: Buffer.from(toCsv(out, ZOHO_CSV), 'utf8') }]);
    job.result = { csv, added, updated, skipped };
  }

  private download(id: string): SimResponse {
    const job = this.jobs.get(id);
    if (!job?.result) return error(404, 'RESOURCE_NOT_FOUND', 'the requested resource does not exist');
    return { status: 200, headers: { 'content-type': 'application/zip' }, body: job.result.csv };
  }
}

export function startZohoSimulator(opts: ZohoSimOptions): Promise<CrmSimulator> {
  return new ZohoSim(opts).listen(opts.port, opts.host, opts.control);
}
