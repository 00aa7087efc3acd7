import { Kafka, logLevel } from 'kafkajs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import type { DeadLetter } from '../../src/sink/dead-letter.ts';
import { type Connector, simStats, useHarness } from '../helpers/connector-harness.ts';
import { runCli, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * The sink under CRM faults, through real Kafka: records the CRM rejects go to the dead-letter
 * topic and the rest is written; a throttle storm with a Retry-After longer than the session
 * timeout pauses the partitions, the consumer stays in its group, and resumes by itself.
 */
const h = useHarness();
const env = h.env;

async function deadLetters(topic: string, expected: number): Promise<DeadLetter[]> {
  const kafka = new Kafka({ clientId: 'dlq-reader', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: uniqueName('dlq') });
  const out: DeadLetter[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => void out.push(JSON.parse(String(message.value)) as DeadLetter) });
  await waitFor('dead letters', async () => out.length >= expected, 60_000, 500);
  await consumer.disconnect();
  return out;
}

describe('sink under CRM faults', () => {
  let sim: CrmSimulator;
  let conn: Connector;
  const schema = uniqueName('faults');
  const topics = (): string[] => conn.topics;

  beforeAll(async () => {
    sim = await h.simulator();
    // One call at a time: the storm throttles the next request only (the simulator's fault), and
    // a call already in flight on another partition when the 429 comes back would be written
    // during the storm without the sink having done anything wrong.
    conn = await h.connector(schema, sim.url, { snapshot: 'never', limits: { concurrency: 1 } });
    await conn.running();
  });

  it('dead-letters the records the CRM rejects and writes the rest', async () => {
    h.printOnFailure({ all: true });
    await fetch(`${sim.url}/__sim/faults`, {
      method: 'POST',
      body: JSON.stringify({ rejectWhen: { field: 'email', contains: '@rejected.' } }),
    });
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email)
         SELECT 'F' || g, 'L' || g, CASE WHEN g % 10 = 0 THEN 'c' || g || '@rejected.example' ELSE 'c' || g || '@ok.example' END
         FROM generate_series(1, 100) g`,
      ),
    );
    await waitFor('90 contacts written', async () => (await simRecords(sim.url, 'contacts')).length === 90);
    const letters = await deadLetters(`${conn.topicPrefix}.dlq`, 10);
    expect(letters.map((l) => Number(l.externalId)).sort((a, b) => a - b)).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    expect(letters[0]).toMatchObject({ object: 'contacts', error: { field: 'email' }, attempts: 1, topic: topics()[0] });
    expect(letters[0]?.value).toBeTruthy(); // the original Avro message, for `dlq replay`
    await conn.lagZero();
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ clear: true }) });

    // The CRM-side cause is fixed: `dlq replay` re-drives the 10 records from PostgreSQL's current rows.
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.customers SET first_name = 'changed-later' WHERE id = 20`));
    const replay = await runCli(['dlq', 'replay', '--config', conn.configFile]);
    expect(replay.output).toContain('replayed 10 dead letter(s): 10 record(s) re-published');
    expect(replay.code).toBe(0);
    await waitFor('all 100 contacts', async () => (await simRecords(sim.url, 'contacts')).length === 100);
    const twenty = (await simRecords(sim.url, 'contacts')).find((r) => (r.custom_fields as Record<string, unknown>).erp_id === '20');
    expect(twenty?.first_name).toBe('changed-later'); // the current row, not the dead-lettered one
    expect((await runCli(['dlq', 'replay', '--config', conn.configFile])).output).toContain('no dead letters to replay');
  });

  it('pauses on a throttle storm longer than the session timeout, stays in the group, resumes', async () => {
    h.printOnFailure({ all: true });
    const kafka = new Kafka({ clientId: 'group-watch', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    const membersBefore = (await admin.describeGroups([conn.groupId])).groups[0]?.members.map((m) => m.memberId);
    expect(membersBefore).toHaveLength(1);

    // 40 s > the 30 s session timeout: only a consumer that keeps heartbeating while paused survives.
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ throttle: { requests: 1, retryAfterSeconds: 40 } }) });
    const throttledAt = Date.now();
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.customers SET first_name = 'after-storm' WHERE id <= 5`));
    await waitFor('the throttle', async () => (await simStats<{ throttled: number }>(sim)).throttled === 1);

    await new Promise((r) => setTimeout(r, 35_000));
    const during = (await admin.describeGroups([conn.groupId])).groups[0];
    expect(during?.state).toBe('Stable');
    expect(during?.members.map((m) => m.memberId)).toEqual(membersBefore);
    const stillOld = (await simRecords(sim.url, 'contacts')).filter((r) => r.first_name === 'after-storm');
    expect(stillOld).toHaveLength(0); // paused: nothing sent before Retry-After passed

    await waitFor(
      'writes after the Retry-After',
      async () => (await simRecords(sim.url, 'contacts')).filter((r) => r.first_name === 'after-storm').length === 5,
      60_000,
    );
    expect(Date.now() - throttledAt).toBeGreaterThanOrEqual(40_000);
    const stats = await simStats<{ throttled: number }>(sim);
    expect(stats.throttled).toBe(1); // no request was sent into the storm while paused
    expect((await admin.describeGroups([conn.groupId])).groups[0]?.members.map((m) => m.memberId)).toEqual(membersBefore);
    await admin.disconnect();
  });
});
