import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { type Connector, simFaults, simStats, useHarness } from '../helpers/connector-harness.ts';
import { type CliProcess, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Paths that lost or stalled data outside the rest of the suite (issue "Nothing lost, proven"),
 * each through the real pipeline: a snapshot that must refill a wiped CRM, a message whose schema
 * id the registry does not know, throttles that must never count as attempts, a dead letter
 * larger than its topic accepts, a write whose answer was lost, and a stuck partition made
 * visible. Each test has its own connector, with a low `sink.maxAttempts` (2) and small Kafka
 * messages (4 KiB) so that each path shows within seconds.
 */
const h = useHarness();
const env = h.env;
const sim = (url: string, faults: unknown): Promise<void> => simFaults({ url }, faults);

interface Setup {
  crm: CrmSimulator;
  conn: Connector;
  proc: CliProcess;
  schema: string;
  customers: string;
  topics: string[];
  contacts: () => Promise<Record<string, unknown>[]>;
}

/** A connector of its own per test, so that one path's failure cannot hide or cause another's. */
async function setUp(
  prefix: string,
  limits: Record<string, unknown> = {},
  maxAttempts = 2,
  sink: Record<string, unknown> = {},
): Promise<Setup> {
  const crm = await h.simulator();
  const schema = uniqueName(prefix);
  const conn = await h.connector(schema, crm.url, { snapshot: 'never', limits });
  conn.editConfig((config) => {
    config.kafka.maxMessageBytes = 4096;
    config.sink.maxAttempts = maxAttempts;
    Object.assign(config.sink, sink);
  });
  h.printOnFailure();
  const proc = await conn.running();
  return { crm, conn, proc, schema, customers: conn.topic(), topics: conn.topics, contacts: () => simRecords(crm.url, 'contacts') };
}

describe('sink survives what the suite never sent it', () => {
  it('a throttle is never an attempt: a storm longer than maxAttempts dead-letters nothing', async () => {
    const { crm, conn, schema, contacts } = await setUp('throttle');
    // 40 throttled answers over 10 single-record writes: every record meets several, more than
    // sink.maxAttempts (2). Retry-After 1 s keeps it short.
    await sim(crm.url, { throttle: { requests: 40, retryAfterSeconds: 1 } });
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'T' || g, 'L' || g, 't' || g || '@ok.example' FROM generate_series(1, 10) g`,
      ),
    );
    await waitFor('10 contacts written', async () => (await contacts()).length === 10, 90_000);
    await conn.lagZero();
    const stats = await simStats<{ throttled: number }>(crm);
    expect(stats.throttled).toBe(40);
    expect(await conn.deadLetters()).toEqual([]);
  });

  it('a message whose schema id the registry does not know is dead-lettered (SCHEMA_NOT_FOUND); the partition moves on', async () => {
    const { conn, schema, customers, contacts } = await setUp('schema');
    const poison = Buffer.alloc(16);
    poison.writeInt32BE(2_000_000_123, 1); // magic byte 0, then a schema id no registry here has
    const kafka = new Kafka({ clientId: 'poison', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: customers,
      messages: [0, 1, 2].map((partition) => ({ partition, key: `{"id":"poison-${partition}"}`, value: poison })),
    });
    await producer.disconnect();
    // Changes behind the poison on every partition must still reach the CRM.
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'S' || g, 'L' || g, 's' || g || '@ok.example' FROM generate_series(1, 30) g`,
      ),
    );
    await waitFor('30 contacts', async () => (await contacts()).length === 30, 60_000);
    await conn.lagZero(30_000);
    const letters = await conn.deadLetters();
    expect(letters.map((l) => [l.partition, l.error.code]).sort()).toEqual([
      [0, 'SCHEMA_NOT_FOUND'],
      [1, 'SCHEMA_NOT_FOUND'],
      [2, 'SCHEMA_NOT_FOUND'],
    ]);
    expect(letters[0]?.error.message).toContain('2000000123');
  });

  it('a dead letter larger than its topic accepts does not crash the sink: the CRM text is capped', async () => {
    const { crm, conn, proc, schema, contacts } = await setUp('bigdlq');
    // The CRM quotes the whole record in its validation error: a 2,500-character name makes the
    // letter (value base64 + error) larger than the dead-letter topic's 4096 * 1.4 bytes.
    await sim(crm.url, { rejectWhen: { field: 'email', contains: '@rejected.', echo: true } });
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email)
         SELECT CASE WHEN g = 3 THEN repeat('x', 2500) ELSE 'B' || g END, 'L' || g, CASE WHEN g = 3 THEN 'big@rejected.example' ELSE 'b' || g || '@ok.example' END
         FROM generate_series(1, 6) g`,
      ),
    );
    await waitFor('5 contacts', async () => (await contacts()).length === 5, 60_000);
    await conn.lagZero(30_000);
    const letters = await conn.deadLetters();
    expect(letters).toHaveLength(1);
    expect(letters[0]?.error.field).toBe('email');
    expect(letters[0]?.error.message.length).toBeLessThan(1_100);
    expect(proc.child.exitCode).toBeNull(); // still running
  });

  it('pg2crm snapshot refills a wiped CRM: the written-hash skip never applies to snapshot rows', async () => {
    const { crm, conn, schema, contacts } = await setUp('refill');
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'R' || g, 'L' || g, 'r' || g || '@ok.example' FROM generate_series(1, 40) g`,
      ),
    );
    await waitFor('40 contacts', async () => (await contacts()).length === 40, 60_000);
    await conn.lagZero(30_000);
    await fetch(`${crm.url}/__sim/reset`, { method: 'POST' }); // the CRM lost every record
    expect(await contacts()).toEqual([]);
    const result = await conn.cli(['snapshot', '--table', `${schema}.customers`], 60_000);
    expect(result.code).toBe(0);
    await waitFor('40 contacts again', async () => (await contacts()).length === 40, 60_000);
  });

  it('a partition whose committed offset stands still with messages waiting shows as STALLED in pg2crm status', async () => {
    const { crm, conn, schema, topics, contacts } = await setUp('stall', {}, 1_000);
    // The CRM fails every call: the circuit opens and the record is kept, never committed.
    await sim(crm.url, { errors5xx: { requests: 1_000_000, status: 503 } });
    await withPg(env.PG_URL, (c) =>
      c.query(`INSERT INTO ${schema}.customers (first_name, last_name, email) VALUES ('Stuck', 'L', 'stuck@ok.example')`),
    );
    type Status = { partitions: { topic: string; partition: number; lag: number; stalledSeconds: number | null }[] };
    const status = async (): Promise<Status> => JSON.parse((await conn.cli(['status', '--json'])).output) as Status;
    const stuck = await waitFor(
      'a stalled partition',
      async () => (await status()).partitions.find((p) => p.lag > 0 && (p.stalledSeconds ?? 0) >= 10),
      60_000,
      2_000,
    );
    expect(stuck.topic).toBe(topics[0]);
    const text = (await conn.cli(['status'])).output;
    expect(text).toMatch(/STALLED/);
    await sim(crm.url, { clear: true });
    await waitFor('the contact', async () => (await contacts()).length === 1, 90_000);
    await waitFor(
      'nothing stalled',
      async () => (await status()).partitions.every((p) => p.lag === 0 && p.stalledSeconds === 0),
      60_000,
      2_000,
    );
  });

  it('a write whose answer was lost leaves no stale written hash: a change back to the old values is still sent', async () => {
    const { crm, schema, contacts } = await setUp('losthash');
    await withPg(env.PG_URL, (c) =>
      c.query(`INSERT INTO ${schema}.customers (first_name, last_name, email) VALUES ('Ann', 'L', 'ann@ok.example')`),
    );
    const firstName = async (): Promise<unknown> => (await contacts())[0]?.first_name;
    await waitFor('Ann written', async () => (await firstName()) === 'Ann', 60_000, 50);
    // The CRM applies the next write but its answer is lost (connection reset): the sink retries it.
    await sim(crm.url, { resets: { requests: 1, afterWrite: true } });
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.customers SET first_name = 'Bob'`));
    await waitFor('Bob in the CRM', async () => (await firstName()) === 'Bob', 60_000, 20);
    // Hold the retry off (throttled) until the row is changed back: the redelivered window then
    // folds Bob -> Ann into "Ann", which equals the hash stored when Ann was written.
    await sim(crm.url, { throttle: { requests: 3, retryAfterSeconds: 4 } });
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.customers SET first_name = 'Ann'`));
    await waitFor('Ann again in the CRM', async () => (await firstName()) === 'Ann', 60_000);
  });

  it('a lookup still pending is not an attempt: a deal whose contact comes late is written once it does', async () => {
    const { crm, conn, schema } = await setUp('latelookup');
    // The order's customer is not in the CRM (nor in PostgreSQL) for 8 s: far more lookup
    // retries than sink.maxAttempts (2), far less than sink.lookupPendingSeconds (default 900).
    await withPg(env.PG_URL, (c) => c.query(`ALTER TABLE ${schema}.orders DROP CONSTRAINT orders_customer_id_fkey`));
    await withPg(env.PG_URL, (c) => c.query(`INSERT INTO ${schema}.orders (customer_id, title, amount) VALUES (4242, 'Late', 10)`));
    await new Promise((r) => setTimeout(r, 8_000));
    await withPg(env.PG_URL, (c) =>
      c.query(`INSERT INTO ${schema}.customers (id, first_name, last_name, email) VALUES (4242, 'Late', 'L', 'late@ok.example')`),
    );
    await waitFor(
      'the deal linked to its contact',
      async () => {
        const [contact] = await simRecords(crm.url, 'contacts');
        const [deal] = await simRecords(crm.url, 'deals');
        return contact !== undefined && deal !== undefined && deal.contact_id === contact.id;
      },
      60_000,
    );
    await conn.lagZero(30_000);
    expect(await conn.deadLetters()).toEqual([]);
  });

  it('a lookup pending longer than sink.lookupPendingSeconds is dead-lettered (LOOKUP_PENDING); the partition moves on', async () => {
    const { conn, schema, contacts } = await setUp('lostlookup', {}, 2, { lookupPendingSeconds: 3 });
    await withPg(env.PG_URL, (c) => c.query(`ALTER TABLE ${schema}.orders DROP CONSTRAINT orders_customer_id_fkey`));
    await withPg(env.PG_URL, (c) => c.query(`INSERT INTO ${schema}.orders (customer_id, title, amount) VALUES (4243, 'Never', 10)`));
    await withPg(env.PG_URL, (c) =>
      c.query(`INSERT INTO ${schema}.customers (first_name, last_name, email) VALUES ('On', 'Time', 'on@ok.example')`),
    );
    await waitFor('the contact', async () => (await contacts()).length === 1, 60_000);
    await conn.lagZero(60_000);
    const letters = await conn.deadLetters();
    expect(letters.map((l) => [l.object, l.error.code])).toEqual([['deals', 'LOOKUP_PENDING']]);
  });
});
