import { createServer } from 'node:http';
import { bodyOf, listenLoopback } from './loopback.ts';

/**
 * A proxy in front of a CRM simulator that answers chosen requests itself, to rehearse what the
 * simulators' `garbage` fault cannot aim at: one request of a call that makes several (HubSpot's
 * association or archive step after the upsert), or an answer whose envelope is right but whose
 * content is not (a Dataverse `$batch` part without its `OData-EntityId`).
 *
 * A rule matches `METHOD path` (path with query) by regex, `times` times (default once). With
 * `forward`, the request reaches the simulator (it is carried out) and `answer` gets its real
 * answer to rewrite; without, the simulator never sees the request (nothing is written).
 */
export interface ProxyAnswer {
  status: number;
  headers: Record<string, string>;
  text: string;
}

export interface ProxyRule {
  match: RegExp;
  times?: number;
  forward?: boolean;
  answer: (real: ProxyAnswer | undefined) => ProxyAnswer;
}

export interface AnswerProxy {
  url: string;
  /** How many times each rule answered, in rule order. */
  hits: number[];
  close(): Promise<void>;
}

/** The garbage a proxy or a broken CRM answers with, as the simulators' `garbage` fault sends it. */
export const GARBAGE = {
  html: {
    status: 200,
    headers: { 'content-type': 'text/html' },
    text: '<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>',
  },
  truncated: { status: 200, headers: { 'content-type': 'application/json' }, text: '{"results":[{"id":"12' },
  empty: { status: 200, headers: { 'content-type': 'application/json' }, text: '' },
} satisfies Record<string, ProxyAnswer>;

export async function startAnswerProxy(target: string, rules: ProxyRule[]): Promise<AnswerProxy> {
  const left = rules.map((r) => r.times ?? 1);
  const hits = rules.map(() => 0);
  const server = createServer((req, res) => {
    void (async () => {
      const body = await bodyOf(req);
      const key = `${req.method} ${req.url}`;
      const i = rules.findIndex((r, n) => left[n]! > 0 && r.match.test(key));
      const rule = i >= 0 ? rules[i] : undefined;
      let real: ProxyAnswer | undefined;
      if (!rule || rule.forward) {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers))
          if (typeof v === 'string' && k !== 'host' && k !== 'content-length' && k !== 'connection') headers[k] = v;
        const r = await fetch(`${target}${req.url}`, { method: req.method!, headers, ...(body.length ? { body } : {}) });
        const h: Record<string, string> = {};
        r.headers.forEach((v, k) => {
          if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection' && k !== 'keep-alive') h[k] = v;
        });
        real = { status: r.status, headers: h, text: await r.text() };
      }
      let out = real!;
      if (rule) {
        left[i]!--;
        hits[i]!++;
        out = rule.answer(real);
      }
      res.writeHead(out.status, out.headers);
      res.end(out.text);
    })().catch((err: unknown) => {
      res.writeHead(599);
      res.end(String(err));
    });
  });
  const { url, close } = await listenLoopback(server);
  return { url, hits, close };
}
