import { afterEach, describe, expect, it } from 'vitest';
import { startHubSpotSimulator } from '../../../src/crm/hubspot/simulator.ts';
import type { CrmSimulator, SimRecord } from '../../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';

/** CrmSimulator.onWrite: bench:latency times each accepted write by it. */
describe('simulator write listener', () => {
  let sim: CrmSimulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  const listen = (s: CrmSimulator): { object: string; record: SimRecord; at: number }[] => {
    const seen: { object: string; record: SimRecord; at: number }[] = [];
    s.onWrite?.((object, record, at) => seen.push({ object, record, at }));
    return seen;
  };
  const now = (): number => performance.timeOrigin + performance.now();

  it('hears every record of a HubSpot batch upsert, as stored, while the call is under way', async () => {
    sim = await startHubSpotSimulator({ port: 0, tokens: ['t'] });
    const seen = listen(sim);
    const before = now();
    const res = await fetch(`${sim.url}/crm/v3/objects/contacts/batch/upsert`, {
      method: 'POST',
      headers: { authorization: 'Bearer t', 'content-type': 'application/json' },
      body: JSON.stringify({
        inputs: [1, 2].map((i) => ({ id: String(i), idProperty: 'erp_id', properties: { lastname: `L${i}`, email: `c${i}@example.com` } })),
      }),
    });
    const after = now();
    expect(res.status).toBe(200);
    expect(seen.map((s) => [s.object, s.record.erp_id, s.record.lastname])).toEqual([
      ['contacts', '1', 'L1'],
      ['contacts', '2', 'L2'],
    ]);
    for (const s of seen) expect(s.at >= before && s.at <= after).toBe(true);
  });

  it('hears a Zendesk Sell upsert, and nothing once removed', async () => {
    sim = await startZendeskSellSimulator({ port: 0, tokens: ['t'] });
    const seen = listen(sim);
    const upsert = (n: number): Promise<Response> =>
      fetch(`${sim!.url}/v2/contacts/upsert?custom_fields[erp_id]=7`, {
        method: 'POST',
        headers: { authorization: 'Bearer t', 'content-type': 'application/json' },
        body: JSON.stringify({ data: { last_name: 'L', custom_fields: { erp_id: '7', n } } }),
      });
    expect((await upsert(1)).status).toBe(200);
    expect(seen.map((s) => [s.object, (s.record.custom_fields as Record<string, unknown>).n])).toEqual([['contacts', 1]]);
    sim.onWrite?.(undefined);
    expect((await upsert(2)).status).toBe(200);
    expect(seen).toHaveLength(1);
  });
});
