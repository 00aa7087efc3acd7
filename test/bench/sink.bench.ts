import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { stackUp } from '../../scripts/stack.ts';
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
import { type Capacity, figuresOf, goalsOf, type SinkFigures, theoreticalFigures, theoreticalRecordsPerSecond } from './sink-figures.ts';
import { distinctKeys, hotShare, zipfExponentFor, zipfKeys } from './zipf-workload.ts';

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
 * Prints one JSON line per (crm, contender), then a summary table and the goal verdicts.
 * Options: --crm a,b (default: every CRM whose adapter exists), --seconds N (30, rounded up to
 * whole windows of the CRM's limit), --changes M (400,000 updates), --records N (200,000: enough distinct records that no CRM drains the compacted backlog within the interval), --warmup S (5), --seed n (1).
 */
const { values: args } = parseArgs({
  options: {
    crm: { type: 'string' },
    seconds: { type: 'string', default: '30' },
    changes: { type: 'string', default: '400000' },
    records: { type: 'string', default: '200000' },
    warmup: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1' },
  },
});
const SECONDS = Number(args.seconds);
const UPDATES = Number(args.changes);
const RECORDS = Number(args.records);
const WARMUP_SECONDS = Number(args.warmup);
const SEED = Number(args.seed);
for (const [name, v] of Object.entries({ seconds: SECONDS, changes: UPDATES, records: RECORDS, warmup: WARMUP_SECONDS, seed: SEED })) {
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

const env = await stackUp();
const kafka = new Kafka({ clientId: 'bench-sink', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const db = new pg.Client({ connectionString: env.PG_URL });
await db.connect();

const runId = Date.now().toString(36);
const schema = `bench_sink_${runId}`;
const table = `${schema}.contacts`;
const topicPrefix = `bsink_${runId}`;
const topic = topicFor(topicPrefix, schema, 'contacts');
const slot = `pg2crm_${schema}`;
const tmp = mkdtempSync(join(tmpdir(), 'pg2crm-bench-sink-'));
const groups: string[] = [];

/** The connector config of one CRM (the sink child reads it from a file; the naive script uses its crm and mapping slices). */
function connectorConfig(crm: SinkBenchCrm, baseUrl: string, groupId: string): Record<string, unknown> {
  return {
    name: `bench_sink_${crm.kind.replace(/-/g, '_')}_${runId}`,
    postgres: { url: env.PG_URL, tables: [table], snapshot: 'never', heartbeatSeconds: 0 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix, partitions: 3, groupId, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: crm.kind, baseUrl, auth: { token: crm.token }, limits: { ...crm.limit }, ...crm.crm },
    mappings: [{ table, object: crm.mapping.object, externalId: { column: 'id', field: crm.mapping.externalIdField }, fields: crm.mapping.fields }],
    // Per CRM: the written-hash store would otherwise let one CRM's run skip another's writes.
    sink: {
      deadLetterTopic: `${topicPrefix}.${crm.kind}.dlq`,
      hashTopic: `${topicPrefix}.${crm.kind}.sink-hashes`,
      statusTopic: `${topicPrefix}.${crm.kind}.sink-status`,
    },
    ops: { logLevel: 'warn' },
  };
}

async function kafkaCount(): Promise<number> {
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
}

async function waitCount(n: number): Promise<void> {
  while ((await kafkaCount()) < n) await sleep(200);
}

// ---------------------------------------------------------------- workload, through the real source
interface Workload {
  /** First update's offset per partition: where every contender starts. */
  start: { partition: number; offset: string }[];
  ends: Map<number, number>;
}

async function prepareWorkload(): Promise<Workload> {
  await db.query(`CREATE SCHEMA ${schema}`);
  await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL, company text NOT NULL, n int NOT NULL DEFAULT 0)`);
  await db.query(`CREATE PUBLICATION ${slot} FOR TABLE ${table}`);
  await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  // Creates and updates commit in transactions of 1,000 and 100 rows (an OLTP-ish shape).
  await db.query(`CREATE PROCEDURE ${schema}.create_rows(total int) LANGUAGE plpgsql AS $$
    BEGIN
      FOR i IN 1..total LOOP
        INSERT INTO ${table} VALUES (i, 'First' || i, 'Last' || i, 'c' || i || '@example.com', 'Company ' || (i % 100), 0);
        IF i % 1000 = 0 THEN COMMIT; END IF;
      END LOOP;
      COMMIT;
    END $$`);
  await db.query(`CREATE PROCEDURE ${schema}.update_rows(keys int[]) LANGUAGE plpgsql AS $$
    BEGIN
      FOR i IN 1..coalesce(array_length(keys, 1), 0) LOOP
        UPDATE ${table} SET n = n + 1, email = 'c' || id || '.' || (n + 1) || '@example.com' WHERE id = keys[i];
        IF i % 100 = 0 THEN COMMIT; END IF;
      END LOOP;
      COMMIT;
    END $$`);

  const sourceConfig = parseConfig(connectorConfig(sinkBenchCrms[0]!, 'http://127.0.0.1:1', 'unused'));
  const source = new CaptureSource({ ...sourceConfig.postgres, slot, publication: slot }, sourceConfig.kafka, (err) => {
    console.error('source failed', err);
    process.exit(1);
  });
  let started = performance.now();
  await db.query(`CALL ${schema}.create_rows($1)`, [RECORDS]);
  await source.start();
  await waitCount(RECORDS);
  note(`created ${RECORDS} records in PostgreSQL and Kafka in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const start = (await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, offset: p.high }));

  const s = zipfExponentFor(RECORDS, HOT_KEYS, HOT_UPDATES);
  const keys = zipfKeys(RECORDS, UPDATES, s, SEED);
  started = performance.now();
  await db.query(`CALL ${schema}.update_rows($1)`, [Array.from(keys)]);
  const committedSeconds = (performance.now() - started) / 1000;
  await waitCount(RECORDS + UPDATES);
  const seconds = (performance.now() - started) / 1000;
  await source.stop();
  const ends = new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)]));
  console.log(
    JSON.stringify({
      workload: 'skewed-updates',
      records: RECORDS,
      updates: UPDATES,
      zipfExponent: Number(s.toFixed(3)),
      updatesOnHottest5PercentOfKeys: Number(hotShare(keys, RECORDS, HOT_KEYS).toFixed(3)),
      distinctKeysUpdated: distinctKeys(keys),
      // The floor for a single-record API: every update of the whole backlog compacted at once.
      callsPerChangeIfAllCompacted: Number((distinctKeys(keys) / UPDATES).toFixed(4)),
      updatesPerTransaction: 100,
      postgresCommitSeconds: Number(committedSeconds.toFixed(1)),
      inKafkaSeconds: Number(seconds.toFixed(1)),
      partitions: ends.size,
    }),
  );
  return { start, ends };
}

