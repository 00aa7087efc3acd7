import { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError, errorMessage } from '../../errors.ts';
import { componentLogger } from '../../logger.ts';
import { header, send } from '../http.ts';
import type { CrmAdapter, CrmWrite, RateSignal, WriteOutcome } from '../crm-adapter.ts';
import { type BatchItemResponse, type BatchOperation, boundaryOf, buildBatchRequest, newBoundary, parseBatchResponse } from './multipart.ts';

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
 * The batch carries `Prefer: odata.continue-on-error`, so one invalid record does not stop the
 * others and the response has one part per operation, in order. Each operation counts as one
 * request toward the 6,000 per 5 minutes (service protection), hence `cost` = records.
 *
 * Microsoft advises starting with small batches and growing them while they stay fast
 * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits#how-to-maximize-throughput):
 * the adapter sends a call's records as consecutive `$batch` requests of `batchSize` operations,
 * starting at 10, doubling after each quick success up to 1,000, halving on a throttle or a slow batch.
 */
const API_MAX_BATCH = 1000;
const FIRST_BATCH = 10;
const log = componentLogger('crm.dynamics');

interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** `erp_id='O''Brien'` with the value percent-encoded for the URL (quotes doubled per OData). */
export function keySegment(field: string, value: string): string {
  return `${field}='${encodeURIComponent(value.replace(/'/g, "''"))}'`;
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

function retryAfter(headers: Record<string, string | string[] | undefined>): number | undefined {
  const v = Number(header(headers, 'retry-after'));
  return Number.isFinite(v) && v >= 0 ? v : undefined;
}

export class DynamicsAdapter implements CrmAdapter {
  readonly kind = 'dynamics';
  private readonly pool: Pool;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly apiPath: string;
  /** Operations per `$batch` request right now (Microsoft: start small, grow while fast). */
  batchSize = FIRST_BATCH;

  constructor(config: CrmConfig) {
    const base = new URL(config.baseUrl);
    this.pool = new Pool(base.origin, { connections: config.limits.concurrency, keepAliveTimeout: 30_000 });
    this.token = config.auth.token;
    this.timeoutMs = config.timeoutMs;
    this.apiPath = `${base.pathname.replace(/\/+$/, '')}/api/data/${config.apiVersion ?? 'v9.2'}`;
  }

  maxBatchSize(): number {
    return API_MAX_BATCH;
  }

  /** Each operation of a `$batch` is one request toward the service protection limit. */
  cost(records: CrmWrite[]): number {
    return records.length;
  }

  async ping(): Promise<void> {
    const res = await this.request('GET', `${this.apiPath}/WhoAmI`, {}, undefined, () => undefined);
    if (res.status !== 200) {
      throw new ConnectorError('CRM_PING', `Dynamics 365 answered HTTP ${res.status} to GET ${this.apiPath}/WhoAmI; check crm.baseUrl (the environment URL, e.g. https://org.crm.dynamics.com) and crm.apiVersion`);
    }
  }

  async write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]> {
    const out: WriteOutcome[] = [];
    while (out.length < records.length) {
      const chunk = records.slice(out.length, out.length + this.batchSize);
      let results: WriteOutcome[];
      try {
        results = await this.sendBatch(chunk, onSignal);
      } catch (err) {
        // Outcomes already known are kept; the rest is retried (or the whole call fails first time).
        if (out.length === 0 || !(err instanceof ConnectorError) || !err.retriable) throw err;
        const rest: WriteOutcome = { status: 'retry', code: err.code, message: err.message, ...(err.retryAfterSeconds !== undefined ? { retryAfterSeconds: err.retryAfterSeconds } : {}) };
        while (out.length < records.length) out.push(rest);
        break;
      }
      out.push(...results);
      const throttle = results.find((r) => r.status === 'retry' && r.code === 'RATE_LIMITED');
      if (throttle && out.length < records.length) {
        while (out.length < records.length) out.push(throttle);
      }
    }
    return out;
  }

  private operation(r: CrmWrite): BatchOperation {
    const url = `${this.apiPath}/${r.object}(${keySegment(r.externalIdField, r.externalId)})`;
    if (r.op === 'delete') return { method: 'DELETE', url };
    const body: Record<string, unknown> = { ...r.fields };
    for (const [nav, l] of Object.entries(r.lookups ?? {})) {
      body[`${nav}@odata.bind`] = l.externalId === null ? null : `/${l.object}(${keySegment(l.externalIdField, l.externalId)})`;
    }
    return { method: 'PATCH', url, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) };
  }

  private resize(next: number, why: string): void {
    const size = Math.max(1, Math.min(API_MAX_BATCH, next));
    if (size !== this.batchSize) log.debug({ from: this.batchSize, to: size, why }, 'batch size changed');
    this.batchSize = size;
  }

  /** One `$batch` request: one outcome per record, in order. */
  private async sendBatch(chunk: CrmWrite[], onSignal: (s: RateSignal) => void): Promise<WriteOutcome[]> {
    const boundary = newBoundary('batch');
    const started = Date.now();
    const res = await this.request(
      'POST',
      `${this.apiPath}/$batch`,
      { 'content-type': `multipart/mixed; boundary=${boundary}`, prefer: 'odata.continue-on-error' },
      buildBatchRequest(boundary, chunk.map((r) => this.operation(r))),
      onSignal,
    );
    if (res.status === 429) {
      this.resize(Math.floor(this.batchSize / 2), 'throttled');
      const after = retryAfter(res.headers);
      const err = odataError(res.text);
      const outcome: WriteOutcome = { status: 'retry', code: 'RATE_LIMITED', message: `Dynamics 365 service protection limit ${err.code ?? ''}: ${err.message ?? 'too many requests'}`.trim(), ...(after !== undefined ? { retryAfterSeconds: after } : {}) };
      return chunk.map(() => outcome);
    }
    if (res.status >= 500) {
      throw new ConnectorError('CRM_UNAVAILABLE', `Dynamics 365 answered HTTP ${res.status} to $batch: ${odataError(res.text).message ?? res.text.slice(0, 200)}`, { retriable: true });
    }
    const inner = boundaryOf(header(res.headers, 'content-type'));
    if (!inner) {
      const err = odataError(res.text);
      throw new ConnectorError('CRM_BATCH_REJECTED', `Dynamics 365 rejected the $batch request (HTTP ${res.status} ${err.code ?? ''}): ${err.message ?? res.text.slice(0, 200)}; this is a pg2crm bug or an unsupported environment, report it`);
    }
    let parts: BatchItemResponse[];
    try {
      parts = parseBatchResponse(res.text, inner);
    } catch (err) {
      throw new ConnectorError('CRM_BAD_RESPONSE', `Dynamics 365 $batch response is not valid multipart: ${errorMessage(err)}`, { retriable: true, cause: err });
    }
    const elapsed = Date.now() - started;
    if (elapsed > this.timeoutMs / 2) this.resize(Math.floor(this.batchSize / 2), 'slow batch');
    else if (chunk.length === this.batchSize) this.resize(this.batchSize * 2, 'fast batch');
    return chunk.map((r, i) => {
      const part = parts[i];
      // Only without continue-on-error does Dataverse stop early; the rest was not attempted.
      if (!part) return { status: 'retry', code: 'BATCH_STOPPED', message: 'Dynamics 365 stopped the batch before this operation' };
      return this.outcome(r, part, onSignal);
    });
  }

  private outcome(r: CrmWrite, part: BatchItemResponse, onSignal: (s: RateSignal) => void): WriteOutcome {
    if (part.status >= 200 && part.status < 300) {
      const id = /\(([0-9a-fA-F-]{36})\)\s*$/.exec(part.headers['odata-entityid'] ?? '')?.[1];
      return { status: 'done', ...(id ? { crmId: id } : {}) };
    }
    if (part.status === 404 && r.op === 'delete') return { status: 'done' };
    const err = odataError(part.body);
    const message = err.message ?? `HTTP ${part.status}`;
    // Only a bind to a record can miss its target; a null bind (disassociate) looks nothing up.
    if (part.status === 404 && Object.values(r.lookups ?? {}).some((l) => l.externalId !== null)) {
      return { status: 'retry', code: 'LOOKUP_PENDING', message: `${message} (a referenced record is not in Dynamics 365 yet)` };
    }
    if (part.status === 429) {
      const after = retryAfter(part.headers);
      onSignal({ throttled: true, ...(after !== undefined ? { retryAfterSeconds: after } : {}) });
      return { status: 'retry', code: 'RATE_LIMITED', message, ...(after !== undefined ? { retryAfterSeconds: after } : {}) };
    }
    if (part.status >= 500 || part.status === 408) return { status: 'retry', code: `HTTP_${part.status}`, message };
    const field = fieldOf(err.message);
    return { status: 'rejected', code: `HTTP_${part.status}_${err.code ?? 'error'}`, message, ...(field ? { field } : {}) };
  }

  private async request(method: 'GET' | 'POST', path: string, headers: Record<string, string>, body: string | undefined, onSignal: (s: RateSignal) => void): Promise<HttpResponse> {
    const out: HttpResponse = await send(this.pool, {
      method,
      path,
      headers: {
        authorization: `Bearer ${this.token}`,
        accept: 'application/json',
        'odata-version': '4.0',
        'odata-maxversion': '4.0',
        ...headers,
      },
      body,
      timeoutMs: this.timeoutMs,
      what: 'Dynamics 365 request',
    });
    const signal: RateSignal = {};
    const remaining = header(out.headers, 'x-ms-ratelimit-burst-remaining-xrm-requests');
    if (remaining !== undefined && remaining !== '' && Number.isFinite(Number(remaining))) signal.remaining = Number(remaining);
    if (out.status === 429) {
      signal.throttled = true;
      const after = retryAfter(out.headers);
      if (after !== undefined) signal.retryAfterSeconds = after;
    }
    onSignal(signal);
    if (out.status === 401) {
      throw new ConnectorError('CRM_AUTH', 'Dynamics 365 rejected the token (HTTP 401); check crm.auth.token', { retriable: false });
    }
    if (out.status === 403) {
      throw new ConnectorError('CRM_AUTH', 'Dynamics 365 refused the request (HTTP 403); give the application user a security role that may write these tables', { retriable: false });
    }
    return out;
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
