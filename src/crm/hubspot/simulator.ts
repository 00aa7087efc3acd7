import { randomUUID } from 'node:crypto';
import { SimTokens, type SimOAuthOptions, tokenParams } from '../auth/token-sim.ts';
import { HUBSPOT_ASSOCIATION_TYPES, HUBSPOT_PRIMARY_ASSOCIATION_TYPES } from './association-types.ts';
import { type CrmSimulator, RollingWindow, type SimRecord, type SimRequest, type SimResponse, SimServer } from '../sim-server.ts';

/**
 * HubSpot CRM v3 objects + v4 associations, as documented (reference/crm-apis.md and
 * https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines):
 * - Burst limit: 100 requests per rolling 10 s (Free/Starter; 190 Pro/Enterprise); daily limit
 *   250,000 (625k / 1M), reset at midnight of the account's time zone (`opts.timeZone`, default UTC).
 * - Past a limit: 429 `{status:"error", message:"You have reached your ten_secondly_rolling limit.",
 *   errorType:"RATE_LIMIT", correlationId, policyName:"TEN_SECONDLY_ROLLING"|"DAILY", requestId}`,
 *   WITHOUT Retry-After. `X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds/-Daily/
 *   -Daily-Remaining` on every authenticated response. HubSpot documents no concurrency limit for
 *   these endpoints, so none is enforced.
 * - 401 `{status:"error", message:"Authentication credentials not found. ...", category:"INVALID_AUTHENTICATION"}`.
 *   An OAuth access token past its `expires_in`: 401 `{status:"error", message:"The OAuth token used to make this
 *   call expired N second(s) ago.", category:"EXPIRED_AUTHENTICATION", context:{"expire time":[...]}}`.
 * - OAuth apps: `POST /oauth/2026-03/token` (also the legacy `/oauth/v1/token`, deprecated on
 *   2027-02-16, https://developers.hubspot.com/changelog/v1-oauth-api-deprecation), form body
 *   `grant_type=refresh_token&client_id&client_secret&refresh_token`
 *   (https://developers.hubspot.com/docs/api-reference/2026-03/authentication/oauth-tokens/refresh-oauth-token)
 *   answers `{token_type:"bearer", refresh_token, access_token, expires_in}`; access tokens
 *   "expire after 30 minutes" (https://developers.hubspot.com/docs/methods/oauth2/refresh-access-token;
 *   `tokenTtlSeconds`), a private-app token (`tokens`) never expires. Refusals: 400 in the
 *   RFC 6749 form with HubSpot's old fields kept, `{error:"invalid_grant", error_description,
 *   status:"BAD_REFRESH_TOKEN", message}` / `{error:"invalid_client", status:"BAD_CLIENT_ID", …}`
 *   (https://developers.hubspot.com/changelog/new-oauth-v3-api-endpoints-and-standardized-error-responses).
 *   The token endpoint is not one of the rate-limited CRM APIs: it skips the burst and daily limits.
 * - `POST /crm/v3/objects/{type}/batch/upsert` `{inputs:[{id, idProperty, properties, objectWriteTraceId?}]}`,
 *   at most 100 inputs, duplicate ids rejected. One invalid input fails the WHOLE batch: 400
 *   `{status:"error", message:"Property values were not valid: [...]", correlationId, category:"VALIDATION_ERROR",
 *   errors:[{message, code, in}]}` and nothing is written, with or without `objectWriteTraceId`:
 *   multi-status 207 partial failure is documented for the batch CREATE endpoints only
 *   (https://developers.hubspot.com/docs/api-reference/error-handling#multi-status-errors: "For the
 *   object APIs' batch create endpoints, you can enable multi status responses"; error body shape:
 *   https://developers.hubspot.com/docs/api-reference/error-handling). `objectWriteTraceId` is echoed
 *   in the results of a successful upsert.
 * - `idProperty` must name a property whose values are unique (`hasUniqueValue`)
 *   (https://developers.hubspot.com/docs/api-reference/latest/crm/objects/custom-objects/batch/upsert-custom-objects:
 *   "idProperty ... refers to a property whose values are unique for the object"): batch/upsert and
 *   batch/read by an idProperty that is not a unique-value property (or does not exist) answer 400
 *   VALIDATION_ERROR for the whole call. The wording of that message is the simulator's own.
 * - Properties API: `GET /crm/v3/properties/{objectType}/{propertyName}` answers the definition
 *   `{name, label, type, fieldType, groupName, hasUniqueValue, ...}`, 404 for an unknown property
 *   (https://developers.hubspot.com/docs/api-reference/crm-properties-v3/core/get-crm-v3-properties-objectType-propertyName);
 *   `POST /crm/v3/properties/{objectType}` creates one (201; 409 when the name exists,
 *   https://developers.hubspot.com/docs/api-reference/latest/crm/properties/create-property), which is how a
 *   test declares a unique or non-unique property. Defined from the start: `hs_object_id` and the
 *   external-id properties pg2crm's connectors and tests use (erp_id, erp_order_id,
 *   erp_company_id) as unique-value properties on every object, a few standard properties
 *   (firstname, lastname, dealname, amount, name) as not unique, and `opts.properties`.
 * - Daily usage: `GET /account-info/v3/api-usage/daily/private-apps` answers
 *   `{results:[{name:"private-apps-api-calls-daily", usageLimit, currentUsage, collectedAt, fetchStatus, resetsAt}]}`
 *   (https://developers.hubspot.com/docs/api-reference/legacy/account/account-information/get-usage-details);
 *   `resetsAt` is the next midnight in the account's time zone (`opts.timeZone`), which is when the
 *   daily counter resets. The call counts against the limits like any other (HubSpot exempts none).
 * - `POST .../batch/read` `{idProperty?, inputs:[{id}], properties}`: 200, or 207 with an
 *   OBJECT_NOT_FOUND error listing the missing ids in `context.ids`.
 * - `POST .../batch/archive` `{inputs:[{id}]}`: 204 (unknown ids are not an error).
 * - `POST /crm/v4/associations/{from}/{to}/batch/create` `{inputs:[{from:{id}, to:{id}, types:[{associationCategory, associationTypeId}]}]}`:
 *   201; at most 2,000 inputs; the upsert API takes no associations, only batch/create does.
 * - `POST /crm/v4/associations/{from}/{to}/batch/archive` `{inputs:[{from:{id}, to:[{id}]}]}`: 204,
 *   every association (of any type, in either direction) between each pair removed; pairs with
 *   no association are not an error
 *   (https://developers.hubspot.com/docs/api-reference/crm-associations-v4/batch/post-crm-v4-associations-fromObjectType-toObjectType-batch-archive).
 * - `GET /crm/v3/objects/{type}?limit=n&properties=a,b&after=<cursor>`: a page of records (the
 *   adapter's ping; `pg2crm verify`), `paging.next.after` while more follow
 *   (https://developers.hubspot.com/docs/api-reference/latest/crm/objects/custom-objects/get-custom-objects).
 *
 * Records are stored flat as the adapter sends them: `{id, <idProperty>: value, ...properties,
 * createdAt, updatedAt}`; associations under the object `associations`.
 */
