import { SimTokens, type SimOAuthOptions, tokenParams, verifyJwt } from '../auth/token-sim.ts';
import { type CrmSimulator, RollingWindow, type SimRecord, type SimRequest, type SimResponse, SimServer } from '../sim-server.ts';
import {
  type BatchItemResponse,
  type BatchOperation,
  type BatchResponseItem,
  boundaryOf,
  buildBatchResponse,
  newBoundary,
  parseBatchRequest,
} from './multipart.ts';

/**
 * Microsoft Dataverse (Dynamics 365) Web API v9.x as documented:
 *
 * Service protection limits, per user, 5-minute sliding window
 * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits):
 * - 6,000 requests. A `$batch` is one request: "Combine the selected operations into a batch.
 *   A batch can contain up to 1000 operations and will avoid the number of requests limit.
 *   However, you will need to be prepared for the execution time limit." (same page, "Number of
 *   requests"; and "You could send fewer requests by bundling them in batch operations. The
 *   combined execution time limit will counter this.").
 * - 1,200 s of combined execution time: every operation of a `$batch` is charged here.
 *   Microsoft does not document what one operation costs (`executionMsPerOperation`, 100 ms by
 *   default) nor when the charge is taken; the simulator charges a request when it has run, its
 *   execution time being known only then. A `$batch` "executes the operations sequentially"
 *   (execute-batch-operations-using-web-api), so a client waits at least the execution time it
 *   is charged: `answerMsPerOperation` holds each answer that long per operation. Its default 0
 *   answers at once (unit tests stay fast) and so lets a client spend execution time faster than
 *   the real service would; the benches set it to `executionMsPerOperation`, which is what
 *   a client measuring its own call durations (pg2crm's execution meter) relies on.
 * - 52 concurrent requests.
 * Past a limit: 429 with `Retry-After` (seconds) and an OData error whose code names the limit
 * (0x80072322 requests, 0x80072321 execution time, 0x80072326 concurrency). A client that keeps
 * sending while throttled is throttled for longer: each request during the lockout doubles it
 * (capped at the window). Every response carries `x-ms-ratelimit-burst-remaining-xrm-requests`
 * and `x-ms-ratelimit-time-remaining-xrm-requests` (Microsoft says not to pace on them).
 *
 * Writes: upsert is `PATCH /api/data/v9.2/<entityset>(<altkey>='<value>')` (create when no
 * record has that key, update otherwise; `If-None-Match: *` = create only, `If-Match: *` =
 * update only), 204 with `OData-EntityId`. `DELETE` by key or GUID: 204, or 404 when absent.
 * Lookups bind with `"<navprop>@odata.bind": "/<entityset>(<altkey>='<value>')"`; the record
 * stores `<navprop>: <target GUID>`. `$batch` (multipart/mixed, at most 1,000 operations,
 * change sets atomic) runs the operations in order; without `Prefer: odata.continue-on-error` it
 * stops at the first failure and answers 400 with the responses so far and that failure;
 * with it, 200 and one response per operation
 * (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api).
 *
 * Alternate-key values containing `/ # < > * % & : \ ? +` do not work in a key segment:
 * "If the data within a column that is used in an alternate key contains one of the following
 * characters /, #, <, >, *, %, &, :, \\, ?, + then GET or PATCH actions won't work"
 * (https://learn.microsoft.com/power-apps/maker/data-platform/define-alternate-keys-portal).
 * The page gives no status or body; the simulator answers 400 with the OData error a field
 * report shows for such a bind ("Bad Request - Error in query syntax.",
 * https://xrmdynamicscrm.wordpress.com/2020/07/08/alternate-key-limitationperforming-updates-using-alternate-key-in-dynamics-365-webapi/),
 * for GET, PATCH and DELETE key segments and for `@odata.bind` references alike.
 * Such records are found with `GET <set>?$filter=<column> eq '<value>'` (string comparisons are
 * case-insensitive; special characters URL-encoded,
 * https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/filter-rows),
 * created with `POST <set>` (204 + `OData-EntityId`,
 * https://learn.microsoft.com/power-apps/developer/data-platform/webapi/create-entity-web-api) and
 * written by GUID. The primary id column's name comes from
 * `GET EntityDefinitions?$select=EntitySetName,PrimaryIdAttribute&$filter=EntitySetName eq '<set>'`
 * (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query-metadata-web-api).
 * A create whose alternate-key value is taken fails with 412 0x80040237 (duplicate key).
 *
 * Validation (400 OData errors): unknown or non-lower-case attribute names (0x80060888), values
 * longer than the column (0x80044331), malformed e-mail addresses and the business-required
 * columns of the stock forms (contact `lastname`, account/opportunity `name`) on create — the
 * last is stricter than the Web API, which enforces only system-required columns, so partial
 * failures show up in load tests. Bind targets that do not exist: 404 (0x80040217).
 *
 * Auth: `Authorization: Bearer <token>`; anything else is 401 with `WWW-Authenticate: Bearer
 * authorization_uri=...` (Dataverse's 401 body is not documented; this one is an OData error).
 * An access token past its lifetime gets the same 401 (`error="invalid_token"` in WWW-Authenticate).
 *
 * Tokens: Microsoft Entra ID's v2.0 token endpoint, `POST /<tenant>/oauth2/v2.0/token` on this
 * server (login.microsoftonline.com in production), client credentials grant
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow):
 * `grant_type=client_credentials&client_id&scope=<resource>/.default` with `client_secret`, or
 * with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion`
 * (a certificate credential, https://learn.microsoft.com/entra/identity-platform/certificate-credentials);
 * answer 200 `{token_type:"Bearer", expires_in, ext_expires_in, access_token}`. Errors as the page
 * lists them: 400 `invalid_request` / `unsupported_grant_type`, 400 `invalid_scope` (scope not
 * `<resource>/.default`), 401 `invalid_client` (unknown app: AADSTS700016; bad secret or
 * assertion: AADSTS7000215), each `{error, error_description, error_codes, timestamp, trace_id,
 * correlation_id}`. Tokens live `tokenTtlSeconds` (default 3600: Entra tokens for Dataverse live
 * 60-90 minutes). Token requests go to Entra, another host: they never spend Dataverse's service
 * protection limits, and here they skip the request window.
 */
