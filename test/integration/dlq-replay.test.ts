import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { topicFor } from '../../src/events/topic-router.ts';
import type { DeadLetter } from '../../src/sink/dead-letter.ts';
import { type Connector, useHarness } from '../helpers/connector-harness.ts';
import { readAllEvents, runCli, uniqueName, withPg } from '../helpers/fixtures.ts';

/**
 * `pg2crm dlq replay` with letters it cannot replay in front of valid ones: each bad letter is
 * reported (where it is, why) and counted, the valid ones behind it are replayed, and the
 * replay group moves past all of them, so the next replay does not meet them again.
 */
const h = useHarness();
const env = h.env;

interface Setup {
  conn: Connector;
  customers: string;
  dlq: string;
}

describe('dlq replay with letters that cannot be replayed', () => {
  const kafka = new Kafka({ clientId: 'dlq-test', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });

  /** A connector (not running: a replay needs none) over customers 1 and 2, its topics created. */
  async function setup(): Promise<Setup> {
    const schema = uniqueName('dlqbad');
    h.onCleanup(() => withPg(env.PG_URL, (c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)));
    // No CRM is called by a replay; the URL only has to be valid config.
    const conn = await h.connector(schema, 'http://127.0.0.1:9', { snapshot: 'never' });
    const customers = topicFor(conn.topicPrefix, schema, 'customers');
    const dlq = `${conn.topicPrefix}.dlq`;
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (id, first_name, last_name, email) VALUES (1, 'A', 'One', 'a@ok.example'), (2, 'B', 'Two', 'b@ok.example')`,
      ),
    );
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({
      topics: [
        { topic: dlq, numPartitions: 1 },
        { topic: customers, numPartitions: 3 },
      ],
      waitForLeaders: true,
    });
    await admin.disconnect();
    return { conn, customers, dlq };
  }

  async function produce(topic: string, messages: { key: string; value: string }[]): Promise<void> {
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages });
    await producer.disconnect();
  }

  const letter = (topic: string, key: string | null, offset: number): DeadLetter => ({
    topic,
    partition: 0,
    offset: String(offset),
    key,
    value: null,
    object: 'contacts',
    externalId: null,
    error: { code: 'CRM_REJECTED', message: 'rejected' },
    attempts: 1,
    failedAt: new Date().toISOString(),
  });
  const re = (s: string): string => s.replaceAll('.', '\\.');
  const keys = async (topic: string): Promise<[string, number][]> =>
    (await readAllEvents(env, topic)).map((e): [string, number] => [e.op, Number((e.key as { id: unknown }).id)]).sort();

  it('a letter whose key is not JSON is reported and skipped; the valid letters behind it are replayed', async () => {
    const { conn, customers, dlq } = await setup();
    await produce(dlq, [
      { key: 'garbage-key', value: JSON.stringify(letter(customers, 'garbage-key', 100)) },
      { key: '{"id":1}', value: JSON.stringify(letter(customers, '{"id":1}', 101)) },
      { key: '{"id":2}', value: JSON.stringify(letter(customers, '{"id":2}', 102)) },
    ]);

    const replay = await runCli(['dlq', 'replay', '--config', conn.configFile]);
    console.log(replay.output);
    expect(replay.output).toMatch(
      new RegExp(`skipped dead letter ${re(dlq)}/0@0 \\(${re(customers)}/0@100\\): its key "garbage-key" is not JSON`),
    );
    expect(replay.output).toContain('replayed 2 dead letter(s): 2 record(s) re-published from PostgreSQL (0 as deletions)');
    expect(replay.output).toContain('skipped 1 dead letter(s) that cannot be replayed');
    expect(replay.code).toBe(0);
    expect(await keys(customers)).toEqual([
      ['r', 1],
      ['r', 2],
    ]);

    // The replay group moved past the bad letter too: the next replay starts after it.
    const again = await runCli(['dlq', 'replay', '--config', conn.configFile]);
    expect(again.output).toContain('no dead letters to replay');
    expect(again.code).toBe(0);
  });

  it('skips an unreadable letter and a key without the primary key, replays a deleted row as a deletion', async () => {
    const { conn, customers, dlq } = await setup();
    await produce(dlq, [
      // offset 0: the letter itself is not JSON
      { key: 'x', value: 'not a dead letter' },
      // offset 1: a JSON key without the table's primary key
      { key: 'k', value: JSON.stringify(letter(customers, '{"nope":1}', 101)) },
      // offset 2: a key of the wrong type for the bigint key column
      { key: 'k', value: JSON.stringify(letter(customers, '{"id":"abc"}', 102)) },
      // offsets 3, 4: valid; id 3 no longer exists (replayed as a deletion)
      { key: '{"id":1}', value: JSON.stringify(letter(customers, '{"id":1}', 103)) },
      { key: '{"id":3}', value: JSON.stringify(letter(customers, '{"id":3}', 104)) },
    ]);

    const replay = await runCli(['dlq', 'replay', '--config', conn.configFile]);
    console.log(replay.output);
    expect(replay.output).toMatch(new RegExp(`skipped dead letter ${re(dlq)}/0@0: not a dead letter \\(not JSON\\)`));
    expect(replay.output).toMatch(
      new RegExp(`skipped dead letter ${re(dlq)}/0@1 \\(${re(customers)}/0@101\\): its key .* lacks primary key column id`),
    );
    expect(replay.output).toMatch(
      new RegExp(`skipped dead letter ${re(dlq)}/0@2 \\(${re(customers)}/0@102\\): its key .* does not fit .*invalid input syntax`),
    );
    expect(replay.output).toContain('replayed 2 dead letter(s): 2 record(s) re-published from PostgreSQL (1 as deletions)');
    expect(replay.output).toContain('skipped 3 dead letter(s) that cannot be replayed');
    expect(replay.code).toBe(0);
    expect(await keys(customers)).toEqual([
      ['d', 3],
      ['r', 1],
    ]);
    expect((await runCli(['dlq', 'replay', '--config', conn.configFile])).output).toContain('no dead letters to replay');
  });
});