export interface HubSpotSimOptions extends SimOAuthOptions {
  port: number;
  host?: string;
  /** Burst limit; default 100 per 10 s. */
  limit?: { requests: number; windowSeconds: number };
  /** Requests per day (midnight to midnight in `timeZone`); default 250,000. */
  daily?: number;
  /** The account's IANA time zone (e.g. `America/New_York`): the daily limit resets at its midnight. Default UTC. */
  timeZone?: string;
  /**
   * Properties defined besides the defaults, per object (`*`: every object), e.g.
   * `{contacts: {erp_ref: {hasUniqueValue: false}}}`. A test can also create them with
   * `POST /crm/v3/properties/{objectType}`.
   */
  properties?: Record<string, Record<string, { hasUniqueValue: boolean }>>;
  tokens?: string[];
  /**
   * HubSpot sends no Retry-After. When set, throttle responses carry one anyway (seconds until the
   * limit frees), to rehearse clients that rely on it; leave unset for the documented behaviour.
   */
  retryAfterSeconds?: number;
}

const MAX_BATCH = 100;
const MAX_ASSOCIATION_BATCH = 2000;
const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
const STANDARD_OBJECTS = new Set([
  'contacts',
  'companies',
  'deals',
  'tickets',
  'line_items',
  'products',
  'quotes',
  'calls',
  'emails',
  'meetings',
  'notes',
  'tasks',
]);
/** Object type ids the v4 association results name objects by. */
const OBJECT_TYPE_IDS: Record<string, string> = {
  contacts: '0-1',
  companies: '0-2',
  deals: '0-3',
  tickets: '0-5',
  line_items: '0-8',
  products: '0-7',
};

interface PropertyProblem {
  isValid: false;
  message: string;
  error: string;
  name: string;
}

interface BatchError {
  status: 'error';
  category: string;
  message: string;
  context?: Record<string, string[]>;
}

function singular(object: string): string {
  return object.replace(/ies$/, 'y').replace(/s$/, '').toUpperCase();
}

function error(status: number, message: string, category: string, extra: Record<string, unknown> = {}): SimResponse {
  return { status, body: { status: 'error', message, correlationId: randomUUID(), category, ...extra } };
}

