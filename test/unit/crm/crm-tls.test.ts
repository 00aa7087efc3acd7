import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCa, makeCert } from '../../../scripts/stack/certs.ts';
import { crmFetch, crmPool, send } from '../../../src/crm/http.ts';
import { ConnectorError } from '../../../src/errors.ts';

/**
 * crm.tls (issue 12 §1): a CRM behind a corporate proxy that re-signs TLS with its own CA, and
 * one that also wants a client certificate. The HTTPS server here presents a certificate from a
 * CA made in the test with openssl, which Node's built-in CAs do not know.
 */
let server: Server;
let origin: string;
let ca: string;
let client: { cert: string; key: string };
let seenClientCert: string[] = [];

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pg2crm-crm-tls-'));
  const proxyCa = await makeCa(dir, 'corporate proxy CA');
  const serverPair = await makeCert(proxyCa, dir, 'server', ['localhost', '127.0.0.1']);
  const clientPair = await makeCert(proxyCa, dir, 'client', ['pg2crm-client']);
  ca = readFileSync(proxyCa.cert, 'utf8');
  client = { cert: readFileSync(clientPair.cert, 'utf8'), key: readFileSync(clientPair.key, 'utf8') };
  // requestCert without rejecting: the answer says which client certificate (if any) came.
  server = createServer(
    { cert: readFileSync(serverPair.cert), key: readFileSync(serverPair.key), ca, requestCert: true, rejectUnauthorized: false },
    (req, res) => {
      const sock = req.socket as import('node:tls').TLSSocket;
      const peer = sock.getPeerCertificate();
      const who = sock.authorized && peer.subject ? String(peer.subject.CN) : 'none';
      seenClientCert.push(who);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, client: who }));
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 30_000);

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const call = (pool: ReturnType<typeof crmPool>) =>
  send(pool, { method: 'GET', path: '/v2/contacts', headers: {}, timeoutMs: 5_000, what: 'GET /v2/contacts' });

describe('crm.tls', () => {
  it('without it, a certificate of an unknown CA fails naming crm.tls.ca', async () => {
    const pool = crmPool(origin, undefined, { connections: 1, keepAliveTimeout: 1_000 });
    const err = (await call(pool).catch((e: unknown) => e)) as ConnectorError;
    await pool.close();
    expect(err).toBeInstanceOf(ConnectorError);
    expect(err.code).toBe('CRM_TLS');
    expect(err.message).toMatch(
      /GET \/v2\/contacts failed: the CRM's TLS certificate is not trusted \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\).*set crm\.tls\.ca/,
    );
  });

  it('with crm.tls.ca the pool trusts the proxy CA', async () => {
    const pool = crmPool(origin, { ca }, { connections: 1, keepAliveTimeout: 1_000 });
    const res = await call(pool);
    await pool.close();
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ ok: true, client: 'none' });
  });

  it('with crm.tls.cert and key the pool presents the client certificate', async () => {
    const pool = crmPool(origin, { ca, ...client }, { connections: 1, keepAliveTimeout: 1_000 });
    const res = await call(pool);
    await pool.close();
    expect(JSON.parse(res.text)).toEqual({ ok: true, client: 'pg2crm-client' });
  });

  it('token endpoints (crmFetch) use crm.tls too', async () => {
    seenClientCert = [];
    const res = await crmFetch({ ca, ...client })(`${origin}/oauth/token`, { method: 'POST', body: 'grant_type=refresh_token' });
    expect(res.status).toBe(200);
    expect(seenClientCert).toEqual(['pg2crm-client']);
    const untrusted = await crmFetch(undefined)(`${origin}/oauth/token`, { method: 'POST' }).catch((e: unknown) => e);
    expect(untrusted).toBeInstanceOf(Error);
  });
});
