import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { startDynamicsSimulator } from '../../../src/crm/dynamics/simulator.ts';
import { startHubSpotSimulator } from '../../../src/crm/hubspot/simulator.ts';
import { startSalesforceSimulator } from '../../../src/crm/salesforce/simulator.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';
import { startZohoSimulator } from '../../../src/crm/zoho/simulator.ts';

/**
 * The simulators' `/__sim/*` control routes (every stored record, fault injection, clock, reset)
 * are off unless asked for: a simulator may listen beyond loopback (docker-compose.yml).
 */
const STARTERS: [string, (o: { port: number; control?: boolean }) => Promise<CrmSimulator>][] = [
  ['zendesk-sell', startZendeskSellSimulator],
  ['hubspot', startHubSpotSimulator],
  ['dynamics', startDynamicsSimulator],
  ['zoho', startZohoSimulator],
  ['salesforce', startSalesforceSimulator],
];

describe('simulator control routes', () => {
  it.each(STARTERS)('%s: off by default (404, nothing changed), on with control: true', async (_kind, start) => {
    const off = await start({ port: 0 });
    try {
      expect((await fetch(`${off.url}/__sim/stats`)).status).toBe(404);
      expect((await fetch(`${off.url}/__sim/records/contacts`)).status).toBe(404);
      const faults = await fetch(`${off.url}/__sim/faults`, {
        method: 'POST',
        body: JSON.stringify({ errors5xx: { requests: 5, status: 503 } }),
      });
      expect(faults.status).toBe(404);
      expect(await faults.text()).toMatch(/--control/);
    } finally {
      await off.close();
    }
    const on = await start({ port: 0, control: true });
    try {
      expect((await fetch(`${on.url}/__sim/stats`)).status).toBe(200);
      expect((await fetch(`${on.url}/__sim/reset`, { method: 'POST' })).status).toBe(200);
    } finally {
      await on.close();
    }
  });

  it('pg2crm sim: off unless --control', async () => {
    const bin = new URL('../../../bin/pg2crm.js', import.meta.url).pathname;
    for (const [args, expected] of [
      [[], 404],
      [['--control'], 200],
    ] as const) {
      const child = spawn(process.execPath, [bin, 'sim', 'zendesk-sell', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      try {
        const url = await new Promise<string>((resolve, reject) => {
          let out = '';
          child.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            const m = /listening on (http:\/\/\S+)/.exec(out);
            if (m) resolve(m[1]!);
          });
          child.on('exit', () => reject(new Error(`sim exited: ${out}`)));
        });
        expect((await fetch(`${url}/__sim/stats`)).status, args.join(' ') || 'no flag').toBe(expected);
      } finally {
        child.kill('SIGTERM');
      }
    }
  }, 30_000);
});
