import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseConfig } from '../../src/config.ts';
import { AvroCodec } from '../../src/events/avro-codec.ts';
import { setLogLevel } from '../../src/logger.ts';
import { benchStack } from './bench-stack.ts';
import { benchCommand } from './bench-command.ts';
import { goal, printResult } from './bench-result.ts';
import {
  CONNECT_VERSION,
  CONNECTOR_SETTINGS,
  CONVERTER_NOTE,
  ConnectWorker,
  childrenCpuSeconds,
  DEBEZIUM_VERSION,
  PRODUCER_SETTINGS,
} from './debezium.ts';

/**
 * `npm run bench:source [-- --rows N --runs R --warmup W --per-tx 1,100 --only LIST]`: the source
 * half (PostgreSQL slot -> Kafka acks=all) against the real stack, side by side with Debezium (the
 * connector a user would pick instead: Kafka Connect standalone + debezium-connector-postgres,
 * see debezium.ts) and with the theoretical limit on this machine, `pg_recvlogical` draining the
 * same slot backlog to /dev/null (decoding + streaming, no Kafka).
 *
 * Drain scenarios write the rows first into one table whose publication every contender reads,
 * with one fresh slot per contender and run created before the load, so every run drains the same
 * backlog; runs alternate between contenders (the order rotates each round) and each figure is the
 * median of `--runs` (default 3), after `--warmup` uncounted rounds (default 1). Each contender's
 * CPU time is its process's: pg2crm's from process.cpuUsage() (in this process, so it includes the
 * bench's 50 ms Kafka offset polling), Debezium's from /proc/<jvm>/stat (utime+stime of the
 * Connect worker), pg_recvlogical's from this process's cutime+cstime. The walsender's decoding
 * CPU in PostgreSQL is not counted for anyone.
 * The paced scenario inserts at a steady 1,000 rows/s while pg2crm runs and measures commit ->
 * Kafka append (topics use LogAppendTime, so the broker stamps the ack).
 * Prints one JSON line per scenario and a side-by-side table at the end.
 * Options: --rows N (default 1,000,000), --runs R (default 3), --warmup W (default 1), --per-tx
 * list (default 1,100), --paced-seconds S (default 15), --only a comma list of scenarios (drain,
 * paced) and/or contenders (pg2crm, debezium, pg_recvlogical); naming only contenders runs the
 * drains only. Against a stack started elsewhere (a worktree): PG2CRM_STACK_DIR=/path/to/.stack.
 */
const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '1' },
    'per-tx': { type: 'string', default: '1,100' },
    'paced-seconds': { type: 'string', default: '15' },
    only: { type: 'string' },
    'json-out': { type: 'string' },
  },
});
const ROWS = Number(args.rows);
const RUNS = Number(args.runs);
const WARMUP = Number(args.warmup);
const PER_TX = args['per-tx'].split(',').map(Number);
const PACED_SECONDS = Number(args['paced-seconds']);
const CONTENDERS = ['pg2crm', 'debezium', 'pg_recvlogical'] as const;
type Contender = (typeof CONTENDERS)[number];
const only = args.only?.split(',').map((x) => x.trim());
for (const o of only ?? []) {
  if (!['drain', 'paced', ...CONTENDERS].includes(o)) throw new Error(`--only ${o}: expected drain, paced, ${CONTENDERS.join(', ')}`);
}
const named = CONTENDERS.filter((c) => only?.includes(c));
const chosen: readonly Contender[] = named.length ? named : CONTENDERS;
const runDrain = !only || only.includes('drain') || named.length > 0;
const runPaced = !only || only.includes('paced');
setLogLevel('warn');

const { env, kafka, admin, db } = await benchStack('bench');

interface Scenario {
  name: string;
  schema: string;
  topic: string;
  slot: string;
  publication: string;
  topicPrefix: string;
}

