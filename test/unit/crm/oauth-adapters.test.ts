import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import { createAdapter } from '../../../src/crm/create-adapter.ts';
import type { CrmAdapter, CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { startDynamicsSimulator } from '../../../src/crm/dynamics/simulator.ts';
import { startHubSpotSimulator } from '../../../src/crm/hubspot/simulator.ts';
import { startZohoSimulator } from '../../../src/crm/zoho/simulator.ts';
import { startSalesforceSimulator } from '../../../src/crm/salesforce/simulator.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';
import type { SimOAuthClient } from '../../../src/crm/auth/token-sim.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { ConnectorError } from '../../../src/errors.ts';

/**
 * Each OAuth flow against its simulator: the adapter obtains a token at the simulator's token
 * endpoint, a token that expired in the CRM (the simulator's clock moved past it) is answered
 * with the vendor's 401, the adapter refreshes once and the write goes through; a CRM that
 * refuses even a fresh token stops the connector with CRM_AUTH naming the credential.
 */
let sim: CrmSimulator | undefined;
const adapters: CrmAdapter[] = [];
afterEach(async () => {
  for (const a of adapters.splice(0)) await a.close();
  await sim?.close();
  sim = undefined;
});

const secretDir = mkdtempSync(join(tmpdir(), 'pg2crm-oauth-'));
function secretFile(name: string, value: string): string {
  const f = join(secretDir, name);
  writeFileSync(f, `${value}\n`);
  return f;
}

const keys = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { type: 'spki', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
});
const otherKey = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  publicKeyEncoding: { type: 'spki', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
}).privateKey;

interface Case {
  name: string;
  kind: 'dynamics' | 'hubspot' | 'zoho' | 'salesforce' | 'zendesk-sell';
  start: (opts: {
    port: number;
    control?: boolean;
    tokenTtlSeconds: number;
    limit?: { requests: number; windowSeconds: number };
    oauthClients?: SimOAuthClient[];
  }) => Promise<CrmSimulator>;
  oauthClients?: SimOAuthClient[];
  /** The credential with something wrong the token endpoint refuses. */
  bad: (url: string) => Record<string, unknown>;
  auth: (url: string) => Record<string, unknown>;
  write: CrmWrite;
  tokenEndpoint: string;
  limit: { requests: number; windowSeconds: number };
}

