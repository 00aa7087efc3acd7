import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseLsn } from '../../src/capture/lsn.ts';
import { type Config, parseConfig } from '../../src/config.ts';
import { createAdapter } from '../../src/crm/create-adapter.ts';
import type { CrmAdapter, CrmWrite, WriteOutcome } from '../../src/crm/crm-adapter.ts';
import type { CrmSimulator, SimStats } from '../../src/crm/sim-server.ts';
import { ConnectorError, errorMessage } from '../../src/errors.ts';
import { AvroCodec } from '../../src/events/avro-codec.ts';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { topicFor } from '../../src/events/topic-router.ts';
import { setLogLevel } from '../../src/logger.ts';
import { mapEvent } from '../../src/sink/field-mapper.ts';
import { type SinkBenchCrm, sinkBenchCrms } from './sink-bench-crms.ts';
import {
  type Capacity,
  chargedPerRecord,
  figuresOf,
  goalsOf,
  type SinkFigures,
  theoreticalFigures,
  theoreticalRecordsPerSecond,
  writesPerChangeFloor,
} from './sink-figures.ts';
import { distinctKeys, hotShare, zipfExponentFor, zipfKeys } from './zipf-workload.ts';
import { benchStack } from './bench-stack.ts';

/**
 * `npm run bench:sink [-- --crm zendesk-sell,hubspot --seconds 30 --changes 200000]`: the sink half
 * (Kafka -> CRM) against each CRM simulator, side by side:
 *   pg2crm       `pg2crm run --role sink` as a child process, fresh consumer group;
 *   naive        what users write today: one call per change (adapter.write([one])), groups of
 *                50 then a 5 s sleep, no compaction, no budget; a throttled change is retried
 *                after Retry-After (5 s when the CRM sends none) and never given up;
 *   theoretical  limit / window × records per call ÷ budget units one full call costs (1, but
 *                Zoho counts credits and Dynamics each $batch operation), computed.
 * Workload: N records created, then M updates (Zipf: 80% of updates on 5% of the keys) go
 * through the real source (CaptureSource: slot -> Kafka) BEFORE any sink starts. Both contenders
 * start at the first update's offsets (the creates only make the keys exist in PostgreSQL), each
 * against a freshly reset simulator (`POST /__sim/reset`), for the same measured interval.
 * Then the hourly sync: a second table's backlog (--hourly-changes updates, Zipf 80/5, over
 * --hourly-records records: most updates hit a few active records) is drained by pg2crm to its
 * end, and calls per change are counted over the whole backlog. On the capacity workload calls
 * per change only measure the interval's slice: committing a change needs its record written,
 * so the slice's distinct records bound every sink; each pg2crm line prints that floor
 * (writesPerChangeFloor, from the message keys).
 * Prints one JSON line per (crm, contender, workload), then a summary table and the goal verdicts.
 * Options: --crm a,b (default: every CRM whose adapter exists), --seconds N (30, rounded up to
 * whole windows of the CRM's limit), --changes M (400,000 updates), --records N (200,000: enough
 * distinct records that no CRM drains the compacted backlog within the interval), --warmup S (5),
 * --seed n (1), --hourly-records N (500), --hourly-changes M (10,000), --drain-seconds S (300).
 */
