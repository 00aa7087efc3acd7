import { STATUS_CODES } from 'node:http';
import { SimTokens, type SimOAuthOptions, tokenParams } from '../auth/token-sim.ts';
import { type CrmSimulator, RollingWindow, type SimRecord, type SimRequest, type SimResponse, SimServer } from '../sim-server.ts';

/**
 * Zendesk Sell (API v2) as documented, and where marked, as seen in the field
 * (reference/crm-apis.md). docs/crm-conformance.md lists each behaviour with its page.
 * - Every request needs a `User-Agent` header; without one: 400 `invalid_user_agent`
 *   (https://developer.zendesk.com/api-reference/sales-crm/requests/,
 *   https://developer.zendesk.com/api-reference/introduction/requests/#user-agent). Checked first,
 *   before the token and the rate limit.
 * - Bearer tokens; all tokens of one account share ONE rate bucket (field report).
 * - Documented quota: 36,000 requests per hour per token, 429 when spent, "until the request
 *   reset time has been reached" (https://developer.zendesk.com/api-reference/sales-crm/rate-limits/);
 *   the page names no response header. Field report (the simulator's default): 200 requests per
 *   minute; past it, 429 with `{"error":"rate_limit_exceeded","retry_after":3600,"message":"API
 *   rate limit reached"}` and the account locked out for `retry_after` seconds.
 * - Field report, NOT in Sell's docs: `X-RateLimit-Limit` / `X-RateLimit-Remaining` /
 *   `X-RateLimit-Reset` on every response. `rateLimitHeaders: false` answers as documented (none).
 * - `Retry-After` on a 429: Sell's rate-limits page names none; Zendesk's general rate-limits page
 *   (https://developer.zendesk.com/api-reference/introduction/rate-limits/) documents it in
 *   seconds. Default seconds; `retryAfterHeader` sends an HTTP-date (RFC 9110 allows either) or
 *   none (the body's `retry_after` alone).
 * - Writes are single-record: `POST /v2/{contacts|leads|deals}/upsert?<filter>=<value>` creates
 *   the record when no record matches the filters, updates it when exactly one does, and
 *   answers 409 when several do. Custom fields filter as `custom_fields[<name>]=<value>`.
 * - Lists (`GET /v2/<object>?<filters>`) are paginated: `page` from 1, `per_page` default 25,
 *   at most 100 (https://developer.zendesk.com/api-reference/sales-crm/requests/).
 * - Custom fields are created in Sell's UI and listed per resource type by
 *   `GET /v2/:resource_type/custom_fields` with id, name, type, choices, for_company,
 *   for_contact, created_at, updated_at
 *   (https://developer.zendesk.com/api-reference/sales-crm/resources/custom-fields/): the API
 *   exposes NO filterable flag. A custom field filters only when marked Filterable in Sell's
 *   settings; the docs do not say what a filter on a field that is not does. The simulator
 *   honours every filter by default; `unfilterable` (a fault, not documented behaviour) names
 *   fields whose list filter is ignored: the unfiltered page comes back. Upserts are not
 *   affected (the docs say nothing of those either).
 * - Errors: `{errors:[{error:{code, field?, message}, meta:{type}}], meta:{type:"errors", http_status}}`
 *   (https://developer.zendesk.com/api-reference/sales-crm/errors/); validation is 422.
 */
/** The custom fields connectors/zendesk-sell.yaml maps (external ids and two plain fields). */
const SHIPPED_CUSTOM_FIELDS: Partial<Record<ResourceType, string[]>> = { contact: ['erp_id', 'company'], deal: ['erp_order_id', 'status'] };

