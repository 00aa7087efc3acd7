import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { type Connector, readyConfig, useHarness } from '../helpers/connector-harness.ts';
import { TEST_CRMS } from '../helpers/crm-sims.ts';
import { recordField, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Lookups through the real pipeline, per CRM, with the orders -> customers mapping of its ready
 * config in connectors/: a deal is linked to its order's customer, follows the order to another
 * customer (without a link left to the old one: HubSpot's associations are many-to-many), and is
 * unlinked when the order's customer_id becomes NULL, also when a move and a clear fold into one
 * write. The orders table has REPLICA IDENTITY FULL, so changes carry the old customer.
 * Zendesk Sell requires a deal's contact: there the clear is rejected and dead-lettered with
 * Sell's error, and the deal keeps its contact.
 */

/** The CRM ids a deal's lookup points to, read from the simulator's records as each CRM stores them. */
const LINKS: Record<string, (deal: Record<string, unknown>, associations: Record<string, unknown>[]) => unknown[]> = {
  'zendesk-sell': (deal) => [deal.contact_id],
  salesforce: (deal) => [deal.Customer__c],
  dynamics: (deal) => [deal.customerid_contact],
  zoho: (deal) => [(deal.Contact_Name as { id?: unknown } | null | undefined)?.id],
  hubspot: (deal, associations) =>
    associations.flatMap((a) => {
      if (a.fromObjectType === 'deals' && String(a.fromObjectId) === String(deal.id) && a.toObjectType === 'contacts')
        return [a.toObjectId];
      if (a.toObjectType === 'deals' && String(a.toObjectId) === String(deal.id) && a.fromObjectType === 'contacts')
        return [a.fromObjectId];
      return [];
    }),
};

/** CRMs where a deal must have its contact: clearing it is a validation error. */
const REQUIRED = new Set(['zendesk-sell']);

describe.each(TEST_CRMS)('$kind lookups through Kafka', ({ kind, start, limit }) => {
  const h = useHarness();
  const env = h.env;
  let sim: CrmSimulator;
  let conn: Connector;
  let customers: Config['mappings'][number];
  let orders: Config['mappings'][number];
  const schema = uniqueName(`lk_${kind.replace('-', '_').slice(0, 6)}`);

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
      out.set(
        String(recordField(deal, orders.externalId.field)),
        [...new Set(targets.map((t) => erpIdOf.get(String(t)) ?? `unknown CRM id ${String(t)}`))].sort(),
      );
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
          if ((await conn.lag([conn.topic('orders'), conn.topic('customers')])) !== 0) return false;
          const actual = await links();
          last = [...expected].flatMap(([order, customer]) => {
            const have = actual.get(order);
            const want = customer === null ? [] : [customer];
            return have && have.join() === want.join()
              ? []
              : [`order ${order}: CRM links ${have ? `[${have.join(', ')}]` : 'no deal'}, table says [${want.join(', ')}]`];
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
    const rows = await withPg(
      env.PG_URL,
      async (c) =>
        (await c.query<{ id: string; customer_id: string | null }>(`SELECT id::text, customer_id::text FROM ${schema}.orders ORDER BY id`))
          .rows,
    );
    return new Map(rows.map((r) => [r.id, r.customer_id]));
  }

  it('links each deal to its customer, moves it with the order, and clears it when customer_id becomes NULL', async () => {
    h.printOnFailure({ chars: 6000 });
    sim = await h.simulator(start, { control: true, limit });
    const ready = readyConfig(kind);
    const o = ready.orders;
    if (!o || Object.keys(o.lookups).length === 0) throw new Error(`connectors/${kind}.yaml maps erp.orders without a lookup`);
    customers = { ...ready.customers, table: `${schema}.customers` };
    orders = { ...o, table: `${schema}.orders` };
    // The parsed config fills in each lookup's externalIdField; the file takes only {object, column}.
    const lookups = Object.fromEntries(Object.entries(o.lookups).map(([f, l]) => [f, { object: l.object, column: l.column }]));
    conn = await h.connector(schema, sim.url, {
      snapshot: 'never',
      extra: { crm: ready.crm(sim.url, { limit }), mappings: [customers, { ...orders, lookups }] },
    });
    await withPg(env.PG_URL, (c) =>
      c.query(`ALTER TABLE ${schema}.orders ALTER COLUMN customer_id DROP NOT NULL; ALTER TABLE ${schema}.orders REPLICA IDENTITY FULL`),
    );
    await conn.running();
    await withPg(env.PG_URL, async (db) => {
      await db.query(
        `INSERT INTO ${schema}.customers (id, first_name, last_name, email) VALUES (1, 'Ada', 'A', 'a@ok.example'), (2, 'Bob', 'B', 'b@ok.example')`,
      );
      await db.query(
        `INSERT INTO ${schema}.orders (id, customer_id, title, amount) SELECT g, 1, 'Order ' || g, 10 * g FROM generate_series(1, 6) g`,
      );
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
    const letters = await waitFor(
      'the three clears dead-lettered',
      async () => {
        const l = await conn.deadLetters();
        return new Set(l.map((x) => x.externalId)).size >= 3 ? l : undefined;
      },
      60_000,
    );
    expect([...new Set(letters.map((l) => l.externalId))].sort()).toEqual(['3', '4', '5']);
    for (const l of letters) expect(`${l.error.code} ${l.error.message} ${l.error.field ?? ''}`).toMatch(/contact_id/);
  });
});
