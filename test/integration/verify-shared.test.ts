import { afterAll, describe, expect, inject, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { createAdapter } from '../../src/crm/create-adapter.ts';
import type { CrmWrite } from '../../src/crm/crm-adapter.ts';
import { startHubSpotSimulator } from '../../src/crm/hubspot/simulator.ts';
import { verify } from '../../src/verify/verify.ts';
import { uniqueName, withPg } from '../helpers/fixtures.ts';

/**
 * `pg2crm verify` (no repair, so no Kafka) against the stack's PostgreSQL and a HubSpot
 * simulator, for two mappings that write the same CRM object by the same external id field:
 * neither one's records are the other's extras, under `--table` too; and a row whose external id
 * column is numeric with a scale ("1.50" in PostgreSQL, "1.5" as the sink writes it) that is
 * stale stays stale after the second look. Rows are read in keyset pages by primary key.
 */
const env = inject('stack');
const LIMIT = { requests: 10_000, windowSeconds: 10 };

describe('pg2crm verify: mappings sharing a CRM object', () => {
  const schema = uniqueName('verifyshared');
  afterAll(() => withPg(env.PG_URL, (c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)));

  it('counts no record another mapping expects as extra, and keeps a numeric-id stale row stale', async () => {
    await withPg(env.PG_URL, async (c) => {
      await c.query(`CREATE SCHEMA ${schema}`);
      await c.query(`CREATE TABLE ${schema}.customers_eu (id bigint PRIMARY KEY, code numeric(8,2) NOT NULL, last_name text)`);
      await c.query(`CREATE TABLE ${schema}.customers_us (id bigint PRIMARY KEY, last_name text)`);
      await c.query(`INSERT INTO ${schema}.customers_eu SELECT i, i + 0.5, 'Eu' || i FROM generate_series(1, 5) i`);
      await c.query(`INSERT INTO ${schema}.customers_us SELECT i, 'Us' || i FROM generate_series(101, 105) i`);
    });
    const sim = await startHubSpotSimulator({ port: 0, control: true, limit: LIMIT });
    try {
      const config = parseConfig({
        name: 't',
        postgres: { url: env.PG_URL, tables: [`${schema}.customers_eu`, `${schema}.customers_us`] },
        kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
        crm: { kind: 'hubspot', baseUrl: sim.url, auth: { token: 'sim-token' }, limits: LIMIT },
        mappings: [
          {
            table: `${schema}.customers_eu`,
            object: 'contacts',
            externalId: { column: 'code', field: 'erp_id' },
            fields: { lastname: 'last_name' },
          },
          {
            table: `${schema}.customers_us`,
            object: 'contacts',
            externalId: { column: 'id', field: 'erp_id' },
            fields: { lastname: 'last_name' },
          },
        ],
      });
      const adapter = createAdapter({ ...config.crm, auth: config.crm.credentials[0]! });
      const write = (externalId: string, lastname: string): CrmWrite => ({
        op: 'upsert',
        object: 'contacts',
        externalIdField: 'erp_id',
        externalId,
        fields: { lastname },
      });
      try {
        const records = [
          ...[1, 2, 3, 4, 5].map((i) => write(`${i}.5`, i === 2 ? 'Changed' : `Eu${i}`)),
          ...[101, 102, 103, 104, 105].map((i) => write(String(i), `Us${i}`)),
          write('third-party-1', 'Made elsewhere'),
        ];
        const out = await adapter.write(records, () => undefined);
        expect(out.filter((o) => o.status !== 'done')).toEqual([]);
      } finally {
        await adapter.close();
      }
      // Two rows per query: the keyset pages of the full read are crossed (5 rows: 3 queries).
      const options = { repair: false, readShare: 0.5, maxWaitSeconds: 60, settleSeconds: 0, examples: 10, rowsPerQuery: 2 };
      for (const table of [undefined, `${schema}.customers_eu`]) {
        const report = await verify(config, { ...options, table });
        const eu = report.mappings.find((m) => m.table === `${schema}.customers_eu`)!;
        expect(eu, `--table ${table}`).toMatchObject({ checked: 5, missing: { count: 0 }, stale: { count: 1 } });
        expect(eu.stale.examples).toEqual([{ externalId: '2.5', fields: ['lastname'] }]);
        expect(eu.extra?.examples).toEqual(['third-party-1']);
        if (table === undefined) {
          const us = report.mappings.find((m) => m.table === `${schema}.customers_us`)!;
          expect(us).toMatchObject({ checked: 5, missing: { count: 0 }, stale: { count: 0 } });
          expect(us.extra?.examples).toEqual(['third-party-1']);
        }
      }
    } finally {
      await sim.close();
    }
  }, 60_000);
});