export interface ZendeskSellSimOptions extends SimOAuthOptions {
  port: number;
  host?: string;
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  retryAfterSeconds?: number;
  /**
   * Custom fields defined per resource type (what an admin created in Sell's UI). Default: the
   * ones connectors/zendesk-sell.yaml uses (so `pg2crm check` passes against a fresh simulator),
   * and any other custom field a write uses is defined at that moment (the account had it already).
   */
  customFields?: Partial<Record<ResourceType, string[]>>;
  /** Fault: custom fields (per object, e.g. `{contacts: ['erp_id']}`) whose list filter Sell ignores. */
  unfilterable?: Partial<Record<string, string[]>>;
  /** The field report's X-RateLimit-* headers (default true); false answers as documented, without them. */
  rateLimitHeaders?: boolean;
  /** How a 429 carries Retry-After: delay-seconds (default), an HTTP-date, or not at all. */
  retryAfterHeader?: 'seconds' | 'http-date' | 'none';
}

type ResourceType = 'contact' | 'lead' | 'deal';

const OBJECTS: Record<string, ResourceType> = { contacts: 'contact', leads: 'lead', deals: 'deal' };
const RESOURCE_TYPES = new Set<string>(Object.values(OBJECTS));
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const PER_PAGE = 25;
const MAX_PER_PAGE = 100;

interface CustomField {
  id: number;
  name: string;
  type: string;
  for_company?: boolean;
  for_contact?: boolean;
  created_at: string;
  updated_at: string;
}

function errors(status: number, list: { code: string; message: string; field?: string }[], type = 'error'): SimResponse {
  return {
    status,
    body: {
      errors: list.map((e) => ({ error: e, meta: { type } })),
      meta: { type: 'errors', http_status: `${status} ${STATUS_CODES[status] ?? ''}`.trim() },
    },
  };
}

/**
 * `sort_by=<attribute>[:asc|:desc]` (https://developer.zendesk.com/api-reference/sales-crm/requests/,
 * ascending by default); without it, the store's order (creation order).
 */
function sortedBy(records: SimRecord[], sortBy: string | null): SimRecord[] {
  if (!sortBy) return records;
  const [field, direction] = sortBy.split(':');
  const sign = direction === 'desc' ? -1 : 1;
  const key = (r: SimRecord): string | number => {
    const v = r[field!];
    return typeof v === 'number' ? v : String(v ?? '');
  };
  return [...records].sort((a, b) => (key(a) < key(b) ? -sign : key(a) > key(b) ? sign : 0));
}

class ZendeskSellSim extends SimServer {
  private readonly window: RollingWindow;
  readonly tokens: SimTokens;
  private readonly retryAfterSeconds: number;
  private readonly rateLimitHeaders: boolean;
  private readonly retryAfterHeader: 'seconds' | 'http-date' | 'none';
  private readonly unfilterable: Partial<Record<string, string[]>>;
  /** Custom fields are defined on first use unless the options name them. */
  private readonly definedOnUse: boolean;
  private readonly customFields = new Map<ResourceType, Map<string, CustomField>>();
  private nextFieldId = 1;
  private lockedUntil = 0;

  constructor(opts: ZendeskSellSimOptions) {
    super();
    const limit = opts.limit ?? { requests: 200, windowSeconds: 60 };
    this.window = new RollingWindow(limit.requests, limit.windowSeconds * 1000);
    this.tokens = new SimTokens(opts.tokens ?? ['sim-token'], opts, 3599, () => this.now());
    this.retryAfterSeconds = opts.retryAfterSeconds ?? 3600;
    this.rateLimitHeaders = opts.rateLimitHeaders ?? true;
    this.retryAfterHeader = opts.retryAfterHeader ?? 'seconds';
    this.unfilterable = opts.unfilterable ?? {};
    this.definedOnUse = opts.customFields === undefined;
    const defined = opts.customFields ?? SHIPPED_CUSTOM_FIELDS;
    for (const [type, names] of Object.entries(defined)) for (const name of names ?? []) this.defineField(type as ResourceType, name);
  }