function propertiesMessage(problems: PropertyProblem[]): string {
  return `Property values were not valid: ${JSON.stringify(problems.map((p) => ({ ...p, localizedErrorMessage: p.message })))}`;
}

/** HubSpot answers property values as strings. */
function asStrings(record: SimRecord, only?: string[]): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  const skip = new Set(['id', 'createdAt', 'updatedAt']);
  for (const [k, v] of Object.entries(record)) {
    if (skip.has(k) || (only && !only.includes(k))) continue;
    out[k] = v === null || v === undefined ? null : String(v);
  }
  out.hs_object_id = String(record.id);
  out.createdate = String(record.createdAt);
  out.hs_lastmodifieddate = String(record.updatedAt);
  return out;
}

function view(record: SimRecord, only?: string[]): Record<string, unknown> {
  return {
    id: String(record.id),
    properties: asStrings(record, only),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    archived: false,
  };
}

/** Milliseconds `timeZone` is ahead of UTC at `at`. */
function offsetMs(at: number, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  }).formatToParts(new Date(at));
  const get = (type: string): number => Number(parts.find((p) => p.type === type)?.value);
  const wall = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return wall - Math.floor(at / 1000) * 1000;
}

/** The first midnight in `timeZone` after `now`: when HubSpot's daily counter resets. */
export function nextMidnight(now: number, timeZone: string): number {
  const local = new Date(now + offsetMs(now, timeZone));
  const wallMidnight = Date.UTC(local.getUTCFullYear(), local.getUTCMonth(), local.getUTCDate() + 1);
  // The offset at midnight itself (a DST change during the day moves it).
  return wallMidnight - offsetMs(wallMidnight - offsetMs(now, timeZone), timeZone);
}

/** Unique-value properties every object has in the simulator: HubSpot's own id and pg2crm's external ids. */
const DEFAULT_UNIQUE = ['hs_object_id', 'erp_id', 'erp_order_id', 'erp_company_id'];
/** Standard properties that exist without unique values (to test a wrong idProperty with). */
const DEFAULT_PLAIN: Record<string, string[]> = { contacts: ['firstname', 'lastname'], deals: ['dealname', 'amount'], companies: ['name'] };

interface PropertyDefinition {
  name: string;
  label: string;
  type: string;
  fieldType: string;
  groupName: string;
  hasUniqueValue: boolean;
  [k: string]: unknown;
}

function definition(name: string, hasUniqueValue: boolean, extra: Partial<PropertyDefinition> = {}): PropertyDefinition {
  return {
    name,
    label: name,
    type: 'string',
    fieldType: 'text',
    groupName: 'pg2crm',
    description: '',
    displayOrder: -1,
    formField: false,
    hidden: false,
    calculated: false,
    externalOptions: false,
    options: [],
    hasUniqueValue,
    modificationMetadata: { archivable: true, readOnlyDefinition: false, readOnlyValue: false },
    ...extra,
  };
}

class HubSpotSim extends SimServer {
  private readonly window: RollingWindow;
  private readonly dailyLimit: number;
  readonly tokens: SimTokens;
  private readonly retryAfterHeader: boolean;
  private readonly timeZone: string;
  /** When the current day's counter resets (midnight in the account's time zone); 0 = not started. */
  private resetsAt = 0;
  private usedToday = 0;
  /** object (or `*`) -> property name -> definition, besides the defaults. */
  private readonly definedProperties = new Map<string, Map<string, PropertyDefinition>>();
  private readonly initialProperties: Record<string, Record<string, { hasUniqueValue: boolean }>>;
  /** object -> idProperty -> value -> record id. */
  private readonly index = new Map<string, Map<string, Map<string, number>>>();
  /** `from/fromId/to/toId/typeId` of every stored association. */
  private readonly linkKeys = new Set<string>();

  constructor(opts: HubSpotSimOptions) {
    super();
    const limit = opts.limit ?? { requests: 100, windowSeconds: 10 };
    this.window = new RollingWindow(limit.requests, limit.windowSeconds * 1000);
    this.dailyLimit = opts.daily ?? 250_000;
    this.tokens = new SimTokens(opts.tokens ?? ['sim-token'], opts, 1800, () => this.now());
    this.retryAfterHeader = opts.retryAfterSeconds !== undefined;
    this.timeZone = opts.timeZone ?? 'UTC';
    nextMidnight(0, this.timeZone); // an unknown time zone fails here, at start
    this.initialProperties = opts.properties ?? {};
    this.defineInitialProperties();
  }

  private defineInitialProperties(): void {
    this.definedProperties.clear();
    for (const [object, props] of Object.entries(this.initialProperties)) {
      for (const [name, p] of Object.entries(props)) this.define(object, definition(name, p.hasUniqueValue));
    }
  }

