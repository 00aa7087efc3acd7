import { describe, expect, it } from 'vitest';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { type Connector, simStats, useHarness } from '../helpers/connector-harness.ts';
import { type CliProcess, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Changes that leave every mapped CRM field as it is cost no CRM call: on a REPLICA IDENTITY
 * FULL table (customers) because PostgreSQL lists the changed columns, on a default-identity
 * table (orders) because the hash of what was last written matches — and that hash survives a
 * restart of the connector (it is read back from the compacted hash topic).
 */
const h = useHarness();
const env = h.env;

describe('no-op skip', () => {
  let sim: CrmSimulator;
  let conn: Connector;
  let proc: CliProcess;
  const schema = uniqueName('noop');

  /** Write calls (upserts); after a restart the adapter may also look a contact up again. */
  const requests = async (): Promise<number> => {
    const stats = await simStats<{ byEndpoint: Record<string, number> }>(sim);
    return Object.entries(stats.byEndpoint).reduce((n, [endpoint, count]) => n + (endpoint.endsWith('/upsert') ? count : 0), 0);
  };
  async function settled(): Promise<void> {
    // Lag 0 twice, 1 s apart: the source has published everything committed before and the sink has consumed it.
    await conn.lagZero(60_000);
    await new Promise((r) => setTimeout(r, 1500));
    await conn.lagZero(60_000);
  }

  it('sends nothing for unchanged mapped fields, also after a restart, and still sends real changes', async () => {
    h.printOnFailure();
    sim = await h.simulator();
    conn = await h.connector(schema, sim.url, { snapshot: 'never' });
    proc = await conn.running();
    await withPg(env.PG_URL, async (c) => {
      await c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'F' || g, 'L' || g, 'c' || g || '@ok.example' FROM generate_series(1, 20) g`,
      );
      await c.query(
        `INSERT INTO ${schema}.orders (customer_id, title, amount) SELECT id, 'Order ' || id, id * 10 FROM ${schema}.customers`,
      );
    });
    await waitFor('20 deals', async () => (await simRecords(sim.url, 'deals')).length === 20, 60_000);
    await settled();
    const before = await requests();

    await withPg(env.PG_URL, async (c) => {
      await c.query(`UPDATE ${schema}.customers SET notes = 'not mapped'`); // FULL: changed = [notes]
      await c.query(`UPDATE ${schema}.orders SET created_at = created_at + interval '1 second'`); // no FULL: hash
      await c.query(`UPDATE ${schema}.orders SET title = title`);
    });
    await settled();
    expect(await requests()).toBe(before);

    // Restart: the hashes come back from Kafka.
    expect(await proc.stop()).toBe(0);
    proc = await conn.running();
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.orders SET created_at = created_at + interval '1 second'`));
    await settled();
    expect(await requests()).toBe(before);

    // A real change is still written (one upsert per deal), and only that.
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.orders SET title = 'Renamed ' || id WHERE id <= 5`));
    await waitFor(
      '5 renamed deals',
      async () => (await simRecords(sim.url, 'deals')).filter((d) => String(d.name).startsWith('Renamed ')).length === 5,
      60_000,
    );
    await settled();
    expect(await requests()).toBe(before + 5);
    const metricsText = proc.output;
    expect(metricsText).not.toMatch(/written-hash store.*cannot load/);
  });
});
