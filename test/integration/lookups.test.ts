import { afterAll, describe, expect, inject, it, onTestFailed } from 'vitest';
import { type Config, loadConfig } from '../../src/config.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { TEST_CRMS } from '../helpers/crm-sims.ts';
import {
  CliProcess,
  createErpSchema,
  dropCapture,
  groupLag,
  readDeadLetters,
  recordField,
  simRecords,
  type TestConnector,
  uniqueName,
  waitFor,
  waitSlotActive,
  withPg,
  writeConnectorConfig,
} from '../helpers/fixtures.ts';

/**
 * Lookups through the real pipeline, per CRM, with the orders -> customers mapping of its ready
 * config in connectors/: a deal is linked to its order's customer, follows the order to another
 * customer (without a link left to the old one: HubSpot's associations are many-to-many), and is
 * unlinked when the order's customer_id becomes NULL, also when a move and a clear fold into one
 * write. The orders table has REPLICA IDENTITY FULL, so changes carry the old customer.
 * Zendesk Sell requires a deal's contact: there the clear is rejected and dead-lettered with
 * Sell's error, and the deal keeps its contact.
 */
const env = inject('stack');

/** The CRM ids a deal's lookup points to, read from the simulator's records as each CRM stores them. */
const LINKS: Record<string, (deal: Record<string, unknown>, associations: Record<string, unknown>[]) => unknown[]> = {
  'zendesk-sell': (deal) => [deal.contact_id],
  salesforce: (deal) => [deal.Customer__c],
  dynamics: (deal) => [deal.customerid_contact],
  zoho: (deal) => [(deal.Contact_Name as { id?: unknown } | null | undefined)?.id],
  hubspot: (deal, associations) =>
    associations.flatMap((a) => {
      if (a.fromObjectType === 'deals' && String(a.fromObjectId) === String(deal.id) && a.toObjectType === 'contacts') return [a.toObjectId];
      if (a.toObjectType === 'deals' && String(a.toObjectId) === String(deal.id) && a.fromObjectType === 'contacts') return [a.fromObjectId];
      return [];
    }),
};

/** CRMs where a deal must have its contact: clearing it is a validation error. */
const REQUIRED = new Set(['zendesk-sell']);

