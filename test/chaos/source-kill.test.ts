import { beforeAll, describe, expect, it } from 'vitest';
import { type Connector, useHarness } from '../helpers/connector-harness.ts';
import { type CliProcess, readAllEvents, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Chaos: the source is SIGKILLed at random moments, at least 5 times, while 50,000 changes are
 * committed in transactions of 1 to 100 rows. Every update increments the row's version `v`, so
 * after the last restart Kafka must hold every (id, v) from 0 to the row's final version:
 * duplicates are allowed (at-least-once), gaps are not.
 */
const h = useHarness();
const env = h.env;
const ROWS = 2_000;
const CHANGES = 50_000;
const KILLS = 6;

describe('source under repeated SIGKILL', () => {
  const schema = uniqueName('chaos');
  let conn: Connector;
  let topic: string;

  beforeAll(async () => {
    await withPg(env.PG_URL, (c) =>
      c.query(
        `CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.customers (id int PRIMARY KEY, v int NOT NULL); CREATE TABLE ${schema}.orders (id int PRIMARY KEY, customer_id int)`,
      ),
    );
    conn = await h.connector(schema, 'http://127.0.0.1:1', { snapshot: 'never', erp: false });
    // Only the customers table matters here; the mapping is irrelevant to the source.
    conn.editConfig((config) => {
      config.mappings[0]!.fields = { last_name: 'v' };
    });
    topic = conn.topic();
  });

  it(`loses no change over ${KILLS} kills during ${CHANGES} changes`, async () => {
    const start = (): CliProcess => conn.run('--role', 'source');
    h.printOnFailure({ chars: 2000 });
    let proc = start();
    await conn.slotActive();

    let done = false;
    const writer = withPg(env.PG_URL, async (c) => {
      await c.query(`INSERT INTO ${schema}.customers SELECT g, 0 FROM generate_series(1, ${ROWS}) g`);
      let changes = ROWS;
      while (changes < CHANGES) {
        const size = Math.min(CHANGES - changes, 1 + Math.floor(Math.random() * 100));
        const from = 1 + Math.floor(Math.random() * (ROWS - size));
        // One multi-row statement per transaction: its rows share one commit LSN.
        await c.query(`UPDATE ${schema}.customers SET v = v + 1 WHERE id BETWEEN ${from} AND ${from + size - 1}`);
        changes += size;
        await new Promise((r) => setTimeout(r, 5));
      }
      done = true;
    });

    let kills = 0;
    while (!done || kills < KILLS) {
      await new Promise((r) => setTimeout(r, 400 + Math.random() * 1600));
      proc.kill('SIGKILL');
      await proc.exited;
      kills++;
      proc = start();
    }
    await writer;
    expect(kills).toBeGreaterThanOrEqual(KILLS);
    await conn.slotActive(); // the last incarnation streams: it has changes to finish

    const final = await withPg(
      env.PG_URL,
      async (c) => (await c.query<{ id: number; v: number }>(`SELECT id, v FROM ${schema}.customers`)).rows,
    );
    const expected = final.reduce((n, r) => n + r.v + 1, 0);
    const events = await waitFor(
      'every change in Kafka',
      async () => {
        const all = await readAllEvents(env, topic);
        const distinct = new Set(all.map((e) => `${String(e.key.id)}:${String(e.after?.v)}`));
        return distinct.size >= expected ? all : undefined;
      },
      180_000,
      2000,
    );
    const seen = new Set(events.map((e) => `${String(e.key.id)}:${String(e.after?.v)}`));
    const missing = final.flatMap((r) => Array.from({ length: r.v + 1 }, (_, v) => `${r.id}:${v}`)).filter((k) => !seen.has(k));
    expect(missing).toEqual([]);
    console.log(
      `chaos: ${kills} kills, ${expected} distinct changes, ${events.length} events in Kafka (${events.length - expected} duplicates)`,
    );
    expect(await proc.stop()).toBe(0);
  });
});
