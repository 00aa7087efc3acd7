import { beforeAll, describe, expect, it } from 'vitest';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import type { ConnectorStatus } from '../../src/ops/status.ts';
import { type Connector, simStats, useHarness } from '../helpers/connector-harness.ts';
import {
  type CliProcess,
  freePort,
  groupLag,
  readAllEvents,
  runCli,
  simRecords,
  uniqueName,
  waitFor,
  withPg,
} from '../helpers/fixtures.ts';

/**
 * The first vertical slice end to end, against the real PostgreSQL, Kafka and registry:
 * rows in PostgreSQL -> pgoutput -> Avro in Kafka -> Zendesk Sell simulator.
 */
const h = useHarness();
const env = h.env;

type Sim = CrmSimulator;

interface ContactView {
  erp_id: string;
  first_name: unknown;
  last_name: unknown;
  email: unknown;
  company: unknown;
}

function contactView(r: Record<string, unknown>): ContactView {
  const cf = (r.custom_fields ?? {}) as Record<string, unknown>;
  return {
    erp_id: String(cf.erp_id),
    first_name: r.first_name,
    last_name: r.last_name,
    email: r.email ?? null,
    company: cf.company ?? null,
  };
}

async function pgContacts(schema: string): Promise<ContactView[]> {
  return withPg(env.PG_URL, async (c) => {
    const r = await c.query<{ id: string; first_name: string; last_name: string; email: string | null; company: string | null }>(
      `SELECT id::text, first_name, last_name, email, company FROM ${schema}.customers ORDER BY id`,
    );
    return r.rows.map((row) => ({
      erp_id: row.id,
      first_name: row.first_name,
      last_name: row.last_name,
      email: row.email,
      company: row.company,
    }));
  });
}

/** Records that differ between the CRM and PostgreSQL, by external id. */
function differences(got: ContactView[], want: ContactView[]): { erp_id: string; crm?: ContactView; pg?: ContactView }[] {
  const byId = new Map(got.map((c) => [c.erp_id, c]));
  const out: { erp_id: string; crm?: ContactView; pg?: ContactView }[] = [];
  for (const w of want) {
    const g = byId.get(w.erp_id);
    byId.delete(w.erp_id);
    if (JSON.stringify(g) !== JSON.stringify(w)) out.push({ erp_id: w.erp_id, ...(g ? { crm: g } : {}), pg: w });
  }
  for (const [erp_id, g] of byId) out.push({ erp_id, crm: g });
  return out;
}

async function simContacts(sim: Sim): Promise<ContactView[]> {
  return (await simRecords(sim.url, 'contacts')).map(contactView).sort((a, b) => Number(a.erp_id) - Number(b.erp_id));
}