export interface DynamicsSimOptions extends SimOAuthOptions {
  port: number;
  host?: string;
  /** Requests per sliding window (default 6000 per 300 s). */
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  /** First Retry-After of a throttle; default: seconds until the window has room again. */
  retryAfterSeconds?: number;
  /** Combined execution time per window, seconds (default 1200). */
  executionSeconds?: number;
  /** Concurrent requests (default 52). */
  concurrency?: number;
  /** Server execution time each operation is charged, ms (default 100). */
  executionMsPerOperation?: number;
  /**
   * Wall-clock time each operation of a request takes before the answer, ms (default 0). Dataverse
   * runs a `$batch`'s operations one after another, so its answer takes at least the execution time
   * it charges: set this to `executionMsPerOperation` (or more) for a faithful clock, as the benches
   * do. 0 answers at once while still charging, which keeps unit tests fast (see the header).
   */
  answerMsPerOperation?: number;
  /** Wall-clock time each request is held in flight, ms (default 0), to exercise the concurrency limit. */
  holdMs?: number;
  /** Columns defined as (single-column) alternate keys on every table (default erp_id, erp_order_id). */
  alternateKeys?: string[];
}

const API = /^\/api\/data\/v9\.\d\/?/;
const MAX_BATCH = 1000;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const ATTRIBUTE = /^[a-z_][a-z0-9_]*$/;
const NAVIGATION = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Characters that make an alternate-key value unusable in a key segment (define-alternate-keys-portal). */
const KEY_UNSAFE = /[/#<>*%&:\\?+]/;
const QUERY_SYNTAX = 'Bad Request - Error in query syntax.';

/** Entity set -> logical name, primary key and the stock forms' business-required column. */
const ENTITIES: Record<string, { logical: string; required?: string }> = {
  contacts: { logical: 'contact', required: 'lastname' },
  accounts: { logical: 'account', required: 'name' },
  leads: { logical: 'lead', required: 'lastname' },
  opportunities: { logical: 'opportunity', required: 'name' },
};

/** Column lengths of the stock schema (Single line of text). */
const MAX_LENGTH: Record<string, number> = {
  firstname: 50,
  lastname: 50,
  fullname: 160,
  name: 300,
  emailaddress1: 100,
  emailaddress2: 100,
  emailaddress3: 100,
  telephone1: 50,
  jobtitle: 100,
};

const THROTTLE = {
  requests: {
    code: '0x80072322',
    message: (n: number, w: number) => `Number of requests exceeded the limit of ${n} over time window of ${w} seconds.`,
  },
  time: {
    code: '0x80072321',
    message: (n: number, w: number) =>
      `Combined execution time of incoming requests exceeded limit of ${n * 1000} milliseconds over time window of ${w} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.`,
  },
  concurrency: { code: '0x80072326', message: (n: number) => `Number of concurrent requests exceeded the limit of ${n}.` },
};

type Limit = keyof typeof THROTTLE;

interface OpResult {
  status: number;
  headers: Record<string, string>;
  body?: unknown;
}

function odataError(status: number, code: string, message: string, headers: Record<string, string> = {}): OpResult {
  return { status, headers, body: { error: { code, message } } };
}

/** `00000000-0000-0000-0000-00000000002a` from record id 42: a stable GUID per record. */
function guid(id: number): string {
  return `00000000-0000-0000-0000-${id.toString(16).padStart(12, '0')}`;
}

/**
 * A `(...)` key segment: a GUID, or `name='value'` pairs (OData literals, `''` = `'`); 'unsafe'
 * when an alternate-key value holds a character Dataverse cannot take there.
 */
function parseKey(segment: string): { guid: string } | { keys: Record<string, string> } | 'unsafe' | undefined {
  let text: string;
  try {
    text = decodeURIComponent(segment);
  } catch {
    return undefined;
  }
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text)) return { guid: text.toLowerCase() };
  const keys: Record<string, string> = {};
  const re = /\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?:'((?:[^']|'')*)'|([^,'\s]+))\s*(,|$)/y;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) return undefined;
    keys[m[1]!] = m[2] !== undefined ? m[2].replace(/''/g, "'") : m[3]!;
    pos = re.lastIndex;
  }
  if (Object.values(keys).some((v) => KEY_UNSAFE.test(v))) return 'unsafe';
  return Object.keys(keys).length ? { keys } : undefined;
}