const CASES: Case[] = [
  {
    name: 'dynamics client_credentials',
    kind: 'dynamics',
    bad: (url) => ({
      flow: 'client_credentials',
      tenantId: 'sim-tenant',
      clientId: 'sim-client',
      clientSecret: 'wrong-secret',
      tokenUrl: `${url}/sim-tenant/oauth2/v2.0/token`,
    }),
    start: startDynamicsSimulator,
    auth: (url) => ({
      flow: 'client_credentials',
      tenantId: 'sim-tenant',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('dyn', 'sim-secret'),
      tokenUrl: `${url}/sim-tenant/oauth2/v2.0/token`,
    }),
    write: { op: 'upsert', object: 'contacts', externalIdField: 'erp_id', externalId: '1', fields: { lastname: 'L1' } },
    tokenEndpoint: 'POST /sim-tenant/oauth2/v2.0/token',
    limit: { requests: 6000, windowSeconds: 300 },
  },
  {
    name: 'hubspot refresh_token',
    kind: 'hubspot',
    bad: () => ({ flow: 'refresh_token', clientId: 'sim-client', clientSecret: 'wrong-secret', refreshToken: 'sim-refresh-token' }),
    start: startHubSpotSimulator,
    auth: () => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret: 'sim-secret',
      refreshToken_FILE: secretFile('hs', 'sim-refresh-token'),
    }),
    write: { op: 'upsert', object: 'contacts', externalIdField: 'erp_id', externalId: '1', fields: { lastname: 'L1' } },
    tokenEndpoint: 'POST /oauth/2026-03/token',
    limit: { requests: 100, windowSeconds: 10 },
  },
  {
    name: 'zoho refresh_token',
    kind: 'zoho',
    bad: (url) => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret: 'wrong-secret',
      refreshToken: 'sim-refresh-token',
      tokenUrl: `${url}/oauth/v2/token`,
    }),
    start: startZohoSimulator,
    auth: (url) => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('zoho', 'sim-secret'),
      refreshToken_FILE: secretFile('zoho-r', 'sim-refresh-token'),
      tokenUrl: `${url}/oauth/v2/token`,
    }),
    write: { op: 'upsert', object: 'Contacts', externalIdField: 'ERP_Id', externalId: '1', fields: { Last_Name: 'L1' } },
    tokenEndpoint: 'POST /oauth/v2/token',
    limit: { requests: 50_000, windowSeconds: 86_400 },
  },
  {
    name: 'salesforce client_credentials',
    kind: 'salesforce',
    start: startSalesforceSimulator,
    auth: (url) => ({
      flow: 'client_credentials',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('sf', 'sim-secret'),
      tokenUrl: `${url}/services/oauth2/token`,
    }),
    bad: (url) => ({
      flow: 'client_credentials',
      clientId: 'sim-client',
      clientSecret: 'wrong-secret',
      tokenUrl: `${url}/services/oauth2/token`,
    }),
    write: { op: 'upsert', object: 'Contact', externalIdField: 'ERP_Id__c', externalId: '1', fields: { LastName: 'L1' } },
    tokenEndpoint: 'POST /services/oauth2/token',
    limit: { requests: 100_000, windowSeconds: 86_400 },
  },
  {
    name: 'salesforce jwt_bearer',
    kind: 'salesforce',
    start: startSalesforceSimulator,
    oauthClients: [{ clientId: 'sf-app', publicKey: keys.publicKey, usernames: ['integration@example.com'] }],
    auth: (url) => ({
      flow: 'jwt_bearer',
      clientId: 'sf-app',
      username: 'integration@example.com',
      privateKey_FILE: secretFile('sf-key', keys.privateKey),
      tokenUrl: `${url}/services/oauth2/token`,
    }),
    // Signed with another key: the connected app's certificate does not verify it.
    bad: (url) => ({
      flow: 'jwt_bearer',
      clientId: 'sf-app',
      username: 'integration@example.com',
      privateKey: otherKey,
      tokenUrl: `${url}/services/oauth2/token`,
    }),
    write: { op: 'upsert', object: 'Contact', externalIdField: 'ERP_Id__c', externalId: '1', fields: { LastName: 'L1' } },
    tokenEndpoint: 'POST /services/oauth2/token',
    limit: { requests: 100_000, windowSeconds: 86_400 },
  },
  {
    name: 'zendesk-sell refresh_token',
    kind: 'zendesk-sell',
    start: startZendeskSellSimulator,
    auth: (url) => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret: 'sim-secret',
      refreshToken_FILE: secretFile('sell', 'sim-refresh-token'),
      tokenUrl: `${url}/oauth2/token`,
    }),
    bad: (url) => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret: 'sim-secret',
      refreshToken: 'bad-refresh-token',
      tokenUrl: `${url}/oauth2/token`,
    }),
    write: { op: 'upsert', object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: '1', fields: { last_name: 'L1' } },
    tokenEndpoint: 'POST /oauth2/token',
    limit: { requests: 100, windowSeconds: 60 },
  },
];

function config(kind: string, url: string, auth: Record<string, unknown>, limit: { requests: number; windowSeconds: number }) {
  return parseConfig(
    {
      name: 't',
      postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
      kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
      crm: { kind, baseUrl: url, auth, limits: limit },
      mappings: [
        { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { lastname: 'last_name' } },
      ],
    },
    {},
  );
}

async function stats(s: CrmSimulator): Promise<{ requests: number; byEndpoint: Record<string, number>; byStatus: Record<string, number> }> {
  return (await (await fetch(`${s.url}/__sim/stats`)).json()) as never;
}

