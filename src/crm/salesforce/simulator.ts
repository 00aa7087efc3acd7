import { SimTokens, type SimOAuthOptions, tokenParams, verifyJwt } from '../auth/token-sim.ts';
import { isObject } from '../http.ts';
import { type CrmSimulator, RollingWindow, type SimRecord, type SimRequest, type SimResponse, SimServer } from '../sim-server.ts';
import { parseCsv, SALESFORCE_CSV, SALESFORCE_CSV_NULL, toCsv } from '../csv.ts';

/**
 * Salesforce REST API and Bulk API 2.0 as documented (reference/crm-apis.md and the links below).
 *
 * - Auth: `Authorization: Bearer <session id>`; an unknown token gets 401
 *   `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`.
 *   A session past its lifetime gets the same 401. Sessions come from `POST /services/oauth2/token`
 *   (the My Domain host serves it, as here): client credentials `grant_type=client_credentials&client_id&client_secret`
 *   (https://developer.salesforce.com/docs/atlas.en-us.262.0.chatterapi.meta/chatterapi/quickstart_connecting.htm)
 *   or JWT bearer `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT: iss
 *   consumer key, sub username, aud login URL, exp>`
 *   (https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_jwt_flow.htm); answer
 *   200 `{access_token, signature, instance_url, id, token_type:"Bearer", issued_at}`, no
 *   `expires_in` (the session lasts the org's session timeout, default 2 h: `tokenTtlSeconds`,
 *   counted from issue, stricter than Salesforce, which extends a session in use). Refusals: 400
 *   `{error:"invalid_client", error_description:"invalid client credentials"}`, 400
 *   `{error:"invalid_grant", error_description:"invalid assertion"|"audience is invalid"|"user hasn't approved this consumer"}`.
 *   Token requests are OAuth, not API requests: they do not count toward the API quota.
 * - Quota: API requests per org over a rolling 24 h (100,000 for Enterprise Edition plus a
 *   per-licence allowance). Every REST call counts, Bulk API 2.0 calls included; only
 *   `GET /services/data` (the versions list) is free. Past the quota: HTTP 403
 *   `[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"TotalRequests Limit exceeded."}]`, no
 *   Retry-After. Every response carries `Sforce-Limit-Info: api-usage=<used>/<limit>`.
 *   https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm
 *   https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
 * - Concurrent long-running requests: at most 25 requests of 20 s or more in flight per
 *   production org (5 in Developer Edition); past it the same 403 REQUEST_LIMIT_EXCEEDED, here
 *   with the message `ConcurrentPerOrgLongTxn Limit exceeded.` (Salesforce documents the code,
 *   not the message text; field reports also show `ConcurrentRequests (Concurrent API Requests)
 *   Limit exceeded.`), until fewer are in flight. Requests take `serviceMs` each in the
 *   simulator, so the limit can be reached (`longRequestSeconds` scales the 20 s down).
 *   https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html
 * - UserInfo: `GET /services/oauth2/userinfo` with the bearer token answers the token's user
 *   (`user_id`, `organization_id`, ...); an OAuth endpoint, not counted as an API request.
 *   https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_using_userinfo_endpoint.htm
 * - sObject Collections upsert: `PATCH /services/data/vXX.X/composite/sobjects/{Object}/{ExternalIdField}`
 *   `{allOrNone, records:[{attributes:{type}, ...}]}`, at most 200 records, processed in order;
 *   200 with one UpsertResult `{id, success, created, errors:[{statusCode, message, fields}]}`
 *   per record, in request order. Lookups by the parent's external id: `Rel__r: {Ext__c: "42"}`
 *   (optionally `attributes:{type}`), stored as the lookup field `Rel__c` = the parent's Id.
 *   The lookup field itself set to null (`"Rel__c": null`) clears it; a record that names both
 *   `Rel__r` and `Rel__c` is refused (INVALID_FIELD "Cannot specify both an external ID reference").
 *   https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_upsert.htm
 * - sObject Collections delete: `DELETE /services/data/vXX.X/composite/sobjects?ids=a,b&allOrNone=false`,
 *   at most 200 ids; 200 with `{id, success, errors}` per id.
 * - SOQL: `GET /services/data/vXX.X/query?q=SELECT ... FROM Obj [WHERE f = 'v' | f IN ('v', ...) | f != null] [LIMIT n]`
 *   (only this subset), 2,000 records per page with `nextRecordsUrl`.
 * - Bulk API 2.0 ingest: `POST /jobs/ingest` -> `PUT /jobs/ingest/{id}/batches` (text/csv, 201)
 *   -> `PATCH /jobs/ingest/{id}` `{state:"UploadComplete"}` -> `GET /jobs/ingest/{id}` until
 *   `JobComplete | Failed | Aborted` -> `GET .../successfulResults/ | failedResults/ | unprocessedrecords/`
 *   (CSV; `sf__Id, sf__Created` or `sf__Id, sf__Error` before the uploaded columns; row order is
 *   NOT the upload order, so the simulator shuffles it). A job runs `bulkStartSeconds` plus
 *   `rows / bulkRecordsPerSecond` after UploadComplete, on the simulator clock (`/__sim/clock`),
 *   so a job can take minutes. `GET /jobs/ingest[?jobType=V2Ingest]` lists every job of the org
 *   (job info with createdById, createdDate, state), 1,000 a page with `nextRecordsUrl`
 *   (`?queryLocator=`), `done`.
 *   https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_successful_results.htm
 *   https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_all_jobs.htm
 * - Validation: required fields on create (Contact/Lead LastName, Account Name, Opportunity
 *   Name/StageName/CloseDate), e-mail format, unknown parent external ids, duplicate external ids,
 *   plus the injected `rejectWhen` rule (as a validation rule: FIELD_CUSTOM_VALIDATION_EXCEPTION).
 */