  private defineField(type: ResourceType, name: string): void {
    let fields = this.customFields.get(type);
    if (!fields) this.customFields.set(type, (fields = new Map()));
    if (fields.has(name)) return;
    const at = new Date(this.now()).toISOString();
    // for_company / for_contact apply to resource_type=contact only (the custom fields page).
    const scope = type === 'contact' ? { for_company: true, for_contact: true } : {};
    fields.set(name, { id: this.nextFieldId++, name, type: 'string', ...scope, created_at: at, updated_at: at });
  }

  protected resetLimits(): void {
    this.window.clear();
    this.lockedUntil = 0;
  }

  protected throttleResponse(retryAfterSeconds: number): SimResponse {
    const headers: Record<string, string | number> = {};
    // An HTTP-date is wall-clock time: the client compares it with its own clock, not the simulator's.
    if (this.retryAfterHeader === 'seconds') headers['Retry-After'] = retryAfterSeconds;
    if (this.retryAfterHeader === 'http-date') headers['Retry-After'] = new Date(Date.now() + retryAfterSeconds * 1000).toUTCString();
    if (this.rateLimitHeaders) Object.assign(headers, { 'X-RateLimit-Limit': this.window.limit, 'X-RateLimit-Remaining': 0 });
    return {
      status: 429,
      headers,
      body: { error: 'rate_limit_exceeded', retry_after: retryAfterSeconds, message: 'API rate limit reached' },
    };
  }

  /** Field report only (see the header comment); none when `rateLimitHeaders` is false. */
  private rateHeaders(now: number): Record<string, number> {
    if (!this.rateLimitHeaders) return {};
    return {
      'X-RateLimit-Limit': this.window.limit,
      'X-RateLimit-Remaining': now < this.lockedUntil ? 0 : this.window.remaining(now),
      'X-RateLimit-Reset': this.window.resetSeconds(now),
    };
  }

  protected handle(req: SimRequest): SimResponse {
    const agent = req.headers['user-agent'];
    if (typeof agent !== 'string' || agent.trim() === '') {
      return errors(400, [{ code: 'invalid_user_agent', message: 'The User-Agent header is missing; every request must name its client' }]);
    }
    if (req.method === 'POST' && req.path === '/oauth2/token') return this.issueToken(req);
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
    const state = this.tokens.state(token);
    // An expired OAuth token: the body a Sell user reported for it (support.zendesk.com community
    // post 5003737490458): "Required access token is missing, malformed, expired, or invalid."
    if (state === 'expired')
      return {
        status: 401,
        body: {
          error: {
            code: 'unauthorized',
            message: 'request is unauthorized',
            details: 'Required access token is missing, malformed, expired, or invalid.',
          },
        },
      };
    if (state !== 'valid') return errors(401, [{ code: 'unauthorized', message: 'Invalid or missing access token' }], 'authentication');
    const now = this.now();
    if (now < this.lockedUntil) return this.throttleResponse(Math.ceil((this.lockedUntil - now) / 1000));
    if (!this.window.tryAcquire(now)) {
      this.lockedUntil = now + this.retryAfterSeconds * 1000;
      return this.throttleResponse(this.retryAfterSeconds);
    }
    const res = this.route(req);
    return { ...res, headers: { ...this.rateHeaders(now), ...res.headers } };
  }

