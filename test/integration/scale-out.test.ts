import { describe, expect, it } from 'vitest';
import { startHubSpotSimulator } from '../../src/crm/hubspot/simulator.ts';
import type { ConnectorStatus } from '../../src/ops/status.ts';
import { readyConfig, simStats, useHarness } from '../helpers/connector-harness.ts';
import { groupMembers, runCli, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Sinks scale out from 1 to 3 processes mid-stream against one HubSpot credential of 20 calls
 * per rolling 10 s: the partitions rebalance over the three, `pg2crm status` shows the lag of
 * every partition falling to 0, nothing is lost (the CRM equals the table), and the simulator
 * never throttles: the instances' budget shares add up to the quota at every moment.
 */
const h = useHarness();
const env = h.env;
const LIMIT = { requests: 20, windowSeconds: 10 };

describe('scaling sinks out from 1 to 3 processes', () => {
  const schema = uniqueName('scale');

  it('rebalances, drains every partition to lag 0, loses nothing and never exceeds the quota', async () => {
    h.printOnFailure({ chars: 4000 });
    const sim = await h.simulator(startHubSpotSimulator, { control: true, limit: LIMIT });
    const ready = readyConfig('hubspot');
    const conn = await h.connector(schema, sim.url, {
      snapshot: 'never',
      extra: {
        crm: ready.crm(sim.url, { limits: { ...LIMIT, concurrency: 4 } }),
        mappings: [{ ...ready.customers, table: `${schema}.customers`, lookups: {} }],
      },
    });
    await conn.running('--role', 'source');
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'F' || g, 'L' || g, 'c' || g || '@ok.example' FROM generate_series(1, 4000) g`,
      ),
    );
    // A writer keeps updating while the sinks scale.
    let writing = true;
    const writer = withPg(env.PG_URL, async (c) => {
      for (let i = 0; writing; i++) {
        await c.query(
          `UPDATE ${schema}.customers SET last_name = 'W' || $1::int WHERE id IN (SELECT 1 + (g * 7919 + $1::int * 104729) % 4000 FROM generate_series(1, 20) g)`,
          [i],
        );
        await new Promise((r) => setTimeout(r, 200));
      }
    });

    conn.run('--role', 'sink');
    await waitFor('the first sink writing', async () => (await simRecords(sim.url, 'contacts')).length > 0, 60_000);
    const lagDuring = JSON.parse((await runCli(['status', '--json', '--config', conn.configFile])).output) as ConnectorStatus;
    expect(lagDuring.totalLag).toBeGreaterThan(0);

    conn.run('--role', 'sink');
    conn.run('--role', 'sink');
    const spread = await waitFor(
      '3 members with a partition each',
      async () => {
        const m = await groupMembers(env.KAFKA_BROKERS, conn.groupId);
        return m.length === 3 && m.every((x) => x.partitions === 1) ? m : false;
      },
      90_000,
      500,
    );
    expect(spread).toHaveLength(3);
    // Each instance reports its share of the credential; together they never pass the quota.
    const reported = await waitFor(
      '3 instances reporting their budget',
      async () => {
        const status = JSON.parse((await runCli(['status', '--json', '--config', conn.configFile])).output) as ConnectorStatus;
        return status.instances.length === 3 && status.instances.every((i) => i.memberId !== null) ? status : false;
      },
      60_000,
      1000,
    );
    // Shares follow each instance's own (slightly stale) view of the lag, so their sum can pass 1
    // for a moment; the one-window delay on raises is what keeps the calls under the quota,
    // which the simulator checks below (zero throttles).
    for (const i of reported.instances) {
      expect(i.budget.share).toBeGreaterThan(0);
      expect(i.budget.share).toBeLessThanOrEqual(1);
      expect(i.budget.quota).toBe(LIMIT.requests);
    }
    expect(reported.partitions.every((p) => p.paused !== null)).toBe(true);
    const text = (await runCli(['status', '--config', conn.configFile])).output;
    expect(text).toMatch(/PAUSED/);
    expect(text).toMatch(/budget: 20 requests per 10 s/);
    writing = false;
    await writer;

    const final = await waitFor(
      'lag 0 on every partition and the CRM equal to the table',
      async () => {
        const status = JSON.parse((await runCli(['status', '--json', '--config', conn.configFile])).output) as ConnectorStatus;
        if (status.partitions.length !== 3 || status.partitions.some((p) => p.lag !== 0)) return false;
        const rows = await withPg(
          env.PG_URL,
          async (c) => (await c.query(`SELECT id::text, last_name FROM ${schema}.customers`)).rows as { id: string; last_name: string }[],
        );
        const records = new Map((await simRecords(sim.url, 'contacts')).map((r) => [String(r.erp_id), r]));
        return rows.every((r) => records.get(r.id)?.lastname === r.last_name) && records.size === rows.length ? status : false;
      },
      180_000,
      1000,
    );
    expect(final.partitions.map((p) => p.lag)).toEqual([0, 0, 0]);
    const stats = await simStats<{ requests: number; throttled: number }>(sim);
    expect(stats.requests).toBeGreaterThan(40);
    expect(stats.throttled).toBe(0);
  });
});