describe.each(CASES)('$name', (c) => {
  it('obtains a token, and after the CRM expired it refreshes once on the 401 and writes', async () => {
    sim = await c.start({ port: 0, control: true, tokenTtlSeconds: 120, ...(c.oauthClients ? { oauthClients: c.oauthClients } : {}) });
    const cfg = config(c.kind, sim.url, c.auth(sim.url), c.limit);
    const a = createAdapter(cfg.crm);
    adapters.push(a);
    expect((await a.write([c.write], () => undefined))[0]!.status).toBe('done');
    // The CRM's clock passes the token's expiry; the adapter still holds it as valid (its own clock).
    // (Not further: a JWT bearer assertion lives 3 minutes, and the clocks must agree on it.)
    await fetch(`${sim.url}/__sim/clock`, { method: 'POST', body: JSON.stringify({ advanceSeconds: 121 }) });
    const out = await a.write([{ ...c.write, fields: { lastname: 'L2' } }], () => undefined);
    expect(out[0]!.status).toBe('done');
    const st = await stats(sim);
    expect(st.byEndpoint[c.tokenEndpoint]).toBe(2);
    expect(st.byStatus['401']).toBe(1);
    expect(a.describeAuth?.()).toMatch(
      c.kind === 'salesforce'
        ? /^\w+ token, expiry not given \(renewed when the CRM answers 401\), instance http:\/\/127\.0\.0\.1:\d+$/
        : /^\w+ token, expires in \d+m\d\ds/,
    );
  });

  it('token requests are not API requests: they do not spend the API rate limit', async () => {
    sim = await c.start({
      port: 0,
      control: true,
      tokenTtlSeconds: 600,
      limit: { requests: 1, windowSeconds: 60 },
      ...(c.oauthClients ? { oauthClients: c.oauthClients } : {}),
    });
    const a = createAdapter(config(c.kind, sim.url, c.auth(sim.url), c.limit).crm);
    adapters.push(a);
    const out = await a.write([c.write], () => undefined);
    expect(out[0]!.status).toBe('done');
  });

  it('a credential the token endpoint refuses: CRM_AUTH naming the credential and the flow, permanent, without the secret', async () => {
    sim = await c.start({ port: 0, control: true, tokenTtlSeconds: 600, ...(c.oauthClients ? { oauthClients: c.oauthClients } : {}) });
    const a = createAdapter(config(c.kind, sim.url, c.bad(sim.url), c.limit).crm);
    adapters.push(a);
    const err = await a.write([c.write], () => undefined).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectorError);
    expect((err as ConnectorError).code).toBe('CRM_AUTH');
    expect((err as ConnectorError).retriable).toBe(false);
    expect((err as Error).message).toMatch(/crm\.auth/);
    expect((err as Error).message).not.toMatch(/wrong-secret|bad-refresh-token|PRIVATE KEY/);
  });

  it('a token endpoint answering 503 is retriable (the sink retries; the connector does not stop)', async () => {
    sim = await c.start({ port: 0, control: true, tokenTtlSeconds: 600, ...(c.oauthClients ? { oauthClients: c.oauthClients } : {}) });
    const a = createAdapter(config(c.kind, sim.url, c.auth(sim.url), c.limit).crm);
    adapters.push(a);
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ errors5xx: { requests: 1, status: 503 } }) });
    // A whole-call retriable error, or (single-record APIs) every record to retry: never CRM_AUTH.
    const r = await a.write([c.write], () => undefined).catch((e: unknown) => e);
    const retried =
      r instanceof ConnectorError ? r.retriable : Array.isArray(r) && r.every((o: { status: string }) => o.status === 'retry');
    expect(retried, String(r instanceof Error ? r.message : JSON.stringify(r))).toBe(true);
    expect((await a.write([c.write], () => undefined))[0]!.status).toBe('done');
  });
});

