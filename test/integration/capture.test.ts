import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseConfig } from '../../src/config.ts';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { setLogLevel } from '../../src/logger.ts';
import { dropCapture, readAllEvents, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * The source half alone (PostgreSQL -> Kafka), against the real services: exact values for
 * every column type through both the snapshot and the stream, composite keys, unchanged TOAST values, and ALTER TABLE mid-stream.
 */
const env = inject('stack');
const schema = uniqueName('cap');
const prefix = `cap.${schema}`;
let source: CaptureSource;

function topic(table: string): string {
  return `${prefix}.${schema}.${table}`;
}

async function eventsOf(table: string, count: number): Promise<ChangeEvent[]> {
  return waitFor(`${count} events of ${table}`, async () => {
    const events = await readAllEvents(env, topic(table));
    return events.length >= count ? events : undefined;
  }, 60_000, 500);
}

beforeAll(async () => {
  setLogLevel('warn'); // the source runs in the test process: keep its info lines out of the report
  await withPg(env.PG_URL, (c) =>
    c.query(`
      CREATE SCHEMA ${schema};
      CREATE TYPE ${schema}.mood AS ENUM ('sad', 'ok', 'happy');
      CREATE DOMAIN ${schema}.positive AS int CHECK (VALUE > 0);
      CREATE TABLE ${schema}.types (
        id int8 PRIMARY KEY, i2 int2, i4 int4, f8 float8, num numeric(38, 10), b bool, t text, vc varchar(20),
        u uuid, d date, ts timestamp(6), tz timestamptz, tm time, iv interval, j json, jb jsonb, by bytea,
        ai int4[], at text[], e ${schema}.mood, dom ${schema}.positive);
      CREATE TABLE ${schema}.lines (order_id int, line_no int, sku text, PRIMARY KEY (order_id, line_no));
      CREATE TABLE ${schema}.docs (id int PRIMARY KEY, title text, body text);
      CREATE TABLE ${schema}.evolving (id int PRIMARY KEY, note text);
      INSERT INTO ${schema}.types VALUES
        (9007199254740993, -32768, 2147483647, 0.1, 12345678901234567890.0123456789, true, 'héllo ✓', 'vc',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-02-29 23:59:59.123456', '2024-02-29 23:59:59.654321+02',
         '13:37:00.000001', '1 year 2 mons 3 days 04:05:06.789', '{"a": [1, 2]}', '{"b": {"c": null}}', '\\x00ff10',
         '{1,NULL,3}', '{"x","y z"}', 'happy', 7);
    `),
  );
  const config = parseConfig({
    name: schema,
    postgres: { url: env.PG_URL, tables: ['types', 'lines', 'docs', 'evolving'].map((t) => `${schema}.${t}`), snapshot: 'initial', heartbeatSeconds: 1 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix: prefix, partitions: 1, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: 'zendesk-sell', baseUrl: 'http://127.0.0.1:1', auth: { token: 'unused' }, limits: { requests: 1, windowSeconds: 1 } },
    mappings: [{ table: `${schema}.types`, object: 'x', externalId: { column: 'id', field: 'id' }, fields: { t: 't' } }],
  });
  source = new CaptureSource(config.postgres, config.kafka, (err) => {
    throw err;
  });
  await source.start();
});

afterAll(async () => {
  await source?.stop();
  await dropCapture(env.PG_URL, `pg2crm_${schema}`, `pg2crm_${schema}`);
});

/** The event value as PostgreSQL's text output, to compare with `col::text`. */
function asText(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return `\\x${v.toString('hex')}`;
  if (typeof v === 'boolean') return v ? 't' : 'f';
  return String(v);
}

describe('capture', () => {
  it('round-trips every column type exactly', async () => {
    // Row 9007199254740993 came through the initial snapshot (op r); this one streams (op c).
    await withPg(env.PG_URL, (c) =>
      c.query(`INSERT INTO ${schema}.types VALUES (2, NULL, NULL, 'NaN', NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`),
    );
    const events = await eventsOf('types', 2);
    const rows = await withPg(env.PG_URL, async (c) => {
      const cols = (await c.query<{ attname: string }>(`SELECT attname FROM pg_attribute WHERE attrelid = '${schema}.types'::regclass AND attnum > 0 ORDER BY attnum`)).rows.map((r) => r.attname);
      // format('%s') is the type's output function: what PostgreSQL itself prints.
      const res = await c.query({ text: `SELECT ${cols.map((n) => `CASE WHEN ${n} IS NULL THEN NULL ELSE format('%s', ${n}) END`).join(', ')} FROM ${schema}.types ORDER BY id DESC`, rowMode: 'array' });
      return res.rows.map((r: unknown[]) => Object.fromEntries(cols.map((n, i) => [n, r[i]])));
    });
    for (const row of rows) {
      const event = events.find((e) => String(e.key.id) === row.id);
      expect(event?.op).toBe(row.id === '2' ? 'c' : 'r');
      // float8 included: PostgreSQL and JavaScript both print the shortest exact form.
      expect(Object.fromEntries(Object.keys(row).map((k) => [k, asText(event?.after?.[k])]))).toEqual(row);
    }
    const big = events.find((e) => e.key.id === 9007199254740993n || String(e.key.id) === '9007199254740993');
    expect(typeof big?.after?.id).toBe('bigint');
    expect(big?.after?.i2).toBe(-32768);
    expect(big?.after?.b).toBe(true);
    expect(Buffer.isBuffer(big?.after?.by)).toBe(true);
  });

  it('keys events by composite primary keys', async () => {
    await withPg(env.PG_URL, async (c) => {
      await c.query(`INSERT INTO ${schema}.lines VALUES (1, 1, 'a'), (1, 2, 'b'), (2, 1, 'c')`);
      await c.query(`UPDATE ${schema}.lines SET sku = 'B' WHERE order_id = 1 AND line_no = 2`);
      await c.query(`DELETE FROM ${schema}.lines WHERE order_id = 2`);
    });
    const events = await eventsOf('lines', 5);
    expect(events.map((e) => [e.op, e.key])).toEqual([
      ['c', { order_id: 1, line_no: 1 }],
      ['c', { order_id: 1, line_no: 2 }],
      ['c', { order_id: 2, line_no: 1 }],
      ['u', { order_id: 1, line_no: 2 }],
      ['d', { order_id: 2, line_no: 1 }],
    ]);
    // One statement, one transaction: three rows share the commit LSN, told apart by seq.
    expect(new Set(events.slice(0, 3).map((e) => e.source.lsn)).size).toBe(1);
    expect(events.slice(0, 3).map((e) => e.source.seq)).toEqual([0, 1, 2]);
  });

  it('marks an unchanged 1 MB TOASTed column as unchanged, never null', async () => {
    await withPg(env.PG_URL, async (c) => {
      await c.query(`INSERT INTO ${schema}.docs SELECT 1, 'v1', string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 32768) g`);
      await c.query(`UPDATE ${schema}.docs SET title = 'v2' WHERE id = 1`);
    });
    const [insert, update] = await eventsOf('docs', 2);
    expect(String(insert?.after?.body)).toHaveLength(32768 * 32);
    expect(update?.op).toBe('u');
    expect(update?.after?.title).toBe('v2');
    expect(update?.unchanged).toEqual(['body']);
  });

  it('registers a new schema version on ALTER TABLE mid-stream and loses nothing', async () => {
    await withPg(env.PG_URL, async (c) => {
      await c.query(`INSERT INTO ${schema}.evolving VALUES (1, 'before')`);
      await c.query(`ALTER TABLE ${schema}.evolving ADD COLUMN extra text`);
      await c.query(`INSERT INTO ${schema}.evolving VALUES (2, 'added', 'x')`);
      await c.query(`ALTER TABLE ${schema}.evolving DROP COLUMN note`);
      await c.query(`ALTER TABLE ${schema}.evolving ALTER COLUMN extra TYPE int USING 0`);
      await c.query(`INSERT INTO ${schema}.evolving VALUES (3, 42)`);
    });
    const events = await eventsOf('evolving', 3);
    expect(events.map((e) => e.after)).toEqual([{ id: 1, note: 'before' }, { id: 2, note: 'added', extra: 'x' }, { id: 3, extra: 42 }]);
    const versions = (await (await fetch(`${env.SCHEMA_REGISTRY_URL}/subjects/${topic('evolving')}-value/versions`)).json()) as number[];
    expect(versions.length).toBe(3);
  });
});