/** Minimal sum over a sliding window, for the execution-time limit (RollingWindow counts only). */
class SlidingSum {
  private readonly entries: { at: number; amount: number }[] = [];
  private sum = 0;
  readonly windowMs: number;

  constructor(windowMs: number) {
    this.windowMs = windowMs;
  }

  private prune(now: number): void {
    while (this.entries.length && this.entries[0]!.at <= now - this.windowMs) this.sum -= this.entries.shift()!.amount;
  }

  add(now: number, amount: number): void {
    this.entries.push({ at: now, amount });
    this.sum += amount;
  }

  total(now: number): number {
    this.prune(now);
    return this.sum;
  }

  /** Seconds until the total drops below `limit`. */
  secondsUntilBelow(now: number, limit: number): number {
    this.prune(now);
    let sum = this.sum;
    for (const e of this.entries) {
      if (sum < limit) break;
      sum -= e.amount;
      if (sum < limit) return Math.max(1, Math.ceil((e.at + this.windowMs - now) / 1000));
    }
    return 1;
  }

  clear(): void {
    this.entries.length = 0;
    this.sum = 0;
  }
}

class DynamicsSim extends SimServer {
  private readonly window: RollingWindow;
  private readonly execution: SlidingSum;
  private readonly executionLimitMs: number;
  private readonly concurrency: number;
  readonly tokens: SimTokens;
  private readonly retryAfterSeconds: number | undefined;
  private readonly opMs: number;
  private readonly holdMs: number;
  private readonly answerMs: number;
  private readonly alternateKeys: string[];
  private inFlight = 0;
  private lock: { until: number; penaltySeconds: number; limit: Limit } | undefined;

  constructor(opts: DynamicsSimOptions) {
    super();
    const limit = opts.limit ?? { requests: 6000, windowSeconds: 300 };
    this.window = new RollingWindow(limit.requests, limit.windowSeconds * 1000);
    this.execution = new SlidingSum(limit.windowSeconds * 1000);
    this.executionLimitMs = (opts.executionSeconds ?? 1200) * 1000;
    this.concurrency = opts.concurrency ?? 52;
    this.tokens = new SimTokens(opts.tokens ?? ['sim-token'], opts, 3600, () => this.now());
    this.retryAfterSeconds = opts.retryAfterSeconds;
    this.opMs = opts.executionMsPerOperation ?? 100;
    this.holdMs = opts.holdMs ?? 0;
    this.answerMs = opts.answerMsPerOperation ?? 0;
    this.alternateKeys = opts.alternateKeys ?? ['erp_id', 'erp_order_id'];
  }

  protected resetLimits(): void {
    this.window.clear();
    this.execution.clear();
    this.lock = undefined;
  }

  private throttled(limit: Limit, retryAfterSeconds: number): SimResponse {
    const w = this.window.windowMs / 1000;
    const message =
      limit === 'requests'
        ? THROTTLE.requests.message(this.window.limit, w)
        : limit === 'time'
          ? THROTTLE.time.message(this.executionLimitMs / 1000, w)
          : THROTTLE.concurrency.message(this.concurrency);
    return {
      status: 429,
      headers: { 'Retry-After': retryAfterSeconds, 'OData-Version': '4.0', ...this.rateHeaders(this.now()) },
      body: { error: { code: THROTTLE[limit].code, message } },
    };
  }

  protected throttleResponse(retryAfterSeconds: number): SimResponse {
    return this.throttled('requests', retryAfterSeconds);
  }

