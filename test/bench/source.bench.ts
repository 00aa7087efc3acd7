import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseConfig } from '../../src/config.ts';
import { AvroCodec } from '../../src/events/avro-codec.ts';
import { setLogLevel } from '../../src/logger.ts';
import { benchStack } from './bench-stack.ts';

/**
 * `npm run bench:source [-- --rows N]`: the source half (PostgreSQL slot -> Kafka acks=all)
 * against the real stack, side by side with the theoretical limit on this machine:
 * `pg_recvlogical` draining the same slot backlog to /dev/null (decoding + streaming, no
 * Kafka). Throughput scenarios write the rows first (the slot holds the WAL), then time the
 * drain; the latency scenario inserts at a steady 1,000 rows/s while the source runs and
 * measures commit -> Kafka append (topics use LogAppendTime, so the broker stamps the ack).
 * Prints one JSON line per scenario: {scenario, rowsPerSecond, p50Ms, p99Ms, ...}.
 * Options: --rows N (default 1,000,000), --paced-seconds S (default 15), --only drain|paced.
 */
const { values: args } = parseArgs({
  options: { rows: { type: 'string', default: '1000000' }, 'paced-seconds': { type: 'string', default: '15' }, only: { type: 'string' } },
});
const ROWS = Number(args.rows);
const PACED_SECONDS = Number(args['paced-seconds']);
setLogLevel('warn');

const { env, kafka, admin, db } = await benchStack('bench');

interface Scenario {
  name: string;
  schema: string;
  topic: string;
  slot: string;
  publication: string;
}

async function prepare(name: string): Promise<Scenario> {
  const id = `${name.replace(/-/g, '_')}_${Date.now().toString(36)}`;
  const schema = `bench_${id}`;
  await db.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id bigserial PRIMARY KEY, payload text NOT NULL, n int NOT NULL)`);
  const topic = `bench.${schema}.t`;
  // LogAppendTime: the broker stamps each message when it appends it, i.e. at the ack.
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic, numPartitions: 3, replicationFactor: 1, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] },
    ],
  });
  const slot = `pg2crm_${schema}`;
  await db.query(`CREATE PUBLICATION ${slot} FOR TABLE ${schema}.t`);
  await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  return { name, schema, topic, slot, publication: slot };
}

function source(s: Scenario): CaptureSource {
  const config = parseConfig({
    name: s.schema,
    postgres: { url: env.PG_URL, tables: [`${s.schema}.t`], snapshot: 'never', heartbeatSeconds: 0 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix: 'bench', partitions: 3, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: 'zendesk-sell', baseUrl: 'http://127.0.0.1:1', auth: { token: 'x' }, limits: { requests: 1, windowSeconds: 1 } },
    mappings: [{ table: `${s.schema}.t`, object: 'o', externalId: { column: 'id', field: 'id' }, fields: { n: 'n' } }],
  });
  return new CaptureSource(config.postgres, config.kafka, (err) => {
    console.error('source failed', err);
    process.exit(1);
  });
}

async function kafkaCount(topic: string): Promise<number> {
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
}

async function waitCount(topic: string, rows: number): Promise<void> {
  while ((await kafkaCount(topic)) < rows) await new Promise((r) => setTimeout(r, 50));
}

/** Commits `rows` rows server-side, `perTx` per transaction (a procedure may COMMIT in its loop). */
async function load(s: Scenario, rows: number, perTx: number): Promise<void> {
  await db.query(`CREATE PROCEDURE ${s.schema}.load(total int, per_tx int) LANGUAGE plpgsql AS $$
    BEGIN
      FOR i IN 1..total LOOP
        INSERT INTO ${s.schema}.t (payload, n) VALUES (md5(i::text), i);
        IF i % per_tx = 0 THEN COMMIT; END IF;
      END LOOP;
      COMMIT;
    END $$`);
  await db.query(`CALL ${s.schema}.load($1, $2)`, [rows, perTx]);
}

/** The limit: pg_recvlogical streams and decodes the same backlog into /dev/null. */
async function recvlogicalSeconds(s: Scenario): Promise<number> {
  const endpos = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  const url = new URL(env.PG_URL);
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(
      '/usr/lib/postgresql/15/bin/pg_recvlogical',
      [
        '-h',
        url.hostname,
        '-p',
        url.port,
        '-U',
        url.username,
        '-d',
        url.pathname.slice(1),
        '-S',
        s.slot,
        '--start',
        '--endpos',
        endpos,
        '-o',
        'proto_version=1',
        '-o',
        `publication_names=${s.publication}`,
        '-f',
        '/dev/null',
        '--no-loop',
      ],
      { env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password) }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pg_recvlogical exited ${code}: ${err}`))));
  });
  return (performance.now() - started) / 1000;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;
}