export interface SalesforceSimOptions extends SimOAuthOptions {
  port: number;
  host?: string;
  /** API requests per rolling window; default the Enterprise Edition base, 100,000 per 24 h. */
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  /** Unused: Salesforce never sends Retry-After; accepted so every simulator takes the same options. */
  retryAfterSeconds?: number;
  /** Queueing delay of a Bulk API 2.0 job before its rows are processed (default 1 s). */
  bulkStartSeconds?: number;
  /** Rows a Bulk API 2.0 job processes per second (default 2,000). */
  bulkRecordsPerSecond?: number;
  /** How long every API request stays in flight (ms, real time; default 0). */
  serviceMs?: number;
  /** Long-running requests allowed in flight at once (default 25, a production org). */
  concurrentLongRequests?: number;
  /** From how long in flight a request counts as long-running (default 20 s, as documented). */
  longRequestSeconds?: number;
  /**
   * The parent object of custom relationships, `"<Object>.<Relationship>": "<Parent>"`, e.g.
   * `{"Opportunity.Customer__r": "Contact"}` (the simulator has no schema; without an entry it
   * infers the parent from the stored records).
   */
  relationships?: Record<string, string>;
  /**
   * Records per SOQL query answer (default 2,000, Salesforce's default batch size; the
   * `Sforce-Query-Options: batchSize` header takes 200..2,000, and Salesforce may answer fewer
   * than asked). A smaller page splits answers so that `done: false` / `nextRecordsUrl` is
   * exercised with few records.
   */
  queryPageSize?: number;
}

type SfError = { statusCode: string; message: string; fields: string[] };
type WriteResult = { ok: true; id: string; created: boolean } | { ok: false; errors: SfError[] };

const COLLECTION_MAX = 200;
const QUERY_PAGE = 2000;
/** Get All Jobs returns up to 1,000 jobs per request. */
const JOB_PAGE = 1000;
const USER_ID = '005SIM000000001AAA';
const ORG_ID = '00DSIM000000001AAA';
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const DATE = /^\d{4}-\d{2}-\d{2}/;

/** Key prefixes of standard objects (first 3 characters of every record Id). */
const PREFIXES: Record<string, string> = { Account: '001', Contact: '003', Opportunity: '006', Lead: '00Q', Case: '500', User: '005' };
/** Standard relationship names -> the object they point to (`Parent` points to the same object). */
const STANDARD_RELATIONSHIPS: Record<string, string> = {
  Account: 'Account',
  Contact: 'Contact',
  Owner: 'User',
  ReportsTo: 'Contact',
  Campaign: 'Campaign',
};
const REQUIRED: Record<string, string[]> = {
  Contact: ['LastName'],
  Lead: ['LastName', 'Company'],
  Account: ['Name'],
  Opportunity: ['Name', 'StageName', 'CloseDate'],
};

const CHECKSUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345';

/** The case-safe 18-character form of a 15-character Id (one suffix letter per 5 characters). */
function id18(id15: string): string {
  let suffix = '';
  for (let chunk = 0; chunk < 3; chunk++) {
    let flags = 0;
    for (let j = 0; j < 5; j++) {
      const c = id15[chunk * 5 + j]!;
      if (c >= 'A' && c <= 'Z') flags |= 1 << j;
    }
    suffix += CHECKSUM[flags];
  }
  return id15 + suffix;
}

function errorBody(status: number, errorCode: string, message: string, headers?: Record<string, string | number>): SimResponse {
  return { status, body: [{ message, errorCode }], ...(headers ? { headers } : {}) };
}

/** The lookup field a relationship sets: `Rel__r` -> `Rel__c`, `Account` -> `AccountId`. */
const lookupField = (relationship: string): string =>
  relationship.endsWith('__r') ? `${relationship.slice(0, -3)}__c` : `${relationship}Id`;
const notFound = (): SimResponse => errorBody(404, 'NOT_FOUND', 'The requested resource does not exist');
/** A result file as Salesforce sends it: a header row, then the rows (LF, as the job was created). */
const resultCsv = (header: string[], rows: string[][]): string => toCsv([header, ...rows], SALESFORCE_CSV);
/** A job's successfulResults, failedResults and unprocessedrecords, each with the uploaded columns. */
const jobResults = (header: string[], ok: string[][], failed: string[][], unprocessed: string[][]): JobResults => ({
  successful: resultCsv(['sf__Id', 'sf__Created', ...header], ok),
  failed: resultCsv(['sf__Id', 'sf__Error', ...header], failed),
  unprocessed: resultCsv(header, unprocessed),
});
/** The results of a job none of whose rows was processed (failed before processing, or aborted): all unprocessed. */
const noneProcessed = (csv: string | undefined): JobResults => {
  const { header, rows } = parseCsv(csv ?? '');
  return jobResults(
    header,
    [],
    [],
    rows.map((r) => header.map((h) => r[h] ?? '')),
  );
};
const blank = (v: unknown): boolean => v === undefined || v === null || String(v).trim() === '';

interface IngestJob {
  id: string;
  object: string;
  operation: string;
  externalIdFieldName?: string;
  state: 'Open' | 'UploadComplete' | 'InProgress' | 'JobComplete' | 'Failed' | 'Aborted';
  createdDate: string;
  systemModstamp: string;
  apiVersion: number;
  lineEnding: string;
  csv?: string;
  completeAt?: number;
  numberRecordsProcessed: number;
  numberRecordsFailed: number;
  errorMessage?: string;
  results?: JobResults;
}