  private rateHeaders(now: number): Record<string, string | number> {
    return {
      'x-ms-ratelimit-burst-remaining-xrm-requests': Math.max(0, this.window.remaining(now)),
      'x-ms-ratelimit-time-remaining-xrm-requests': (Math.max(0, this.executionLimitMs - this.execution.total(now)) / 1000).toFixed(2),
    };
  }

  /** Throttles a request that arrives while locked out, lengthening the lockout. */
  private stillLocked(now: number): SimResponse | undefined {
    if (!this.lock || now >= this.lock.until) return undefined;
    const cap = this.window.windowMs / 1000;
    this.lock.penaltySeconds = Math.min(cap, this.lock.penaltySeconds * 2);
    this.lock.until = now + this.lock.penaltySeconds * 1000;
    return this.throttled(this.lock.limit, this.lock.penaltySeconds);
  }

  private lockOut(now: number, limit: Limit, computedSeconds: number): SimResponse {
    const seconds = Math.max(1, this.retryAfterSeconds ?? computedSeconds);
    this.lock = { until: now + seconds * 1000, penaltySeconds: seconds, limit };
    return this.throttled(limit, seconds);
  }

  /** Service protection for a request arriving now; undefined = admitted (its time is charged by `run`). */
  private admit(now: number): SimResponse | undefined {
    const locked = this.stillLocked(now);
    if (locked) return locked;
    if (this.inFlight >= this.concurrency) return this.throttled('concurrency', Math.max(1, this.retryAfterSeconds ?? 1));
    // A `$batch` is one request toward the 6,000 ("will avoid the number of requests limit");
    // each of its operations costs execution time ("be prepared for the execution time limit").
    if (this.window.remaining(now) < 1) return this.lockOut(now, 'requests', Math.max(1, this.window.resetSeconds(now)));
    if (this.execution.total(now) >= this.executionLimitMs)
      return this.lockOut(now, 'time', this.execution.secondsUntilBelow(now, this.executionLimitMs));
    this.lock = undefined;
    this.window.tryAcquire(now);
    return undefined;
  }

  /**
   * A request admitted with `operations` operations has run: its execution time counts from now
   * (the server knows it only when the request ends), after the answer was held for it.
   */
  private async run(operations: number): Promise<void> {
    const n = Math.max(1, operations);
    if (this.answerMs > 0) await new Promise((r) => setTimeout(r, n * this.answerMs));
    this.execution.add(this.now(), n * this.opMs);
  }

