import { describe, expect, inject, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { type Connector, readyConfig, simStats, useHarness } from '../helpers/connector-harness.ts';
import { TEST_CRMS } from '../helpers/crm-sims.ts';
import { groupMembers, recordField, topicSize, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Every CRM through real PostgreSQL, Kafka and the registry, with the mapping of its ready
 * config in connectors/: 10,000 changes (2,000 inserts, 8,000 updates in 1,000-row statements,
 * many hitting the same records) end with the simulator equal to the table; with injected
 * per-record rejections the bad records are in the dead-letter topic and the rest written; a
 * throttle storm pauses the consumer, which stays in its group (same member) and resumes.
 */
const env = inject('stack');

describe.each(TEST_CRMS)('$kind sink through Kafka', ({ kind, start, limit }) => {
  const h = useHarness();
  let sim: CrmSimulator;
  let conn: Connector;
  let mapping: Config['mappings'][number];
  const schema = uniqueName(kind.replace('-', '_').slice(0, 8));

  /** Waits until lag is 0 and the CRM equals the table, then asserts it. */
  const converged = (skip = new Set<string>()): Promise<Record<string, unknown>[]> =>
    conn.crmMatchesTable(sim, mapping, (last) => expect(last.slice(0, 10)).toEqual([]), {
      skip,
      timeoutMs: 150_000,
      everyMs: 500,
      what: `${kind} equal to the table`,
    });

  it('writes 10,000 changes so the CRM equals the table', async () => {
    h.printOnFailure({ chars: 6000, all: true });
    sim = await h.simulator(start, { control: true, limit });
    const ready = readyConfig(kind);
    mapping = ready.customers;
    conn = await h.connector(schema, sim.url, {
      snapshot: 'never',
      extra: { crm: ready.crm(sim.url, { limit }), mappings: [ready.customersIn(schema)] },
    });
    await conn.running();
    await withPg(env.PG_URL, async (c) => {
      await c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email, company)
         SELECT 'F' || g, 'L' || g, 'c' || g || '@ok.example', CASE WHEN g % 3 = 0 THEN NULL ELSE 'Co ' || (g % 50) END
         FROM generate_series(1, 2000) g`,
      );
      // Skewed: half of each round hits the first 100 customers, the rest spread over all.
      for (let round = 1; round <= 8; round++) {
        await c.query(
          `UPDATE ${schema}.customers SET last_name = 'L' || id || '-r${round}', email = 'u${round}.' || id || '@ok.example'
           WHERE id IN (SELECT g FROM generate_series(1, 100) g UNION ALL SELECT 100 + ((g * 7919 + ${round} * 104729) % 1900) FROM generate_series(1, 900) g)`,
        );
      }
    });
    expect(await converged()).toHaveLength(2000);
  });

  it('dead-letters the records the CRM rejects and writes the rest', async () => {
    h.printOnFailure({ chars: 6000, all: true });
    const emailField = Object.entries(mapping.fields).find(([, col]) => col === 'email')?.[0];
    expect(emailField).toBeDefined();
    await fetch(`${sim.url}/__sim/faults`, {
      method: 'POST',
      body: JSON.stringify({ rejectWhen: { field: emailField, contains: '@rejected.' } }),
    });
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email)
         SELECT 'N' || g, 'M' || g, CASE WHEN g % 10 = 0 THEN 'n' || g || '@rejected.example' ELSE 'n' || g || '@ok.example' END
         FROM generate_series(1, 100) g`,
      ),
    );
    const rejected = new Set(
      await withPg(env.PG_URL, async (c) =>
        (await c.query(`SELECT id::text FROM ${schema}.customers WHERE email LIKE '%@rejected.%'`)).rows.map((r: { id: string }) => r.id),
      ),
    );
    expect(rejected.size).toBe(10);
    expect(await converged(rejected)).toHaveLength(2090);
    await waitFor('10 dead letters', async () => (await topicSize(env.KAFKA_BROKERS, `${conn.topicPrefix}.dlq`)) === 10, 60_000);
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ clear: true }) });
  });

  it('pauses on a throttle storm, stays in the group and resumes', async () => {
    h.printOnFailure({ chars: 6000, all: true });
    const before = await groupMembers(env.KAFKA_BROKERS, conn.groupId);
    expect(before).toHaveLength(1);
    const stats0 = await simStats<{ throttled: number }>(sim);
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ throttle: { requests: 3, retryAfterSeconds: 5 } }) });
    await withPg(env.PG_URL, (c) =>
      c.query(`UPDATE ${schema}.customers SET first_name = 'after-storm-' || id WHERE id <= 300 AND email NOT LIKE '%@rejected.%'`),
    );
    const rejected = new Set(
      await withPg(env.PG_URL, async (c) =>
        (await c.query(`SELECT id::text FROM ${schema}.customers WHERE email LIKE '%@rejected.%'`)).rows.map((r: { id: string }) => r.id),
      ),
    );
    const firstName = Object.entries(mapping.fields).find(([, c]) => c === 'first_name')![0];
    const storm = (records: Record<string, unknown>[]) =>
      records.filter((r) => String(recordField(r, firstName)).startsWith('after-storm-'));
    const records = await converged(rejected);
    const stats1 = await simStats<{ throttled: number }>(sim);
    expect(stats1.throttled - stats0.throttled).toBeGreaterThanOrEqual(1);
    expect(stats1.throttled - stats0.throttled).toBeLessThanOrEqual(3);
    expect((await groupMembers(env.KAFKA_BROKERS, conn.groupId)).map((m) => m.memberId)).toEqual(before.map((m) => m.memberId));
    expect(storm(records)).toHaveLength(300);
  });
});