const { values: args } = parseArgs({
  options: {
    crm: { type: 'string' },
    seconds: { type: 'string', default: '30' },
    changes: { type: 'string', default: '400000' },
    records: { type: 'string', default: '200000' },
    warmup: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1' },
    'hourly-records': { type: 'string', default: '500' },
    'hourly-changes': { type: 'string', default: '10000' },
    'drain-seconds': { type: 'string', default: '300' },
  },
});
const SECONDS = Number(args.seconds);
const UPDATES = Number(args.changes);
const RECORDS = Number(args.records);
const WARMUP_SECONDS = Number(args.warmup);
const SEED = Number(args.seed);
const HOURLY_RECORDS = Number(args['hourly-records']);
const HOURLY_UPDATES = Number(args['hourly-changes']);
const DRAIN_SECONDS = Number(args['drain-seconds']);
for (const [name, v] of Object.entries({
  seconds: SECONDS,
  changes: UPDATES,
  records: RECORDS,
  warmup: WARMUP_SECONDS,
  seed: SEED,
  'hourly-records': HOURLY_RECORDS,
  'hourly-changes': HOURLY_UPDATES,
  'drain-seconds': DRAIN_SECONDS,
})) {
  if (!Number.isFinite(v) || v < 0 || (name !== 'warmup' && name !== 'seed' && v === 0)) {
    console.error(`--${name} must be a positive number`);
    process.exit(2);
  }
}
const HOT_KEYS = 0.05;
const HOT_UPDATES = 0.8;
/** The naive script: 50 calls, then a 5 s sleep. */
const NAIVE_GROUP = 50;
const NAIVE_SLEEP_MS = 5000;
const root = new URL('../../', import.meta.url).pathname;
const note = (line: string): void => void process.stderr.write(`# ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
/** Sleeps until performance.now() >= `t`: a timer may fire early by the event loop's stale clock. */
async function sleepUntil(t: number): Promise<void> {
  while (performance.now() < t) await sleep(Math.ceil(t - performance.now()));
}
setLogLevel('warn');

const wanted = args.crm ? new Set(args.crm.split(',').map((s) => s.trim())) : undefined;
const unknown = [...(wanted ?? [])].filter((k) => !sinkBenchCrms.some((c) => c.kind === k));
if (unknown.length) {
  console.error(`unknown --crm ${unknown.join(', ')}; choose from ${sinkBenchCrms.map((c) => c.kind).join(', ')}`);
  process.exit(2);
}

const { env, kafka, admin, db } = await benchStack('bench-sink');

const runId = Date.now().toString(36);
const schema = `bench_sink_${runId}`;
const topicPrefix = `bsink_${runId}`;
const slot = `pg2crm_${schema}`;
const tmp = mkdtempSync(join(tmpdir(), 'pg2crm-bench-sink-'));
const groups: string[] = [];

/** One table's backlog in Kafka: where every contender starts, where it ends, and each partition's keys in between. */
interface Workload {
  name: 'capacity' | 'hourly-sync';
  table: string;
  topic: string;
  /** First update's offset per partition: where every contender starts. */
  start: { partition: number; offset: string }[];
  ends: Map<number, number>;
  /** Message keys per partition from `start` to `ends`, in offset order (for the calls-per-change floor). */
  keys: Map<number, string[]>;
}

function tableWorkload(name: Workload['name'], tableName: string): Workload {
  return {
    name,
    table: `${schema}.${tableName}`,
    topic: topicFor(topicPrefix, schema, tableName),
    start: [],
    ends: new Map(),
    keys: new Map(),
  };
}

/** The capacity workload (saturates every CRM) and the hourly-sync backlog (drained to the end). */
const capacityWl = tableWorkload('capacity', 'contacts');
const hourlyWl = tableWorkload('hourly-sync', 'active_contacts');

/** The connector config of one CRM (the sink child reads it from a file; the naive script uses its crm and mapping slices). */
function connectorConfig(crm: SinkBenchCrm, baseUrl: string, groupId: string, w: Workload = capacityWl): Record<string, unknown> {
  const tag = w === capacityWl ? crm.kind : `${crm.kind}.${w.name}`;
  return {
    name: `bench_sink_${crm.kind.replace(/-/g, '_')}_${runId}`,
    postgres: { url: env.PG_URL, tables: [capacityWl.table, hourlyWl.table], snapshot: 'never', heartbeatSeconds: 0 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix, partitions: 3, groupId, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: crm.kind, baseUrl, auth: { token: crm.token }, limits: { ...crm.limit }, ...crm.crm },
    mappings: [
      {
        table: w.table,
        object: crm.mapping.object,
        externalId: { column: 'id', field: crm.mapping.externalIdField },
        fields: crm.mapping.fields,
      },
    ],
    // Per CRM and workload: the written-hash store would otherwise let one run skip another's writes.
    sink: {
      deadLetterTopic: `${topicPrefix}.${tag}.dlq`,
      hashTopic: `${topicPrefix}.${tag}.sink-hashes`,
      statusTopic: `${topicPrefix}.${tag}.sink-status`,
    },
    ops: { logLevel: 'warn' },
  };
}

async function kafkaCount(topic: string): Promise<number> {
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
}

async function waitCount(topic: string, n: number): Promise<void> {
  while ((await kafkaCount(topic)) < n) await sleep(200);
}

// ---------------------------------------------------------------- workload, through the real source
async function createTable(w: Workload): Promise<void> {
  const [, name] = w.table.split('.') as [string, string];
  await db.query(
    `CREATE TABLE ${w.table} (id int PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL, company text NOT NULL, n int NOT NULL DEFAULT 0)`,
  );
  // Creates and updates commit in transactions of 1,000 and 100 rows (an OLTP-ish shape).
  await db.query(`CREATE PROCEDURE ${schema}.create_${name}(total int) LANGUAGE plpgsql AS $$
    BEGIN
      FOR i IN 1..total LOOP
        INSERT INTO ${w.table} VALUES (i, 'First' || i, 'Last' || i, 'c' || i || '@example.com', 'Company ' || (i % 100), 0);
        IF i % 1000 = 0 THEN COMMIT; END IF;
      END LOOP;
      COMMIT;
    END $$`);
  await db.query(`CREATE PROCEDURE ${schema}.update_${name}(keys int[]) LANGUAGE plpgsql AS $$
    BEGIN
      FOR i IN 1..coalesce(array_length(keys, 1), 0) LOOP
        UPDATE ${w.table} SET n = n + 1, email = 'c' || id || '.' || (n + 1) || '@example.com' WHERE id = keys[i];
        IF i % 100 = 0 THEN COMMIT; END IF;
      END LOOP;
      COMMIT;
    END $$`);
}

/** Runs `updates` Zipf-skewed updates over `records` rows of `w`'s table and waits for them in Kafka; returns the workload line. */
async function skewedUpdates(w: Workload, records: number, updates: number): Promise<Record<string, unknown>> {
  const [, name] = w.table.split('.') as [string, string];
  w.start = (await admin.fetchTopicOffsets(w.topic)).map((p) => ({ partition: p.partition, offset: p.high }));
  const before = await kafkaCount(w.topic);
  const s = zipfExponentFor(records, HOT_KEYS, HOT_UPDATES);
  const keys = zipfKeys(records, updates, s, SEED);
  const started = performance.now();
  await db.query(`CALL ${schema}.update_${name}($1)`, [Array.from(keys)]);
  const committedSeconds = (performance.now() - started) / 1000;
  await waitCount(w.topic, before + updates);
  const seconds = (performance.now() - started) / 1000;
  w.ends = new Map((await admin.fetchTopicOffsets(w.topic)).map((p) => [p.partition, Number(p.high)]));
  return {
    workload: w.name,
    records,
    updates,
    zipfExponent: Number(s.toFixed(3)),
    updatesOnHottest5PercentOfKeys: Number(hotShare(keys, records, HOT_KEYS).toFixed(3)),
    distinctKeysUpdated: distinctKeys(keys),
    // The floor for a single-record API: every update of the whole backlog compacted at once.
    callsPerChangeIfAllCompacted: Number((distinctKeys(keys) / updates).toFixed(4)),
    updatesPerTransaction: 100,
    postgresCommitSeconds: Number(committedSeconds.toFixed(1)),
    inKafkaSeconds: Number(seconds.toFixed(1)),
    partitions: w.ends.size,
  };
}

async function prepareWorkloads(): Promise<void> {
  await db.query(`CREATE SCHEMA ${schema}`);
  await createTable(capacityWl);
  await createTable(hourlyWl);
  await db.query(`CREATE PUBLICATION ${slot} FOR TABLE ${capacityWl.table}, ${hourlyWl.table}`);
  await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);

  const sourceConfig = parseConfig(connectorConfig(sinkBenchCrms[0]!, 'http://127.0.0.1:1', 'unused'));
  const source = new CaptureSource({ ...sourceConfig.postgres, slot, publication: slot }, sourceConfig.kafka, (err) => {
    console.error('source failed', err);
    process.exit(1);
  });
  const started = performance.now();
  await db.query(`CALL ${schema}.create_contacts($1)`, [RECORDS]);
  await db.query(`CALL ${schema}.create_active_contacts($1)`, [HOURLY_RECORDS]);
  await source.start();
  await waitCount(capacityWl.topic, RECORDS);
  await waitCount(hourlyWl.topic, HOURLY_RECORDS);
  note(`created ${RECORDS} + ${HOURLY_RECORDS} records in PostgreSQL and Kafka in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log(JSON.stringify(await skewedUpdates(capacityWl, RECORDS, UPDATES)));
  console.log(JSON.stringify(await skewedUpdates(hourlyWl, HOURLY_RECORDS, HOURLY_UPDATES)));
  await source.stop();
  await readKeys(capacityWl);
  await readKeys(hourlyWl);
}

