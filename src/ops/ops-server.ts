import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConnectorError } from '../errors.ts';
import { componentLogger } from '../logger.ts';
import { registry } from '../metrics.ts';
import { statusPageHtml } from './status-page.ts';
import type { TimeseriesSampler } from './timeseries.ts';

export interface OpsServerOptions {
  /** Listen address; loopback unless the operator opens it (ops.host). */
  host?: string;
  /** Bearer token for /metrics and /api/* (ops.token); probes stay open. */
  token?: string | undefined;
}

/**
 * /metrics (Prometheus), /healthz (the process is alive) and /readyz (ready = every role this
 * process runs is doing its job: the slot is streaming, the consumer joined its group); with a
 * sampler, also the status page (`/`, `/status`) and the history it plots (`/api/timeseries`).
 *
 * With a token, /metrics and /api/* answer 401 without `Authorization: Bearer <token>`. The
 * status page itself is a static shell without data (it is what a browser opens, and a browser
 * cannot send the header on navigation); its script takes the token from the URL fragment
 * (`/status#token=...`, never sent to the server) or asks for it, and sends it with each fetch.
 */
export class OpsServer {
  private readonly log = componentLogger('ops.server');
  private readonly port: number;
  private readonly host: string;
  private readonly tokenDigest: Buffer | undefined;
  private readonly ready: () => boolean;
  private readonly timeseries: TimeseriesSampler | undefined;
  private server: Server | undefined;

  constructor(port: number, ready: () => boolean, timeseries?: TimeseriesSampler, options: OpsServerOptions = {}) {
    this.port = port;
    this.host = options.host ?? '127.0.0.1';
    this.tokenDigest = options.token ? digest(options.token) : undefined;
    this.ready = ready;
    this.timeseries = timeseries;
  }

  /** Where the server listens (after start). */
  address(): AddressInfo | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a : undefined;
  }

  /** Whether the request carries the configured bearer token (always, without one). */
  private authorized(req: IncomingMessage): boolean {
    if (!this.tokenDigest) return true;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    // Compared as digests: equal lengths for timingSafeEqual, and no timing hint of the token.
    return !!m && timingSafeEqual(digest(m[1]!), this.tokenDigest);
  }

  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      if ((path === '/metrics' || path.startsWith('/api/')) && !this.authorized(req)) {
        res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="pg2crm ops"' });
        res.end('send Authorization: Bearer <ops.token>\n');
        return;
      }
      if (path === '/metrics') {
        registry
          .metrics()
          .then((body) => {
            res.writeHead(200, { 'content-type': registry.contentType });
            res.end(body);
          })
          .catch((err: unknown) => {
            res.writeHead(500);
            res.end(String(err));
          });
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
        return;
      }
      if (path === '/readyz') {
        const ok = this.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
        res.end(ok ? 'ready\n' : 'not ready\n');
        return;
      }
      if (this.timeseries && (path === '/' || path === '/status')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(statusPageHtml());
        return;
      }
      if (this.timeseries && path === '/api/timeseries') {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(this.timeseries.snapshot()));
        return;
      }
      res.writeHead(404);
      res.end();
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: Error & { code?: string }) =>
        reject(
          new ConnectorError(
            'OPS_LISTEN',
            `cannot listen on ${this.host}:${this.port} for the ops endpoints (${err.code ?? err.message}); set ops.host to an address of this machine (127.0.0.1, or 0.0.0.0 for every interface) and ops.port to a free port`,
            { cause: err },
          ),
        ),
      );
      server.listen(this.port, this.host, () => resolve());
    });
    this.log.info(
      { host: this.host, port: this.address()?.port ?? this.port, tokenRequired: !!this.tokenDigest },
      'ops endpoints listening',
    );
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}
