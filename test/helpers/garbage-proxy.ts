import { createServer, request } from 'node:http';
import { listenLoopback } from './loopback.ts';

/**
 * A pass-through proxy in front of a CRM simulator that arms the simulator's own `garbage` fault
 * just before forwarding the requests `when` picks, so one step in the middle of a multi-request
 * flow (a Bulk job's result download, a job poll) gets the garbage while every other step gets the
 * real answer. The simulator's fault counter alone cannot aim that well: polls vary in number.
 * The Host header is forwarded as is, so URLs the simulator builds from it (Zoho's download_url)
 * come back through the proxy.
 */
export interface GarbageProxy {
  url: string;
  /** Requests the proxy turned into garbage so far ("METHOD /path"). */
  hits: string[];
  close(): Promise<void>;
}

export async function garbageProxy(
  target: string,
  when: (method: string, path: string) => boolean,
  kind: 'html' | 'truncated' | 'empty',
  times = 1,
): Promise<GarbageProxy> {
  return startProxy(target, when, times, { kind });
}

/**
 * The same proxy, but the picked requests reach the simulator (the write happens) and their JSON
 * answer is replaced by `rewrite(answer)`: well-formed JSON in the wrong shape (a result short,
 * an id missing), which no garbage fault can produce.
 */
export async function rewriteProxy(
  target: string,
  when: (method: string, path: string) => boolean,
  rewrite: (body: unknown) => unknown,
  times = 1,
): Promise<GarbageProxy> {
  return startProxy(target, when, times, { rewrite });
}

async function startProxy(
  target: string,
  when: (method: string, path: string) => boolean,
  times: number,
  how: { kind: 'html' | 'truncated' | 'empty' } | { rewrite: (body: unknown) => unknown },
): Promise<GarbageProxy> {
  const t = new URL(target);
  const hits: string[] = [];
  let left = times;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const path = req.url ?? '/';
        let rewrite: ((body: unknown) => unknown) | undefined;
        if (left > 0 && when(req.method ?? 'GET', path.split('?')[0]!)) {
          left--;
          hits.push(`${req.method} ${path.split('?')[0]}`);
          if ('kind' in how)
            await fetch(`${target}/__sim/faults`, { method: 'POST', body: JSON.stringify({ garbage: { requests: 1, kind: how.kind } }) });
          else rewrite = how.rewrite;
        }
        const up = request({ host: t.hostname, port: t.port, method: req.method, path, headers: req.headers }, (upRes) => {
          if (!rewrite) {
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            upRes.pipe(res);
            return;
          }
          const parts: Buffer[] = [];
          upRes.on('data', (c: Buffer) => parts.push(c));
          upRes.on('end', () => {
            const body = JSON.stringify(rewrite(JSON.parse(Buffer.concat(parts).toString('utf8'))));
            res.writeHead(upRes.statusCode ?? 502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
            res.end(body);
          });
        });
        up.on('error', () => res.destroy());
        up.end(Buffer.concat(chunks));
      })();
    });
  });
  const { url, close } = await listenLoopback(server);
  return { url, hits, close };
}