/** Every message key of the workload's range, per partition (keys only: nothing is decoded). */
async function readKeys(w: Workload): Promise<void> {
  const groupId = `bench-sink-${runId}-keys-${w.name}`;
  groups.push(groupId);
  await admin.setOffsets({ groupId, topic: w.topic, partitions: w.start });
  const remaining = new Set(w.start.filter((p) => Number(p.offset) < (w.ends.get(p.partition) ?? 0)).map((p) => p.partition));
  for (const p of w.start) w.keys.set(p.partition, []);
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic: w.topic });
  await new Promise<void>((resolve, reject) => {
    if (remaining.size === 0) resolve();
    consumer
      .run({
        eachBatch: async ({ batch }) => {
          const end = w.ends.get(batch.partition) ?? 0;
          const list = w.keys.get(batch.partition)!;
          for (const m of batch.messages) if (Number(m.offset) < end) list.push(m.key?.toString('hex') ?? '');
          if (Number(batch.lastOffset()) + 1 >= end) remaining.delete(batch.partition);
          if (remaining.size === 0) resolve();
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
}

/** writesPerChangeFloor of the committed range `from` -> `to` of workload `w`. */
function floorOf(w: Workload, from: Map<number, number>, to: Map<number, number>): number | null {
  return writesPerChangeFloor(
    w.start.map((p) => {
      const base = Number(p.offset);
      return {
        keys: w.keys.get(p.partition) ?? [],
        from: (from.get(p.partition) ?? base) - base,
        to: (to.get(p.partition) ?? base) - base,
      };
    }),
  );
}

// ---------------------------------------------------------------- measurements
async function simStats(sim: CrmSimulator): Promise<SimStats> {
  return (await (await fetch(`${sim.url}/__sim/stats`)).json()) as SimStats;
}

async function simReset(sim: CrmSimulator): Promise<void> {
  const res = await fetch(`${sim.url}/__sim/reset`, { method: 'POST' });
  if (!res.ok) throw new Error(`POST ${sim.url}/__sim/reset answered ${res.status}`);
}

/** The group's committed offset per partition (each partition starts at the workload's start). */
async function committed(groupId: string, w: Workload): Promise<Map<number, number>> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [w.topic] });
  return new Map((offsets?.partitions ?? []).map((p) => [p.partition, Math.max(0, Number(p.offset))]));
}

const total = (m: Map<number, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

async function freshGroup(kind: string, contender: string, w: Workload): Promise<string> {
  const groupId = `bench-sink-${runId}-${kind}-${contender}-${w.name}`;
  groups.push(groupId);
  await admin.setOffsets({ groupId, topic: w.topic, partitions: w.start });
  return groupId;
}

interface Interval {
  records: number;
  calls: number;
  throttled: number;
  changes: number;
  seconds: number;
  /** Changes not yet committed at the end (0 = the contender ran out of work: not at the limit). */
  backlogLeft?: number;
  /** The fewest record writes per committed change any sink could have made (writesPerChangeFloor). */
  writesPerChangeFloor?: number | null;
  rejected?: number;
  /** Why the figures say little (the sink never called the CRM, ...). */
  problem?: string;
}

function delta(a: SimStats, b: SimStats): Pick<Interval, 'records' | 'calls' | 'throttled'> {
  return { records: b.recordsWritten - a.recordsWritten, calls: b.requests - a.requests, throttled: b.throttled - a.throttled };
}

/** `pg2crm run --role sink` on workload `w` with a fresh group, as a child process. */
interface SinkProcess {
  groupId: string;
  /** Fails the bench with the child's output when it has exited. */
  check(when: string): void;
  output(): string;
  stop(): Promise<void>;
}

async function startSink(crm: SinkBenchCrm, sim: CrmSimulator, w: Workload): Promise<SinkProcess> {
  const groupId = await freshGroup(crm.kind, 'pg2crm', w);
  const file = join(tmp, `${crm.kind}-${w.name}.json`);
  writeFileSync(file, JSON.stringify(connectorConfig(crm, sim.url, groupId, w), null, 2));
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [join(root, 'bin/pg2crm.js'), 'run', '--config', file, '--role', 'sink'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (d: Buffer): void => void (output = (output + d.toString()).slice(-20_000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    groupId,
    output: () => output,
    check(when) {
      if (child.exitCode === null) return;
      throw new Error(`${crm.kind}: pg2crm sink exited with ${child.exitCode} ${when}; its output:\n${output}`);
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Waits for the sink's first CRM call (up to 30 s); returns why the figures say little when it never came. */
async function firstCall(crm: SinkBenchCrm, sim: CrmSimulator, sink: SinkProcess): Promise<string | undefined> {
  const deadline = Date.now() + 30_000;
  while ((await simStats(sim)).requests === 0) {
    sink.check('before its first CRM call');
    if (Date.now() > deadline) {
      // Measured anyway (zeros): a sink that never calls the CRM is a result, not a bench failure.
      const problem = 'the sink made no CRM call within 30 s of starting';
      note(`${crm.kind}: ${problem}; its last output:\n${sink.output().slice(-2000)}`);
      return problem;
    }
    await sleep(100);
  }
  return undefined;
}

/** The real sink on the capacity workload: measured after the first CRM call plus the warm-up. */
async function runPg2crm(crm: SinkBenchCrm, sim: CrmSimulator, w: Workload, interval: number): Promise<Interval> {
  const sink = await startSink(crm, sim, w);
  try {
    const problem = await firstCall(crm, sim, sink);
    await sleep(WARMUP_SECONDS * 1000);
    const [s0, c0] = await Promise.all([simStats(sim), committed(sink.groupId, w)]);
    const t0 = performance.now();
    await sleep(interval * 1000);
    const [s1, c1] = await Promise.all([simStats(sim), committed(sink.groupId, w)]);
    const seconds = (performance.now() - t0) / 1000;
    sink.check('during the interval');
    const end = total(w.ends);
    return {
      ...delta(s0, s1),
      changes: total(c1) - total(c0),
      seconds,
      backlogLeft: end - total(c1),
      writesPerChangeFloor: floorOf(w, c0, c1),
      ...(problem ? { problem } : {}),
    };
  } finally {
    await sink.stop();
  }
}

/**
 * The hourly sync: the sink started on a backlog that is all there, run until every change is
 * committed (or --drain-seconds); calls per change over the whole backlog, from a fresh simulator.
 */
async function runDrain(crm: SinkBenchCrm, sim: CrmSimulator, w: Workload): Promise<Interval> {
  const s0 = await simStats(sim);
  const sink = await startSink(crm, sim, w);
  const end = total(w.ends);
  const t0 = performance.now();
  try {
    let c = await committed(sink.groupId, w);
    while (total(c) < end && performance.now() - t0 < DRAIN_SECONDS * 1000) {
      sink.check('while draining');
      await sleep(250);
      c = await committed(sink.groupId, w);
    }
    const seconds = (performance.now() - t0) / 1000;
    const from = new Map(w.start.map((p) => [p.partition, Number(p.offset)]));
    const left = end - total(c);
    return {
      ...delta(s0, await simStats(sim)),
      changes: total(c) - total(from),
      seconds,
      backlogLeft: left,
      writesPerChangeFloor: floorOf(w, from, c),
      ...(left > 0 ? { problem: `not drained within --drain-seconds ${DRAIN_SECONDS}: ${left} changes left` } : {}),
    };
  } finally {
    await sink.stop();
  }
}

/**
 * The first `count` update events in commit order (lsn, seq), read once: the naive script is
 * handed its changes up front, so its figures carry no Kafka or decoding cost (in its favour).
 */
async function readChanges(w: Workload, count: number): Promise<ChangeEvent[]> {
  const groupId = await freshGroup('all', 'naive-reader', w);
  const codec = new AvroCodec({ url: env.SCHEMA_REGISTRY_URL });
  const perPartition = new Map<number, ChangeEvent[]>();
  const remaining = new Set(w.start.filter((p) => Number(p.offset) < (w.ends.get(p.partition) ?? 0)).map((p) => p.partition));
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic: w.topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    if (remaining.size === 0) resolve();
    consumer
      .run({
        eachBatch: async ({ batch }) => {
          if (!remaining.has(batch.partition)) return;
          const list = perPartition.get(batch.partition) ?? [];
          perPartition.set(batch.partition, list);
          for (const m of batch.messages) if (m.value && list.length < count) list.push(await codec.decode(m.value));
          const end = w.ends.get(batch.partition) ?? 0;
          if (list.length >= count || Number(batch.lastOffset()) + 1 >= end) remaining.delete(batch.partition);
          if (remaining.size === 0) resolve();
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  const order = (e: ChangeEvent): [bigint, number] => [parseLsn(e.source.lsn), e.source.seq];
  return [...perPartition.values()]
    .flat()
    .sort((a, b) => {
      const [la, sa] = order(a);
      const [lb, sb] = order(b);
      return la < lb ? -1 : la > lb ? 1 : sa - sb;
    })
    .slice(0, count);
}

async function writeOnce(adapter: CrmAdapter, write: CrmWrite): Promise<WriteOutcome> {
  try {
    const [outcome] = await adapter.write([write], () => undefined);
    return outcome ?? { status: 'retry', code: 'NO_OUTCOME', message: 'adapter returned no outcome' };
  } catch (err) {
    if (err instanceof ConnectorError && !err.retriable) throw err;
    const e = err instanceof ConnectorError ? err : new ConnectorError('CRM_CALL', errorMessage(err), { retriable: true });
    return {
      status: 'retry',
      code: e.code,
      message: e.message,
      ...(e.retryAfterSeconds !== undefined ? { retryAfterSeconds: e.retryAfterSeconds } : {}),
    };
  }
}

/** What users write today, for `interval` seconds: groups of 50 single-record calls, a 5 s sleep after each group. */
async function runNaive(adapter: CrmAdapter, sim: CrmSimulator, writes: CrmWrite[], interval: number): Promise<Interval> {
  const s0 = await simStats(sim);
  const t0 = performance.now();
  const end = t0 + interval * 1000;
  const left = (): number => end - performance.now();
  let done = 0;
  let rejected = 0;
  run: while (done < writes.length && left() > 0) {
    for (let g = 0; g < NAIVE_GROUP && done < writes.length; g++) {
      for (;;) {
        if (left() <= 0) break run;
        const outcome = await writeOnce(adapter, writes[done]!);
        if (outcome.status !== 'retry') {
          if (outcome.status === 'rejected') rejected++;
          done++;
          break;
        }
        // Throttled or failed: wait as told (5 s when the CRM does not say), then the same change again.
        await sleepUntil(Math.min(end, performance.now() + (outcome.retryAfterSeconds ?? NAIVE_SLEEP_MS / 1000) * 1000));
      }
    }
    await sleepUntil(Math.min(end, performance.now() + NAIVE_SLEEP_MS));
  }
  const seconds = (performance.now() - t0) / 1000;
  return { ...delta(s0, await simStats(sim)), changes: done, seconds, rejected };
}

// ---------------------------------------------------------------- per CRM
/**
 * --seconds rounded up to whole windows: a sender that reuses every slot the rolling window frees
 * repeats itself each window, so a whole number of windows holds exactly k × limit of its calls
 * wherever the interval starts; a partial window would count a burst or not by chance.
 */
function intervalFor(crm: SinkBenchCrm): number {
  return Math.ceil(SECONDS / crm.limit.windowSeconds) * crm.limit.windowSeconds;
}

type StartSimulator = (opts: Record<string, unknown>) => Promise<CrmSimulator>;

/** The CRM's simulator factory (`start<X>Simulator`), or why it cannot be used. */
async function simulatorOf(crm: SinkBenchCrm): Promise<StartSimulator | string> {
  const dir = join(root, 'src/crm', crm.kind);
  if (!existsSync(join(dir, 'adapter.ts'))) return `adapter not present (src/crm/${crm.kind}/adapter.ts)`;
  if (!existsSync(join(dir, 'simulator.ts'))) return `simulator not present (src/crm/${crm.kind}/simulator.ts)`;
  const mod = (await import(join(dir, 'simulator.ts'))) as Record<string, unknown>;
  const name = Object.keys(mod).find((k) => /^start\w*Simulator$/.test(k));
  return name ? (mod[name] as StartSimulator) : `src/crm/${crm.kind}/simulator.ts exports no start<X>Simulator`;
}

function sampleWrites(crm: SinkBenchCrm, n: number): CrmWrite[] {
  return Array.from({ length: n }, (_, i) => ({
    op: 'upsert' as const,
    object: crm.mapping.object,
    externalIdField: crm.mapping.externalIdField,
    externalId: String(i + 1),
    fields: {},
  }));
}

interface CrmResult {
  crm: SinkBenchCrm;
  capacity: Capacity;
  figures: SinkFigures[];
  /** pg2crm on the hourly-sync backlog, drained. */
  drain: SinkFigures;
  /** writesPerChangeFloor of the capacity interval and of the drain. */
  floors: [number | null, number | null];
  backlogLeft: number;
  problem: string | undefined;
}

/**
 * The calls-per-change floor next to the measured figure: a single-record API needs one call per
 * record write; a batch API fits `maxBatch` writes in a call (fewer when the backlog is thin).
 */
function floorFields(f: SinkFigures, i: Interval, capacity: Capacity): Record<string, unknown> {
  const floor = i.writesPerChangeFloor;
  if (floor === null || floor === undefined) return {};
  const callsFloor = capacity.maxBatch > 1 ? Number((floor / capacity.maxBatch).toFixed(6)) : floor;
  return {
    writesPerChangeFloor: floor,
    ...(chargedPerRecord(capacity)
      ? { callsPerChangeVsFloor: f.callsPerChange === null || floor === 0 ? null : Number((f.callsPerChange / floor).toFixed(3)) }
      : { callsPerChangeFloor: callsFloor }),
  };
}

function line(f: SinkFigures, capacity: Capacity, i: Interval | undefined, interval: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    ...f,
    windowLimit: `${capacity.requests}/${capacity.windowSeconds}s`,
    maxBatch: capacity.maxBatch,
    changes: i?.changes ?? null,
    seconds: i ? Number(i.seconds.toFixed(1)) : interval,
    ...(i ? { calls: i.calls, throttled: i.throttled, records: i.records } : {}),
    ...extra,
  });
}

async function benchCrm(crm: SinkBenchCrm, start: StartSimulator, w: Workload, changes: ChangeEvent[]): Promise<CrmResult | undefined> {
  const sim = await start({ port: 0, control: true, limit: crm.limit, tokens: [crm.token], ...crm.simulator });
  let adapter: CrmAdapter | undefined;
  try {
    const config: Config = parseConfig(connectorConfig(crm, sim.url, 'unused'));
    try {
      adapter = createAdapter(config.crm);
    } catch (err) {
      console.log(`skipped: ${crm.kind}: ${errorMessage(err)}`);
      return undefined;
    }
    const maxBatch = adapter.maxBatchSize(crm.mapping.object);
    const capacity: Capacity = { ...crm.limit, maxBatch, costOfFullBatch: adapter.cost(sampleWrites(crm, maxBatch)) };
    const theoretical = theoreticalRecordsPerSecond(capacity);
    const interval = intervalFor(crm);
    const tf = theoreticalFigures(crm.kind, capacity);
    console.log(line(tf, capacity, undefined, interval, { costOfFullBatch: capacity.costOfFullBatch, limitScaling: crm.scaling }));

    note(`${crm.kind}: pg2crm sink, ${WARMUP_SECONDS} s warm-up + ${interval} s`);
    await simReset(sim);
    const p = await runPg2crm(crm, sim, w, interval);
    const pf = figuresOf(crm.kind, 'pg2crm', p, theoretical);
    console.log(
      line(pf, capacity, p, interval, {
        backlogLeft: p.backlogLeft,
        ...floorFields(pf, p, capacity),
        ...(p.problem ? { problem: p.problem } : {}),
      }),
    );

    note(`${crm.kind}: naive script, ${interval} s`);
    await simReset(sim);
    const mapping = config.mappings[0]!;
    const writes = changes.map((e) => mapEvent(e, mapping)).filter((x): x is CrmWrite => x !== null);
    const n = await runNaive(adapter, sim, writes, interval);
    const nf = figuresOf(crm.kind, 'naive', n, theoretical);
    console.log(
      line(nf, capacity, n, interval, {
        rejected: n.rejected,
        onThrottle: 'sleeps Retry-After (5 s if none), then retries the same change; never gives up',
      }),
    );

    note(`${crm.kind}: pg2crm sink draining the hourly-sync backlog (${HOURLY_UPDATES} changes, up to ${DRAIN_SECONDS} s)`);
    await simReset(sim);
    const d = await runDrain(crm, sim, hourlyWl);
    const df = figuresOf(crm.kind, 'pg2crm', d, theoretical);
    console.log(
      line(df, capacity, d, DRAIN_SECONDS, {
        workload: hourlyWl.name,
        backlogLeft: d.backlogLeft,
        ...floorFields(df, d, capacity),
        ...(d.problem ? { problem: d.problem } : {}),
      }),
    );
    return {
      crm,
      capacity,
      figures: [pf, nf, tf],
      drain: df,
      floors: [p.writesPerChangeFloor ?? null, d.writesPerChangeFloor ?? null],
      backlogLeft: p.backlogLeft ?? 0,
      problem: p.problem ?? d.problem,
    };
  } finally {
    await adapter?.close().catch(() => undefined);
    await sim.close();
  }
}

function summary(results: CrmResult[]): void {
  const pad = (s: string, n: number): string => s.padEnd(n);
  const num = (v: number | null | undefined, d = 3): string => (v === null || v === undefined ? '-' : v.toFixed(d));
  console.log('');
  console.log(
    `${pad('crm', 14)}${pad('contender', 13)}${pad('workload', 13)}${pad('limit', 10)}${pad('maxBatch', 10)}${pad('records/s', 12)}${pad('capacity', 10)}${pad('throttled', 11)}${pad('calls/change', 14)}writes/change floor`,
  );
  for (const r of results) {
    const rows: [SinkFigures, string, number | null][] = [
      [r.figures[0]!, capacityWl.name, r.floors[0]],
      [r.figures[1]!, capacityWl.name, null],
      [r.figures[2]!, capacityWl.name, null],
      [r.drain, hourlyWl.name, r.floors[1]],
    ];
    for (const [f, workload, floor] of rows) {
      const rate = workload === hourlyWl.name ? '-' : f.recordsPerSecond.toFixed(2);
      const cap = workload === hourlyWl.name ? '-' : num(f.capacityUsed);
      console.log(
        `${pad(r.crm.kind, 14)}${pad(f.contender, 13)}${pad(workload, 13)}${pad(`${r.capacity.requests}/${r.capacity.windowSeconds}s`, 10)}${pad(String(r.capacity.maxBatch), 10)}` +
          `${pad(rate, 12)}${pad(cap, 10)}${pad(num(f.throttledShare, 4), 11)}${pad(num(f.callsPerChange, 4), 14)}${num(floor, 4)}`,
      );
    }
  }
  console.log('');
  console.log(
    'goals (pg2crm): >= 95% of theoretical capacity and <= 0.5% throttled calls (capacity workload), >= 90% fewer calls than one call per change (hourly-sync backlog)',
  );
  for (const r of results) {
    const [pf, nf] = r.figures as [SinkFigures, SinkFigures];
    const verdicts = goalsOf(pf, r.drain).map((g) => `${g.met ? 'MET' : 'MISSED'} ${g.goal} (${g.value ?? '-'})`);
    const vsNaive =
      nf.recordsPerSecond > 0 ? `${(pf.recordsPerSecond / nf.recordsPerSecond).toFixed(1)}x naive records/s` : 'naive wrote nothing';
    const drained = r.backlogLeft === 0 ? '; NOTE backlog drained: pg2crm ran out of work, not at the limit (raise --changes)' : '';
    const problem = r.problem ? `; PROBLEM ${r.problem}` : '';
    console.log(`${r.crm.kind}: ${verdicts.join('; ')}; ${vsNaive}${drained}${problem}`);
    if (chargedPerRecord(r.capacity)) {
      console.log(
        `  every record costs one unit of quota: calls/change on the capacity interval ${num(pf.callsPerChange, 4)} vs ${num(r.floors[0], 4)} for any sink (writes/change floor)`,
      );
    }
    console.log(`  limits: ${r.crm.scaling}`);
  }
}

// ---------------------------------------------------------------- main
const results: CrmResult[] = [];
try {
  const chosen = sinkBenchCrms.filter((c) => !wanted || wanted.has(c.kind));
  const runnable: [SinkBenchCrm, StartSimulator][] = [];
  for (const crm of chosen) {
    const start = await simulatorOf(crm);
    if (typeof start === 'string') console.log(`skipped: ${crm.kind}: ${start}`);
    else runnable.push([crm, start]);
  }
  if (runnable.length === 0) throw new Error('no CRM to measure: none of the chosen CRMs has an adapter and simulator yet');
  await prepareWorkloads();
  // Enough for the naive script's whole interval: it sends at most one group of 50 per 5 s sleep.
  const longest = Math.max(...runnable.map(([crm]) => intervalFor(crm)));
  const changes = await readChanges(capacityWl, (Math.floor(longest / (NAIVE_SLEEP_MS / 1000)) + 2) * NAIVE_GROUP);
  for (const [crm, start] of runnable) {
    const r = await benchCrm(crm, start, capacityWl, changes);
    if (r) results.push(r);
  }
  summary(results);
} finally {
  await db
    .query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot])
    .catch(() => undefined);
  await db.query(`DROP PUBLICATION IF EXISTS ${slot}`).catch(() => undefined);
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
  await admin.deleteGroups(groups).catch(() => undefined);
  const mine = (await admin.listTopics().catch(() => [] as string[])).filter((t) => t.startsWith(`${topicPrefix}.`));
  if (mine.length) await admin.deleteTopics({ topics: mine }).catch(() => undefined);
  await admin.disconnect();
  await db.end();
  rmSync(tmp, { recursive: true, force: true });
}