  /**
   * Sell's OAuth token endpoint, `POST /oauth2/token` (https://api.getbase.com/oauth2/token),
   * refresh-token grant; the client authenticates with HTTP Basic (or form parameters). Answer
   * `{access_token, token_type:"bearer", expires_in:3599, refresh_token, scope}` (lifetime
   * `tokenTtlSeconds`); refusals 400/401 `{error:"invalid_grant"|"invalid_client", error_description}`
   * (RFC 6749 §5.2). Not an API request: it skips the rate bucket.
   */
  private issueToken(req: SimRequest): SimResponse {
    const p = tokenParams(req);
    const basic = /^Basic (.+)$/.exec(String(req.headers.authorization ?? ''));
    let id = p.get('client_id');
    let secret = p.get('client_secret');
    if (basic) {
      const [u, pw] = Buffer.from(basic[1]!, 'base64').toString().split(':');
      id = decodeURIComponent(u ?? '');
      secret = decodeURIComponent(pw ?? '');
    }
    const client = this.tokens.client(id);
    if (!client || secret !== client.clientSecret)
      return { status: 401, body: { error: 'invalid_client', error_description: 'Client authentication failed' } };
    if (p.get('grant_type') !== 'refresh_token')
      return { status: 400, body: { error: 'unsupported_grant_type', error_description: 'The authorization grant type is not supported' } };
    if (p.get('refresh_token') !== client.refreshToken)
      return {
        status: 400,
        body: { error: 'invalid_grant', error_description: 'The provided authorization grant is invalid, expired or revoked' },
      };
    const t = this.tokens.issue();
    return {
      status: 200,
      body: {
        access_token: t.value,
        token_type: 'bearer',
        expires_in: t.expiresIn,
        refresh_token: client.refreshToken,
        scope: 'read write profile',
      },
    };
  }

  private route(req: SimRequest): SimResponse {
    const parts = req.path.split('/').filter(Boolean); // v2, object, (id | upsert)
    if (parts[0] !== 'v2') return errors(404, [{ code: 'not_found', message: `no route ${req.path}` }]);
    if (parts[1] === 'users' && parts[2] === 'self' && req.method === 'GET') {
      return { status: 200, body: { data: { id: 1, name: 'Simulator', email: 'sim@example.com' }, meta: { type: 'user' } } };
    }
    if (RESOURCE_TYPES.has(parts[1] ?? '') && parts[2] === 'custom_fields' && parts.length === 3 && req.method === 'GET') {
      const items = [...(this.customFields.get(parts[1] as ResourceType)?.values() ?? [])].map((f) => ({
        data: f,
        meta: { type: 'custom_field' },
      }));
      return { status: 200, body: { items, meta: { type: 'collection', count: items.length, links: {} } } };
    }
    const object = parts[1] ?? '';
    const type = OBJECTS[object];
    if (!type) return errors(404, [{ code: 'not_found', message: `unknown resource ${object}` }]);
    if (parts[2] === 'upsert' && req.method === 'POST') return this.upsert(object, type, req);
    if (parts.length === 2 && req.method === 'GET') {
      const page = Math.max(1, Math.floor(Number(req.query.get('page') ?? 1)) || 1);
      const perPage = Math.min(MAX_PER_PAGE, Math.max(1, Math.floor(Number(req.query.get('per_page') ?? PER_PAGE)) || PER_PAGE));
      const all = sortedBy(this.matching(object, req.query, this.unfilterable[object] ?? []), req.query.get('sort_by'));
      const items = all.slice((page - 1) * perPage, page * perPage).map((r) => ({ data: r, meta: { type } }));
      return { status: 200, body: { items, meta: { type: 'collection', count: items.length } } };
    }
    const id = Number(parts[2]);
    const record = this.records(object).get(id);
    if (!Number.isInteger(id) || parts.length !== 3) return errors(404, [{ code: 'not_found', message: `no route ${req.path}` }]);
    if (!record) return errors(404, [{ code: 'not_found', message: `${type} ${id} not found` }]);
    if (req.method === 'GET') return { status: 200, body: { data: record, meta: { type } } };
    if (req.method === 'DELETE') {
      this.records(object).delete(id);
      this.stats.recordsDeleted++;
      return { status: 204 };
    }
    if (req.method === 'PUT') return this.write(object, type, record, (req.body as { data?: Record<string, unknown> })?.data ?? {});
    return errors(405, [{ code: 'method_not_allowed', message: `${req.method} not allowed` }]);
  }