describe('flow details', () => {
  it('Dynamics with a certificate: a client assertion signed with the key, verified with the certificate the app holds', async () => {
    // Test-only key and self-signed certificate (openssl req -x509 -newkey rsa:2048 -nodes).
    const dir = new URL('./fixtures/', import.meta.url).pathname;
    const { readFileSync } = await import('node:fs');
    const certificate = readFileSync(join(dir, 'entra-test-cert.pem'), 'utf8');
    sim = await startDynamicsSimulator({
      port: 0,
      control: true,
      tokenTtlSeconds: 600,
      oauthClients: [{ clientId: 'cert-app', publicKey: certificate }],
    });
    const auth = {
      flow: 'client_credentials',
      tenantId: 'sim-tenant',
      clientId: 'cert-app',
      privateKey_FILE: join(dir, 'entra-test-key.pem'),
      certificate_FILE: join(dir, 'entra-test-cert.pem'),
      tokenUrl: `${sim.url}/sim-tenant/oauth2/v2.0/token`,
    };
    const a = createAdapter(config('dynamics', sim.url, auth, { requests: 6000, windowSeconds: 300 }).crm);
    adapters.push(a);
    expect((await a.write([CASES[0]!.write], () => undefined))[0]!.status).toBe('done');
    // Signed with another key: refused as Entra refuses it (invalid_client), permanent.
    const wrongKey = secretFile('other-key', otherKey);
    const b = createAdapter(
      config('dynamics', sim.url, { ...auth, privateKey_FILE: wrongKey }, { requests: 6000, windowSeconds: 300 }).crm,
    );
    adapters.push(b);
    await expect(b.write([CASES[0]!.write], () => undefined)).rejects.toMatchObject({
      code: 'CRM_AUTH',
      retriable: false,
      message: expect.stringMatching(/invalid_client .*AADSTS700027/),
    });
  });

  it('Zoho: past ten access tokens in ten minutes the accounts server blocks; that is retriable, not a bad credential', async () => {
    sim = await startZohoSimulator({ port: 0, control: true, tokenTtlSeconds: 600 });
    const form = 'grant_type=refresh_token&client_id=sim-client&client_secret=sim-secret&refresh_token=sim-refresh-token';
    for (let i = 0; i < 10; i++)
      expect(
        (
          await fetch(`${sim.url}/oauth/v2/token`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: form,
          })
        ).status,
      ).toBe(200);
    const a = createAdapter(config('zoho', sim.url, CASES[2]!.auth(sim.url), CASES[2]!.limit).crm);
    adapters.push(a);
    const err = await a.write([CASES[2]!.write], () => undefined).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'CRM_TOKEN_UNAVAILABLE',
      retriable: true,
      message: expect.stringMatching(/too many requests continuously/),
    });
    await fetch(`${sim.url}/__sim/clock`, { method: 'POST', body: JSON.stringify({ advanceSeconds: 601 }) });
    expect((await a.write([CASES[2]!.write], () => undefined))[0]!.status).toBe('done');
  });

  it('Zoho answers a wrong secret with HTTP 200 {"error":"invalid_client"}: no token, CRM_AUTH', async () => {
    sim = await startZohoSimulator({ port: 0, control: true });
    const res = await fetch(
      `${sim.url}/oauth/v2/token?grant_type=refresh_token&client_id=sim-client&client_secret=nope&refresh_token=sim-refresh-token`,
      { method: 'POST' },
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ error: 'invalid_client' });
  });

  it('simulators still accept the static --token and never expire it', async () => {
    sim = await startDynamicsSimulator({ port: 0, control: true, tokenTtlSeconds: 1 });
    await fetch(`${sim.url}/__sim/clock`, { method: 'POST', body: JSON.stringify({ advanceSeconds: 86_400 }) });
    const res = await fetch(`${sim.url}/api/data/v9.2/WhoAmI`, { headers: { authorization: 'Bearer sim-token' } });
    expect(res.status).toBe(200);
  });
});
