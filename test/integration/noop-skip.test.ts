import { afterAll, describe, expect, inject, it, onTestFailed } from 'vitest';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import {
  CliProcess,
  createErpSchema,
  dropCapture,
  groupLag,
  simRecords,
  type TestConnector,
  uniqueName,
  waitFor,
  waitSlotActive,
  withPg,
  writeConnectorConfig,
} from '../helpers/fixtures.ts';

/**
 * Changes that leave every mapped CRM field as it is cost no CRM call: on a REPLICA IDENTITY
 * FULL table (customers) because PostgreSQL lists the changed columns, on a default-identity
 * table (orders) because the hash of what was last written matches — and that hash survives a
 * restart of the connector (it is read back from the compacted hash topic).
 */
const env = inject('stack');

describe('no-op skip', () => {
  let sim: CrmSimulator;
  let conn: TestConnector;
  let proc: CliProcess;
  const schema = uniqueName('noop');

  afterAll(async () => {
    await proc?.stop();
    await sim?.close();
    if (conn) await dropCapture(env.PG_URL, conn.slot, conn.publication);
  });

  /** Write calls (upserts); after a restart the adapter may also look a contact up again. */
  const requests = async (): Promise<number> => {
    const stats = (await (await fetch(`${sim.url}/__sim/stats`)).json()) as { byEndpoint: Record<string, number> };
    return Object.entries(stats.byEndpoint).reduce((n, [endpoint, count]) => n + (endpoint.endsWith('/upsert') ? count : 0), 0);
  };
  const topics = (): string[] => [`${conn.topicPrefix}.${schema}.customers`, `${conn.topicPrefix}.${schema}.orders`];
  async function settled(): Promise<void> {
    // Lag 0 twice, 1 s apart: the source has published everything committed before and the sink has consumed it.
    await waitFor('lag 0', async () => (await groupLag(env.KAFKA_BROKERS, conn.groupId, topics())) === 0, 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    await waitFor('lag 0', async () => (await groupLag(env.KAFKA_BROKERS, conn.groupId, topics())) === 0, 60_000);
  }

  it('sends nothing for unchanged mapped fields, also after a restart, and still sends real changes', async () => {
    onTestFailed(() => console.log(proc?.output.slice(-5000)));
    sim = await startZendeskSellSimulator({ port: 0, control: true, limit: { requests: 100_000, windowSeconds: 60 } });
    await createErpSchema(env.PG_URL, schema);
    conn = writeConnectorConfig(env, schema, sim.url, { snapshot: 'never' });
    proc = new CliProcess(['run', '--config', conn.configFile]);
    await waitSlotActive(env.PG_URL, conn.slot);
    await withPg(env.PG_URL, async (c) => {
      await c.query(`INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'F' || g, 'L' || g, 'c' || g || '@ok.example' FROM generate_series(1, 20) g`);
      await c.query(`INSERT INTO ${schema}.orders (customer_id, title, amount) SELECT id, 'Order ' || id, id * 10 FROM ${schema}.customers`);
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
    proc = new CliProcess(['run', '--config', conn.configFile]);
    await waitSlotActive(env.PG_URL, conn.slot);
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.orders SET created_at = created_at + interval '1 second'`));
    await settled();
    expect(await requests()).toBe(before);

    // A real change is still written (one upsert per deal), and only that.
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.orders SET title = 'Renamed ' || id WHERE id <= 5`));
    await waitFor('5 renamed deals', async () => (await simRecords(sim.url, 'deals')).filter((d) => String(d.name).startsWith('Renamed ')).length === 5, 60_000);
    await settled();
    expect(await requests()).toBe(before + 5);
    const metricsText = proc.output;
    expect(metricsText).not.toMatch(/written-hash store.*cannot load/);
  });
});