/** The table and its publication; slots and topics are made per run (`runOf`). */
async function prepare(name: string): Promise<Scenario> {
  const id = `${name.replace(/-/g, '_')}_${Date.now().toString(36)}`;
  const schema = `bench_${id}`;
  await db.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id bigserial PRIMARY KEY, payload text NOT NULL, n int NOT NULL)`);
  const publication = `pg2crm_${schema}`;
  await db.query(`CREATE PUBLICATION ${publication} FOR TABLE ${schema}.t`);
  return { name, schema, topic: `bench.${schema}.t`, slot: publication, publication, topicPrefix: 'bench' };
}

async function createTopic(topic: string): Promise<void> {
  // LogAppendTime: the broker stamps each message when it appends it, i.e. at the ack.
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic, numPartitions: 3, replicationFactor: 1, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] },
    ],
  });
}

/** A run's own slot (created before the load, so it holds the whole backlog) and topic. */
async function runOf(s: Scenario, contender: Contender, round: number): Promise<Scenario> {
  const tag = { pg2crm: 'p', debezium: 'd', pg_recvlogical: 'r' }[contender];
  const slot = `${s.publication}_${tag}${round}`;
  await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  const topicPrefix = `${contender === 'debezium' ? 'dbz' : 'bench'}_${tag}${round}`;
  const topic = `${topicPrefix}.${s.schema}.t`;
  if (contender !== 'pg_recvlogical') await createTopic(topic);
  return { ...s, slot, topicPrefix, topic };
}

function source(s: Scenario): CaptureSource {
  const config = parseConfig({
    name: s.schema,
    postgres: {
      url: env.PG_URL,
      tables: [`${s.schema}.t`],
      slot: s.slot,
      publication: s.publication,
      snapshot: 'never',
      heartbeatSeconds: 0,
    },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix: s.topicPrefix, partitions: 3, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
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

/** Waits until `topic` holds `rows` messages; returns when (performance.now()) it first held any, and how many then. */
async function waitCount(topic: string, rows: number, check?: (count: number) => Promise<void>): Promise<FirstSeen> {
  let first: FirstSeen | undefined;
  for (;;) {
    const count = await kafkaCount(topic);
    if (count > 0) first ??= { at: performance.now(), count };
    if (count >= rows) return first!;
    await check?.(count);
    await new Promise((r) => setTimeout(r, 50));
  }
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

/** The limit: pg_recvlogical streams and decodes the same backlog (up to `endpos`) into /dev/null. */
async function recvlogical(s: Scenario, endpos: string): Promise<Measured> {
  const url = new URL(env.PG_URL);
  const cpuBefore = childrenCpuSeconds();
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
  // Read after 'exit': libuv has reaped the child, so its CPU is in this process's cutime/cstime.
  const seconds = (performance.now() - started) / 1000;
  return { seconds, cpuSeconds: childrenCpuSeconds() - cpuBefore, firstRowSeconds: 0, afterFirstRowRate: ROWS / seconds };
}

interface FirstSeen {
  at: number;
  count: number;
}

interface Measured {
  seconds: number;
  cpuSeconds: number;
  /** From start until the first rows were in Kafka (connecting, registering schemas); 0 for pg_recvlogical. */
  firstRowSeconds: number;
  /** Rows/s from then on, the drain without start-up; undefined when the drain was too short to tell. */
  afterFirstRowRate?: number;
}

function measuredFrom(started: number, first: FirstSeen, cpuSeconds: number): Measured {
  const done = performance.now();
  const rest = (done - first.at) / 1000;
  return {
    seconds: (done - started) / 1000,
    cpuSeconds,
    firstRowSeconds: (first.at - started) / 1000,
    afterFirstRowRate: rest >= 0.5 ? (ROWS - first.count) / rest : undefined,
  };
}

async function pg2crm(s: Scenario): Promise<Measured> {
  const src = source(s);
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await src.start();
  const first = await waitCount(s.topic, ROWS);
  const cpu = process.cpuUsage(cpuBefore);
  const m = measuredFrom(started, first, (cpu.user + cpu.system) / 1e6);
  await src.stop();
  return m;
}

let worker: ConnectWorker | undefined;

async function debezium(s: Scenario): Promise<Measured> {
  worker ??= await ConnectWorker.start({
    brokers: env.KAFKA_BROKERS,
    registryUrl: env.SCHEMA_REGISTRY_URL,
    workDir: join(tmpdir(), `pg2crm-bench-connect-${process.pid}`),
  });
  const url = new URL(env.PG_URL);
  const pgTarget = {
    host: url.hostname,
    port: url.port,
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database: url.pathname.slice(1),
  };
  const name = s.slot;
  const cpuBefore = worker.cpuSeconds();
  const started = performance.now();
  await worker.createConnector(name, pgTarget, s);
  try {
    // Fail rather than hang: a failed task, or no progress for a minute (see the worker's connect.log).
    let last = -1;
    let lastMoved = performance.now();
    let polls = 0;
    const first = await waitCount(s.topic, ROWS, async (count) => {
      if (count !== last) [last, lastMoved] = [count, performance.now()];
      else if (performance.now() - lastMoved > 60_000) throw new Error(`Debezium stalled at ${count}/${ROWS} rows in ${s.topic}`);
      if (++polls % 20 === 0) await worker!.assertRunning(name);
    });
    return measuredFrom(started, first, worker.cpuSeconds() - cpuBefore);
  } finally {
    await worker.deleteConnector(name);
  }
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

async function dropSlot(slot: string): Promise<void> {
  // A stopped connector lets go of its slot a moment after it is deleted.
  for (let i = 0; ; i++) {
    const { rows } = await db.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    if (!rows[0]) return;
    if (!rows[0].active || i >= 300) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await db.query('SELECT pg_drop_replication_slot($1)', [slot]);
}

async function cleanup(s: Scenario, runs: Scenario[]): Promise<void> {
  for (const r of runs) await dropSlot(r.slot);
  await db.query(`DROP PUBLICATION IF EXISTS ${s.publication}`);
  await db.query(`DROP SCHEMA ${s.schema} CASCADE`);
  const existing = new Set(await admin.listTopics());
  const topics = runs.map((r) => r.topic).filter((t) => existing.has(t)); // pg_recvlogical's runs have none
  await admin.deleteTopics({ topics }).catch(() => undefined);
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface Figures {
  rowsPerSecond: number;
  /** Rows after the first over the time after it: the drain without start-up (connecting, schemas, the JVM's first task). */
  rowsPerSecondAfterFirstRow: number | undefined;
  firstRowSeconds: number;
  cpuSecondsPerMillionRows: number;
  runsRowsPerSecond: number[];
  runsCpuSecondsPerMillionRows: number[];
  /** rows/s over pg_recvlogical's, and CPU per row over its: when it ran in the same scenario. */
  ratioToLimit?: number;
  cpuRatioToLimit?: number;
}

const table: string[][] = [];

/** Medians per contender, and each one's ratios to pg_recvlogical's when it ran. */
function figuresOf(measured: Map<Contender, Measured[]>): Partial<Record<Contender, Figures>> {
  const figures: Partial<Record<Contender, Figures>> = {};
  for (const [contender, ms] of measured) {
    const rps = ms.map((m) => Math.round(ROWS / m.seconds));
    const cpu = ms.map((m) => Number(((m.cpuSeconds * 1e6) / ROWS).toFixed(1)));
    figures[contender] = {
      rowsPerSecond: Math.round(median(rps)),
      rowsPerSecondAfterFirstRow: ms.every((m) => m.afterFirstRowRate)
        ? Math.round(median(ms.map((m) => m.afterFirstRowRate!)))
        : undefined,
      firstRowSeconds: Number(median(ms.map((m) => m.firstRowSeconds)).toFixed(2)),
      cpuSecondsPerMillionRows: Number(median(cpu).toFixed(1)),
      runsRowsPerSecond: rps,
      runsCpuSecondsPerMillionRows: cpu,
    };
  }
  const limit = figures.pg_recvlogical;
  for (const f of Object.values(figures)) {
    if (!limit) break;
    f.ratioToLimit = Number((f.rowsPerSecond / limit.rowsPerSecond).toFixed(3));
    if (limit.cpuSecondsPerMillionRows > 0) {
      f.cpuRatioToLimit = Number((f.cpuSecondsPerMillionRows / limit.cpuSecondsPerMillionRows).toFixed(1));
    }
  }
  return figures;
}

async function drainScenario(name: string, perTx: number): Promise<void> {
  const s = await prepare(name);
  // Round r runs every contender once, in an order rotated by r, so none always runs first.
  // Warm-up rounds come first and are not counted: both runtimes compile their hot paths as they
  // go (V8, the JVM's JIT), and a connector that runs for days is measured warm.
  const plan: { contender: Contender; run: Scenario; warmup: boolean }[] = [];
  for (let round = 0; round < WARMUP + RUNS; round++) {
    for (let i = 0; i < chosen.length; i++) {
      const contender = chosen[(i + round) % chosen.length]!;
      plan.push({ contender, run: await runOf(s, contender, round), warmup: round < WARMUP });
    }
  }
  try {
    const loadStart = performance.now();
    await load(s, ROWS, perTx);
    const loadSeconds = (performance.now() - loadStart) / 1000;
    const endpos = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
    const measured = new Map<Contender, Measured[]>();
    let latencyTopic: string | undefined;
    const warmups: Partial<Record<Contender, number[]>> = {};
    for (const { contender, run, warmup } of plan) {
      const m =
        contender === 'pg2crm' ? await pg2crm(run) : contender === 'debezium' ? await debezium(run) : await recvlogical(run, endpos);
      const rowsPerSecond = Math.round(ROWS / m.seconds);
      process.stderr.write(
        `${name} ${contender}${warmup ? ' (warm-up)' : ''}: ${rowsPerSecond} rows/s, ${((m.cpuSeconds * 1e6) / ROWS).toFixed(1)} CPU s per million rows\n`,
      );
      if (warmup) {
        (warmups[contender] ??= []).push(rowsPerSecond);
        continue;
      }
      if (contender === 'pg2crm') latencyTopic ??= run.topic;
      measured.set(contender, [...(measured.get(contender) ?? []), m]);
    }
    const figures = figuresOf(measured);
    // pg2crm's commit -> append latency, from its first run's topic (the backlog's queueing included).
    const lat = latencyTopic ? await latencies(latencyTopic, ROWS) : [];
    console.log(
      JSON.stringify({
        scenario: name,
        rows: ROWS,
        rowsPerTransaction: perTx,
        runs: RUNS,
        warmupRoundsRowsPerSecond: warmups,
        contenders: Object.fromEntries(chosen.map((c) => [c, figures[c]])),
        pg2crmP50Ms: latencyTopic ? percentile(lat, 50) : undefined,
        pg2crmP99Ms: latencyTopic ? percentile(lat, 99) : undefined,
        latencyNote: latencyTopic ? 'pg2crm, first run; backlog drain: latency includes time queued in the slot' : undefined,
        debezium: chosen.includes('debezium')
          ? {
              version: DEBEZIUM_VERSION,
              runtime: `Kafka Connect ${CONNECT_VERSION} standalone, one task`,
              converter: CONVERTER_NOTE,
              producer: PRODUCER_SETTINGS,
              connector: CONNECTOR_SETTINGS,
            }
          : undefined,
        loadRowsPerSecond: Math.round(ROWS / loadSeconds),
      }),
    );
    for (const c of chosen) {
      const f = figures[c]!;
      table.push([
        name,
        c,
        String(f.rowsPerSecond),
        String(f.rowsPerSecondAfterFirstRow ?? '-'),
        String(f.firstRowSeconds),
        String(f.cpuSecondsPerMillionRows),
        String(f.ratioToLimit ?? '-'),
        String(f.cpuRatioToLimit ?? '-'),
        f.runsRowsPerSecond.join(' '),
      ]);
    }
  } finally {
    await cleanup(
      s,
      plan.map((p) => p.run),
    );
  }
}

async function pacedScenario(rate: number): Promise<void> {
  const s = await runOf(await prepare(`paced_${rate}`), 'pg2crm', 0);
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
  pacedResults.push({ rate, rowsPerSecond: achieved, p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99) });
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
  await cleanup(s, [s]);
}

const pacedResults: { rate: number; rowsPerSecond: number; p50Ms: number; p99Ms: number }[] = [];
let finished = false;
try {
  if (runDrain) for (const perTx of PER_TX) await drainScenario(perTx === 1 ? 'single-row-inserts' : `${perTx}-row-transactions`, perTx);
  if (runPaced) await pacedScenario(1000);
  finished = true;
} finally {
  await worker?.stop(!finished);
}
if (table.length) {
  const head = [
    'scenario',
    'contender',
    'rows/s',
    'after 1st row',
    '1st row s',
    'CPU s/Mrows',
    'rows/s ÷ limit',
    'CPU ÷ limit',
    `runs (rows/s), ${ROWS} rows each`,
  ];
  const rows = [head, ...table];
  const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((cell, i) => cell.padEnd(widths[i]!)).join('  '));
}
await admin.disconnect();
await db.end();
/**
 * Issue 14's goals for the drains: pg2crm at >= 0.85 of pg_recvlogical with single-row
 * transactions and >= 0.5 with larger ones, and ahead of Debezium (rows/s ratio >= 1).
 */
function drainGoals(): ReturnType<typeof goal>[] {
  const out: ReturnType<typeof goal>[] = [];
  for (const scenario of new Set(table.map((r) => r[0]!))) {
    const rate = (c: string) => Number(table.find((r) => r[0] === scenario && r[1] === c)?.[2] ?? Number.NaN);
    const ours = rate('pg2crm');
    const limit = rate('pg_recvlogical');
    const dbz = rate('debezium');
    if (Number.isFinite(ours) && Number.isFinite(limit)) {
      out.push(goal(`${scenario}: pg2crm rows/s ÷ pg_recvlogical`, ours / limit, scenario === 'single-row-inserts' ? 0.85 : 0.5, 'min'));
    }
    if (Number.isFinite(ours) && Number.isFinite(dbz)) out.push(goal(`${scenario}: pg2crm rows/s ÷ Debezium`, ours / dbz, 1, 'min'));
  }
  return out;
}

// The BENCH_RESULT for `npm run bench` (bench-result.ts): the table's figures and the goals.
printResult(
  {
    bench: 'source',
    command: benchCommand('bench:source'),
    figures: {
      rows: ROWS,
      drain: table.map(([scenario, contender, rowsPerSecond, , , cpuSecondsPerMillionRows, ratioToLimit]) => ({
        scenario,
        contender,
        rowsPerSecond: Number(rowsPerSecond),
        cpuSecondsPerMillionRows: Number(cpuSecondsPerMillionRows),
        ratioToLimit: ratioToLimit === '-' ? null : Number(ratioToLimit),
      })),
      paced: pacedResults,
    },
    goals: [...drainGoals(), ...pacedResults.map((r) => goal(`commit -> Kafka ack p99 at ${r.rate} rows/s (ms)`, r.p99Ms, 250))],
  },
  args['json-out'],
);
