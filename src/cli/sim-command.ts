import { ConnectorError } from '../errors.ts';
import type { CrmSimulator } from '../crm/sim-server.ts';
import { startHubSpotSimulator } from '../crm/hubspot/simulator.ts';
import { startSalesforceSimulator } from '../crm/salesforce/simulator.ts';
import { startDynamicsSimulator } from '../crm/dynamics/simulator.ts';
import { startZendeskSellSimulator } from '../crm/zendesk-sell/simulator.ts';
import { startZohoSimulator } from '../crm/zoho/simulator.ts';
import { onStopSignal } from './stop-signals.ts';
import { parseTtl, SIM_OAUTH_CLIENT } from '../crm/auth/token-sim.ts';

/** `pg2crm sim <crm>`: a CRM simulator in the foreground until SIGINT/SIGTERM. */
export const SIMULATORS = ['zendesk-sell', 'hubspot', 'dynamics', 'zoho', 'salesforce'] as const;

const UNITS: Record<string, number> = { s: 1, sec: 1, m: 60, min: 60, h: 3600, d: 86_400 };

/** `200/60s`, `36000/1h`, `100/10s`, `200/min` -> requests per window. */
export function parseLimit(text: string): { requests: number; windowSeconds: number } {
  const m = /^(\d+)\/(\d*)(s|sec|m|min|h|d)$/.exec(text.trim());
  if (!m) throw new ConnectorError('CONFIG_SIM_LIMIT', `--limit ${text}: write <requests>/<window>, e.g. 200/60s, 36000/1h, 100/10s`);
  const requests = Number(m[1]);
  const windowSeconds = Number(m[2] || '1') * UNITS[m[3]!]!;
  if (requests < 1 || windowSeconds < 1)
    throw new ConnectorError('CONFIG_SIM_LIMIT', `--limit ${text}: requests and window must be positive`);
  return { requests, windowSeconds };
}

interface SimOptions {
  port: number;
  host?: string;
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  retryAfterSeconds?: number;
  tokenTtlSeconds?: number;
  control?: boolean;
}

/** Where each simulator serves its vendor's token endpoint (same origin as the API). */
const TOKEN_PATHS: Record<(typeof SIMULATORS)[number], { path: string; grant: string }> = {
  'zendesk-sell': { path: '/oauth2/token', grant: 'refresh_token' },
  hubspot: { path: '/oauth/2026-03/token', grant: 'refresh_token' },
  dynamics: { path: '/<tenant>/oauth2/v2.0/token', grant: 'client_credentials' },
  zoho: { path: '/oauth/v2/token', grant: 'refresh_token' },
  salesforce: { path: '/services/oauth2/token', grant: 'client_credentials, jwt_bearer' },
};

/**
 * The simulators by kind. `--limit` is each CRM's own unit: requests per window (Zendesk Sell
 * default 200/60s, HubSpot 100/10s, Dynamics 6000/300s, Salesforce 100000/1d) or API credits
 * (Zoho, 50000/1d). `--retry-after`: the lockout after a throttle (Zendesk Sell), the first
 * Retry-After (Dynamics); HubSpot and Zoho send none and add one only when it is given;
 * Salesforce never sends one (403 REQUEST_LIMIT_EXCEEDED) and ignores it.
 */
const STARTERS: Record<(typeof SIMULATORS)[number], (opts: SimOptions) => Promise<CrmSimulator>> = {
  'zendesk-sell': startZendeskSellSimulator,
  hubspot: startHubSpotSimulator,
  dynamics: startDynamicsSimulator,
  zoho: startZohoSimulator,
  salesforce: startSalesforceSimulator,
};

export async function runSimulator(
  kind: string,
  opts: { port: number; host?: string; limit?: string; token?: string[]; retryAfter?: number; tokenTtl?: string; control?: boolean },
): Promise<void> {
  const start = STARTERS[kind as (typeof SIMULATORS)[number]];
  if (!start) throw new ConnectorError('CONFIG_SIM_KIND', `unknown CRM simulator ${kind}; supported: ${SIMULATORS.join(', ')}`);
  const ttl = opts.tokenTtl === undefined ? undefined : parseTtl(opts.tokenTtl);
  if (opts.tokenTtl !== undefined && ttl === undefined)
    throw new ConnectorError('CONFIG_SIM_TTL', `--token-ttl ${opts.tokenTtl}: write a duration, e.g. 20s, 5m, 1h`);
  const sim = await start({
    port: opts.port,
    ...(opts.host ? { host: opts.host } : {}),
    ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
    ...(opts.token ? { tokens: opts.token } : {}),
    ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
    ...(ttl !== undefined ? { tokenTtlSeconds: ttl } : {}),
    control: opts.control === true,
  });
  process.stdout.write(`simulator ${kind} listening on ${sim.url}\n`);
  process.stdout.write(
    opts.control
      ? `control routes on: ${sim.url}/__sim/{records/<object>,stats,faults,clock,reset}\n`
      : 'control routes (/__sim/*) off; --control turns them on\n',
  );
  const t = TOKEN_PATHS[kind as (typeof SIMULATORS)[number]];
  process.stdout.write(
    `OAuth token endpoint ${sim.url}${t.path} (${t.grant}; client_id ${SIM_OAUTH_CLIENT.clientId}, client_secret ${SIM_OAUTH_CLIENT.clientSecret}, refresh_token ${SIM_OAUTH_CLIENT.refreshToken}${ttl !== undefined ? `; tokens live ${ttl} s` : ''})\n`,
  );
  await new Promise<void>((resolve) => onStopSignal(() => resolve()));
  await sim.close();
}