describe.each(TEST_CRMS)('$kind lookups through Kafka', ({ kind, start, limit }) => {
  let sim: CrmSimulator;
  let conn: TestConnector;
  let proc: CliProcess;
  let customers: Config['mappings'][number];
  let orders: Config['mappings'][number];
  const schema = uniqueName(`lk_${kind.replace('-', '_').slice(0, 6)}`);

  afterAll(async () => {
    await proc?.stop();
    await sim?.close();
    if (conn) await dropCapture(env.PG_URL, conn.slot, conn.publication);
  });

  /** Order id -> the customer ids its deal links to in the CRM (by their ERP ids). */
  async function links(): Promise<Map<string, string[]>> {
    const contacts = await simRecords(sim.url, customers.object);
    const erpIdOf = new Map<string, string>();
    for (const c of contacts) {
      const erpId = String(recordField(c, customers.externalId.field));
      for (const id of [c.id, c.Id, c.contactid]) if (id !== undefined && id !== null) erpIdOf.set(String(id), erpId);
    }
    const associations = kind === 'hubspot' ? await simRecords(sim.url, 'associations') : [];
    const out = new Map<string, string[]>();
    for (const deal of await simRecords(sim.url, orders.object)) {
      const targets = LINKS[kind]!(deal, associations).filter((v) => v !== undefined && v !== null && v !== '');
      out.set(String(recordField(deal, orders.externalId.field)), [...new Set(targets.map((t) => erpIdOf.get(String(t)) ?? `unknown CRM id ${String(t)}`))].sort());
    }
    return out;
  }

  /** Waits until the lag is 0 and every deal links exactly to `expected` (order id -> customer id or null). */
  async function linked(expected: Map<string, string | null>): Promise<void> {
    let last: string[] = ['not compared yet'];
    try {
      await waitFor(
        `${kind} deals linked as the orders say`,
        async () => {
          if ((await groupLag(env.KAFKA_BROKERS, conn.groupId, [`${conn.topicPrefix}.${schema}.orders`, `${conn.topicPrefix}.${schema}.customers`])) !== 0) return false;
          const actual = await links();
          last = [...expected].flatMap(([order, customer]) => {
            const have = actual.get(order);
            const want = customer === null ? [] : [customer];
            return have && have.join() === want.join() ? [] : [`order ${order}: CRM links ${have ? `[${have.join(', ')}]` : 'no deal'}, table says [${want.join(', ')}]`];
          });
          return last.length === 0;
        },
        60_000,
        250,
      );
    } finally {
      expect(last).toEqual([]);
    }
  }

  async function tableLinks(): Promise<Map<string, string | null>> {
    const rows = await withPg(env.PG_URL, async (c) => (await c.query<{ id: string; customer_id: string | null }>(`SELECT id::text, customer_id::text FROM ${schema}.orders ORDER BY id`)).rows);
    return new Map(rows.map((r) => [r.id, r.customer_id]));
  }

  it('links each deal to its customer, moves it with the order, and clears it when customer_id becomes NULL', async () => {
    onTestFailed(() => console.log(proc?.output.slice(-6000)));
    sim = await start({ port: 0, control: true, limit });
    await createErpSchema(env.PG_URL, schema);
    await withPg(env.PG_URL, (c) => c.query(`ALTER TABLE ${schema}.orders ALTER COLUMN customer_id DROP NOT NULL; ALTER TABLE ${schema}.orders REPLICA IDENTITY FULL`));
    const ready = loadConfig(new URL(`../../connectors/${kind}.yaml`, import.meta.url).pathname, {});
    const c = ready.mappings.find((m) => m.table === 'erp.customers');
    const o = ready.mappings.find((m) => m.table === 'erp.orders');
    if (!c || !o || Object.keys(o.lookups).length === 0) throw new Error(`connectors/${kind}.yaml maps no erp.customers, or erp.orders without a lookup`);
    customers = { ...c, table: `${schema}.customers` };
    orders = { ...o, table: `${schema}.orders` };
    // The parsed config fills in each lookup's externalIdField; the file takes only {object, column}.
    const lookups = Object.fromEntries(Object.entries(o.lookups).map(([f, l]) => [f, { object: l.object, column: l.column }]));
    conn = writeConnectorConfig(env, schema, sim.url, {
      snapshot: 'never',
      extra: {
        crm: { ...ready.crm, credentials: undefined, baseUrl: sim.url, auth: { token: 'sim-token' }, limits: { ...ready.crm.limits, ...limit } },
        mappings: [customers, { ...orders, lookups }],
      },
    });
    proc = new CliProcess(['run', '--config', conn.configFile]);
    await waitSlotActive(env.PG_URL, conn.slot);
    await withPg(env.PG_URL, async (db) => {
      await db.query(`INSERT INTO ${schema}.customers (id, first_name, last_name, email) VALUES (1, 'Ada', 'A', 'a@ok.example'), (2, 'Bob', 'B', 'b@ok.example')`);
      await db.query(`INSERT INTO ${schema}.orders (id, customer_id, title, amount) SELECT g, 1, 'Order ' || g, 10 * g FROM generate_series(1, 6) g`);
    });
    await linked(await tableLinks());

    await withPg(env.PG_URL, async (db) => {
      await db.query(`UPDATE ${schema}.orders SET customer_id = 2 WHERE id IN (1, 2)`);
      await db.query(`UPDATE ${schema}.orders SET customer_id = NULL WHERE id IN (3, 4)`);
      // A move and a clear of one order in one transaction: compacted into one write.
      await db.query('BEGIN');
      await db.query(`UPDATE ${schema}.orders SET customer_id = 2 WHERE id = 5`);
      await db.query(`UPDATE ${schema}.orders SET customer_id = NULL WHERE id = 5`);
      await db.query('COMMIT');
    });
    const table = await tableLinks();
    expect([...table.values()]).toEqual(['2', '2', null, null, null, '1']);
    if (!REQUIRED.has(kind)) {
      await linked(table);
      return;
    }
    // The CRM refuses a deal without its contact: the clears are dead-lettered with its error,
    // the deals keep the contact they had, and the moves went through.
    await linked(new Map([...table].map(([order, customer]) => [order, customer ?? '1'])));
    // The CRM held those links before the clears were processed: wait for the letters themselves.
    const letters = await waitFor('the three clears dead-lettered', async () => {
      const l = await readDeadLetters(env.KAFKA_BROKERS, `${conn.topicPrefix}.dlq`);
      return new Set(l.map((x) => x.externalId)).size >= 3 ? l : undefined;
    }, 60_000);
    expect([...new Set(letters.map((l) => l.externalId))].sort()).toEqual(['3', '4', '5']);
    for (const l of letters) expect(`${l.error.code} ${l.error.message} ${l.error.field ?? ''}`).toMatch(/contact_id/);
  });
});
