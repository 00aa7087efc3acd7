import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseConfig } from '../../src/config.ts';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { PgDate, PgDecimal, PgTime, PgTimestamp, TIMESTAMP_INFINITY } from '../../src/events/pg-values.ts';
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

/** A row of the values the Avro logical types cannot hold, and the ends of PostgreSQL's ranges. */
const SPECIALS = (id: number) =>
  `(${id}, 32767, -2147483648, 'Infinity', '-0', 'NaN', 'Infinity', NULL, '', NULL, NULL, 'infinity', '294276-12-31 23:59:59.999999',
    '-infinity', '24:00:00', '-1 years -2 days +03:04:05.000006', '[]', 'null', '\\x', '{}', '{NULL}', 'sad', 2147483647, -9999999999.99),
   (${id + 100}, 0, 0, '1e-45', '1e-07', '-99999999999999999999999999.9999999999', '-0.000', NULL, NULL, NULL, NULL,
    '4713-01-01 BC', '4713-01-01 00:00:00 BC', '1800-01-01 00:00:00+00:19:32', '00:00:00', '0', '"é"', '[1e400]', NULL, NULL, NULL, NULL, 1, 0)`;

function topic(table: string): string {
  return `${prefix}.${schema}.${table}`;
}

async function eventsOf(table: string, count: number): Promise<ChangeEvent[]> {
  return waitFor(
    `${count} events of ${table}`,
    async () => {
      const events = await readAllEvents(env, topic(table));
      return events.length >= count ? events : undefined;
    },
    60_000,
    500,
  );
}