interface JobResults {
  successful: string;
  failed: string;
  unprocessed: string;
}

class SalesforceSim extends SimServer {
  private readonly window: RollingWindow;
  readonly tokens: SimTokens;
  private readonly bulkStartMs: number;
  private readonly bulkRecordsPerSecond: number;
  private readonly relationships: Record<string, string>;
  private readonly jobs = new Map<string, IngestJob>();
  private readonly cursors = new Map<string, { object: string; rows: Record<string, unknown>[] }>();
  private readonly customPrefixes = new Map<string, string>();
  private nextJob = 1;
  private readonly serviceMs: number;
  private readonly concurrentLong: number;
  private readonly longMs: number;
  /** Start times (real ms) of the API requests in flight. */
  private readonly inFlight = new Set<{ since: number }>();
  private readonly queryPageSize: number;

  constructor(opts: SalesforceSimOptions) {
    super();
    const limit = opts.limit ?? { requests: 100_000, windowSeconds: 86_400 };
    this.window = new RollingWindow(limit.requests, limit.windowSeconds * 1000);
    this.tokens = new SimTokens(opts.tokens ?? ['sim-token'], opts, 7200, () => this.now());
    this.bulkStartMs = (opts.bulkStartSeconds ?? 1) * 1000;
    this.bulkRecordsPerSecond = opts.bulkRecordsPerSecond ?? 2000;
    this.relationships = opts.relationships ?? {};
    this.serviceMs = opts.serviceMs ?? 0;
    this.concurrentLong = opts.concurrentLongRequests ?? 25;
    this.longMs = (opts.longRequestSeconds ?? 20) * 1000;
    this.queryPageSize = Math.max(1, opts.queryPageSize ?? QUERY_PAGE);
  }

  protected resetLimits(): void {
    this.window.clear();
    this.jobs.clear();
    this.cursors.clear();
  }

  private limitInfo(now: number): Record<string, string> {
    return { 'Sforce-Limit-Info': `api-usage=${this.window.limit - this.window.remaining(now)}/${this.window.limit}` };
  }

  /**
   * An injected storm (POST /__sim/faults {throttle}). Salesforce sends no Retry-After, so the
   * storm's `retryAfterSeconds` picks which of its two 403 REQUEST_LIMIT_EXCEEDED it is: a short
   * one (< 60 s) the concurrent long-running request limit, a longer one the daily allocation.
   */
  protected throttleResponse(retryAfterSeconds = Number.POSITIVE_INFINITY): SimResponse {
    const message = retryAfterSeconds < 60 ? 'ConcurrentPerOrgLongTxn Limit exceeded.' : 'TotalRequests Limit exceeded.';
    return errorBody(403, 'REQUEST_LIMIT_EXCEEDED', message, this.limitInfo(this.now()));
  }

  protected async handle(req: SimRequest): Promise<SimResponse> {
    const parts = req.path.split('/').filter(Boolean);
    if (parts[0] === 'services' && parts[1] === 'oauth2' && parts[2] === 'userinfo' && parts.length === 3 && req.method === 'GET')
      return this.userinfo(req);
    if (parts[0] === 'services' && parts[1] === 'oauth2' && parts[2] === 'token' && parts.length === 3 && req.method === 'POST')
      return this.issueToken(req);
    if (parts[0] !== 'services' || parts[1] !== 'data') return notFound();
    // The versions list is the one resource that needs no session and does not count.
    if (parts.length === 2 && req.method === 'GET') {
      return { status: 200, body: [{ label: "Winter '25", url: '/services/data/v62.0', version: '62.0' }] };
    }
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
    if (this.tokens.state(token) !== 'valid') {
      return { ...errorBody(401, 'INVALID_SESSION_ID', 'Session expired or invalid'), headers: { 'WWW-Authenticate': 'Token' } };
    }
    const now = this.now();
    const started = Date.now();
    const long = [...this.inFlight].filter((r) => started - r.since >= this.longMs).length;
    if (long >= this.concurrentLong) {
      return errorBody(403, 'REQUEST_LIMIT_EXCEEDED', 'ConcurrentPerOrgLongTxn Limit exceeded.', this.limitInfo(now));
    }
    if (!this.window.tryAcquire(now)) return this.throttleResponse();
    const me = { since: started };
    this.inFlight.add(me);
    try {
      if (this.serviceMs > 0) await new Promise((r) => setTimeout(r, this.serviceMs));
      const version = /^v(\d+\.\d)$/.exec(parts[2] ?? '');
      const res = version ? this.route(req, parts.slice(3), Number(version[1])) : notFound();
      return { ...res, headers: { ...this.limitInfo(now), ...res.headers } };
    } finally {
      this.inFlight.delete(me);
    }
  }

