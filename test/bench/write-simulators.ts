import { startHubSpotSimulator } from '../../src/crm/hubspot/simulator.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';

/**
 * The simulators that report each accepted write (SimServer.wrote), by CRM kind, for the benches
 * that time or count writes (bench:latency, bench:memory); options as sink-bench-crms.ts gives them.
 */
export const WRITE_SIMULATORS: Record<string, (opts: { port: number } & Record<string, unknown>) => Promise<CrmSimulator>> = {
  hubspot: (opts) => startHubSpotSimulator(opts),
  'zendesk-sell': (opts) => startZendeskSellSimulator(opts),
};
