import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDynamicsSimulator } from '../../src/crm/dynamics/simulator.ts';
import { startHubSpotSimulator } from '../../src/crm/hubspot/simulator.ts';
import { startSalesforceSimulator } from '../../src/crm/salesforce/simulator.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import { startZohoSimulator } from '../../src/crm/zoho/simulator.ts';
import { readyConfig, simStats, useHarness } from '../helpers/connector-harness.ts';
import { uniqueName, withPg } from '../helpers/fixtures.ts';

/**
 * Issue 11 §1: a connector on an OAuth credential runs across several token lifetimes while
 * changes flow. Each OAuth CRM's simulator issues tokens that live TTL seconds and refuses them
 * after (the vendor's 401); the connector (a real process, secrets through *_FILE) must renew
 * them ahead of expiry or after the 401, write everything, dead-letter nothing and keep running.
 * The five CRMs (Zendesk Sell's OAuth too) run one after the other, each with its own simulator,
 * tables and connector (five connectors creating slots at once on two cores made one wait past
 * its deadline).
 */
const h = useHarness();
const env = h.env;
const TTL_SECONDS = 6;
/** Changes keep flowing for this long: 3.5 token lifetimes. */
const CHANGE_SECONDS = TTL_SECONDS * 3.5;

const secretDir = mkdtempSync(join(tmpdir(), 'pg2crm-oauth-it-'));
function secretFile(name: string, value: string): string {
  const f = join(secretDir, name);
  writeFileSync(f, `${value}\n`, { mode: 0o600 });
  return f;
}

interface OAuthCrm {
  kind: 'salesforce' | 'dynamics' | 'zoho' | 'hubspot' | 'zendesk-sell';
  start: (opts: {
    port: number;
    control?: boolean;
    tokenTtlSeconds: number;
    limit: { requests: number; windowSeconds: number };
  }) => Promise<CrmSimulator>;
  limit: { requests: number; windowSeconds: number };
  auth: (url: string) => Record<string, unknown>;
  tokenEndpoint: string;
}

const CRMS: OAuthCrm[] = [
  {
    kind: 'salesforce',
    start: startSalesforceSimulator,
    limit: { requests: 100_000, windowSeconds: 86_400 },
    auth: (url) => ({
      flow: 'client_credentials',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('sf-secret', 'sim-secret'),
      tokenUrl: `${url}/services/oauth2/token`,
    }),
    tokenEndpoint: 'POST /services/oauth2/token',
  },
  {
    kind: 'dynamics',
    start: startDynamicsSimulator,
    limit: { requests: 100_000, windowSeconds: 300 },
    auth: (url) => ({
      flow: 'client_credentials',
      tenantId: 'sim-tenant',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('dyn-secret', 'sim-secret'),
      tokenUrl: `${url}/sim-tenant/oauth2/v2.0/token`,
    }),
    tokenEndpoint: 'POST /sim-tenant/oauth2/v2.0/token',
  },
  {
    kind: 'zoho',
    start: startZohoSimulator,
    limit: { requests: 1_000_000, windowSeconds: 86_400 },
    auth: (url) => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('zoho-secret', 'sim-secret'),
      refreshToken_FILE: secretFile('zoho-refresh', 'sim-refresh-token'),
      tokenUrl: `${url}/oauth/v2/token`,
    }),
    tokenEndpoint: 'POST /oauth/v2/token',
  },
  {
    kind: 'hubspot',
    start: startHubSpotSimulator,
    limit: { requests: 10_000, windowSeconds: 10 },
    auth: () => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('hs-secret', 'sim-secret'),
      refreshToken_FILE: secretFile('hs-refresh', 'sim-refresh-token'),
    }),
    tokenEndpoint: 'POST /oauth/2026-03/token',
  },
  {
    kind: 'zendesk-sell',
    start: startZendeskSellSimulator,
    limit: { requests: 100_000, windowSeconds: 60 },
    auth: (url) => ({
      flow: 'refresh_token',
      clientId: 'sim-client',
      clientSecret_FILE: secretFile('sell-secret', 'sim-secret'),
      refreshToken_FILE: secretFile('sell-refresh', 'sim-refresh-token'),
      tokenUrl: `${url}/oauth2/token`,
    }),
    tokenEndpoint: 'POST /oauth2/token',
  },
];

const figures: string[] = [];
afterAll(async () => {
  console.log(`OAuth across token lifetimes (TTL ${TTL_SECONDS} s, changes for ${CHANGE_SECONDS} s):\n${figures.join('\n')}`);
});