  /** The OAuth token endpoint: client credentials and JWT bearer (see the header). */
  private issueToken(req: SimRequest): SimResponse {
    const p = tokenParams(req);
    const refuse = (error: string, description: string): SimResponse => ({ status: 400, body: { error, error_description: description } });
    const grant = p.get('grant_type');
    const origin = `http://${req.headers.host ?? 'localhost'}`;
    if (grant === 'client_credentials') {
      const client = this.tokens.client(p.get('client_id'));
      if (!client?.clientSecret || p.get('client_secret') !== client.clientSecret)
        return refuse('invalid_client', 'invalid client credentials');
    } else if (grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
      const assertion = p.get('assertion') ?? '';
      const unverified = verifyJwt(assertion, undefined);
      const client = this.tokens.client(typeof unverified?.iss === 'string' ? unverified.iss : null);
      if (!client) return refuse('invalid_client_id', 'client identifier invalid');
      const claims = verifyJwt(assertion, client.publicKey);
      if (!claims || Number(claims.exp) * 1000 <= this.now()) return refuse('invalid_grant', 'invalid assertion');
      if (![origin, 'https://login.salesforce.com', 'https://test.salesforce.com'].includes(String(claims.aud)))
        return refuse('invalid_grant', 'audience is invalid');
      if (typeof claims.sub !== 'string' || (client.usernames && !client.usernames.includes(claims.sub)))
        return refuse('invalid_grant', "user hasn't approved this consumer");
    } else {
      return refuse('unsupported_grant_type', 'grant type not supported');
    }
    const t = this.tokens.issue(`${ORG_ID}!`);
    return {
      status: 200,
      body: {
        access_token: t.value,
        signature: 'c2ltdWxhdG9y',
        instance_url: origin,
        id: `https://login.salesforce.com/id/${ORG_ID}/${USER_ID}`,
        token_type: 'Bearer',
        issued_at: String(this.now()),
      },
    };
  }

  /** OpenID Connect UserInfo of the token's user; not an API request, so not counted. */
  private userinfo(req: SimRequest): SimResponse {
    const auth = req.headers.authorization ?? '';
    if (this.tokens.state(auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '') !== 'valid')
      return { status: 403, body: 'Bad_OAuth_Token', headers: { 'content-type': 'text/plain' } };
    return {
      status: 200,
      body: {
        sub: `https://login.salesforce.com/id/${ORG_ID}/${USER_ID}`,
        user_id: USER_ID,
        organization_id: ORG_ID,
        preferred_username: 'integration@example.com',
        name: 'Integration User',
      },
    };
  }

  private route(req: SimRequest, p: string[], apiVersion: number): SimResponse {
    const [a, b, c, d, e] = p;
    if (a === 'limits' && p.length === 1 && req.method === 'GET') return this.limits();
    if (a === 'query' && req.method === 'GET') return b ? this.queryMore(b) : this.query(req.query.get('q') ?? '');
    if (a === 'composite' && b === 'sobjects') {
      if (p.length === 4 && req.method === 'PATCH') return this.upsertCollection(c!, d!, req.body);
      if (p.length === 2 && req.method === 'DELETE') return this.deleteCollection(req.query);
      return errorBody(405, 'METHOD_NOT_ALLOWED', `HTTP Method '${req.method}' not allowed. Allowed are POST,PATCH,DELETE,GET`);
    }
    if (a === 'sobjects' && p.length === 4 && req.method === 'GET') return this.byExternalId(b!, c!, decodeURIComponent(d!));
    if (a === 'jobs' && b === 'ingest') {
      if (p.length === 2 && req.method === 'POST') return this.createJob(req.body, apiVersion);
      if (p.length === 2 && req.method === 'GET') return this.listJobs(req.query, apiVersion);
      const job = c ? this.jobs.get(c) : undefined;
      if (!job) return notFound();
      this.advance(job);
      if (p.length === 3 && req.method === 'GET') return { status: 200, body: this.jobInfo(job) };
      if (p.length === 3 && req.method === 'PATCH') return this.changeState(job, req.body);
      if (p.length === 3 && req.method === 'DELETE') {
        this.jobs.delete(job.id);
        return { status: 204 };
      }
      if (p.length === 4 && d === 'batches' && req.method === 'PUT') return this.upload(job, req);
      if (p.length === 4 && req.method === 'GET' && e === undefined) return this.results(job, d!);
    }
    return notFound();
  }

  // ---- ids ---------------------------------------------------------------------------------

  private prefix(object: string): string {
    const known = PREFIXES[object];
    if (known) return known;
    let p = this.customPrefixes.get(object);
    if (!p) this.customPrefixes.set(object, (p = `a${this.customPrefixes.size.toString(36).padStart(2, '0').toUpperCase()}`));
    return p;
  }

  private sfId(object: string, n: number): string {
    return id18(`${this.prefix(object)}${String(n).padStart(12, '0')}`);
  }

  /** The stored record an Id names, whatever its object. */
  private byId(id: string): { object: string; record: SimRecord } | undefined {
    if (!/^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$/.test(id)) return undefined;
    const n = Number(id.slice(3, 15));
    for (const [object] of this.store) {
      if (this.prefix(object) !== id.slice(0, 3)) continue;
      const record = this.records(object).get(n);
      if (record) return { object, record };
    }
    return undefined;
  }

  private findBy(object: string, field: string, value: unknown): SimRecord[] {
    const v = String(value);
    return [...this.records(object).values()].filter((r) => r[field] !== undefined && r[field] !== null && String(r[field]) === v);
  }

  private view(object: string, r: SimRecord, fields?: string[]): Record<string, unknown> {
    const out: Record<string, unknown> = { attributes: { type: object, url: `/services/data/v62.0/sobjects/${object}/${String(r.Id)}` } };
    if (!fields) {
      for (const [k, v] of Object.entries(r)) if (k !== 'id') out[k] = v;
      return out;
    }
    for (const f of fields) {
      const key = Object.keys(r).find((k) => k.toLowerCase() === f.toLowerCase() && k !== 'id') ?? f;
      out[key] = r[key] ?? null;
    }
    return out;
  }

  // ---- reads -------------------------------------------------------------------------------