  /** Microsoft Entra ID's client credentials grant (see the header). */
  private issueToken(req: SimRequest): SimResponse {
    const p = tokenParams(req);
    const fail = (status: number, error: string, code: number, description: string): SimResponse => ({
      status,
      body: {
        error,
        error_description: `AADSTS${code}: ${description}`,
        error_codes: [code],
        timestamp: new Date(this.now()).toISOString(),
        trace_id: crypto.randomUUID(),
        correlation_id: crypto.randomUUID(),
      },
    });
    if (req.method !== 'POST') return fail(400, 'invalid_request', 900561, 'The endpoint only accepts POST requests.');
    if (p.get('grant_type') !== 'client_credentials')
      return fail(400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.');
    const scope = p.get('scope') ?? '';
    if (!/^\S+\/\.default$/.test(scope))
      return fail(
        400,
        'invalid_scope',
        1002012,
        `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
      );
    const client = this.tokens.client(p.get('client_id'));
    if (!client)
      return fail(
        400,
        'unauthorized_client',
        700016,
        `Application with identifier '${p.get('client_id') ?? ''}' was not found in the directory.`,
      );
    const assertion = p.get('client_assertion');
    if (assertion !== null) {
      const claims =
        p.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
          ? verifyJwt(assertion, client.publicKey)
          : undefined;
      if (
        !claims ||
        !client.publicKey ||
        claims.iss !== client.clientId ||
        claims.sub !== client.clientId ||
        Number(claims.exp) * 1000 <= this.now()
      ) {
        return fail(401, 'invalid_client', 700027, 'Client assertion failed signature validation.');
      }
    } else if (!client.clientSecret || p.get('client_secret') !== client.clientSecret) {
      return fail(
        401,
        'invalid_client',
        7000215,
        'Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.',
      );
    }
    const t = this.tokens.issue();
    return { status: 200, body: { token_type: 'Bearer', expires_in: t.expiresIn, ext_expires_in: t.expiresIn, access_token: t.value } };
  }

  protected async handle(req: SimRequest): Promise<SimResponse> {
    if (/^\/[^/]+\/oauth2\/v2\.0\/token$/.test(req.path)) return this.issueToken(req);
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
    const state = this.tokens.state(token);
    if (state !== 'valid') {
      return {
        status: 401,
        headers: {
          'WWW-Authenticate': `Bearer ${state === 'expired' ? 'error="invalid_token", error_description="The access token expired", ' : ''}authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize, resource_id=https://org.crm.dynamics.com/`,
        },
        body: {
          error: {
            code: 'Unauthorized',
            message: 'The user is not authenticated: the access token is missing, expired or not issued for this environment.',
          },
        },
      };
    }
    if (!API.test(req.path))
      return this.json(
        odataError(404, '0x8006088a', `Resource not found for the segment '${req.path.split('/').filter(Boolean)[0] ?? ''}'.`),
      );
    const rel = req.path.replace(API, '');
    const isBatch = rel === '$batch' && req.method === 'POST';
    let batch: ReturnType<typeof parseBatchRequest> | undefined;
    if (isBatch) {
      const boundary = boundaryOf(String(req.headers['content-type'] ?? ''));
      if (!boundary || typeof req.body !== 'string')
        return this.json(
          odataError(400, '0x80048d19', 'The batch request must have a Content-Type multipart/mixed header with a boundary.'),
        );
      try {
        batch = parseBatchRequest(req.body, boundary);
      } catch (err) {
        return this.json(odataError(400, '0x80048d19', `The batch request body is malformed: ${(err as Error).message}`));
      }
      const count = batch.reduce((n, item) => n + ('changeset' in item ? item.changeset.length : 1), 0);
      if (count > MAX_BATCH)
        return this.json(
          odataError(400, '0x80040203', `The number of requests in a batch exceeds the limit of ${MAX_BATCH}; it contains ${count}.`),
        );
    }
    const now = this.now();
    const operations = batch ? batch.reduce((n, item) => n + ('changeset' in item ? item.changeset.length : 1), 0) : 1;
    const refused = this.admit(now);
    if (refused) return refused;
    this.inFlight++;
    try {
      if (this.holdMs > 0) await new Promise((r) => setTimeout(r, this.holdMs));
      await this.run(operations);
      const res = batch
        ? this.runBatch(batch, req)
        : this.json(
            this.execute(origin(req), {
              method: req.method,
              url: withQuery(req),
              headers: flatHeaders(req.headers),
              ...(req.body !== undefined ? { body: typeof req.body === 'string' ? req.body : JSON.stringify(req.body) } : {}),
            }),
          );
      return { ...res, headers: { ...this.rateHeaders(this.now()), ...res.headers } };
    } finally {
      this.inFlight--;
    }
  }

  private json(r: OpResult): SimResponse {
    return { status: r.status, headers: { 'OData-Version': '4.0', ...r.headers }, ...(r.body !== undefined ? { body: r.body } : {}) };
  }

  private runBatch(items: ReturnType<typeof parseBatchRequest>, req: SimRequest): SimResponse {
    const prefer = String(req.headers.prefer ?? '');
    const continueOnError = /\bodata\.continue-on-error\b/.test(prefer);
    const out: BatchResponseItem[] = [];
    let failed = false;
    for (const item of items) {
      if ('changeset' in item) {
        // A change set is one transaction: on the first failure its writes are undone and only
        // that failure is answered.
        const saved = this.snapshot();
        const results: BatchItemResponse[] = [];
        let error: BatchItemResponse | undefined;
        for (const op of item.changeset) {
          const r = toPart(this.execute(origin(req), op), op);
          if (r.status >= 400) {
            error = r;
            break;
          }
          results.push(r);
        }
        if (error) {
          this.restore(saved);
          out.push(error);
          failed = true;
        } else out.push({ changeset: results });
      } else {
        const r = toPart(this.execute(origin(req), item), item);
        out.push(r);
        if (r.status >= 400) failed = true;
      }
      if (failed && !continueOnError) break;
    }
    const boundary = newBoundary('batchresponse');
    return {
      status: failed && !continueOnError ? 400 : 200,
      headers: {
        'Content-Type': `multipart/mixed; boundary=${boundary}`,
        'OData-Version': '4.0',
        ...(continueOnError ? { 'Preference-Applied': 'odata.continue-on-error' } : {}),
      },
      body: buildBatchResponse(boundary, out),
    };
  }

  private snapshot(): { store: Map<string, Map<number, SimRecord>>; written: number; deleted: number } {
    const store = new Map([...this.store].map(([k, m]) => [k, new Map(m)] as const));
    return { store, written: this.stats.recordsWritten, deleted: this.stats.recordsDeleted };
  }

  private restore(s: ReturnType<DynamicsSim['snapshot']>): void {
    this.store.clear();
    for (const [k, m] of s.store) this.store.set(k, m);
    this.stats.recordsWritten = s.written;
    this.stats.recordsDeleted = s.deleted;
  }

  /** One operation (top-level or inside a batch). */
  private execute(root: string, op: BatchOperation): OpResult {
    let url: URL;
    try {
      url = new URL(op.url, 'http://sim/api/data/v9.2/');
    } catch {
      return odataError(400, '0x80060888', `Invalid request URL ${op.url}.`);
    }
    const rel = url.pathname.replace(API, '');
    if (rel === 'WhoAmI' && op.method === 'GET') {
      return {
        status: 200,
        headers: {},
        body: {
          '@odata.context': '/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse',
          BusinessUnitId: 'b0000000-0000-0000-0000-000000000001',
          UserId: 'a0000000-0000-0000-0000-000000000001',
          OrganizationId: 'c0000000-0000-0000-0000-000000000001',
        },
      };
    }
    if (rel === 'EntityDefinitions' && op.method === 'GET') return this.entityDefinitions(url.searchParams);
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:\((.*)\))?$/.exec(rel);
    const set = m?.[1] ?? '';
    const entity = entityOf(set);
    if (!m || !entity) return odataError(404, '0x8006088a', `Resource not found for the segment '${rel.split('(')[0]}'.`);
    let data: Record<string, unknown> = {};
    if (op.method === 'PATCH' || op.method === 'POST') {
      try {
        data = op.body ? (JSON.parse(op.body) as Record<string, unknown>) : {};
      } catch {
        return odataError(400, '0x80060888', 'The request body is not valid JSON.');
      }
    }
    if (m[2] === undefined) {
      if (op.method === 'GET') return this.query(set, entity, url.searchParams, root, op.headers?.prefer ?? '');
      if (op.method === 'POST') return this.create(root, set, entity, data);
      return odataError(405, '0x80060888', `${op.method} on the ${set} collection is not supported.`);
    }
    const key = parseKey(m[2]);
    if (key === 'unsafe') return odataError(400, '0x80060888', QUERY_SYNTAX);
    if (!key) return odataError(400, '0x80060888', `Bad key segment (${m[2]}).`);
    const existing = this.find(set, key);
    const absent = odataError(
      404,
      '0x80040217',
      'guid' in key
        ? `${entity.logical} With Id = ${key.guid} Does Not Exist`
        : `A record with the specified key values does not exist in ${entity.logical} entity`,
    );
    if (op.method === 'GET') return existing ? { status: 200, headers: {}, body: existing } : absent;
    if (op.method === 'DELETE') {
      if (!existing) return absent;
      this.records(set).delete(existing.id);
      this.stats.recordsDeleted++;
      return { status: 204, headers: {} };
    }
    if (op.method !== 'PATCH') return odataError(405, '0x80060888', `${op.method} is not supported on ${set}(...).`);
    const h = op.headers ?? {};
    if (h['if-none-match'] === '*' && existing) return odataError(412, '0x80040237', `A record with matching key values already exists.`);
    if (h['if-match'] === '*' && !existing) return absent;
    if (!existing && 'guid' in key) return absent; // a create needs the alternate key (or a POST)
    return this.upsert(root, set, entity, existing, 'keys' in key ? key.keys : {}, data);
  }

  /**
   * `GET <set>?$filter=<column> eq '<literal>'&$select=...`: string comparison case-insensitive
   * (filter-rows page); the primary id is always returned. Only `eq` on one column is simulated.
   */
  private query(set: string, entity: { logical: string }, q: URLSearchParams, root = '', prefer = ''): OpResult {
    const filter = q.get('$filter');
    let rows = [...this.records(set).values()];
    if (filter !== null) {
      const keep = filterRows(filter);
      if (!keep)
        return odataError(
          400,
          '0x80060888',
          `The simulator supports only $filter=<column> eq '<text>' [or <column> eq '<text>' ...] or <column> ne null, not ${filter}.`,
        );
      rows = rows.filter(keep);
    }
    const select = q
      .get('$select')
      ?.split(',')
      .map((c) => c.trim())
      .filter(Boolean);
    const pid = `${entity.logical}id`;
    const value = rows.map((r) => {
      const out: Record<string, unknown> = { '@odata.etag': `W/"${r.id}"` };
      for (const [k, v] of Object.entries(r)) if (k !== 'id' && (!select || select.includes(k) || k === pid)) out[k] = v;
      return out;
    });
    return this.paged(set, value, q, root, prefer);
  }

  /**
   * Paging (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results):
   * `Prefer: odata.maxpagesize=<n>` (default and most 5,000) limits a page; while more rows follow,
   * `@odata.nextLink` is the absolute URL of the next page (`$skiptoken`, opaque to clients).
   */
  private paged(set: string, value: Record<string, unknown>[], q: URLSearchParams, root: string, prefer: string): OpResult {
    const asked = Number(/odata\.maxpagesize=(\d+)/.exec(prefer)?.[1] ?? 0);
    const size = asked > 0 ? Math.min(asked, 5000) : 5000;
    const from = Number(q.get('$skiptoken') ?? 0) || 0;
    const body: Record<string, unknown> = { '@odata.context': `/api/data/v9.2/$metadata#${set}`, value: value.slice(from, from + size) };
    if (from + size < value.length) {
      const next = new URLSearchParams(q);
      next.set('$skiptoken', String(from + size));
      body['@odata.nextLink'] = `${root}/api/data/v9.2/${set}?${next.toString()}`;
    }
    return { status: 200, headers: asked > 0 ? { 'Preference-Applied': `odata.maxpagesize=${size}` } : {}, body };
  }

  /** `EntityDefinitions?$select=...&$filter=EntitySetName eq '<set>'` for the tables this simulator knows. */
  private entityDefinitions(q: URLSearchParams): OpResult {
    const f = /^\s*EntitySetName\s+eq\s+'([^']*)'\s*$/.exec(q.get('$filter') ?? '');
    if (!f) return odataError(400, '0x80060888', "The simulator supports only EntityDefinitions?$filter=EntitySetName eq '<set>'.");
    const entity = entityOf(f[1]!);
    const value = entity
      ? [
          {
            MetadataId: guid(0xe0000 + f[1]!.length),
            EntitySetName: f[1],
            LogicalName: entity.logical,
            PrimaryIdAttribute: `${entity.logical}id`,
          },
        ]
      : [];
    return { status: 200, headers: {}, body: { '@odata.context': '/api/data/v9.2/$metadata#EntityDefinitions', value } };
  }

  /** `POST <set>`: a create; an alternate-key value already taken is a duplicate (412 0x80040237). */
  private create(root: string, set: string, entity: { logical: string; required?: string }, data: Record<string, unknown>): OpResult {
    for (const k of this.alternateKeys) {
      const v = data[k];
      if (v === undefined || v === null) continue;
      if (this.find(set, { keys: { [k]: String(v) } }))
        return odataError(
          412,
          '0x80040237',
          `A record that has the attribute values ${k} = ${String(v)} already exists. The entity key requires that this set of attributes contains unique values.`,
        );
    }
    return this.upsert(root, set, entity, undefined, {}, data);
  }

  private find(set: string, key: { guid: string } | { keys: Record<string, string> }): SimRecord | undefined {
    for (const r of this.records(set).values()) {
      if ('guid' in key ? guid(r.id) === key.guid : Object.entries(key.keys).every(([k, v]) => r[k] !== undefined && String(r[k]) === v))
        return r;
    }
    return undefined;
  }

  private upsert(
    root: string,
    set: string,
    entity: { logical: string; required?: string },
    existing: SimRecord | undefined,
    keys: Record<string, string>,
    data: Record<string, unknown>,
  ): OpResult {
    const fields: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(data)) {
      const bind = /^(.+)@odata\.bind$/.exec(name);
      if (bind) {
        const nav = bind[1]!;
        if (!NAVIGATION.test(nav))
          return odataError(
            400,
            '0x80060888',
            `Could not find a property named '${nav}' on type 'Microsoft.Dynamics.CRM.${entity.logical}'.`,
          );
        if (value === null) {
          fields[nav] = null;
          continue;
        }
        const target = /^\/?(?:.*\/api\/data\/v9\.\d\/)?([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$/.exec(String(value));
        const targetKey = target ? parseKey(target[2]!) : undefined;
        if (targetKey === 'unsafe') return odataError(400, '0x80060888', QUERY_SYNTAX);
        if (!target || !targetKey)
          return odataError(400, '0x80060888', `The value '${String(value)}' of '${name}' is not a valid entity reference.`);
        const found = this.find(target[1]!, targetKey);
        const logical = ENTITIES[target[1]!]?.logical ?? target[1]!;
        if (!found) return odataError(404, '0x80040217', `A record with the specified key values does not exist in ${logical} entity`);
        fields[nav] = guid(found.id);
        continue;
      }
      if (name.startsWith('@') || name.includes('@')) continue; // instance annotations
      if (!ATTRIBUTE.test(name))
        return odataError(
          400,
          '0x80060888',
          `Could not find a property named '${name}' on type 'Microsoft.Dynamics.CRM.${entity.logical}'.`,
        );
      fields[name] = value;
    }
    for (const [k, v] of Object.entries(keys)) {
      if (fields[k] !== undefined && fields[k] !== null && String(fields[k]) !== v) {
        return odataError(400, '0x80060888', `The key attribute '${k}' in the body (${String(fields[k])}) differs from the URL (${v}).`);
      }
    }
    const merged: Record<string, unknown> = { ...existing, ...keys, ...fields };
    const problem = this.validate(entity, merged, existing === undefined);
    if (problem) return problem;
    const now = new Date(this.now()).toISOString();
    const id = existing?.id ?? this.newId();
    const record: SimRecord = { ...merged, id, [`${entity.logical}id`]: guid(id), createdon: existing?.createdon ?? now, modifiedon: now };
    this.records(set).set(id, record);
    this.stats.recordsWritten++;
    const entityId = `${root}/api/data/v9.2/${set}(${guid(id)})`;
    return { status: 204, headers: { 'OData-EntityId': entityId, ...(existing ? {} : { Location: entityId }) } };
  }

  private validate(entity: { logical: string; required?: string }, r: Record<string, unknown>, creating: boolean): OpResult | undefined {
    const blank = (v: unknown): boolean => v === undefined || v === null || String(v).trim() === '';
    const invalid = (message: string): OpResult => odataError(400, '0x80044331', `A validation error occurred. ${message}`);
    if (entity.required && (creating || entity.required in r) && blank(r[entity.required])) {
      return invalid(`The value of the '${entity.required}' attribute of the '${entity.logical}' entity is required.`);
    }
    for (const [name, max] of Object.entries(MAX_LENGTH)) {
      const v = r[name];
      if (typeof v === 'string' && v.length > max) {
        return invalid(
          `The length of the '${name}' attribute of the '${entity.logical}' entity exceeded the maximum allowed length of '${max}'.`,
        );
      }
    }
    for (const name of ['emailaddress1', 'emailaddress2', 'emailaddress3']) {
      const v = r[name];
      if (!blank(v) && !EMAIL.test(String(v)))
        return invalid(`The value of the '${name}' attribute of the '${entity.logical}' entity is not a valid e-mail address.`);
    }
    const injected = this.rejected(r);
    if (injected)
      return invalid(`The value of the '${injected.field}' attribute of the '${entity.logical}' entity is invalid: ${injected.message}.`);
    return undefined;
  }
}