  private define(object: string, def: PropertyDefinition): void {
    let m = this.definedProperties.get(object);
    if (!m) this.definedProperties.set(object, (m = new Map()));
    m.set(def.name, def);
  }

  /** The definition of `object`'s property `name`, or undefined when the property does not exist. */
  private property(object: string, name: string): PropertyDefinition | undefined {
    const own = this.definedProperties.get(object)?.get(name) ?? this.definedProperties.get('*')?.get(name);
    if (own) return own;
    if (DEFAULT_UNIQUE.includes(name))
      return definition(
        name,
        true,
        name === 'hs_object_id' ? { type: 'number', fieldType: 'number', groupName: 'contactinformation', hubspotDefined: true } : {},
      );
    if (DEFAULT_PLAIN[object]?.includes(name)) return definition(name, false, { hubspotDefined: true });
    return undefined;
  }

  /** The 400 for an idProperty that is not a unique-value property, or undefined when it is one. */
  private idPropertyProblem(object: string, idProperty: string): SimResponse | undefined {
    const def = this.property(object, idProperty);
    if (def?.hasUniqueValue) return undefined;
    return error(
      400,
      def
        ? `${idProperty} is not a unique identifier property for ${object}: idProperty must be a property with unique values (hasUniqueValue)`
        : `Property ${idProperty} does not exist for ${object}: idProperty must be a property with unique values (hasUniqueValue)`,
      'VALIDATION_ERROR',
      {
        errors: [
          {
            message: `idProperty ${idProperty} is not a unique-value property`,
            code: def ? 'INVALID_ID_PROPERTY' : 'PROPERTY_DOESNT_EXIST',
            in: 'idProperty',
          },
        ],
      },
    );
  }

  protected resetLimits(): void {
    this.window.clear();
    this.resetsAt = 0;
    this.usedToday = 0;
    this.defineInitialProperties();
    this.index.clear();
    this.linkKeys.clear();
  }

  private dailyRemaining(now: number): number {
    if (now >= this.resetsAt) {
      this.resetsAt = nextMidnight(now, this.timeZone);
      this.usedToday = 0;
    }
    return this.dailyLimit - this.usedToday;
  }

  private rateHeaders(now: number): Record<string, number> {
    return {
      'X-HubSpot-RateLimit-Max': this.window.limit,
      'X-HubSpot-RateLimit-Remaining': this.window.remaining(now),
      'X-HubSpot-RateLimit-Interval-Milliseconds': this.window.windowMs,
      'X-HubSpot-RateLimit-Daily': this.dailyLimit,
      'X-HubSpot-RateLimit-Daily-Remaining': Math.max(0, this.dailyRemaining(now)),
    };
  }

  /** The ten-secondly 429 (also what injected throttle storms answer). */
  protected throttleResponse(retryAfterSeconds: number, policy: 'TEN_SECONDLY_ROLLING' | 'DAILY' = 'TEN_SECONDLY_ROLLING'): SimResponse {
    const now = this.now();
    return {
      status: 429,
      headers: {
        ...this.rateHeaders(now),
        'X-HubSpot-RateLimit-Remaining': 0,
        ...(this.retryAfterHeader ? { 'Retry-After': retryAfterSeconds } : {}),
      },
      body: {
        status: 'error',
        message: `You have reached your ${policy === 'DAILY' ? 'daily' : 'ten_secondly_rolling'} limit.`,
        errorType: 'RATE_LIMIT',
        correlationId: randomUUID(),
        policyName: policy,
        requestId: randomUUID(),
      },
    };
  }

  /** The OAuth refresh-token grant (see the header). */
  private issueToken(req: SimRequest): SimResponse {
    const p = tokenParams(req);
    const refuse = (error: string, status: string, message: string): SimResponse => ({
      status: 400,
      body: { error, error_description: message, status, message, correlationId: randomUUID() },
    });
    if (p.get('grant_type') !== 'refresh_token')
      return refuse('unsupported_grant_type', 'BAD_GRANT_TYPE', 'missing or unsupported grant_type');
    const client = this.tokens.client(p.get('client_id'));
    if (!client || p.get('client_secret') !== client.clientSecret)
      return refuse('invalid_client', 'BAD_CLIENT_ID', 'missing or invalid client id or secret');
    if (!client.refreshToken || p.get('refresh_token') !== client.refreshToken)
      return refuse('invalid_grant', 'BAD_REFRESH_TOKEN', 'refresh token is invalid, expired or revoked');
    const t = this.tokens.issue();
    return {
      status: 200,
      body: { token_type: 'bearer', refresh_token: client.refreshToken, access_token: t.value, expires_in: t.expiresIn },
    };
  }

