import { Pool } from 'undici';
import type { CrmConfig } from '../../config.ts';
import { ConnectorError, errorMessage } from '../../errors.ts';
import { componentLogger } from '../../logger.ts';
import { badResponse, header, send } from '../http.ts';
import type { CrmAdapter, CrmWrite, RateSignal, RetryKind, WriteOutcome } from '../crm-adapter.ts';
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
    return typeof body === 'object' && body !== null && typeof (body as { UserId?: unknown }).UserId === 'string' && GUID.test((body as { UserId: string }).UserId);
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

/** The retry kind of a whole-request error turned into the outcome of the records it left undecided. */
function kindOf(code: string): { kind?: RetryKind } {
  if (code === 'CRM_BAD_RESPONSE') return { kind: 'bad-response' };
  if (code === 'CRM_UNAVAILABLE') return { kind: 'server' };
  if (code === 'RATE_LIMITED') return { kind: 'throttle' };
  return {};
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
    // A proxy or captive portal answering 200 must not pass `pg2crm check`.
    if (!isWhoAmI(res.text)) throw badResponse(`Dynamics 365 GET ${this.apiPath}/WhoAmI`, res.status, res.text, '{"UserId":"<guid>",…}');
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
        const rest: WriteOutcome = { status: 'retry', code: err.code, ...kindOf(err.code), message: err.message, ...(err.retryAfterSeconds !== undefined ? { retryAfterSeconds: err.retryAfterSeconds } : {}) };
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
      const outcome: WriteOutcome = { status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', message: `Dynamics 365 service protection limit ${err.code ?? ''}: ${err.message ?? 'too many requests'}`.trim(), ...(after !== undefined ? { retryAfterSeconds: after } : {}) };
      return chunk.map(() => outcome);
    }
    if (res.status >= 500) {
      throw new ConnectorError('CRM_UNAVAILABLE', `Dynamics 365 answered HTTP ${res.status} to $batch: ${odataError(res.text).message ?? res.text.slice(0, 200)}`, { retriable: true });
    }
    const what = `Dynamics 365 POST ${this.apiPath}/$batch`;
    const multipart = 'multipart/mixed with one part per operation';
    const inner = boundaryOf(header(res.headers, 'content-type'));
    if (!inner) {
      // A 2xx that is not multipart is not Dataverse's answer (a proxy's page, a cut-off body).
      if (res.status >= 200 && res.status < 300) throw badResponse(what, res.status, res.text, multipart);
      const err = odataError(res.text);
      throw new ConnectorError('CRM_BATCH_REJECTED', `Dynamics 365 rejected the $batch request (HTTP ${res.status} ${err.code ?? ''}): ${err.message ?? res.text.slice(0, 200)}; this is a pg2crm bug or an unsupported environment, report it`);
    }
    let parts: BatchItemResponse[];
    try {
      parts = parseBatchResponse(res.text, inner);
    } catch (err) {
      const bad = badResponse(what, res.status, res.text, `${multipart} (${errorMessage(err)})`);
      throw new ConnectorError(bad.code, bad.message, { retriable: true, cause: err });
    }
    // More answers than operations: which part is whose cannot be told, so none is trusted.
    if (parts.length > chunk.length) {
      throw new ConnectorError('CRM_BAD_RESPONSE', `${what}: HTTP ${res.status} with ${parts.length} parts for ${chunk.length} operations, expected one part per operation; the CRM or a proxy in front of it answered something else`, { retriable: true });
    }
    const elapsed = Date.now() - started;
    if (elapsed > this.timeoutMs / 2) this.resize(Math.floor(this.batchSize / 2), 'slow batch');
    else if (chunk.length === this.batchSize) this.resize(this.batchSize * 2, 'fast batch');
    const last = parts.at(-1);
    const stopped = last !== undefined && (last.status < 200 || last.status >= 300);
    return chunk.map((r, i) => {
      const part = parts[i];
      if (!part) {
        // Dataverse stops at a failure only without continue-on-error (always sent): after a
        // failed part that is what happened; after a successful one, the answer is cut short.
        if (stopped) return { status: 'retry', code: 'BATCH_STOPPED', message: 'Dynamics 365 stopped the batch before this operation' };
        return { status: 'retry', code: 'CRM_BAD_RESPONSE', kind: 'bad-response', message: `${what}: HTTP ${res.status} with ${parts.length} parts for ${chunk.length} operations, none for operation ${i + 1}; the CRM or a proxy in front of it answered something else` };
      }
      return this.outcome(r, part, onSignal, i);
    });
  }

  private outcome(r: CrmWrite, part: BatchItemResponse, onSignal: (s: RateSignal) => void, index: number): WriteOutcome {
    if (part.status >= 200 && part.status < 300) {
      const what = `Dynamics 365 $batch part ${index + 1} (${r.op === 'delete' ? 'DELETE' : 'PATCH'} ${r.object})`;
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
      return { status: 'done', ...(id ? { crmId: id } : {}) };
    }
    if (part.status === 404 && r.op === 'delete') return { status: 'done' };
    const err = odataError(part.body);
    const message = err.message ?? `HTTP ${part.status}`;
    // Only a bind to a record can miss its target; a null bind (disassociate) looks nothing up.
    if (part.status === 404 && Object.values(r.lookups ?? {}).some((l) => l.externalId !== null)) {
      return { status: 'retry', code: 'LOOKUP_PENDING', kind: 'pending', message: `${message} (a referenced record is not in Dynamics 365 yet)` };
    }
    if (part.status === 429) {
      const after = retryAfter(part.headers);
      onSignal({ throttled: true, ...(after !== undefined ? { retryAfterSeconds: after } : {}) });
      return { status: 'retry', code: 'RATE_LIMITED', kind: 'throttle', message, ...(after !== undefined ? { retryAfterSeconds: after } : {}) };
    }
    if (part.status >= 500) return { status: 'retry', code: `HTTP_${part.status}`, kind: 'server', message };
    if (part.status === 408) return { status: 'retry', code: `HTTP_${part.status}`, kind: 'timeout', message };
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
