import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The shared base of the CRM simulators: HTTP plumbing, a record store per object, request
 * statistics, fault injection and a clock tests can move. Each CRM's simulator supplies its
 * routes and its throttle response; this base serves the common `/__sim/*` routes:
 *
 *   GET  /__sim/records/<object>  stored records (external ids included)
 *   GET  /__sim/stats             {requests, throttled, byEndpoint, byStatus, recordsWritten, recordsDeleted}
 *   POST /__sim/faults            {throttle:{requests, retryAfterSeconds}} | {errors5xx:{requests, status}}
 *                                 | {latencyMs} | {rejectWhen:{field, contains, echo?}} | {clear:true}
 *                                 | {garbage:{requests, kind: html|truncated|empty, status?}}: 200 (or
 *                                   `status`) with a body that is not the CRM's answer; nothing written
 *                                 | {resets:{requests, afterWrite?}}: the connection is destroyed without
 *                                   an answer; with afterWrite the request is carried out first (the
 *                                   write reached the CRM, its answer was lost)
 *                                 | {trickle:{requests, intervalMs}}: the real answer, one byte every
 *                                   intervalMs (a server that keeps the call alive byte by byte)
 *   POST /__sim/clock             {advanceSeconds}: move the simulator's clock (rate windows,
 *                                 Retry-After lockouts) forward, so a 3600 s wait passes at once
 *   POST /__sim/reset             records, stats, faults and clock back to the start
 *   POST   /__sim/records/<object>       adds a record (the body, as stored; a new id): drift made
 *   PATCH  /__sim/records/<object>/<id>  merges the body's top-level keys into a stored record
 *   DELETE /__sim/records/<object>/<id>  removes a stored record
 *                                 (drift as an admin or another tool makes it, for `pg2crm verify`: not
 *                                 API requests, so neither counted in the stats nor in the rate limits)
 *
 * The control routes are off unless the simulator is started with `control: true` (`pg2crm sim
 * --control`): they read every stored record and change the simulator's behaviour, and a
 * simulator may listen beyond loopback (`--host 0.0.0.0` in docker-compose.yml). Off, they
 * answer 404 like any unknown path.
 */
export interface SimControlOptions {
  /** Serve the `/__sim/*` routes (tests, the demo). */
  control?: boolean;
}

export interface SimRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  /** Parsed JSON for JSON (or untyped) bodies; the text for other content types (CSV, multipart). */
  body: unknown;
  /** The body's bytes, for binary uploads (e.g. Zoho's zipped CSV). */
  raw?: Buffer;
}

export interface SimResponse {
  status: number;
  headers?: Record<string, string | number>;
  body?: unknown;
  /** An injected transport fault: `reset` destroys the connection, `trickle` sends byte by byte. */
  transport?: { reset: true } | { trickleMs: number };
}

export type SimRecord = Record<string, unknown> & { id: number };

export interface Faults {
  throttle?: { requests: number; retryAfterSeconds: number };
  errors5xx?: { requests: number; status: number };
  latencyMs?: number;
  /** `echo`: the error message quotes the record sent, as some CRMs and proxies do. */
  rejectWhen?: { field: string; contains: string; echo?: boolean };
  garbage?: { requests: number; kind: 'html' | 'truncated' | 'empty'; status?: number };
  resets?: { requests: number; afterWrite?: boolean };
  trickle?: { requests: number; intervalMs: number };
}

/** Garbage bodies a proxy or a broken CRM answers with (`garbage` fault). */
const GARBAGE: Record<'html' | 'truncated' | 'empty', string> = {
  html: '<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>',
  truncated: '{"data":{"id":12',
  empty: '',
};

export interface SimStats {
  requests: number;
  throttled: number;
  byEndpoint: Record<string, number>;
  byStatus: Record<string, number>;
  recordsWritten: number;
  recordsDeleted: number;
}

/** At most `limit` requests in any rolling window of `windowMs` (how the CRMs count). */
export class RollingWindow {
  readonly limit: number;
  readonly windowMs: number;
  private readonly times: number[] = [];

  constructor(limit: number, windowMs: number) {
    this.limit = limit;
    this.windowMs = windowMs;
  }

  private prune(now: number): void {
    while (this.times.length > 0 && this.times[0]! <= now - this.windowMs) this.times.shift();
  }

  tryAcquire(now: number): boolean {
    this.prune(now);
    if (this.times.length >= this.limit) return false;
    this.times.push(now);
    return true;
  }

  remaining(now: number): number {
    this.prune(now);
    return this.limit - this.times.length;
  }

  /** Seconds until the oldest request leaves the window. */
  resetSeconds(now: number): number {
    this.prune(now);
    return this.times.length ? Math.ceil((this.times[0]! + this.windowMs - now) / 1000) : 0;
  }

  clear(): void {
    this.times.length = 0;
  }
}