  protected handle(req: SimRequest): SimResponse {
    if (req.method === 'POST' && (req.path === '/oauth/2026-03/token' || req.path === '/oauth/v3/token' || req.path === '/oauth/v1/token'))
      return this.issueToken(req);
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '';
    const state = this.tokens.state(token);
    if (state === 'expired') {
      return error(401, 'The OAuth token used to make this call expired 1 second(s) ago.', 'EXPIRED_AUTHENTICATION', {
        context: { 'expire time': [new Date(this.now()).toISOString()] },
      });
    }
    if (state !== 'valid') {
      return error(
        401,
        'Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview',
        'INVALID_AUTHENTICATION',
      );
    }
    const now = this.now();
    if (this.dailyRemaining(now) <= 0) {
      return this.throttleResponse(Math.ceil((this.resetsAt - now) / 1000), 'DAILY');
    }
    if (!this.window.tryAcquire(now)) return this.throttleResponse(Math.max(1, this.window.resetSeconds(now)));
    this.usedToday++;
    const res = this.route(req);
    return { ...res, headers: { ...this.rateHeaders(now), ...res.headers } };
  }

  private route(req: SimRequest): SimResponse {
    const parts = req.path.split('/').filter(Boolean);
    if (req.method === 'GET' && req.path === '/account-info/v3/api-usage/daily/private-apps') return this.usage();
    if (parts[0] !== 'crm') return error(404, `no route ${req.path}`, 'OBJECT_NOT_FOUND');
    if (parts[1] === 'v3' && parts[2] === 'properties' && parts[3]) {
      const object = parts[3];
      if (!this.knownObject(object)) return error(400, `Unable to infer object type from: ${object}`, 'VALIDATION_ERROR');
      if (parts.length === 5 && req.method === 'GET') {
        const def = this.property(object, decodeURIComponent(parts[4]!));
        return def
          ? { status: 200, body: def }
          : error(404, `Unable to find property ${decodeURIComponent(parts[4]!)} for object type ${object}`, 'OBJECT_NOT_FOUND');
      }
      if (parts.length === 4 && req.method === 'POST') return this.createProperty(object, req.body);
    }
    if (parts[1] === 'v3' && parts[2] === 'objects' && parts[3]) {
      const object = parts[3];
      if (!this.knownObject(object)) return error(400, `Unable to infer object type from: ${object}`, 'VALIDATION_ERROR');
      if (parts.length === 4 && req.method === 'GET') return this.list(object, req.query);
      if (parts[4] === 'batch' && req.method === 'POST' && parts.length === 6) {
        const inputs = (req.body as { inputs?: unknown } | undefined)?.inputs;
        if (!Array.isArray(inputs)) return error(400, 'Invalid input JSON: inputs must be an array', 'VALIDATION_ERROR');
        if (inputs.length > MAX_BATCH)
          return error(400, `Batch input must not exceed ${MAX_BATCH} inputs (got ${inputs.length})`, 'VALIDATION_ERROR');
        if (parts[5] === 'upsert') return this.upsert(object, inputs as UpsertInput[]);
        if (parts[5] === 'read') return this.read(object, req.body as ReadBody);
        if (parts[5] === 'archive') return this.archive(object, inputs as { id?: string }[]);
      }
    }
    if (parts[1] === 'v4' && parts[2] === 'associations' && parts[5] === 'batch' && parts[6] === 'create' && req.method === 'POST') {
      return this.associate(parts[3] ?? '', parts[4] ?? '', (req.body as { inputs?: AssociationInput[] } | undefined)?.inputs);
    }
    if (parts[1] === 'v4' && parts[2] === 'associations' && parts[5] === 'batch' && parts[6] === 'archive' && req.method === 'POST') {
      return this.unassociate(parts[3] ?? '', parts[4] ?? '', (req.body as { inputs?: AssociationArchiveInput[] } | undefined)?.inputs);
    }
    return error(404, `no route ${req.method} ${req.path}`, 'OBJECT_NOT_FOUND');
  }

  /** The private-app daily usage, as the account-info API answers it. */
  private usage(): SimResponse {
    const now = this.now();
    this.dailyRemaining(now);
    return {
      status: 200,
      body: {
        results: [
          {
            name: 'private-apps-api-calls-daily',
            usageLimit: this.dailyLimit,
            currentUsage: this.usedToday,
            collectedAt: new Date(now).toISOString(),
            fetchStatus: 'SUCCESS',
            resetsAt: new Date(this.resetsAt).toISOString(),
          },
        ],
      },
    };
  }