beforeAll(async () => {
  setLogLevel('warn'); // the source runs in the test process: keep its info lines out of the report
  await withPg(env.PG_URL, (c) =>
    c.query(`
      CREATE SCHEMA ${schema};
      CREATE TYPE ${schema}.mood AS ENUM ('sad', 'ok', 'happy');
      CREATE DOMAIN ${schema}.positive AS int CHECK (VALUE > 0);
      CREATE DOMAIN ${schema}.money2 AS numeric(12, 2);
      CREATE TABLE ${schema}.types (
        id int8 PRIMARY KEY, i2 int2, i4 int4, f4 float4, f8 float8, num numeric(38, 10), nfree numeric, b bool, t text,
        vc varchar(20), u uuid, d date, ts timestamp(6), tz timestamptz, tm time, iv interval, j json, jb jsonb, by bytea,
        ai int4[], at text[], e ${schema}.mood, dom ${schema}.positive, dnum ${schema}.money2);
      CREATE TABLE ${schema}.lines (order_id int, line_no int, sku text, PRIMARY KEY (order_id, line_no));
      CREATE TABLE ${schema}.docs (id int PRIMARY KEY, title text, body text);
      CREATE TABLE ${schema}.evolving (id int PRIMARY KEY, note text);
      INSERT INTO ${schema}.types VALUES
        (9007199254740993, -32768, 2147483647, 0.1, 0.1, 12345678901234567890.0123456789, 3.14159265358979323846264338327950288,
         true, 'héllo ✓', 'vc', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-02-29 23:59:59.123456',
         '2024-02-29 23:59:59.654321+02', '13:37:00.000001', '1 year 2 mons 3 days 04:05:06.789', '{"a": [1, 2]}',
         '{"b": {"c": null}}', '\\x00ff10', '{1,NULL,3}', '{"x","y z"}', 'happy', 7, 1234.5),
        ${SPECIALS(3)};
    `),
  );
  const config = parseConfig({
    name: schema,
    postgres: {
      url: env.PG_URL,
      tables: ['types', 'lines', 'docs', 'evolving'].map((t) => `${schema}.${t}`),
      snapshot: 'initial',
      heartbeatSeconds: 1,
    },
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

/**
 * A decoded event value as PostgreSQL input text: PostgreSQL then prints it with the column's
 * own type, which must give exactly what it prints for the stored value.
 */
function asInput(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return `\\x${v.toString('hex')}`;
  if (typeof v === 'boolean') return v ? 't' : 'f';
  if (Object.is(v, -0)) return '-0';
  return String(v); // numbers, bigint, string, and PgDecimal / PgDate / PgTimestamp / PgTime's text
}

/** Each column as the text of its type's output function (format('%s') is; `::text` differs for some types). */
const asText = (expr: string) => `CASE WHEN ${expr} IS NULL THEN NULL ELSE format('%s', ${expr}) END`;

describe('capture', () => {
  it('round-trips every column type exactly, NULLs and infinities included, through snapshot and stream', async () => {
    // Rows 9007199254740993, 3 and 103 came through the initial snapshot (op r); 2, 4 and 104 stream (op c).
    await withPg(env.PG_URL, async (c) => {
      await c.query(`INSERT INTO ${schema}.types (id, b) VALUES (2, false)`);
      await c.query(`INSERT INTO ${schema}.types VALUES ${SPECIALS(4)}`);
    });
    const events = await eventsOf('types', 6);
    const { columns, rows } = await withPg(env.PG_URL, async (c) => {
      const cols = (
        await c.query<{ name: string; type: string }>(
          `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = '${schema}.types'::regclass AND attnum > 0 ORDER BY attnum`,
        )
      ).rows;
      const res = await c.query({
        text: `SELECT ${cols.map((col) => asText(col.name)).join(', ')} FROM ${schema}.types ORDER BY id`,
        rowMode: 'array',
      });
      return { columns: cols, rows: res.rows as (string | null)[][] };
    });
    expect(rows).toHaveLength(6);
    for (const row of rows) {
      const event = events.find((e) => String(e.key.id) === row[0]);
      expect(event?.op).toBe(['2', '4', '104'].includes(row[0]!) ? 'c' : 'r');
      const inputs = columns.map((col) => asInput(event?.after?.[col.name]));
      const printed = await withPg(env.PG_URL, async (c) => {
        const res = await c.query({
          text: `SELECT ${columns.map((col, i) => asText(`$${i + 1}::${col.type}`)).join(', ')}`,
          values: inputs,
          rowMode: 'array',
        });
        return res.rows[0] as (string | null)[];
      });
      expect(Object.fromEntries(columns.map((col, i) => [col.name, printed[i]]))).toEqual(
        Object.fromEntries(columns.map((col, i) => [col.name, row[i]])),
      );
    }
    const big = events.find((e) => String(e.key.id) === '9007199254740993')!.after!;
    expect(typeof big.id).toBe('bigint');
    expect(big.i2).toBe(-32768);
    expect(big.f4).toBe(0.1); // float4 read back as its shortest decimal, not 0.10000000149011612
    expect(big.b).toBe(true);
    expect(Buffer.isBuffer(big.by)).toBe(true);
    expect(big.num).toEqual(new PgDecimal(123456789012345678900123456789n, 10));
    expect(big.nfree).toEqual(PgDecimal.parse('3.14159265358979323846264338327950288'));
    expect(big.dnum).toEqual(new PgDecimal(123450n, 2)); // domain over numeric(12, 2)
    expect(big.dom).toBe(7); // domain over int
    expect(big.d).toEqual(PgDate.parse('2024-02-29'));
    expect(big.ts).toEqual(PgTimestamp.parse('2024-02-29 23:59:59.123456', false));
    expect((big.tz as PgTimestamp).toIso()).toBe('2024-02-29T21:59:59.654321Z');
    expect(big.tm).toEqual(PgTime.parse('13:37:00.000001'));
    const special = events.find((e) => String(e.key.id) === '3')!.after!;
    expect(special.num).toBe('NaN');
    expect(special.d).toEqual(new PgDate(Infinity));
    expect(special.tz).toEqual(PgTimestamp.parse('-infinity', true));

    // Snapshot and stream rows share one schema version, domains resolved the same way on both paths.
    const subject = `${topic('types')}-value`;
    expect(((await (await fetch(`${env.SCHEMA_REGISTRY_URL}/subjects/${subject}/versions`)).json()) as number[]).length).toBe(1);
    const latest = (await (await fetch(`${env.SCHEMA_REGISTRY_URL}/subjects/${subject}/versions/latest`)).json()) as { schema: string };
    const row = (JSON.parse(latest.schema) as { fields: { name: string; type: unknown }[] }).fields.find((f) => f.name === 'before')!; // defines Row
    const fields = ((row.type as unknown[])[1] as { fields: { name: string; type: unknown[] }[] }).fields;
    const typeOf = (name: string) => fields.find((f) => f.name === name)?.type[1];
    expect(typeOf('num')).toEqual({ type: 'bytes', logicalType: 'decimal', precision: 38, scale: 10 });
    expect(typeOf('dnum')).toEqual({ type: 'bytes', logicalType: 'decimal', precision: 12, scale: 2 });
    expect(typeOf('d')).toEqual({ type: 'int', logicalType: 'date' });
    expect(typeOf('ts')).toEqual({ type: 'long', logicalType: 'local-timestamp-micros' });
    expect(typeOf('tz')).toEqual({ type: 'long', logicalType: 'timestamp-micros' });
    expect(typeOf('tm')).toEqual({ type: 'long', logicalType: 'time-micros' });
    expect(typeOf('u')).toEqual({ type: 'string', logicalType: 'uuid' });
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
      await c.query(
        `INSERT INTO ${schema}.docs SELECT 1, 'v1', string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 32768) g`,
      );
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
      await c.query(`ALTER TABLE ${schema}.evolving ALTER COLUMN extra TYPE numeric(6, 2)`);
      await c.query(`INSERT INTO ${schema}.evolving VALUES (4, 12.5)`);
      await c.query(`ALTER TABLE ${schema}.evolving ALTER COLUMN extra TYPE timestamptz USING '2024-01-01'::timestamptz`);
      await c.query(`INSERT INTO ${schema}.evolving VALUES (5, 'infinity')`);
    });
    const events = await eventsOf('evolving', 5);
    expect(events.map((e) => e.after)).toEqual([
      { id: 1, note: 'before' },
      { id: 2, note: 'added', extra: 'x' },
      { id: 3, extra: 42 },
      { id: 4, extra: new PgDecimal(1250n, 2) },
      { id: 5, extra: new PgTimestamp(TIMESTAMP_INFINITY, true) },
    ]);
    expect(events[3]?.after?.extra).toBeInstanceOf(PgDecimal);
    expect(events[4]?.after?.extra).toBeInstanceOf(PgTimestamp);
    const versions = (await (await fetch(`${env.SCHEMA_REGISTRY_URL}/subjects/${topic('evolving')}-value/versions`)).json()) as number[];
    expect(versions.length).toBe(5);
  });
});
