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

export async function runSimulator(
  kind: string,
  opts: { port: number; host?: string; limit?: string; token?: string[]; retryAfter?: number },
): Promise<void> {
  let sim: CrmSimulator;
  switch (kind) {
    case 'zendesk-sell':
      sim = await startZendeskSellSimulator({
        port: opts.port,
        ...(opts.host ? { host: opts.host } : {}),
        ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
        ...(opts.token ? { tokens: opts.token } : {}),
        ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
      });
      break;
    case 'hubspot':
      // HubSpot sends no Retry-After; --retry-after makes the simulator add one anyway.
      sim = await startHubSpotSimulator({
        port: opts.port,
        ...(opts.host ? { host: opts.host } : {}),
        ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
        ...(opts.token ? { tokens: opts.token } : {}),
        ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
      });
      break;
    case 'dynamics':
      // --limit sets the request window (default 6000/300s); --retry-after the first Retry-After.
      sim = await startDynamicsSimulator({
        port: opts.port,
        ...(opts.host ? { host: opts.host } : {}),
        ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
        ...(opts.token ? { tokens: opts.token } : {}),
        ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
      });
      break;
    case 'zoho':
      // --limit is in API credits (default 50000/1d); Zoho sends no Retry-After, --retry-after adds one.
      sim = await startZohoSimulator({
        port: opts.port,
        ...(opts.host ? { host: opts.host } : {}),
        ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
        ...(opts.token ? { tokens: opts.token } : {}),
        ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
      });
      break;
    case 'salesforce':
      // --limit is API requests per rolling window (default 100000/1d); Salesforce sends no
      // Retry-After (403 REQUEST_LIMIT_EXCEEDED), so --retry-after is ignored.
      sim = await startSalesforceSimulator({
        port: opts.port,
        ...(opts.host ? { host: opts.host } : {}),
        ...(opts.limit ? { limit: parseLimit(opts.limit) } : {}),
        ...(opts.token ? { tokens: opts.token } : {}),
        ...(opts.retryAfter !== undefined ? { retryAfterSeconds: opts.retryAfter } : {}),
      });
      break;
    default:
      throw new ConnectorError('CONFIG_SIM_KIND', `unknown CRM simulator ${kind}; supported: ${SIMULATORS.join(', ')}`);
  }
  process.stdout.write(`simulator ${kind} listening on ${sim.url}\n`);
  await new Promise<void>((resolve) => onStopSignal(() => resolve()));
  await sim.close();
}