  private createProperty(object: string, body: unknown): SimResponse {
    const b = (body ?? {}) as Partial<PropertyDefinition>;
    if (
      typeof b.name !== 'string' ||
      b.name === '' ||
      typeof b.label !== 'string' ||
      typeof b.type !== 'string' ||
      typeof b.fieldType !== 'string' ||
      typeof b.groupName !== 'string'
    ) {
      return error(400, 'Invalid input JSON: a property needs name, label, type, fieldType and groupName', 'VALIDATION_ERROR');
    }
    if (this.property(object, b.name)) return error(409, `Property named '${b.name}' already exists.`, 'CONFLICT');
    const def = definition(b.name, b.hasUniqueValue === true, {
      label: b.label,
      type: b.type,
      fieldType: b.fieldType,
      groupName: b.groupName,
    });
    this.define(object, def);
    return { status: 201, body: def };
  }

  private knownObject(object: string): boolean {
    return STANDARD_OBJECTS.has(object) || /^p_[a-z0-9_]+$/.test(object) || /^2-\d+$/.test(object);
  }

  private indexOf(object: string, property: string): Map<string, number> {
    let byProperty = this.index.get(object);
    if (!byProperty) this.index.set(object, (byProperty = new Map()));
    let byValue = byProperty.get(property);
    if (!byValue) {
      byProperty.set(property, (byValue = new Map()));
      for (const r of this.records(object).values())
        if (r[property] !== undefined && r[property] !== null) byValue.set(String(r[property]), r.id);
    }
    return byValue;
  }

  private find(object: string, property: string | undefined, value: string): SimRecord | undefined {
    if (!property || property === 'hs_object_id') return this.records(object).get(Number(value));
    const id = this.indexOf(object, property).get(value);
    return id === undefined ? undefined : this.records(object).get(id);
  }

  private reindex(object: string, before: SimRecord | undefined, after: SimRecord | undefined): void {
    for (const [property, byValue] of this.index.get(object) ?? []) {
      if (before && before[property] !== undefined && before[property] !== null) byValue.delete(String(before[property]));
      if (after && after[property] !== undefined && after[property] !== null) byValue.set(String(after[property]), after.id);
    }
  }

  /**
   * The objects API's list: `limit` (default 10, at most 100), `properties` (comma-separated; the
   * default properties without), `after` the cursor of `paging.next.after`, which is present
   * while more records follow (the cursor is opaque to clients; here the last record id).
   */
  private list(object: string, query: URLSearchParams): SimResponse {
    const limit = Math.min(100, Math.max(1, Number(query.get('limit') ?? 10)));
    const after = Number(query.get('after') ?? 0) || 0;
    const only = query.get('properties')?.split(',').filter(Boolean);
    const sorted = [...this.records(object).values()].filter((r) => r.id > after).sort((a, b) => a.id - b.id);
    const page = sorted.slice(0, limit);
    const results = page.map((r) => view(r, only));
    if (sorted.length <= limit) return { status: 200, body: { results } };
    const next = String(page[page.length - 1]!.id);
    return { status: 200, body: { results, paging: { next: { after: next, link: `/crm/v3/objects/${object}?after=${next}` } } } };
  }

  private validate(object: string, merged: Record<string, unknown>, creating: boolean): PropertyProblem[] {
    const problems: PropertyProblem[] = [];
    const email = merged.email;
    if (email !== undefined && email !== null && email !== '' && !EMAIL.test(String(email))) {
      problems.push({ isValid: false, message: `Email address ${String(email)} is invalid`, error: 'INVALID_EMAIL', name: 'email' });
    }
    if (
      object === 'deals' &&
      creating &&
      (merged.dealname === undefined || merged.dealname === null || String(merged.dealname).trim() === '')
    ) {
      problems.push({ isValid: false, message: 'dealname is required', error: 'REQUIRED_PROPERTY', name: 'dealname' });
    }
    const injected = this.rejected(merged);
    if (injected) problems.push({ isValid: false, message: injected.message, error: 'INVALID_PROPERTY_VALUE', name: injected.field });
    return problems;
  }

