import { describe, expect, inject, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import type { CrmSimulator, SimStats } from '../../src/crm/sim-server.ts';
import { startSalesforceSimulator } from '../../src/crm/salesforce/simulator.ts';
import { startZohoSimulator } from '../../src/crm/zoho/simulator.ts';
import type { DeadLetter } from '../../src/sink/dead-letter.ts';
import { type Connector, readyConfig, simStats, useHarness } from '../helpers/connector-harness.ts';
import { topicSize, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * The switch between a CRM's regular batch API and its asynchronous bulk API, in the real
 * pipeline (PostgreSQL -> Kafka -> `pg2crm run --role sink`): a backlog of 3,000 changes, already
 * in Kafka when the sink starts, reaches the adapter in calls above `crm.bulkThreshold` and goes
 * through bulk jobs (Salesforce Bulk API 2.0, Zoho Bulk Write), with the records the CRM rejects
 * inside a job dead-lettered with its error; then 20 updates go through the regular API
 * (sObject Collections, Zoho upsert) and no new bulk job is created.
 */
const env = inject('stack');

/** Low, so the test stays small; the ready configs use 2,000 (Salesforce) and 10,000 (Zoho). */
const BULK_THRESHOLD = 500;
const BACKLOG = 3000;
/** Every REJECT_EVERY-th backlog row carries an e-mail the simulator's validation rule rejects. */
const REJECT_EVERY = 300;

type SimStart = (opts: { port: number; control?: boolean; limit: { requests: number; windowSeconds: number } }) => Promise<CrmSimulator>;

interface Crm {
  kind: string;
  start: SimStart;
  limit: { requests: number; windowSeconds: number };
  /** Simulator endpoints (`__sim/stats` byEndpoint keys) that create a bulk job / make a regular upsert call. */
  bulkJob: RegExp;
  regularUpsert: RegExp;
  /** What the CRM answers for a record its validation rule rejects inside a bulk job. */
  rejection: { code: string; message: RegExp };
}

// Limits far above what 3,000 records need, so nothing is throttled.
const CRMS: Crm[] = [
  {
    kind: 'salesforce',
    start: startSalesforceSimulator,
    limit: { requests: 100_000, windowSeconds: 86_400 },
    bulkJob: /^POST \/services\/data\/v[\d.]+\/jobs\/ingest$/,
    regularUpsert: /^PATCH \/services\/data\/v[\d.]+\/composite\/sobjects\/Contact\/ERP_Id__c$/,
    rejection: { code: 'FIELD_CUSTOM_VALIDATION_EXCEPTION', message: /^Email is invalid$/ },
  },
  {
    kind: 'zoho',
    start: startZohoSimulator,
    limit: { requests: 1_000_000, windowSeconds: 86_400 },
    bulkJob: /^POST \/crm\/bulk\/v\d+\/write$/,
    regularUpsert: /^POST \/crm\/v\d+\/Contacts\/upsert$/,
    rejection: { code: 'INVALID_DATA', message: /^Bulk Write skipped the record: INVALID_DATA-Email$/ },
  },
];

/** Calls made to the endpoints matching `pattern`. */
function calls(stats: SimStats, pattern: RegExp): number {
  return Object.entries(stats.byEndpoint).reduce((n, [endpoint, count]) => (pattern.test(endpoint) ? n + count : n), 0);
}

describe.each(CRMS)('$kind: bulk API switch through Kafka', ({ kind, start, limit, bulkJob, regularUpsert, rejection }) => {
  const h = useHarness();
  let sim: CrmSimulator;
  let conn: Connector;
  let mapping: Config['mappings'][number];
  let emailField: string;
  const schema = uniqueName(`bulk_${kind.slice(0, 4)}`);
  const rejected = new Set<string>();

  const stats = (): Promise<SimStats> => simStats<SimStats>(sim);
  const logs = (): void => h.printOnFailure({ all: true, more: async () => JSON.stringify(await stats()) });

  /** Waits until the group's lag is 0 and the CRM equals the table, then asserts it. */
  async function converged(): Promise<void> {
    await conn.crmMatchesTable(sim, mapping, (last) => expect(last.slice(0, 10)).toEqual([]), {
      skip: rejected,
      timeoutMs: 40_000,
      what: `${kind} equal to the table`,
    });
  }

  const deadLetters = (): Promise<DeadLetter[]> => conn.deadLetters();

  it(`writes a backlog of ${BACKLOG} changes through bulk jobs and dead-letters what the CRM rejects`, async () => {
    logs();
    sim = await h.simulator(start, { control: true, limit });
    const ready = readyConfig(kind);
    mapping = ready.customers;
    emailField = Object.entries(mapping.fields).find(([, col]) => col === 'email')![0];
    conn = await h.connector(schema, sim.url, {
      snapshot: 'never',
      extra: { crm: ready.crm(sim.url, { limit, bulkThreshold: BULK_THRESHOLD }), mappings: [ready.customersIn(schema)] },
    });
    await fetch(`${sim.url}/__sim/faults`, {
      method: 'POST',
      body: JSON.stringify({ rejectWhen: { field: emailField, contains: '@rejected.' } }),
    });

    // The source alone first: the whole backlog is in Kafka before the sink fetches, so a fetch
    // carries ~1,000 changes per partition, above the threshold.
    await conn.running('--role', 'source');
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email, company)
         SELECT 'F' || g, 'L' || g, CASE WHEN g % ${REJECT_EVERY} = 0 THEN 'b' || g || '@rejected.example' ELSE 'c' || g || '@ok.example' END,
                CASE WHEN g % 3 = 0 THEN NULL ELSE 'Co ' || (g % 50) END
         FROM generate_series(1, ${BACKLOG}) g`,
      ),
    );
    for (const id of await withPg(env.PG_URL, async (c) =>
      (await c.query(`SELECT id::text FROM ${schema}.customers WHERE email LIKE '%@rejected.%'`)).rows.map((r: { id: string }) => r.id),
    )) {
      rejected.add(id);
    }
    expect(rejected.size).toBe(BACKLOG / REJECT_EVERY);
    const topic = conn.topic();
    await waitFor(`${BACKLOG} changes in ${topic}`, async () => (await topicSize(env.KAFKA_BROKERS, topic)) === BACKLOG, 30_000);
    expect(calls(await stats(), /./)).toBe(0);

    conn.run('--role', 'sink');
    await converged();
    const after = await stats();
    const bulkJobs = calls(after, bulkJob);
    // The backlog went through bulk jobs: at least one, and the regular API carried too few calls
    // to have written it (collections take 200 records, Zoho's upsert 100).
    expect(bulkJobs).toBeGreaterThanOrEqual(1);
    expect(calls(after, regularUpsert) * 200).toBeLessThan(BACKLOG - rejected.size);
    expect(after.throttled).toBe(0);

    // Exactly the rejected rows are dead letters, each with the CRM's own error for the record.
    await waitFor('the dead letters', async () => (await topicSize(env.KAFKA_BROKERS, `${conn.topicPrefix}.dlq`)) >= rejected.size, 20_000);
    const letters = await deadLetters();
    expect(letters.map((l) => l.externalId).sort()).toEqual([...rejected].sort());
    for (const l of letters) {
      expect(l.object).toBe(mapping.object);
      expect(l.error.code).toBe(rejection.code);
      expect(l.error.message).toMatch(rejection.message);
      expect(l.error.field).toBe(emailField);
    }
    console.log(`${kind}: ${bulkJobs} bulk job(s), ${calls(after, regularUpsert)} regular upsert call(s) for the backlog`);
  });

  it('sends a call below the threshold through the regular API, not a bulk job', async () => {
    logs();
    const before = await stats();
    expect(calls(before, bulkJob)).toBeGreaterThanOrEqual(1);
    await withPg(env.PG_URL, (c) =>
      c.query(
        `UPDATE ${schema}.customers SET first_name = 'upd-' || id, company = 'Updated Co' WHERE id IN (SELECT id FROM ${schema}.customers WHERE email NOT LIKE '%@rejected.%' ORDER BY id LIMIT 20)`,
      ),
    );
    await converged();
    const after = await stats();
    expect(calls(after, regularUpsert)).toBeGreaterThan(calls(before, regularUpsert));
    expect(calls(after, bulkJob)).toBe(calls(before, bulkJob));
    expect(after.recordsWritten - before.recordsWritten).toBe(20);
    // No new dead letters: the updated rows were all valid.
    expect(await topicSize(env.KAFKA_BROKERS, `${conn.topicPrefix}.dlq`)).toBe(rejected.size);
  });
});
