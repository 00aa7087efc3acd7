import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { ensurePublication } from '../../src/capture/slot-admin.ts';
import { parseConfig } from '../../src/config.ts';
import { setLogLevel } from '../../src/logger.ts';
import { dropCapture, readAllEvents, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/** The publication holds exactly postgres.tables and publishes exactly postgres.publish, even when it existed before. */
const env = inject('stack');
const schema = uniqueName('pub');

async function publicationState(name: string): Promise<{ tables: string[]; ops: string[] } | undefined> {
  return withPg(env.PG_URL, async (c) => {
    const r = await c.query<{ tables: string[] | null; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean }>(
      `SELECT pubinsert, pubupdate, pubdelete, pubtruncate,
              (SELECT array_agg(schemaname || '.' || tablename ORDER BY tablename) FROM pg_publication_tables t WHERE t.pubname = p.pubname) AS tables
         FROM pg_publication p WHERE pubname = $1`,
      [name],
    );
    const row = r.rows[0];
    if (!row) return undefined;
    return { tables: row.tables ?? [], ops: (['insert', 'update', 'delete', 'truncate'] as const).filter((op) => row[`pub${op}`]) };
  });
}

beforeAll(async () => {
  setLogLevel('warn');
  await withPg(env.PG_URL, (c) =>
    c.query(`CREATE SCHEMA ${schema};
      CREATE TABLE ${schema}.a (id int PRIMARY KEY, v text);
      CREATE TABLE ${schema}.b (id int PRIMARY KEY, v text);
      CREATE TABLE ${schema}.c (id int PRIMARY KEY, v text);`),
  );
});

describe('publication', () => {
  const name = `${schema}_p`;
  afterAll(() => withPg(env.PG_URL, (c) => c.query(`DROP PUBLICATION IF EXISTS ${name}`)));

  it('is created with the configured publish option, then left alone while it matches', async () => {
    await withPg(env.PG_URL, async (c) => {
      expect(await ensurePublication(c, name, [`${schema}.a`, `${schema}.b`], ['insert', 'update'])).toEqual({ action: 'created' });
      expect(await ensurePublication(c, name, [`${schema}.b`, `${schema}.a`], ['update', 'insert'])).toEqual({ action: 'unchanged' });
    });
    expect(await publicationState(name)).toEqual({ tables: [`${schema}.a`, `${schema}.b`], ops: ['insert', 'update'] });
  });

  it('an existing publication with other tables or operations is altered to the config, never left stale', async () => {
    await withPg(env.PG_URL, (c) =>
      c.query(`ALTER PUBLICATION ${name} SET TABLE ${schema}.a, ${schema}.c; ALTER PUBLICATION ${name} SET (publish = 'delete')`),
    );
    const sync = await withPg(env.PG_URL, (c) =>
      ensurePublication(c, name, [`${schema}.a`, `${schema}.b`], ['insert', 'update', 'delete', 'truncate']),
    );
    expect(sync).toEqual({ action: 'altered', tablesBefore: [`${schema}.a`, `${schema}.c`], publishBefore: ['delete'] });
    expect(await publicationState(name)).toEqual({
      tables: [`${schema}.a`, `${schema}.b`],
      ops: ['insert', 'update', 'delete', 'truncate'],
    });

    // FOR TABLES IN SCHEMA members count too: SET TABLE replaces them.
    await withPg(env.PG_URL, (c) => c.query(`ALTER PUBLICATION ${name} ADD TABLES IN SCHEMA ${schema}`));
    expect((await withPg(env.PG_URL, (c) => ensurePublication(c, name, [`${schema}.a`, `${schema}.b`]))).action).toBe('altered');
    expect((await publicationState(name))?.tables).toEqual([`${schema}.a`, `${schema}.b`]);
  });

  it('a FOR ALL TABLES publication of that name is refused with the fix', async () => {
    const all = `${schema}_all`;
    await withPg(env.PG_URL, async (c) => {
      await c.query(`CREATE PUBLICATION ${all} FOR ALL TABLES`);
      try {
        await expect(ensurePublication(c, all, [`${schema}.a`])).rejects.toThrow(
          /FOR ALL TABLES.*DROP PUBLICATION|set postgres\.publication/,
        );
      } finally {
        await c.query(`DROP PUBLICATION ${all}`);
      }
    });
  });

  it('postgres.publish without delete: the connector streams inserts and updates, no deletes', async () => {
    const config = parseConfig({
      name: schema,
      postgres: { url: env.PG_URL, tables: [`${schema}.a`], publish: ['insert', 'update'], snapshot: 'never', heartbeatSeconds: 1 },
      kafka: { brokers: env.KAFKA_BROKERS, topicPrefix: `pub.${schema}`, partitions: 1, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
      crm: { kind: 'zendesk-sell', baseUrl: 'http://127.0.0.1:1', auth: { token: 'unused' }, limits: { requests: 1, windowSeconds: 1 } },
      mappings: [{ table: `${schema}.a`, object: 'x', externalId: { column: 'id', field: 'id' }, fields: { v: 'v' } }],
    });
    expect(config.postgres.publish).toEqual(['insert', 'update']);
    const source = new CaptureSource(config.postgres, config.kafka, (err) => {
      throw err;
    });
    try {
      await source.start();
      await withPg(env.PG_URL, async (c) => {
        await c.query(`INSERT INTO ${schema}.a VALUES (1, 'one'), (2, 'two')`);
        await c.query(`DELETE FROM ${schema}.a WHERE id = 1`);
        await c.query(`UPDATE ${schema}.a SET v = 'TWO' WHERE id = 2`);
      });
      const events = await waitFor(
        '3 events',
        async () => {
          const e = await readAllEvents(env, `pub.${schema}.${schema}.a`);
          return e.length >= 3 ? e : undefined;
        },
        60_000,
        500,
      );
      expect(events.map((e) => [e.op, e.key.id])).toEqual([
        ['c', 1],
        ['c', 2],
        ['u', 2],
      ]);
      expect(await publicationState(config.postgres.publication)).toEqual({ tables: [`${schema}.a`], ops: ['insert', 'update'] });
    } finally {
      await source.stop();
      await dropCapture(env.PG_URL, config.postgres.slot, config.postgres.publication);
    }
  });
});