  private upsert(object: string, inputs: UpsertInput[]): SimResponse {
    const started = new Date(this.now()).toISOString();
    const seen = new Set<string>();
    for (const input of inputs) {
      if (typeof input?.id !== 'string' || input.id === '' || typeof input.idProperty !== 'string' || input.idProperty === '') {
        return error(400, 'Invalid input JSON: every input needs a non-empty string id and idProperty', 'VALIDATION_ERROR');
      }
      const key = `${input.idProperty}\u0000${input.id}`;
      if (seen.has(key)) return error(400, `Duplicate IDs found in batch input: [${input.id}]. IDs must be unique`, 'VALIDATION_ERROR');
      seen.add(key);
    }
    for (const idProperty of new Set(inputs.map((i) => i.idProperty))) {
      const refused = this.idPropertyProblem(object, idProperty);
      if (refused) return refused;
    }
    const checked = inputs.map((input) => {
      const existing = this.find(object, input.idProperty, input.id);
      // An empty string clears a property: it reads back as null.
      const given = Object.fromEntries(Object.entries(input.properties ?? {}).map(([k, v]) => [k, v === '' ? null : v]));
      const merged = { ...existing, ...given, [input.idProperty]: input.id };
      return { input, existing, merged, problems: this.validate(object, merged, !existing) };
    });
    // One invalid input fails the whole batch, objectWriteTraceId or not (multi-status is for
    // batch create only); the message lists the problems, not which input had them.
    const problems = checked.flatMap((c) => c.problems);
    if (problems.length) {
      return error(400, propertiesMessage(problems), 'VALIDATION_ERROR', {
        errors: problems.map((p) => ({ message: p.message, code: p.error, in: p.name })),
      });
    }
    const now = new Date(this.now()).toISOString();
    const results: Record<string, unknown>[] = [];
    for (const c of checked) {
      const record: SimRecord = {
        ...c.merged,
        id: c.existing?.id ?? this.newId(),
        createdAt: c.existing?.createdAt ?? now,
        updatedAt: now,
      };
      this.records(object).set(record.id, record);
      this.reindex(object, c.existing, record);
      this.wrote(object, record);
      results.push({
        ...view(record),
        new: !c.existing,
        ...(c.input.objectWriteTraceId ? { objectWriteTraceId: c.input.objectWriteTraceId } : {}),
      });
    }
    return { status: 200, body: { status: 'COMPLETE', results, startedAt: started, completedAt: new Date(this.now()).toISOString() } };
  }

  private read(object: string, body: ReadBody): SimResponse {
    if (body.idProperty !== undefined && body.idProperty !== 'hs_object_id') {
      const refused = this.idPropertyProblem(object, body.idProperty);
      if (refused) return refused;
    }
    const started = new Date(this.now()).toISOString();
    const results: Record<string, unknown>[] = [];
    const missing: string[] = [];
    for (const input of body.inputs) {
      const record = typeof input?.id === 'string' ? this.find(object, body.idProperty, input.id) : undefined;
      if (record) results.push(view(record, body.properties ?? []));
      else missing.push(String(input?.id));
    }
    const completed = new Date(this.now()).toISOString();
    if (missing.length) {
      const errors: BatchError[] = [
        {
          status: 'error',
          category: 'OBJECT_NOT_FOUND',
          message: `Could not get some ${singular(object)} objects, they may be deleted or not exist. Check that ids are valid.`,
          context: { ids: missing },
        },
      ];
      return { status: 207, body: { status: 'COMPLETE', results, numErrors: 1, errors, startedAt: started, completedAt: completed } };
    }
    return { status: 200, body: { status: 'COMPLETE', results, startedAt: started, completedAt: completed } };
  }

  private archive(object: string, inputs: { id?: string }[]): SimResponse {
    for (const input of inputs) {
      const id = Number(input?.id);
      const record = this.records(object).get(id);
      if (!record) continue;
      this.records(object).delete(id);
      this.reindex(object, record, undefined);
      this.stats.recordsDeleted++;
      // Archiving a record removes its associations.
      const associations = this.records('associations');
      for (const a of [...associations.values()]) {
        if ((a.fromObjectType === object && a.fromObjectId === String(id)) || (a.toObjectType === object && a.toObjectId === String(id))) {
          associations.delete(a.id);
          this.linkKeys.delete(
            `${String(a.fromObjectType)}/${String(a.fromObjectId)}/${String(a.toObjectType)}/${String(a.toObjectId)}/${String(a.associationTypeId)}`,
          );
        }
      }
    }
    return { status: 204 };
  }

