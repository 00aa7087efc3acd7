import { startDynamicsSimulator } from '../../src/crm/dynamics/simulator.ts';
import { startHubSpotSimulator } from '../../src/crm/hubspot/simulator.ts';
import { startSalesforceSimulator } from '../../src/crm/salesforce/simulator.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import { startZohoSimulator } from '../../src/crm/zoho/simulator.ts';

export type SimStart = (opts: {
  port: number;
  control?: boolean;
  limit: { requests: number; windowSeconds: number };
}) => Promise<CrmSimulator>;

export interface TestCrm {
  kind: string;
  start: SimStart;
  limit: { requests: number; windowSeconds: number };
}

/**
 * Every CRM's simulator with limits high enough for integration tests to go through in seconds;
 * the limits themselves are tested in the unit tests and measured by `npm run bench:sink`.
 */
export const TEST_CRMS: TestCrm[] = [
  { kind: 'zendesk-sell', start: startZendeskSellSimulator, limit: { requests: 100_000, windowSeconds: 60 } },
  { kind: 'salesforce', start: startSalesforceSimulator, limit: { requests: 100_000, windowSeconds: 86_400 } },
  { kind: 'hubspot', start: startHubSpotSimulator, limit: { requests: 10_000, windowSeconds: 10 } },
  { kind: 'dynamics', start: startDynamicsSimulator, limit: { requests: 100_000, windowSeconds: 300 } },
  { kind: 'zoho', start: startZohoSimulator, limit: { requests: 1_000_000, windowSeconds: 86_400 } },
];