  private limits(): SimResponse {
    const now = this.now();
    return {
      status: 200,
      body: {
        DailyApiRequests: { Max: this.window.limit, Remaining: this.window.remaining(now) },
        DailyBulkV2QueryJobs: { Max: 10_000, Remaining: 10_000 },
        DailyBulkApiBatches: { Max: 15_000, Remaining: 15_000 },
      },
    };
  }

  private byExternalId(object: string, field: string, value: string): SimResponse {
    const found = field === 'Id' ? [this.byId(value)?.record].filter((r) => r !== undefined) : this.findBy(object, field, value);
    if (found.length === 0) return notFound();
    if (found.length > 1) return { status: 300, body: found.map((r) => `/services/data/v62.0/sobjects/${object}/${String(r.Id)}`) };
    return { status: 200, body: this.view(object, found[0]!) };
  }

  private query(soql: string): SimResponse {
    const m =
      /^\s*SELECT\s+(.+?)\s+FROM\s+(\w+)(?:\s+WHERE\s+(\w+)\s*(=|IN|!=)\s*(\(.*\)|'(?:[^'\\]|\\.)*'|null))?(?:\s+LIMIT\s+(\d+))?\s*$/is.exec(
        soql,
      );
    if (!m)
      return errorBody(
        400,
        'MALFORMED_QUERY',
        `unexpected token in: ${soql.slice(0, 200)} (the simulator supports SELECT ... FROM ... [WHERE f = 'v' | f IN (...) | f != null] [LIMIT n])`,
      );
    const fields = m[1]!.split(',').map((f) => f.trim());
    const object = m[2]!;
    let rows = [...this.records(object).values()];
    if (m[3] && m[4] === '!=' && m[5]!.toLowerCase() === 'null') {
      // `f != null`: the records that hold a value (SOQL's null comparison, for pg2crm verify's listing).
      const field = m[3];
      rows = rows.filter((r) => {
        const key = Object.keys(r).find((k) => k.toLowerCase() === field.toLowerCase() && k !== 'id');
        return key !== undefined && r[key] !== null && r[key] !== undefined;
      });
    } else if (m[3]) {
      const values = new Set([...m[5]!.matchAll(/'((?:[^'\\]|\\.)*)'/g)].map((v) => v[1]!.replace(/\\(.)/g, '$1')));
      const field = m[3];
      rows = rows.filter((r) => {
        const key = Object.keys(r).find((k) => k.toLowerCase() === field.toLowerCase() && k !== 'id');
        return key !== undefined && r[key] !== null && values.has(String(r[key]));
      });
    }
    if (m[6]) rows = rows.slice(0, Number(m[6]));
    return this.page(
      object,
      rows.map((r) => this.view(object, r, fields)),
    );
  }

  private page(object: string, rows: Record<string, unknown>[]): SimResponse {
    const size = this.queryPageSize;
    const first = rows.slice(0, size);
    const body: Record<string, unknown> = { totalSize: rows.length, done: rows.length <= size, records: first };
    if (rows.length > size) {
      const cursor = `01gSIM${String(this.newId()).padStart(9, '0')}-${size}`;
      this.cursors.set(cursor, { object, rows: rows.slice(size) });
      body.nextRecordsUrl = `/services/data/v62.0/query/${cursor}`;
    }
    return { status: 200, body };
  }

  private queryMore(cursor: string): SimResponse {
    const c = this.cursors.get(cursor);
    if (!c) return errorBody(400, 'INVALID_QUERY_LOCATOR', 'invalid query locator');
    this.cursors.delete(cursor);
    const res = this.page(c.object, c.rows);
    (res.body as { totalSize: number }).totalSize = c.rows.length;
    return res;
  }

  // ---- writes ------------------------------------------------------------------------------

  private validate(object: string, merged: Record<string, unknown>, creating: boolean, sent: Record<string, unknown>): SfError[] {
    const errors: SfError[] = [];
    const missing = (REQUIRED[object] ?? []).filter((f) => (creating || f in sent) && blank(merged[f]));
    if (missing.length)
      errors.push({
        statusCode: 'REQUIRED_FIELD_MISSING',
        message: `Required fields are missing: [${missing.join(', ')}]`,
        fields: missing,
      });
    for (const [k, v] of Object.entries(sent)) {
      if (/email$/i.test(k) && !blank(v) && !EMAIL.test(String(v))) {
        errors.push({ statusCode: 'INVALID_EMAIL_ADDRESS', message: `${k}: invalid email address: ${String(v)}`, fields: [k] });
      }
    }
    if (object === 'Opportunity' && !blank(sent.CloseDate) && !DATE.test(String(sent.CloseDate))) {
      errors.push({
        statusCode: 'INVALID_TYPE_ON_FIELD_IN_RECORD',
        message: `Close Date: value not of required type: ${String(sent.CloseDate)}`,
        fields: ['CloseDate'],
      });
    }
    const injected = this.rejected(merged);
    if (injected) errors.push({ statusCode: 'FIELD_CUSTOM_VALIDATION_EXCEPTION', message: injected.message, fields: [injected.field] });
    return errors;
  }

  /** The object a relationship points to: explicit type, standard name, else the only object that has the field. */
  private relationshipTarget(object: string, relationship: string, idField: string, value: unknown, explicit: unknown): string | undefined {
    if (typeof explicit === 'string' && explicit) return explicit;
    if (relationship === 'Parent' || relationship === 'Master') return object;
    const known = this.relationships[`${object}.${relationship}`] ?? STANDARD_RELATIONSHIPS[relationship];
    if (known) return known;
    // The simulator has no schema: a custom relationship points to the object that has the field,
    // or, when several have it, to the one object holding a record with that value.
    const having = [...this.store.entries()].filter(([, m]) => [...m.values()].some((r) => idField in r)).map(([o]) => o);
    if (having.length <= 1) return having[0];
    const holding = having.filter((o) => this.findBy(o, idField, value).length > 0);
    return holding.length === 1 ? holding[0] : undefined;
  }

  /** Replaces `Rel__r: {Ext__c: v}` with `Rel__c: <parent Id>` (and `Account: {...}` with `AccountId`). */
  private resolveRelationships(object: string, fields: Record<string, unknown>): { fields: Record<string, unknown>; errors: SfError[] } {
    const out: Record<string, unknown> = {};
    const errors: SfError[] = [];
    for (const [k, v] of Object.entries(fields)) {
      if (!isObject(v)) {
        out[k] = v;
        continue;
      }
      const keys = Object.keys(v).filter((x) => x !== 'attributes');
      const idField = keys[0];
      if (keys.length !== 1 || !idField) {
        errors.push({
          statusCode: 'INVALID_FIELD',
          message: `A relationship ${k} must name exactly one external ID field of the parent`,
          fields: [k],
        });
        continue;
      }
      const type = this.relationshipTarget(object, k, idField, v[idField], (v.attributes as { type?: unknown } | undefined)?.type);
      const value = v[idField];
      const parents = type ? this.findBy(type, idField, value) : [];
      if (parents.length !== 1) {
        const message =
          parents.length > 1
            ? `Foreign key external ID: ${String(value)} matches more than one record for field ${idField} in entity ${type}`
            : `Foreign key external ID: ${String(value)} not found for field ${idField} in entity ${type ?? k}`;
        errors.push({ statusCode: 'INVALID_FIELD', message, fields: [] });
        continue;
      }
      out[lookupField(k)] = parents[0]!.Id;
    }
    for (const [k, v] of Object.entries(fields)) {
      if (isObject(v) && lookupField(k) in fields) {
        errors.push({
          statusCode: 'INVALID_FIELD',
          message: `Cannot specify both an external ID reference ${k} and a salesforce id, ${lookupField(k)}`,
          fields: [],
        });
      }
    }
    return { fields: out, errors };
  }

  /** One record of an upsert: validated in full before anything is stored. */
  private prepareUpsert(
    object: string,
    extField: string,
    input: Record<string, unknown>,
  ): { commit: () => WriteResult } | { errors: SfError[] } {
    const extValue = input[extField];
    if (blank(extValue)) return { errors: [{ statusCode: 'MISSING_ARGUMENT', message: `${extField} not specified`, fields: [extField] }] };
    const resolved = this.resolveRelationships(object, input);
    if (resolved.errors.length) return { errors: resolved.errors };
    const found = this.findBy(object, extField, extValue);
    if (found.length > 1)
      return {
        errors: [
          { statusCode: 'DUPLICATE_EXTERNAL_ID', message: `Duplicate external id specified: ${String(extValue)}`, fields: [extField] },
        ],
      };
    const existing = found[0];
    const merged: Record<string, unknown> = { ...existing, ...resolved.fields };
    const errors = this.validate(object, merged, !existing, resolved.fields);
    if (errors.length) return { errors };
    return {
      commit: () => {
        const now = new Date(this.now()).toISOString().replace('Z', '+0000');
        const n = existing?.id ?? this.newId();
        const record: SimRecord = {
          ...merged,
          id: n,
          Id: existing?.Id ?? this.sfId(object, n),
          CreatedDate: existing?.CreatedDate ?? now,
          LastModifiedDate: now,
        };
        this.records(object).set(n, record);
        this.stats.recordsWritten++;
        return { ok: true, id: String(record.Id), created: !existing };
      },
    };
  }

  private upsertCollection(object: string, extField: string, body: unknown): SimResponse {
    const b = body as { allOrNone?: boolean; records?: unknown } | undefined;
    if (!isObject(b) || !Array.isArray(b.records))
      return errorBody(400, 'JSON_PARSER_ERROR', 'The request body must be {"allOrNone": <bool>, "records": [...]}');
    const records = b.records as unknown[];
    if (records.length > COLLECTION_MAX)
      return errorBody(400, 'EXCEEDED_ID_LIMIT', `record limit reached. cannot submit more than ${COLLECTION_MAX} records into this call`);
    const counts = new Map<string, number>();
    for (const r of records)
      if (isObject(r) && !blank(r[extField])) counts.set(String(r[extField]), (counts.get(String(r[extField])) ?? 0) + 1);
    const prepared = records.map((r) => {
      if (!isObject(r) || (r.attributes as { type?: unknown } | undefined)?.type !== object) {
        return { errors: [{ statusCode: 'INVALID_TYPE', message: `Each record needs attributes.type = ${object}`, fields: [] }] };
      }
      if ('Id' in r) return { errors: [{ statusCode: 'INVALID_FIELD', message: 'Upsert by external id: don’t set Id', fields: ['Id'] }] };
      if ((counts.get(String(r[extField])) ?? 0) > 1) {
        return {
          errors: [
            { statusCode: 'DUPLICATE_EXTERNAL_ID', message: `Duplicate external id specified: ${String(r[extField])}`, fields: [extField] },
          ],
        };
      }
      const { attributes: _attributes, ...fields } = r;
      return this.prepareUpsert(object, extField, fields);
    });
    const failed = prepared.some((p) => 'errors' in p);
    const rolledBack: SfError = {
      statusCode: 'ALL_OR_NONE_OPERATION_ROLLED_BACK',
      message: 'Record rolled back because not all records were valid and the request was using AllOrNone header',
      fields: [],
    };
    const results = prepared.map((p) => {
      if ('errors' in p) return { success: false, errors: p.errors };
      if (b.allOrNone === true && failed) return { success: false, errors: [rolledBack] };
      const r = p.commit() as { id: string; created: boolean };
      return { id: r.id, success: true, errors: [], created: r.created };
    });
    return { status: 200, body: results };
  }

  private deleteOne(id: string): { id: string; success: boolean; errors: SfError[] } {
    if (!/^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$/.test(id))
      return { id, success: false, errors: [{ statusCode: 'MALFORMED_ID', message: `malformed id ${id}`, fields: [] }] };
    const hit = this.byId(id);
    if (!hit) return { id, success: false, errors: [{ statusCode: 'ENTITY_IS_DELETED', message: 'entity is deleted', fields: [] }] };
    this.records(hit.object).delete(hit.record.id);
    this.stats.recordsDeleted++;
    return { id, success: true, errors: [] };
  }

  private deleteCollection(query: URLSearchParams): SimResponse {
    const ids = (query.get('ids') ?? '').split(',').filter(Boolean);
    if (ids.length === 0) return errorBody(400, 'MISSING_ARGUMENT', 'ids parameter is required');
    if (ids.length > COLLECTION_MAX)
      return errorBody(400, 'EXCEEDED_ID_LIMIT', `record limit reached. cannot submit more than ${COLLECTION_MAX} records into this call`);
    return { status: 200, body: ids.map((id) => this.deleteOne(id)) };
  }

  // ---- Bulk API 2.0 ingest -----------------------------------------------------------------

  private createJob(body: unknown, apiVersion: number): SimResponse {
    const b = (isObject(body) ? body : {}) as {
      object?: string;
      operation?: string;
      externalIdFieldName?: string;
      contentType?: string;
      lineEnding?: string;
      columnDelimiter?: string;
    };
    if (!b.object) return errorBody(400, 'INVALIDJOB', 'InvalidJob : object is required');
    if (!['insert', 'update', 'upsert', 'delete', 'hardDelete'].includes(b.operation ?? ''))
      return errorBody(400, 'INVALIDJOB', `InvalidJob : Invalid operation: ${b.operation ?? ''}`);
    if (b.operation === 'upsert' && !b.externalIdFieldName) {
      return errorBody(
        400,
        'INVALIDJOB',
        `InvalidJob : External ID was blank for ${b.object}. An External ID must be specified for upsert.`,
      );
    }
    if ((b.contentType ?? 'CSV') !== 'CSV' || (b.columnDelimiter ?? 'COMMA') !== 'COMMA') {
      return errorBody(400, 'INVALIDJOB', 'InvalidJob : the simulator supports contentType CSV with columnDelimiter COMMA');
    }
    const now = new Date(this.now()).toISOString().replace('Z', '+0000');
    const job: IngestJob = {
      id: id18(`750SIM${String(this.nextJob++).padStart(9, '0')}`),
      object: b.object,
      operation: b.operation!,
      ...(b.externalIdFieldName ? { externalIdFieldName: b.externalIdFieldName } : {}),
      state: 'Open',
      createdDate: now,
      systemModstamp: now,
      apiVersion,
      lineEnding: b.lineEnding ?? 'LF',
      numberRecordsProcessed: 0,
      numberRecordsFailed: 0,
    };
    this.jobs.set(job.id, job);
    return { status: 200, body: this.jobInfo(job) };
  }

  /** Get All Jobs: every ingest job of the org as of now, 1,000 a page, in no promised order. */
  private listJobs(query: URLSearchParams, apiVersion: number): SimResponse {
    const type = query.get('jobType');
    if (type && !['V2Ingest', 'Classic', 'BigObjectIngest'].includes(type))
      return errorBody(400, 'INVALIDJOB', `InvalidJob : invalid jobType ${type}`);
    const all = type && type !== 'V2Ingest' ? [] : [...this.jobs.values()];
    for (const job of all) this.advance(job);
    const from = Number(query.get('queryLocator') ?? 0) || 0;
    const page = all.slice(from, from + JOB_PAGE);
    const done = from + JOB_PAGE >= all.length;
    const v = apiVersion.toFixed(1);
    return {
      status: 200,
      body: {
        done,
        records: page.map((j) => this.jobInfo(j)),
        ...(done ? {} : { nextRecordsUrl: `/services/data/v${v}/jobs/ingest?jobType=V2Ingest&queryLocator=${from + JOB_PAGE}` }),
      },
    };
  }

  private jobInfo(job: IngestJob): Record<string, unknown> {
    return {
      id: job.id,
      operation: job.operation,
      object: job.object,
      createdById: USER_ID,
      createdDate: job.createdDate,
      systemModstamp: job.systemModstamp,
      state: job.state,
      ...(job.externalIdFieldName ? { externalIdFieldName: job.externalIdFieldName } : {}),
      concurrencyMode: 'Parallel',
      contentType: 'CSV',
      apiVersion: job.apiVersion,
      jobType: 'V2Ingest',
      contentUrl: `services/data/v${job.apiVersion.toFixed(1)}/jobs/ingest/${job.id}/batches`,
      lineEnding: job.lineEnding,
      columnDelimiter: 'COMMA',
      numberRecordsProcessed: job.numberRecordsProcessed,
      numberRecordsFailed: job.numberRecordsFailed,
      retries: 0,
      totalProcessingTime: 0,
      apiActiveProcessingTime: 0,
      apexProcessingTime: 0,
      ...(job.errorMessage ? { errorMessage: job.errorMessage } : {}),
    };
  }

  private upload(job: IngestJob, req: SimRequest): SimResponse {
    if (!String(req.headers['content-type'] ?? '').startsWith('text/csv'))
      return errorBody(400, 'INVALIDJOB', 'InvalidJob : Content-Type must be text/csv');
    if (job.state !== 'Open' || job.csv !== undefined)
      return errorBody(409, 'INVALIDJOBSTATE', `Job ${job.id} is not Open for data upload`);
    job.csv = typeof req.body === 'string' ? req.body : '';
    return { status: 201 };
  }

  private changeState(job: IngestJob, body: unknown): SimResponse {
    const state = isObject(body) ? body.state : undefined;
    if (state === 'UploadComplete' && job.state === 'Open') {
      if (!job.csv) {
        job.state = 'Failed';
        job.errorMessage = 'InvalidBatch : No data uploaded';
      } else {
        const rows = Math.max(0, job.csv.split('\n').filter((l) => l.trim()).length - 1);
        job.state = 'UploadComplete';
        job.completeAt = this.now() + this.bulkStartMs + (rows / this.bulkRecordsPerSecond) * 1000;
      }
    } else if (state === 'Aborted' && ['Open', 'UploadComplete', 'InProgress'].includes(job.state)) {
      job.state = 'Aborted';
    } else {
      return errorBody(400, 'INVALIDJOBSTATE', `Cannot change the state of job ${job.id} from ${job.state} to ${String(state)}`);
    }
    job.systemModstamp = new Date(this.now()).toISOString().replace('Z', '+0000');
    return { status: 200, body: this.jobInfo(job) };
  }

  /** Moves a job along on the simulator clock; its rows are written when its time is up. */
  private advance(job: IngestJob): void {
    if (job.state === 'UploadComplete') job.state = 'InProgress';
    if (job.state === 'InProgress' && job.completeAt !== undefined && this.now() >= job.completeAt) this.process(job);
  }

  private process(job: IngestJob): void {
    const { header, rows } = parseCsv(job.csv ?? '');
    const ok: string[][] = [];
    const failed: string[][] = [];
    const extField = job.externalIdFieldName ?? '';
    const bad = header.find((h) => !/^(?:\w+:)?\w+(?:\.\w+)?$/.test(h));
    if (
      bad !== undefined ||
      (job.operation === 'upsert' && !header.includes(extField)) ||
      (job.operation.endsWith('elete') && !header.includes('Id'))
    ) {
      job.state = 'Failed';
      job.errorMessage =
        bad !== undefined
          ? `InvalidBatch : Field name not valid : ${bad}`
          : `InvalidBatch : Field name not found : ${job.operation === 'upsert' ? extField : 'Id'}`;
      job.results = noneProcessed(job.csv);
      return;
    }
    for (const row of rows) {
      const cells = header.map((h) => row[h] ?? '');
      if (job.operation.endsWith('elete')) {
        const r = this.deleteOne(row.Id ?? '');
        if (r.success) ok.push([r.id, 'false', ...cells]);
        else failed.push([r.id, this.bulkError(r.errors), ...cells]);
        continue;
      }
      const fields = this.rowFields(header, row);
      const p =
        job.operation === 'upsert'
          ? this.prepareUpsert(job.object, extField, fields)
          : {
              errors: [
                { statusCode: 'INVALIDJOB', message: `the simulator runs upsert and delete jobs, not ${job.operation}`, fields: [] },
              ],
            };
      if ('errors' in p) failed.push(['', this.bulkError(p.errors), ...cells]);
      else {
        const r = p.commit() as { id: string; created: boolean };
        ok.push([r.id, String(r.created), ...cells]);
      }
    }
    job.state = 'JobComplete';
    job.numberRecordsProcessed = rows.length;
    job.numberRecordsFailed = failed.length;
    job.results = jobResults(header, shuffle(ok), shuffle(failed), []);
  }

  /** A CSV row -> record fields: empty = not set, `#N/A` = null, `[Type:]Rel.Field` = a lookup. */
  private rowFields(header: string[], row: Record<string, string>): Record<string, unknown> {
    const fields: Record<string, unknown> = {};
    for (const h of header) {
      const v = row[h] ?? '';
      if (v === '') continue;
      const rel = /^(?:(\w+):)?(\w+)\.(\w+)$/.exec(h);
      if (rel) fields[rel[2]!] = { ...(rel[1] ? { attributes: { type: rel[1] } } : {}), [rel[3]!]: v };
      else fields[h] = v === SALESFORCE_CSV_NULL ? null : v;
    }
    return fields;
  }

  /** `STATUS_CODE:message:Field1,Field2 --`, the sf__Error format of failedResults. */
  private bulkError(errors: SfError[]): string {
    return errors.map((e) => `${e.statusCode}:${e.message}:${e.fields.join(',')} --`).join(' ');
  }

  private results(job: IngestJob, kind: string): SimResponse {
    const which =
      kind === 'successfulResults'
        ? 'successful'
        : kind === 'failedResults'
          ? 'failed'
          : kind === 'unprocessedrecords'
            ? 'unprocessed'
            : undefined;
    if (!which) return notFound();
    if (job.state === 'Aborted' && !job.results) job.results = noneProcessed(job.csv);
    if (!job.results) return errorBody(400, 'INVALIDJOBSTATE', `Job ${job.id} has no results yet: its state is ${job.state}`);
    return { status: 200, headers: { 'Content-Type': 'text/csv' }, body: job.results[which] };
  }
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

export function startSalesforceSimulator(opts: SalesforceSimOptions): Promise<CrmSimulator> {
  return new SalesforceSim(opts).listen(opts.port, opts.host, opts.control);
}