// ---------------------------------------------------------------- measurements
async function simStats(sim: CrmSimulator): Promise<SimStats> {
  return (await (await fetch(`${sim.url}/__sim/stats`)).json()) as SimStats;
}

async function simReset(sim: CrmSimulator): Promise<void> {
  const res = await fetch(`${sim.url}/__sim/reset`, { method: 'POST' });
  if (!res.ok) throw new Error(`POST ${sim.url}/__sim/reset answered ${res.status}`);
}

/** Sum of the group's committed offsets (each partition starts at the workload's start). */
async function committed(groupId: string): Promise<number> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return (offsets?.partitions ?? []).reduce((n, p) => n + Math.max(0, Number(p.offset)), 0);
}

async function freshGroup(kind: string, contender: string, w: Workload): Promise<string> {
  const groupId = `bench-sink-${runId}-${kind}-${contender}`;
  groups.push(groupId);
  await admin.setOffsets({ groupId, topic, partitions: w.start });
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
  rejected?: number;
  /** Why the figures say little (the sink never called the CRM, ...). */
  problem?: string;
}

function delta(a: SimStats, b: SimStats): Pick<Interval, 'records' | 'calls' | 'throttled'> {
  return { records: b.recordsWritten - a.recordsWritten, calls: b.requests - a.requests, throttled: b.throttled - a.throttled };
}

