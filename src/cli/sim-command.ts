import { ConnectorError } from '../errors.ts';
import type { CrmSimulator } from '../crm/sim-server.ts';
import { startHubSpotSimulator } from '../crm/hubspot/simulator.ts';
import { startSalesforceSimulator } from '../crm/salesforce/simulator.ts';
import { startDynamicsSimulator } from '../crm/dynamics/simulator.ts';
import { startZendeskSellSimulator } from '../crm/zendesk-sell/simulator.ts';
import { startZohoSimulator } from '../crm/zoho/simulator.ts';
import { onStopSignal } from './stop-signals.ts';

/** `pg2crm sim <crm>`: a CRM simulator in the foreground until SIGINT/SIGTERM. */
export const SIMULATORS = ['zendesk-sell', 'hubspot', 'dynamics', 'zoho', 'salesforce'] as const;

const UNITS: Record<string, number> = { s: 1, sec: 1, m: 60, min: 60, h: 3600, d: 86_400 };

/** `200/60s`, `36000/1h`, `100/10s`, `200/min` -> requests per window. */
export function parseLimit(text: string): { requests: number; windowSeconds: number } {
  const m = /^(\d+)\/(\d*)(s|sec|m|min|h|d)$/.exec(text.trim());
  if (!m) throw new ConnectorError('CONFIG_SIM_LIMIT', `--limit ${text}: write <requests>/<window>, e.g. 200/60s, 36000/1h, 100/10s`);
  const requests = Number(m[1]);
  const windowSeconds = Number(m[2] || '1') * UNITS[m[3]!]!;
  if (requests < 1 || windowSeconds < 1) throw new ConnectorError('CONFIG_SIM_LIMIT', `--limit ${text}: requests and window must be positive`);
  return { requests, windowSeconds };
}

interface SimOptions {
  port: number;
  host?: string;
  limit?: { requests: number; windowSeconds: number };
  tokens?: string[];
  retryAfterSeconds?: number;
}

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
  opts: { port: number; host?: string; limit?: string; token?: string[]; retryAfter?: number },
): Promise<void> {
  const start = STARTERS[kind as (typeof SIMULATORS)[number]];
  if (!start) throw new ConnectorError('CONFIG_SIM_KIND', `unknown CRM simulator ${kind}; supported: ${SIMULATORS.join(', ')}`);
  const sim = await start({
    port: opts.port,
    ...(opts.host ? { host: opts.host } : {}),
    ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
    ...(opts.token ? { tokens: opts.token } : {}),
    ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
  });
  process.stdout.write(`simulator ${kind} listening on ${sim.url}\n`);
  await new Promise<void>((resolve) => onStopSignal(() => resolve()));
  await sim.close();
}