/**
 * A record write the simulator accepted: the object, the record as stored, and when (epoch
 * milliseconds with a fraction: performance.timeOrigin + performance.now()).
 */
export type WriteListener = (object: string, record: SimRecord, atMs: number) => void;

export interface CrmSimulator {
  url: string;
  port: number;
  close(): Promise<void>;
  /**
   * For benches that time writes (bench:latency): `listener` is called for every record write
   * the simulator accepts, synchronously as the record is stored, before the answer goes out;
   * undefined removes it. Only simulators that store writes through `SimServer.wrote` call it
   * (HubSpot, Zendesk Sell); in-process only, it is not an HTTP route.
   */
  onWrite?(listener: WriteListener | undefined): void;
}

export abstract class SimServer {
  readonly store = new Map<string, Map<number, SimRecord>>();
  stats: SimStats = SimServer.emptyStats();
  faults: Faults = {};
  private clockOffsetMs = 0;
  private nextId = 1;
  private controlEnabled = false;
  private writeListener: WriteListener | undefined;

  static emptyStats(): SimStats {
    return { requests: 0, throttled: 0, byEndpoint: {}, byStatus: {}, recordsWritten: 0, recordsDeleted: 0 };
  }

  now(): number {
    return Date.now() + this.clockOffsetMs;
  }

  newId(): number {
    return this.nextId++;
  }

  records(object: string): Map<number, SimRecord> {
    let m = this.store.get(object);
    if (!m) this.store.set(object, (m = new Map()));
    return m;
  }

  /** Counts a record write the CRM accepted (stats.recordsWritten) and tells the write listener, if any (CrmSimulator.onWrite). */
  protected wrote(object: string, record: SimRecord): void {
    this.stats.recordsWritten++;
    this.writeListener?.(object, record, performance.timeOrigin + performance.now());
  }

  /** The CRM's own routes. */
  protected abstract handle(req: SimRequest): Promise<SimResponse> | SimResponse;
  /** The CRM's throttle response (status, body, headers), used by injected throttle storms. */
  protected abstract throttleResponse(retryAfterSeconds: number): SimResponse;
  /** Resets CRM-specific state (rate windows). */
  protected abstract resetLimits(): void;

  /** An injected per-record validation failure, if the record matches `rejectWhen`. */
  rejected(fields: Record<string, unknown>): { field: string; message: string } | undefined {
    const rule = this.faults.rejectWhen;
    if (!rule) return undefined;
    const v = fields[rule.field];
    if (v !== undefined && v !== null && String(v).includes(rule.contains)) {
      return { field: rule.field, message: `${rule.field} is invalid${rule.echo ? `: ${JSON.stringify(fields)}` : ''}` };
    }
    return undefined;
  }

  /** The `/__sim/records` routes: list, and drift made by hand (add, change, remove). */
  private editRecords(method: string, object: string, id: string | undefined, body: unknown): SimResponse {
    const records = this.records(object);
    if (id === undefined) {
      if (method === 'GET') return { status: 200, body: [...records.values()] };
      if (method === 'POST') {
        const record: SimRecord = { ...(body as Record<string, unknown>), id: this.newId() };
        records.set(record.id, record);
        return { status: 201, body: record };
      }
    }
    const record = records.get(Number(id));
    if (!record) return { status: 404, body: { error: `no ${object} ${id} stored` } };
    if (method === 'DELETE') {
      records.delete(record.id);
      return { status: 204 };
    }
    if (method === 'PATCH') {
      const changed: SimRecord = { ...record, ...(body as Record<string, unknown>), id: record.id };
      records.set(record.id, changed);
      return { status: 200, body: changed };
    }
    return { status: 404, body: { error: 'unknown simulator control route' } };
  }

  private async control(req: SimRequest): Promise<SimResponse> {
    // Control bodies are JSON however the client labels them (`curl -d` sends form encoding, fetch text/plain).
    if (typeof req.body === 'string') {
      try {
        req = { ...req, body: JSON.parse(req.body) };
      } catch {
        return { status: 400, body: { error: 'simulator control bodies are JSON' } };
      }
    }
    const [, , what, object, id] = req.path.split('/');
    if (what === 'records' && object) return this.editRecords(req.method, object, id, req.body);
    if (req.method === 'GET' && what === 'stats') return { status: 200, body: this.stats };
    if (req.method === 'POST' && what === 'faults') {
      const body = (req.body ?? {}) as Faults & { clear?: boolean };
      if (body.clear) this.faults = {};
      else this.faults = { ...this.faults, ...body };
      return { status: 200, body: this.faults };
    }
    if (req.method === 'POST' && what === 'clock') {
      const s = Number((req.body as { advanceSeconds?: number } | undefined)?.advanceSeconds ?? 0);
      this.clockOffsetMs += s * 1000;
      return { status: 200, body: { now: new Date(this.now()).toISOString() } };
    }
    if (req.method === 'POST' && what === 'reset') {
      this.store.clear();
      this.stats = SimServer.emptyStats();
      this.faults = {};
      this.clockOffsetMs = 0;
      this.resetLimits();
      return { status: 200, body: { reset: true } };
    }
    return { status: 404, body: { error: 'unknown simulator control route' } };
  }