/** The real sink: `pg2crm run --role sink` with a fresh group; measured after the first CRM call plus the warm-up. */
async function runPg2crm(crm: SinkBenchCrm, sim: CrmSimulator, w: Workload, interval: number): Promise<Interval> {
  const groupId = await freshGroup(crm.kind, 'pg2crm', w);
  const file = join(tmp, `${crm.kind}.json`);
  writeFileSync(file, JSON.stringify(connectorConfig(crm, sim.url, groupId), null, 2));
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [join(root, 'bin/pg2crm.js'), 'run', '--config', file, '--role', 'sink'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const keep = (d: Buffer): void => void (output = (output + d.toString()).slice(-20_000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const fail = (why: string): never => {
    child.kill('SIGKILL');
    throw new Error(`${crm.kind}: pg2crm sink ${why}; its output:\n${output}`);
  };
  try {
    const deadline = Date.now() + 30_000;
    let problem: string | undefined;
    while ((await simStats(sim)).requests === 0) {
      if (child.exitCode !== null) fail(`exited with ${child.exitCode} before its first CRM call`);
      if (Date.now() > deadline) {
        // Measured anyway (zeros): a sink that never calls the CRM is a result, not a bench failure.
        problem = 'the sink made no CRM call within 30 s of starting';
        note(`${crm.kind}: ${problem}; its last output:\n${output.slice(-2000)}`);
        break;
      }
      await sleep(100);
    }
    await sleep(WARMUP_SECONDS * 1000);
    const [s0, c0] = await Promise.all([simStats(sim), committed(groupId)]);
    const t0 = performance.now();
    await sleep(interval * 1000);
    const [s1, c1] = await Promise.all([simStats(sim), committed(groupId)]);
    const seconds = (performance.now() - t0) / 1000;
    if (child.exitCode !== null) fail(`exited with ${child.exitCode} during the interval`);
    const end = [...w.ends.values()].reduce((a, b) => a + b, 0);
    return { ...delta(s0, s1), changes: c1 - c0, seconds, backlogLeft: end - c1, ...(problem ? { problem } : {}) };
  } finally {
    if (child.exitCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
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
  await consumer.subscribe({ topic, fromBeginning: true });
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
    return { status: 'retry', code: e.code, message: e.message, ...(e.retryAfterSeconds !== undefined ? { retryAfterSeconds: e.retryAfterSeconds } : {}) };
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
  backlogLeft: number;
  problem: string | undefined;
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
  const sim = await start({ port: 0, limit: crm.limit, tokens: [crm.token], ...crm.simulator });
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
    console.log(line(pf, capacity, p, interval, { backlogLeft: p.backlogLeft, ...(p.problem ? { problem: p.problem } : {}) }));

    note(`${crm.kind}: naive script, ${interval} s`);
    await simReset(sim);
    const mapping = config.mappings[0]!;
    const writes = changes.map((e) => mapEvent(e, mapping)).filter((x): x is CrmWrite => x !== null);
    const n = await runNaive(adapter, sim, writes, interval);
    const nf = figuresOf(crm.kind, 'naive', n, theoretical);
    console.log(line(nf, capacity, n, interval, { rejected: n.rejected, onThrottle: 'sleeps Retry-After (5 s if none), then retries the same change; never gives up' }));
    return { crm, capacity, figures: [pf, nf, tf], backlogLeft: p.backlogLeft ?? 0, problem: p.problem };
  } finally {
    await adapter?.close().catch(() => undefined);
    await sim.close();
  }
}

function summary(results: CrmResult[]): void {
  const pad = (s: string, n: number): string => s.padEnd(n);
  const num = (v: number | null, d = 3): string => (v === null ? '-' : v.toFixed(d));
  console.log('');
  console.log(`${pad('crm', 14)}${pad('contender', 13)}${pad('limit', 10)}${pad('maxBatch', 10)}${pad('records/s', 12)}${pad('capacity', 10)}${pad('throttled', 11)}calls/change`);
  for (const r of results) {
    for (const f of r.figures) {
      console.log(
        `${pad(r.crm.kind, 14)}${pad(f.contender, 13)}${pad(`${r.capacity.requests}/${r.capacity.windowSeconds}s`, 10)}${pad(String(r.capacity.maxBatch), 10)}` +
          `${pad(f.recordsPerSecond.toFixed(2), 12)}${pad(num(f.capacityUsed), 10)}${pad(num(f.throttledShare, 4), 11)}${num(f.callsPerChange, 4)}`,
      );
    }
  }
  console.log('');
  console.log('goals (pg2crm): >= 95% of theoretical capacity, <= 0.5% throttled calls, >= 90% fewer calls than one call per change');
  for (const r of results) {
    const [pf, nf] = r.figures as [SinkFigures, SinkFigures];
    const verdicts = goalsOf(pf).map((g) => `${g.met ? 'MET' : 'MISSED'} ${g.goal} (${g.value ?? '-'})`);
    const vsNaive = nf.recordsPerSecond > 0 ? `${(pf.recordsPerSecond / nf.recordsPerSecond).toFixed(1)}x naive records/s` : 'naive wrote nothing';
    const drained = r.backlogLeft === 0 ? '; NOTE backlog drained: pg2crm ran out of work, not at the limit (raise --changes)' : '';
    const problem = r.problem ? `; PROBLEM ${r.problem}` : '';
    console.log(`${r.crm.kind}: ${verdicts.join('; ')}; ${vsNaive}${drained}${problem}`);
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
  const w = await prepareWorkload();
  // Enough for the naive script's whole interval: it sends at most one group of 50 per 5 s sleep.
  const longest = Math.max(...runnable.map(([crm]) => intervalFor(crm)));
  const changes = await readChanges(w, (Math.floor(longest / (NAIVE_SLEEP_MS / 1000)) + 2) * NAIVE_GROUP);
  for (const [crm, start] of runnable) {
    const r = await benchCrm(crm, start, w, changes);
    if (r) results.push(r);
  }
  summary(results);
} finally {
  await db.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]).catch(() => undefined);
  await db.query(`DROP PUBLICATION IF EXISTS ${slot}`).catch(() => undefined);
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
  await admin.deleteGroups(groups).catch(() => undefined);
  const mine = (await admin.listTopics().catch(() => [] as string[])).filter((t) => t.startsWith(`${topicPrefix}.`));
  if (mine.length) await admin.deleteTopics({ topics: mine }).catch(() => undefined);
  await admin.disconnect();
  await db.end();
  rmSync(tmp, { recursive: true, force: true });
}