  private associate(from: string, to: string, inputs: AssociationInput[] | undefined): SimResponse {
    if (!this.knownObject(from) || !this.knownObject(to))
      return error(400, `Unable to infer object type from: ${this.knownObject(from) ? to : from}`, 'VALIDATION_ERROR');
    if (!Array.isArray(inputs)) return error(400, 'Invalid input JSON: inputs must be an array', 'VALIDATION_ERROR');
    if (inputs.length > MAX_ASSOCIATION_BATCH)
      return error(400, `Batch input must not exceed ${MAX_ASSOCIATION_BATCH} inputs`, 'VALIDATION_ERROR');
    const started = new Date(this.now()).toISOString();
    const pair = `${from}/${to}`;
    const valid = new Set([HUBSPOT_ASSOCIATION_TYPES[pair], HUBSPOT_PRIMARY_ASSOCIATION_TYPES[pair]].filter((t) => t !== undefined));
    const results: Record<string, unknown>[] = [];
    const errors: BatchError[] = [];
    const store = this.records('associations');
    for (const input of inputs) {
      const fromId = String(input?.from?.id ?? '');
      const toId = String(input?.to?.id ?? '');
      const types = input?.types ?? [];
      const bad = types.find((t) => t.associationCategory === 'HUBSPOT_DEFINED' && !valid.has(t.associationTypeId));
      if (!types.length || bad) {
        return error(400, `${bad?.associationTypeId ?? 'no'} is not a valid association type from ${from} to ${to}`, 'VALIDATION_ERROR');
      }
      if (!this.records(from).has(Number(fromId)) || !this.records(to).has(Number(toId))) {
        const which = this.records(from).has(Number(fromId)) ? `${singular(to)} ${toId}` : `${singular(from)} ${fromId}`;
        errors.push({
          status: 'error',
          category: 'VALIDATION_ERROR',
          message: `No ${which} exists`,
          context: { fromObjectId: [fromId], toObjectId: [toId] },
        });
        continue;
      }
      for (const t of types) {
        const key = `${from}/${fromId}/${to}/${toId}/${t.associationTypeId}`;
        if (!this.linkKeys.has(key)) {
          this.linkKeys.add(key);
          const id = this.newId();
          store.set(id, {
            id,
            fromObjectType: from,
            fromObjectId: fromId,
            toObjectType: to,
            toObjectId: toId,
            associationCategory: t.associationCategory,
            associationTypeId: t.associationTypeId,
          });
        }
      }
      results.push({
        fromObjectTypeId: OBJECT_TYPE_IDS[from] ?? from,
        fromObjectId: Number(fromId),
        toObjectTypeId: OBJECT_TYPE_IDS[to] ?? to,
        toObjectId: Number(toId),
        labels: [],
      });
    }
    const completed = new Date(this.now()).toISOString();
    if (errors.length)
      return {
        status: 207,
        body: { status: 'COMPLETE', results, numErrors: errors.length, errors, startedAt: started, completedAt: completed },
      };
    return { status: 201, body: { status: 'COMPLETE', results, startedAt: started, completedAt: completed } };
  }

  private unassociate(from: string, to: string, inputs: AssociationArchiveInput[] | undefined): SimResponse {
    if (!this.knownObject(from) || !this.knownObject(to))
      return error(400, `Unable to infer object type from: ${this.knownObject(from) ? to : from}`, 'VALIDATION_ERROR');
    if (!Array.isArray(inputs)) return error(400, 'Invalid input JSON: inputs must be an array', 'VALIDATION_ERROR');
    if (inputs.length > MAX_ASSOCIATION_BATCH)
      return error(400, `Batch input must not exceed ${MAX_ASSOCIATION_BATCH} inputs`, 'VALIDATION_ERROR');
    const pairs = new Set<string>();
    for (const input of inputs) {
      const fromId = input?.from?.id;
      if (typeof fromId !== 'string' || !Array.isArray(input.to) || input.to.some((t) => typeof t?.id !== 'string')) {
        return error(400, 'Invalid input JSON: every input needs from.id and a to array of {id}', 'VALIDATION_ERROR');
      }
      // An association is one link seen from both ends: removing it from one side removes both.
      for (const t of input.to) {
        pairs.add(`${from}/${fromId}/${to}/${t.id!}`);
        pairs.add(`${to}/${t.id!}/${from}/${fromId}`);
      }
    }
    const store = this.records('associations');
    for (const a of [...store.values()]) {
      const pair = `${String(a.fromObjectType)}/${String(a.fromObjectId)}/${String(a.toObjectType)}/${String(a.toObjectId)}`;
      if (!pairs.has(pair)) continue;
      store.delete(a.id);
      this.linkKeys.delete(`${pair}/${String(a.associationTypeId)}`);
    }
    return { status: 204 };
  }
}

interface AssociationArchiveInput {
  from?: { id?: string };
  to?: { id?: string }[];
}

interface UpsertInput {
  id: string;
  idProperty: string;
  properties?: Record<string, unknown>;
  objectWriteTraceId?: string;
}

interface ReadBody {
  idProperty?: string;
  inputs: { id?: string }[];
  properties?: string[];
}

interface AssociationInput {
  from?: { id?: string };
  to?: { id?: string };
  types?: { associationCategory: string; associationTypeId: number }[];
}

export function startHubSpotSimulator(opts: HubSpotSimOptions): Promise<CrmSimulator> {
  return new HubSpotSim(opts).listen(opts.port, opts.host, opts.control);
}
