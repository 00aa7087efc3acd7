import { request as httpRequest } from 'node:http';
import { createServer } from 'node:https';
import { listenLoopback } from './loopback.ts';
import { timingSafeEqual } from 'node:crypto';

/**
 * A schema registry that requires HTTP basic auth over TLS, for the transport-security tests
 * (issue 12 §1): an https reverse proxy in front of the stack's registry that answers 401 without
 * the right `Authorization: Basic` and forwards everything else. Apicurio's own auth needs a
 * Keycloak (OIDC) server, which the stack does not run; Confluent-compatible registries in
 * production (Confluent Cloud, Aiven, Redpanda) take basic auth in front of the same API, which
 * is what this proxy shows the connector.
 *
 * `target`: the registry's http base URL (`.../apis/ccompat/v7`); the proxy's URL has the same
 * path, so `url` replaces the registry URL one for one.
 */
export interface RegistryAuthProxy {
  url: string;
  /** Requests answered 401. */
  refused: number;
  /** Requests forwarded with the right credentials. */
  forwarded: number;
  close(): Promise<void>;
}

export async function startRegistryAuthProxy(
  target: string,
  opts: { cert: string; key: string; username: string; password: string },
): Promise<RegistryAuthProxy> {
  const upstream = new URL(target);
  const expected = Buffer.from(`Basic ${Buffer.from(`${opts.username}:${opts.password}`).toString('base64')}`);
  const state = { refused: 0, forwarded: 0 };
  const server = createServer({ cert: opts.cert, key: opts.key }, (req, res) => {
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      state.refused++;
      req.resume();
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="schema-registry"' });
      res.end(JSON.stringify({ error_code: 401, message: 'Unauthorized' }));
      return;
    }
    state.forwarded++;
    const headers = { ...req.headers, host: upstream.host };
    delete headers.authorization;
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on('error', (err) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`registry unreachable: ${err.message}`);
    });
    req.pipe(out);
  });
  const { url, close } = await listenLoopback(server, 'https');
  return {
    url: `${url}${upstream.pathname}`,
    get refused() {
      return state.refused;
    },
    get forwarded() {
      return state.forwarded;
    },
    close,
  };
}