  private async dispatch(req: SimRequest): Promise<SimResponse> {
    if (req.path.startsWith('/__sim/')) {
      return this.controlEnabled
        ? this.control(req)
        : { status: 404, body: { error: 'simulator control routes are off; start the simulator with --control (control: true)' } };
    }
    this.stats.requests++;
    const endpoint = `${req.method} ${req.path.replace(/\/\d+(?=\/|$)/g, '/{id}')}`;
    this.stats.byEndpoint[endpoint] = (this.stats.byEndpoint[endpoint] ?? 0) + 1;
    if (this.faults.latencyMs) await new Promise((r) => setTimeout(r, this.faults.latencyMs));
    let res: SimResponse;
    const storm = this.faults.throttle;
    const errors = this.faults.errors5xx;
    const { garbage, resets, trickle } = this.faults;
    if (storm && storm.requests > 0) {
      storm.requests--;
      res = this.throttleResponse(storm.retryAfterSeconds);
    } else if (errors && errors.requests > 0) {
      errors.requests--;
      res = { status: errors.status, body: { error: 'injected server error' } };
    } else if (garbage && garbage.requests > 0) {
      garbage.requests--;
      const html = garbage.kind === 'html';
      res = {
        status: garbage.status ?? 200,
        headers: { 'content-type': html ? 'text/html' : 'application/json' },
        body: GARBAGE[garbage.kind],
      };
    } else if (resets && resets.requests > 0) {
      resets.requests--;
      if (resets.afterWrite) await this.handle(req);
      res = { status: 0, transport: { reset: true } };
    } else {
      res = await this.handle(req);
      if (trickle && trickle.requests > 0) {
        trickle.requests--;
        res = { ...res, transport: { trickleMs: trickle.intervalMs } };
      }
    }
    if (res.status === 429 || (res.status === 403 && JSON.stringify(res.body ?? '').includes('REQUEST_LIMIT_EXCEEDED')))
      this.stats.throttled++;
    this.stats.byStatus[res.status] = (this.stats.byStatus[res.status] ?? 0) + 1;
    return res;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://sim');
      const bytes = Buffer.concat(chunks);
      const raw = bytes.toString('utf8');
      const type = req.headers['content-type'] ?? '';
      // Control routes take JSON whatever the content type (fetch sends a string as text/plain).
      const isJson = type === '' || type.includes('json') || url.pathname.startsWith('/__sim/');
      let body: unknown;
      try {
        body = raw ? (isJson ? JSON.parse(raw) : raw) : undefined;
      } catch {
        this.send(res, { status: 400, body: { errors: [{ error: { code: 'invalid_json', message: 'request body is not valid JSON' } }] } });
        return;
      }
      this.dispatch({
        method: req.method ?? 'GET',
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body,
        raw: bytes,
      }).then(
        (r) => this.send(res, r),
        (err: unknown) => this.send(res, { status: 500, body: { error: String(err) } }),
      );
    });
  }

  private send(res: ServerResponse, r: SimResponse): void {
    if (r.transport && 'reset' in r.transport) {
      res.socket?.destroy();
      return;
    }
    const headers: Record<string, string | number> = { ...r.headers };
    // A text or binary body with its own content type (multipart $batch, CSV, zip) goes out as is.
    const verbatim =
      (typeof r.body === 'string' || Buffer.isBuffer(r.body)) && Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
    if (r.body !== undefined && !verbatim) headers['content-type'] = 'application/json';
    const payload = r.body === undefined ? undefined : verbatim ? (r.body as string | Buffer) : JSON.stringify(r.body);
    if (r.transport && 'trickleMs' in r.transport && payload !== undefined) {
      const bytes = Buffer.from(payload);
      res.writeHead(r.status, { ...headers, 'content-length': bytes.length });
      let i = 0;
      const timer = setInterval(() => {
        if (res.destroyed || i >= bytes.length) {
          clearInterval(timer);
          res.end();
          return;
        }
        res.write(bytes.subarray(i, ++i));
      }, r.transport.trickleMs);
      return;
    }
    res.writeHead(r.status, headers);
    res.end(payload);
  }

  async listen(port: number, host = '127.0.0.1', control = false): Promise<CrmSimulator> {
    this.controlEnabled = control;
    const server = createServer((req, res) => this.onRequest(req, res));
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const actual = (server.address() as AddressInfo).port;
    const shownHost = host === '0.0.0.0' ? '127.0.0.1' : host;
    return {
      url: `http://${shownHost}:${actual}`,
      port: actual,
      onWrite: (listener) => {
        this.writeListener = listener;
      },
      close: () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    };
  }
}
