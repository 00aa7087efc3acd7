import { createServer, type Server } from 'node:http';
import { componentLogger } from '../logger.ts';
import { registry } from './metrics.ts';

/**
 * /metrics (Prometheus), /healthz (the process is alive) and /readyz (ready = every role this
 * process runs is doing its job: the slot is streaming, the consumer joined its group).
 */
export class OpsServer {
  private readonly log = componentLogger('ops.server');
  private readonly port: number;
  private readonly ready: () => boolean;
  private server: Server | undefined;

  constructor(port: number, ready: () => boolean) {
    this.port = port;
    this.ready = ready;
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