function entityOf(set: string): { logical: string; required?: string } | undefined {
  return ENTITIES[set] ?? (/^[a-z]+_[a-z0-9_]+s$/.test(set) ? { logical: set.slice(0, -1) } : undefined);
}

/** A top-level request's path with its query string, as a batch operation's URL carries it. */
function withQuery(req: SimRequest): string {
  const q = req.query.toString();
  return q ? `${req.path}?${q}` : req.path;
}

/**
 * A `$filter` the simulator evaluates (filter-rows,
 * https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/filter-rows): `<column> eq
 * '<text>'` (case-insensitive, like Dataverse's string comparisons), several joined by `or`, or
 * `<column> ne null`. Undefined for anything else.
 */
function filterRows(filter: string): ((r: SimRecord) => boolean) | undefined {
  const notNull = /^\s*([a-z_][a-z0-9_]*)\s+ne\s+null\s*$/.exec(filter);
  if (notNull) return (r) => r[notNull[1]!] !== undefined && r[notNull[1]!] !== null;
  const terms = filter.split(/\s+or\s+(?=[a-z_][a-z0-9_]*\s+eq\s+')/);
  const wanted = new Map<string, Set<string>>();
  for (const term of terms) {
    const f = /^\s*([a-z_][a-z0-9_]*)\s+eq\s+'((?:[^']|'')*)'\s*$/.exec(term);
    if (!f) return undefined;
    const values = wanted.get(f[1]!) ?? new Set<string>();
    values.add(f[2]!.replace(/''/g, "'").toLowerCase());
    wanted.set(f[1]!, values);
  }
  return (r) =>
    [...wanted].some(([column, values]) => r[column] !== undefined && r[column] !== null && values.has(String(r[column]).toLowerCase()));
}

/** The organization URL as the client addressed it, for `OData-EntityId`. */
function origin(req: SimRequest): string {
  return `http://${req.headers.host ?? '127.0.0.1'}`;
}

function flatHeaders(headers: SimRequest['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

function toPart(r: OpResult, op: BatchOperation): BatchItemResponse {
  const headers: Record<string, string> = { 'OData-Version': '4.0', ...r.headers };
  if (r.body !== undefined) headers['Content-Type'] = 'application/json; odata.metadata=minimal';
  return {
    status: r.status,
    headers,
    body: r.body === undefined ? '' : JSON.stringify(r.body),
    ...(op.contentId !== undefined ? { contentId: op.contentId } : {}),
  };
}

export function startDynamicsSimulator(opts: DynamicsSimOptions): Promise<CrmSimulator> {
  return new DynamicsSim(opts).listen(opts.port, opts.host, opts.control);
}
