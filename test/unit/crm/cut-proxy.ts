import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A pass-through proxy in front of a CRM simulator that cuts chosen requests off: `reset`
 * destroys the connection (the adapter sees no answer: CRM_UNREACHABLE), `hang` never answers
 * (the adapter's crm.timeoutMs runs out: CRM_TIMEOUT). A cut request never reaches the simulator,
 * so nothing of it is written. A rule matches `METHOD path` (path with query) by regex; `skip`
 * lets that many matching requests through first; each rule cuts once.
 */
export interface CutRule {
  match: RegExp;
  how: 'reset' | 'hang';
  skip?: number;
}

export interface CutProxy {
  url: string;
  /** Requests cut so far ("METHOD /path"). */
  cut: string[];
  close(): Promise<void>;
}

export async function startCutProxy(target: string, rules: CutRule[]): Promise<CutProxy> {
  const skip = rules.map((r) => r.skip ?? 0);
  const left = rules.map(() => 1);
  const cut: string[] = [];
  const server = createServer((req, res) => {
    const key = `${req.method} ${req.url}`;
    const i = rules.findIndex((r, n) => left[n]! > 0 && r.match.test(key) && skip[n]!-- === 0);
    if (i >= 0) {
      left[i]!--;
      cut.push(key.split('?')[0]!);
      req.resume();
      if (rules[i]!.how === 'reset') req.socket.destroy();
      return; // hang: the answer never comes
    }
    // Piped through as it is, the Host header made the target's.
    const upstream = httpRequest(
      `${target}${req.url}`,
      { method: req.method, headers: { ...req.headers, host: new URL(target).host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => req.socket.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