describe('OAuth connectors across token lifetimes', () => {
  it.each(CRMS)('$kind: everything written, no dead letters, still running', async ({ kind, start, limit, auth, tokenEndpoint }) => {
    h.printOnFailure();
    const sim = await h.simulator(start, { control: true, tokenTtlSeconds: TTL_SECONDS, limit });
    const schema = uniqueName(`oa_${kind.replace('-', '_').slice(0, 6)}`);
    const ready = readyConfig(kind);
    const customers = ready.customers;
    const conn = await h.connector(schema, sim.url, {
      snapshot: 'never',
      extra: { crm: ready.crm(sim.url, { auth: auth(sim.url), limit }), mappings: [ready.customersIn(schema)] },
    });
    const proc = await conn.running();
    const started = Date.now();
    let round = 0;
    // Changes every 500 ms for CHANGE_SECONDS: inserts and updates of earlier rows.
    await withPg(env.PG_URL, async (c) => {
      while (Date.now() - started < CHANGE_SECONDS * 1000) {
        round++;
        await c.query(
          `INSERT INTO ${schema}.customers (first_name, last_name, email, company)
           SELECT 'F' || g, 'L' || g, 'r${round}.' || g || '@ok.example', 'Co ' || g FROM generate_series(1, 10) g`,
        );
        await c.query(`UPDATE ${schema}.customers SET last_name = 'L' || id || '-r${round}' WHERE id % 7 = ${round % 7}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    });
    const changeSeconds = (Date.now() - started) / 1000;
    const records = await conn.crmMatchesTable(sim, customers, (last) => expect(last.slice(0, 10)).toEqual([]), {
      timeoutMs: 90_000,
      everyMs: 500,
      what: `${kind} equal to the table`,
    });
    const stats = await simStats<{ byEndpoint: Record<string, number>; byStatus: Record<string, number> }>(sim);
    const tokens = stats.byEndpoint[tokenEndpoint] ?? 0;
    const letters = await conn.deadLetters().catch(() => []);
    const running = proc.child.exitCode === null && proc.child.signalCode === null;
    figures.push(
      `  ${kind}: ${(changeSeconds / TTL_SECONDS).toFixed(1)} token lifetimes of changes (${changeSeconds.toFixed(0)} s), ${tokens} tokens issued, ${stats.byStatus['401'] ?? 0} answers 401, ${records.length} records written (= table), ${letters.length} dead letters, process ${running ? 'running' : `exited ${proc.child.exitCode}`}`,
    );
    expect(changeSeconds / TTL_SECONDS).toBeGreaterThanOrEqual(3);
    expect(tokens).toBeGreaterThanOrEqual(3);
    expect(letters).toEqual([]);
    expect(running).toBe(true);
    expect(proc.output).not.toMatch(/sim-secret|sim-refresh-token/);
  });
});

describe('OAuth: check and a refused fresh token', () => {
  it('`pg2crm check` obtains a token and says which flow and expiry it got', async () => {
    const sim = await h.simulator(startDynamicsSimulator, { control: true, tokenTtlSeconds: 3599 });
    const schema = uniqueName('oa_check');
    const ready = readyConfig('dynamics');
    const conn = await h.connector(schema, sim.url, {
      extra: {
        crm: ready.crm(sim.url, { auth: CRMS[1]!.auth(sim.url), limits: ready.config.crm.limits }),
        mappings: [ready.customersIn(schema)],
      },
    });
    const check = h.process(['check', '--config', conn.configFile]);
    await check.exited;
    figures.push(`  check: ${/.*CRM credentials.*/.exec(check.output)?.[0] ?? check.output.slice(-500)}`);
    expect(check.output).toMatch(/PASS\s+CRM credentials \(dynamics\): client_credentials token, expires in 59m5\ds; accepted/);
  });

  it('stops with exit 1 naming the credential when the CRM refuses a token just issued', async () => {
    // The token endpoint of one simulator, the API of another: every token is valid at the
    // endpoint and unknown to the CRM, as with an app registration that is no user of the org.
    const tokenSim = await h.simulator(startDynamicsSimulator, { control: true, tokenTtlSeconds: 3599 });
    const crmSim = await h.simulator(startDynamicsSimulator, { control: true, tokenTtlSeconds: 3599 });
    const schema = uniqueName('oa_refused');
    const ready = readyConfig('dynamics');
    const conn = await h.connector(schema, crmSim.url, {
      snapshot: 'never',
      extra: {
        crm: ready.crm(crmSim.url, { auth: CRMS[1]!.auth(tokenSim.url), limits: ready.config.crm.limits }),
        mappings: [ready.customersIn(schema)],
      },
    });
    const proc = await conn.running();
    await withPg(env.PG_URL, (c) =>
      c.query(`INSERT INTO ${schema}.customers (first_name, last_name, email) VALUES ('A', 'B', 'a@ok.example')`),
    );
    const code = await Promise.race([proc.exited, new Promise((r) => setTimeout(() => r('still running'), 60_000))]);
    const stats = await simStats<{ byEndpoint: Record<string, number> }>(tokenSim);
    figures.push(
      `  refused fresh token: exit ${String(code)}, ${stats.byEndpoint['POST /sim-tenant/oauth2/v2.0/token']} tokens issued, message: ${/Dynamics 365 refused[^\n"]*/.exec(proc.output)?.[0]?.slice(0, 120) ?? '(none)'}`,
    );
    expect(code).toBe(1);
    expect(proc.output).toMatch(/Dynamics 365 refused a token just issued for crm\.auth \(client_credentials, HTTP 401\)/);
    expect(stats.byEndpoint['POST /sim-tenant/oauth2/v2.0/token']).toBe(2);
    expect(proc.output).not.toMatch(/sim-secret/);
  });
});