/** Commit -> append latency of every message in the topic. */
async function latencies(topic: string, expected: number): Promise<number[]> {
  const codec = new AvroCodec({ url: env.SCHEMA_REGISTRY_URL });
  const out: number[] = [];
  const consumer = kafka.consumer({ groupId: `bench-${topic}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve) => {
    void consumer.run({
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          if (!m.value) continue;
          const e = await codec.decode(m.value);
          out.push(Number(m.timestamp) - Number(e.source.commitTsMicros / 1000n));
        }
        if (out.length >= expected) resolve();
      },
    });
  });
  await consumer.disconnect();
  return out.sort((a, b) => a - b);
}

async function cleanup(s: Scenario): Promise<void> {
  await db.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [s.slot]);
  await db.query(`DROP PUBLICATION IF EXISTS ${s.publication}`);
  await db.query(`DROP SCHEMA ${s.schema} CASCADE`);
  await admin.deleteTopics({ topics: [s.topic] }).catch(() => undefined);
}

async function drainScenario(name: string, perTx: number): Promise<void> {
  // The same backlog twice: once for pg_recvlogical (on a second slot), once for pg2crm.
  const s = await prepare(name);
  const limitSlot = `${s.slot}_limit`;
  await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [limitSlot]);
  const loadStart = performance.now();
  await load(s, ROWS, perTx);
  const loadSeconds = (performance.now() - loadStart) / 1000;
  const limitSeconds = await recvlogicalSeconds({ ...s, slot: limitSlot });
  await db.query('SELECT pg_drop_replication_slot($1)', [limitSlot]);
  const src = source(s);
  const started = performance.now();
  await src.start();
  await waitCount(s.topic, ROWS);
  const seconds = (performance.now() - started) / 1000;
  await src.stop();
  const lat = await latencies(s.topic, ROWS);
  const rowsPerSecond = Math.round(ROWS / seconds);
  const limitRowsPerSecond = Math.round(ROWS / limitSeconds);
  console.log(
    JSON.stringify({
      scenario: name,
      rows: ROWS,
      rowsPerTransaction: perTx,
      rowsPerSecond,
      p50Ms: percentile(lat, 50),
      p99Ms: percentile(lat, 99),
      latencyNote: 'backlog drain: latency includes time queued in the slot',
      limitRowsPerSecond,
      ratioToLimit: Number((rowsPerSecond / limitRowsPerSecond).toFixed(3)),
      loadRowsPerSecond: Math.round(ROWS / loadSeconds),
    }),
  );
  await cleanup(s);
}

async function pacedScenario(rate: number): Promise<void> {
  const s = await prepare(`paced_${rate}`);
  const src = source(s);
  await src.start();
  const total = rate * PACED_SECONDS;
  // The local stack runs with synchronous_commit=off, where the WAL writer flushes only every
  // wal_writer_delay (200 ms) and walsenders send only flushed WAL: that would measure the
  // test cluster's setting, not pg2crm. Production commits flush at once, as here.
  await db.query('SET synchronous_commit = on');
  const started = performance.now();
  // 10 ms ticks, each committing its share of rows as single-row transactions.
  for (let sent = 0, tick = 0; sent < total; tick++) {
    const due = Math.min(total, Math.round(((tick + 1) * 10 * rate) / 1000));
    for (; sent < due; sent++) await db.query(`INSERT INTO ${s.schema}.t (payload, n) VALUES ('x', $1)`, [sent]);
    const wait = started + (tick + 1) * 10 - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  await waitCount(s.topic, total);
  const achieved = Math.round(total / ((performance.now() - started) / 1000));
  await src.stop();
  const lat = await latencies(s.topic, total);
  console.log(
    JSON.stringify({
      scenario: `paced-${rate}-rows-per-second`,
      rows: total,
      rowsPerSecond: achieved,
      p50Ms: percentile(lat, 50),
      p99Ms: percentile(lat, 99),
      goalP99Ms: 250,
    }),
  );
  await cleanup(s);
}

const only = args.only; // drain | paced
if (!only || only === 'drain') {
  await drainScenario('single-row-inserts', 1);
  await drainScenario('100-row-transactions', 100);
}
if (!only || only === 'paced') await pacedScenario(1000);
await admin.disconnect();
await db.end();
