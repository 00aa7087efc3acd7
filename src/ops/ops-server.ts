import { createServer, type Server } from 'node:http';
import { componentLogger } from '../logger.ts';
import { registry } from './metrics.ts';
import { statusPageHtml } from './status-page.ts';
import type { TimeseriesSampler } from './timeseries.ts';

/**
 * /metrics (Prometheus), /healthz (the process is alive) and /readyz (ready = every role this
 * process runs is doing its job: the slot is streaming, the consumer joined its group); with a
 * sampler, also the status page (`/`, `/status`) and the history it plots (`/api/timeseries`).
 */
export class OpsServer {
  private readonly log = componentLogger('ops.server');
  private readonly port: number;
  private readonly ready: () => boolean;
  private readonly timeseries: TimeseriesSampler | undefined;
  private server: Server | undefined;

  constructor(port: number, ready: () => boolean, timeseries?: TimeseriesSampler) {
    this.port = port;
    this.ready = ready;
    this.timeseries = timeseries;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
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
      server.once('error', reject);
      server.listen(this.port, () => resolve());
    });
    this.log.info({ port: this.port }, 'ops endpoints listening');
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
