import { type CrmSimulator, RollingWindow, type SimRecord, type SimRequest, type SimResponse, SimServer } from '../sim-server.ts';

/**
 * Zendesk Sell (API v2) as documented and as seen in the field (reference/crm-apis.md):
 * - Bearer tokens; all tokens of one account share ONE rate bucket.
 * - Field report: 200 requests per minute; past it, 429 with
 *   `{"error":"rate_limit_exceeded","retry_after":3600,"message":"API rate limit reached"}` and
 *   the account stays locked out for `retry_after` seconds (documented quota: 36,000/hour).
 * - `X-RateLimit-Limit` / `X-RateLimit-Remaining` / `X-RateLimit-Reset` on every response.
 * - Writes are single-record: `POST /v2/{contacts|leads|deals}/upsert?<filter>=<value>` creates
 *   the record when no record matches the filters, updates it when exactly one does, and
 *   answers 409 when several do. Custom fields filter as `custom_fields[<name>]=<value>`.
 * - Validation errors: 422 `{errors:[{error:{code, field, message}, meta:{type:"validation"}}]}`.
 */
export interface ZendeskSellSimOptions {
  port: number;
  host?: string;
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  retryAfterSeconds?: number;
}

const OBJECTS: Record<string, string> = { contacts: 'contact', leads: 'lead', deals: 'deal' };
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;

function errors(status: number, list: { code: string; message: string; field?: string }[], type = 'error'): SimResponse {
  return { status, body: { errors: list.map((e) => ({ error: e, meta: { type } })), meta: { type: 'errors' } } };
}

class ZendeskSellSim extends SimServer {
  private readonly window: RollingWindow;
  private readonly tokens: Set<string>;
  private readonly retryAfterSeconds: number;
  private lockedUntil = 0;

  constructor(opts: ZendeskSellSimOptions) {
    super();
    const limit = opts.limit ?? { requests: 200, windowSeconds: 60 };
    this.window = new RollingWindow(limit.requests, limit.windowSeconds * 1000);
    this.tokens = new Set(opts.tokens ?? ['sim-token']);
    this.retryAfterSeconds = opts.retryAfterSeconds ?? 3600;
  }

  protected resetLimits(): void {
    this.window.clear();
    this.lockedUntil = 0;
  }

  protected throttleResponse(retryAfterSeconds: number): SimResponse {
    return {
      status: 429,
      headers: { 'Retry-After': retryAfterSeconds, 'X-RateLimit-Limit': this.window.limit, 'X-RateLimit-Remaining': 0 },
      body: { error: 'rate_limit_exceeded', retry_after: retryAfterSeconds, message: 'API rate limit reached' },
    };
  }

  private rateHeaders(now: number): Record<string, number> {
    return {
      'X-RateLimit-Limit': this.window.limit,
      'X-RateLimit-Remaining': now < this.lockedUntil ? 0 : this.window.remaining(now),
      'X-RateLimit-Reset': this.window.resetSeconds(now),
    };
  }

  protected handle(req: SimRequest): SimResponse {
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
    if (!this.tokens.has(token)) return errors(401, [{ code: 'unauthorized', message: 'Invalid or missing access token' }], 'authentication');
    const now = this.now();
    if (now < this.lockedUntil) return this.throttleResponse(Math.ceil((this.lockedUntil - now) / 1000));
    if (!this.window.tryAcquire(now)) {
      this.lockedUntil = now + this.retryAfterSeconds * 1000;
      return this.throttleResponse(this.retryAfterSeconds);
    }
    const res = this.route(req);
    return { ...res, headers: { ...this.rateHeaders(now), ...res.headers } };
  }

  private route(req: SimRequest): SimResponse {
    const parts = req.path.split('/').filter(Boolean); // v2, object, (id | upsert)
    if (parts[0] !== 'v2') return errors(404, [{ code: 'not_found', message: `no route ${req.path}` }]);
    if (parts[1] === 'users' && parts[2] === 'self' && req.method === 'GET') {
      return { status: 200, body: { data: { id: 1, name: 'Simulator', email: 'sim@example.com' }, meta: { type: 'user' } } };
    }
    const object = parts[1] ?? '';
    const type = OBJECTS[object];
    if (!type) return errors(404, [{ code: 'not_found', message: `unknown resource ${object}` }]);
    if (parts[2] === 'upsert' && req.method === 'POST') return this.upsert(object, type, req);
    if (parts.length === 2 && req.method === 'GET') {
      const items = this.matching(object, req.query).map((r) => ({ data: r, meta: { type } }));
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

  /** Records matching every filter: `custom_fields[x]=v` or `<attribute>=v`. */
  private matching(object: string, query: URLSearchParams): SimRecord[] {
    const filters = [...query.entries()].filter(([k]) => k !== 'page' && k !== 'per_page');
    return [...this.records(object).values()].filter((r) =>
      filters.every(([k, v]) => {
        const cf = /^custom_fields\[(.+)\]$/.exec(k);
        const actual = cf ? (r.custom_fields as Record<string, unknown> | undefined)?.[cf[1]!] : r[k];
        return actual !== undefined && actual !== null && String(actual) === v;
      }),
    );
  }

  private upsert(object: string, type: string, req: SimRequest): SimResponse {
    if ([...req.query.keys()].length === 0) {
      return errors(400, [{ code: 'invalid_filter', message: 'upsert needs at least one filter query parameter' }]);
    }
    const data = (req.body as { data?: Record<string, unknown> } | undefined)?.data;
    if (!data || typeof data !== 'object') return errors(422, [{ code: 'invalid', field: 'data', message: 'request body must be {"data": {...}}' }], 'validation');
    const found = this.matching(object, req.query);
    if (found.length > 1) return errors(409, [{ code: 'conflict', message: `${found.length} ${object} match the filters` }]);
    return this.write(object, type, found[0], data);
  }

  private write(object: string, type: string, existing: SimRecord | undefined, data: Record<string, unknown>): SimResponse {
    const now = new Date(this.now()).toISOString();
    const customFields = { ...((existing?.custom_fields as Record<string, unknown>) ?? {}), ...((data.custom_fields as Record<string, unknown>) ?? {}) };
    const merged: SimRecord = { ...existing, ...data, custom_fields: customFields, id: existing?.id ?? 0 };
    const problems = this.validate(object, merged);
    const injected = this.rejected({ ...merged, ...customFields });
    if (injected) problems.push({ code: 'invalid', ...injected });
    if (problems.length) return errors(422, problems, 'validation');
    const record: SimRecord = { ...merged, id: existing?.id ?? this.newId(), created_at: existing?.created_at ?? now, updated_at: now };
    this.records(object).set(record.id, record);
    this.stats.recordsWritten++;
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
      else if (!this.records('contacts').has(Number(r.contact_id))) out.push({ code: 'not_found', field: 'contact_id', message: 'contact does not exist' });
    }
    if (!blank(r.email) && !EMAIL.test(String(r.email))) out.push({ code: 'invalid', field: 'email', message: 'is not a valid email address' });
    return out;
  }
}

export function startZendeskSellSimulator(opts: ZendeskSellSimOptions): Promise<CrmSimulator> {
  return new ZendeskSellSim(opts).listen(opts.port, opts.host);
}