describe('PostgreSQL -> Kafka -> Zendesk Sell', () => {
  let sim: Sim;
  let conn: Connector;
  const schema = uniqueName('e2e');
  let proc: CliProcess | undefined;
  let opsPort: number;

  beforeAll(async () => {
    sim = await h.simulator();
    opsPort = await freePort();
    conn = await h.connector(schema, sim.url, { extra: { ops: { port: opsPort, lagIntervalSeconds: 1 } } });
  });

  it('snapshot, inserts, updates and deletes end equal to PostgreSQL, with lag 0', async () => {
    // Rows that exist before the connector starts arrive through the initial snapshot.
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email, company)
         SELECT 'First' || g, 'Last' || g, 'c' || g || '@example.com', 'Co ' || (g % 7) FROM generate_series(1, 200) g`,
      ),
    );
    h.printOnFailure({ chars: 6000, more: async () => `simulator stats ${JSON.stringify(await simStats(sim))}` });
    proc = conn.run();
    await waitFor('snapshot in the CRM', async () => (await simContacts(sim)).length === 200, 90_000);

    await withPg(env.PG_URL, async (c) => {
      await c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'New' || g, 'Row' || g, NULL FROM generate_series(1, 50) g`,
      );
      await c.query(`UPDATE ${schema}.customers SET email = 'changed' || id || '@example.com' WHERE id % 3 = 0`);
      await c.query(`UPDATE ${schema}.customers SET company = NULL, last_name = last_name || '-x' WHERE id % 5 = 0`);
      await c.query(`DELETE FROM ${schema}.customers WHERE id % 11 = 0`);
      // A multi-row transaction whose rows share one commit LSN.
      await c.query('BEGIN');
      await c.query(`UPDATE ${schema}.customers SET first_name = 'Tx' WHERE id BETWEEN 20 AND 40`);
      await c.query(`DELETE FROM ${schema}.customers WHERE id = 21`);
      await c.query('COMMIT');
      // An order: a deal whose contact_id is resolved through the customer's external id.
      await c.query(`INSERT INTO ${schema}.orders (customer_id, title, amount) VALUES (1, 'First order', 1234.56)`);
    });

    const expected = await pgContacts(schema);
    // On timeout the assertion below names the records that differ.
    await waitFor('CRM equal to PostgreSQL', async () => differences(await simContacts(sim), expected).length === 0, 90_000).catch(
      () => undefined,
    );
    expect(differences(await simContacts(sim), expected)).toEqual([]);
    expect(expected.find((c) => c.erp_id === '21')).toBeUndefined();

    const deals = await waitFor('the deal', async () => {
      const d = await simRecords(sim.url, 'deals');
      return d.length === 1 ? d : undefined;
    });
    const contact = (await simRecords(sim.url, 'contacts')).find((r) => contactView(r).erp_id === '1');
    expect(deals[0]).toMatchObject({ name: 'First order', contact_id: contact?.id });
    expect(String(deals[0]?.value)).toBe('1234.56');

    const topics = conn.topics;
    await waitFor('consumer group lag 0', async () => (await groupLag(env.KAFKA_BROKERS, conn.groupId, topics)) === 0, 60_000);

    // Kafka holds typed, field-level events: the update with REPLICA IDENTITY FULL names its changed columns.
    const events = await readAllEvents(env, topics[0]!);
    const update = events.find((e) => e.op === 'u' && e.changed?.includes('email'));
    expect(update?.changed).toEqual(['email']);
    expect(update?.source.table).toBe('customers');
    expect(typeof update?.key.id).toBe('string');
    expect(events.filter((e) => e.op === 'r')).toHaveLength(200);

    // `pg2crm status` reports the same lag as Kafka's admin API, per partition.
    const status = JSON.parse((await runCli(['status', '--config', conn.configFile, '--json'])).output) as ConnectorStatus;
    expect(status.partitions).toHaveLength(6);
    expect(status.totalLag).toBe(await groupLag(env.KAFKA_BROKERS, conn.groupId, topics));
    expect(status.slot).toMatchObject({ exists: true, active: true });
    expect(status.deadLetters.count).toBe(0);
    // /metrics exposes the same per-partition lag (sampled every second here), and readiness.
    const metricLag = await waitFor(
      'lag gauges for every partition',
      async () => {
        const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
        const lines = text.split('\n').filter((l) => l.startsWith('pg2crm_consumer_lag{'));
        return lines.length === 6 && lines.every((l) => l.endsWith(' 0')) ? lines : undefined;
      },
      30_000,
    );
    expect(metricLag.map((l) => /partition="(\d+)"/.exec(l)?.[1]).sort()).toEqual(['0', '0', '1', '1', '2', '2']);
    const metricsText = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
    expect(metricsText).toMatch(new RegExp(`pg2crm_replication_slot_lag_bytes\\{slot="${conn.slot}"\\} \\d+`));
    expect(metricsText).toMatch(/pg2crm_records_written_total\{object="contacts",op="upsert"\} \d+/);
    expect((await fetch(`http://127.0.0.1:${opsPort}/readyz`)).status).toBe(200);
    const table = await runCli(['status', '--config', conn.configFile]);
    expect(table.output).toMatch(/TOPIC +PARTITION +COMMITTED +END +LAG/);
    expect(table.code).toBe(0);

    expect(await proc.stop()).toBe(0);
  });
});