  /** Records matching every filter: `custom_fields[x]=v` or `<attribute>=v`; `ignored` custom fields do not filter. */
  private matching(object: string, query: URLSearchParams, ignored: string[] = []): SimRecord[] {
    const filters = [...query.entries()].filter(([k]) => k !== 'page' && k !== 'per_page' && k !== 'sort_by');
    return [...this.records(object).values()].filter((r) =>
      filters.every(([k, v]) => {
        const cf = /^custom_fields\[(.+)\]$/.exec(k);
        if (cf && ignored.includes(cf[1]!)) return true;
        const actual = cf ? (r.custom_fields as Record<string, unknown> | undefined)?.[cf[1]!] : r[k];
        return actual !== undefined && actual !== null && String(actual) === v;
      }),
    );
  }

  private upsert(object: string, type: ResourceType, req: SimRequest): SimResponse {
    if ([...req.query.keys()].length === 0) {
      return errors(400, [{ code: 'invalid_filter', message: 'upsert needs at least one filter query parameter' }]);
    }
    const data = (req.body as { data?: Record<string, unknown> } | undefined)?.data;
    if (!data || typeof data !== 'object')
      return errors(422, [{ code: 'invalid', field: 'data', message: 'request body must be {"data": {...}}' }], 'validation');
    const found = this.matching(object, req.query);
    if (found.length > 1) return errors(409, [{ code: 'conflict', message: `${found.length} ${object} match the filters` }]);
    return this.write(object, type, found[0], data);
  }

  private write(object: string, type: ResourceType, existing: SimRecord | undefined, data: Record<string, unknown>): SimResponse {
    const now = new Date(this.now()).toISOString();
    const customFields = {
      ...((existing?.custom_fields as Record<string, unknown>) ?? {}),
      ...((data.custom_fields as Record<string, unknown>) ?? {}),
    };
    const merged: SimRecord = { ...existing, ...data, custom_fields: customFields, id: existing?.id ?? 0 };
    const problems = this.validate(object, merged);
    const injected = this.rejected({ ...merged, ...customFields });
    if (injected) problems.push({ code: 'invalid', ...injected });
    if (problems.length) return errors(422, problems, 'validation');
    const record: SimRecord = { ...merged, id: existing?.id ?? this.newId(), created_at: existing?.created_at ?? now, updated_at: now };
    this.records(object).set(record.id, record);
    if (this.definedOnUse) for (const name of Object.keys(customFields)) this.defineField(type, name);
    this.wrote(object, record);
    return { status: 200, body: { data: record, meta: { type } } };
  }

  private validate(object: string, r: SimRecord): { code: string; field: string; message: string }[] {
    const out: { code: string; field: string; message: string }[] = [];
    const blank = (v: unknown): boolean => v === undefined || v === null || String(v).trim() === '';
    if (object === 'contacts') {
      if (r.is_organization === true && blank(r.name)) out.push({ code: 'blank', field: 'name', message: "can't be blank" });
      if (r.is_organization !== true && blank(r.last_name)) out.push({ code: 'blank', field: 'last_name', message: "can't be blank" });
    }
    if (object === 'leads' && blank(r.last_name) && blank(r.organization_name)) {
      out.push({ code: 'blank', field: 'last_name', message: "last_name or organization_name can't be blank" });
    }
    if (object === 'deals') {
      if (blank(r.name)) out.push({ code: 'blank', field: 'name', message: "can't be blank" });
      if (blank(r.contact_id)) out.push({ code: 'blank', field: 'contact_id', message: "can't be blank" });
      else if (!this.records('contacts').has(Number(r.contact_id)))
        out.push({ code: 'not_found', field: 'contact_id', message: 'contact does not exist' });
    }
    if (!blank(r.email) && !EMAIL.test(String(r.email)))
      out.push({ code: 'invalid', field: 'email', message: 'is not a valid email address' });
    return out;
  }
}

export function startZendeskSellSimulator(opts: ZendeskSellSimOptions): Promise<CrmSimulator> {
  return new ZendeskSellSim(opts).listen(opts.port, opts.host, opts.control);
}
