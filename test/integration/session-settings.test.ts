import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseConfig } from '../../src/config.ts';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { setLogLevel } from '../../src/logger.ts';
import { dropCapture, readAllEvents, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * A database whose role (or database) sets its own output styles: pgoutput and `::text` print
 * values in the session's DateStyle, IntervalStyle, bytea_output and extra_float_digits
 * (https://www.postgresql.org/docs/15/runtime-config-client.html#RUNTIME-CONFIG-CLIENT-FORMAT),
 * and ALTER ROLE/DATABASE ... SET applies to replication connections too. The connector must
 * capture the same exact values as under the defaults, through the snapshot and the stream.
 */
const env = inject('stack');
const schema = uniqueName('styles');
const role = uniqueName('styles_role');
const password = 'styles-Pa55';
const prefix = `sty.${schema}`;
let source: CaptureSource | undefined;
const failures: Error[] = [];

beforeAll(async () => {
  setLogLevel('warn');
  await withPg(env.PG_URL, (c) =>
    c.query(`
      CREATE ROLE ${role} LOGIN SUPERUSER PASSWORD '${password}';
      ALTER ROLE ${role} SET DateStyle = 'SQL, DMY';
      ALTER ROLE ${role} SET IntervalStyle = 'sql_standard';
      ALTER ROLE ${role} SET bytea_output = 'escape';
      ALTER ROLE ${role} SET extra_float_digits = 0;
      ALTER ROLE ${role} SET TimeZone = 'Asia/Kathmandu';
      CREATE SCHEMA ${schema};
      CREATE TABLE ${schema}.styled (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, iv interval, by bytea, f8 float8);
      INSERT INTO ${schema}.styled VALUES
        (1, '2024-02-29', '2024-02-29 23:59:59.123456', '2024-02-29 23:59:59.654321+02', '1 year 2 mons 3 days 04:05:06.789', '\\x00ff10', 1::float8 / 3);
    `),
  );
  const url = new URL(env.PG_URL);
  url.username = role;
  url.password = password;
  const config = parseConfig({
    name: schema,
    postgres: { url: url.toString(), tables: [`${schema}.styled`], snapshot: 'initial', heartbeatSeconds: 1 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix: prefix, partitions: 1, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: 'zendesk-sell', baseUrl: 'http://127.0.0.1:1', auth: { token: 'unused' }, limits: { requests: 1, windowSeconds: 1 } },
    mappings: [{ table: `${schema}.styled`, object: 'x', externalId: { column: 'id', field: 'id' }, fields: { d: 'd' } }],
  });
  source = new CaptureSource(config.postgres, config.kafka, (err) => void failures.push(err));
  await source.start();
});

afterAll(async () => {
  await source?.stop();
  await dropCapture(env.PG_URL, `pg2crm_${schema}`, `pg2crm_${schema}`);
  await withPg(env.PG_URL, (c) => c.query(`DROP SCHEMA ${schema} CASCADE; DROP ROLE IF EXISTS ${role}`)).catch(() => undefined);
});

/** The values as the capture must give them whatever the session's styles: ISO dates, PostgreSQL intervals, exact floats, raw bytes. */
function printed(e: ChangeEvent | undefined): Record<string, string> | undefined {
  const a = e?.after;
  if (!a) return undefined;
  return {
    d: String(a.d),
    ts: String(a.ts),
    tz: String(a.tz),
    iv: String(a.iv),
    by: Buffer.isBuffer(a.by) ? a.by.toString('hex') : `not bytes: ${String(a.by)}`,
    f8: String(a.f8),
  };
}

describe('session output styles', () => {
  it("captures exact values when the connector's role sets DateStyle, IntervalStyle, bytea_output, extra_float_digits and TimeZone", async () => {
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.styled VALUES (2, '2024-02-29', '2024-02-29 23:59:59.123456', '2024-02-29 23:59:59.654321+02', '1 year 2 mons 3 days 04:05:06.789', '\\x00ff10', 1::float8 / 3)`,
      ),
    );
    const events = await waitFor(
      'two events of styled (snapshot and stream), or a source failure',
      async () => {
        if (failures.length) return [];
        const all = await readAllEvents(env, `${prefix}.${schema}.styled`);
        return all.length >= 2 ? all : undefined;
      },
      60_000,
      500,
    );
    expect(failures.map((f) => f.message)).toEqual([]);
    const want = {
      d: '2024-02-29',
      ts: '2024-02-29 23:59:59.123456',
      tz: '2024-02-29 21:59:59.654321+00',
      iv: '1 year 2 mons 3 days 04:05:06.789',
      by: '00ff10',
      f8: String(1 / 3),
    };
    expect(printed(events.find((e) => e.key.id === 1 && e.op === 'r'))).toEqual(want);
    expect(printed(events.find((e) => e.key.id === 2 && e.op === 'c'))).toEqual(want);
  });
});
