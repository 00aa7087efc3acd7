import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseConfig } from '../../src/config.ts';
import type { CrmSimulator, SimStats } from '../../src/crm/sim-server.ts';
import { topicFor } from '../../src/events/topic-router.ts';
import { benchCommand } from './bench-command.ts';
import { type BenchGoal, goal, printResult } from './bench-result.ts';
import { benchStack } from './bench-stack.ts';
import { type ConnectorProcess, freePort, MB, processMemory, scrapeMetrics, startConnector } from './connector-process.ts';
import { WRITE_SIMULATORS } from './write-simulators.ts';
import { type ContainerCgroup, containerCgroup, imageNodeOptions } from './container-cgroup.ts';
import { sinkBenchCrms } from './sink-bench-crms.ts';

/**
 * `npm run bench:memory [-- --changes 1000000 --records N --crm hubspot --limit 10/60 --seconds 90 --fetch-max-bytes 1048576 --container-mb 256 --node-options=--max-old-space-size=192 --json-out f.json]`:
 * memory of the real connector under a backlog: --changes committed in PostgreSQL (INSERT ...
 * SELECT generate_series in transactions of --chunk rows; --records rows, the rest updates of
 * them) while `pg2crm run --role source` and `pg2crm run --role sink` run as two child
 * processes, the sink behind a throttled CRM simulator (--limit requests/seconds, also the
 * connector's crm.limits). Once the source has put every change in Kafka, the sink keeps running
 * --seconds behind the throttle with the backlog waiting.
 *
 * Every second: VmRSS and VmHWM (peak) of both processes from /proc/<pid>/status, and the sink's
 * /metrics (paused partitions, written-hash store keys, consumer lag). Every 5 s the sink group's
 * members (admin.describeGroups): the consumer must stay in its group with one member id (never
 * evicted, no rebalance) and its partitions must stay paused (backpressure, not fetching more).
 *
 * Default limit 10 calls per 60 s: the sink paces calls evenly (pacing-bucket.ts), so each wait
 * is 6 s, past the 5 s it waits inside a batch (batch-worker.ts SHORT_WAIT_MS): the partitions
 * pause between calls, the state the goal is about. At HubSpot's documented 100 per 10 s the
 * sink waits 0.1 s inside its batches instead and never pauses.
 * --fetch-max-bytes sets the sink's `sink.fetchMaxBytesPerPartition` (default 1 MiB): how much
 * of the backlog one fetch brings in and decodes.
 * Each process runs as in a container of --container-mb (256): in a memory cgroup with that limit
 * (container-cgroup.ts; the kernel kills it over the limit, and Node sizes its heap from it) with
 * the image's NODE_OPTIONS from the Dockerfile, unless --node-options gives others. Without a
 * limit V8 grows its heap lazily on a large machine, which says nothing of what a container needs.
 * Goal: peak RSS <= 256 MB per process.
 */
const { values: args } = parseArgs({
  options: {
    changes: { type: 'string', default: '1000000' },
    records: { type: 'string' },
    crm: { type: 'string', default: 'hubspot' },
    limit: { type: 'string', default: '10/60' },
    seconds: { type: 'string', default: '90' },
    chunk: { type: 'string', default: '20000' },
    'capture-seconds': { type: 'string', default: '900' },
    'node-options': { type: 'string' },
    'container-mb': { type: 'string', default: '256' },
    'fetch-max-bytes': { type: 'string' },
    'json-out': { type: 'string' },
  },
});
const CHANGES = Number(args.changes);
const RECORDS = Number(args.records ?? args.changes);
const SECONDS = Number(args.seconds);
const CHUNK = Number(args.chunk);
const CAPTURE_SECONDS = Number(args['capture-seconds']);
const CONTAINER_MB = Number(args['container-mb']);
/** The children's NODE_OPTIONS: as given, else the image's (Dockerfile), so they size their heap as the image does. */
const NODE_OPTIONS = args['node-options'] ?? imageNodeOptions();
const limitMatch = /^(\d+)\/(\d+)$/.exec(args.limit);
for (const [name, v] of Object.entries({
  changes: CHANGES,
  records: RECORDS,
  seconds: SECONDS,
  chunk: CHUNK,
  'capture-seconds': CAPTURE_SECONDS,
  'container-mb': CONTAINER_MB,
})) {
  if (!Number.isInteger(v) || v <= 0) {
    console.error(`--${name} must be a positive whole number`);
    process.exit(2);
  }
}
if (RECORDS > CHANGES) {
  console.error('--records must be at most --changes (each record is created by one change)');
  process.exit(2);
}
if (!limitMatch) {
  console.error('--limit is requests/windowSeconds, e.g. 10/60');
  process.exit(2);
}
const LIMIT = { requests: Number(limitMatch[1]), windowSeconds: Number(limitMatch[2]) };
const GOAL_MB = 256;
/**
 * Memory per record of the written-hash store at 1M records (npm run bench:hashes, README): its
 * typed-array table, outside the V8 heap but in the RSS; 23-46 B as the table fills and doubles.
 */
const HASH_BYTES_PER_RECORD = 34;
const crm = sinkBenchCrms.find((c) => c.kind === args.crm);
const startSimulator = WRITE_SIMULATORS[args.crm];
if (!crm || !startSimulator) {
  console.error(`--crm ${args.crm}: choose one of ${Object.keys(WRITE_SIMULATORS).join(', ')}`);
  process.exit(2);
}

const note = (line: string): void => void process.stderr.write(`# ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const mb = (bytes: number): number => Math.round((bytes / MB) * 10) / 10;

const { env, admin, db } = await benchStack('bench-memory');
const runId = Date.now().toString(36);
const name = `bench_memory_${runId}`;
const schema = name;
const table = `${schema}.contacts`;
const topicPrefix = `bmem_${runId}`;
const topic = topicFor(topicPrefix, schema, 'contacts');
const slot = `pg2crm_${name}`;
const groupId = `bench-memory-${runId}`;
const tmp = mkdtempSync(join(tmpdir(), 'pg2crm-bench-memory-'));
/** Each process in its own container-sized memory cgroup where this machine allows one. */
const cgroups: Partial<Record<'source' | 'sink', ContainerCgroup>> = {};
for (const role of ['source', 'sink'] as const) {
  const cg = containerCgroup(`pg2crm-bench-memory-${runId}-${role}`, CONTAINER_MB * MB);
  if (cg) cgroups[role] = cg;
}
note(
  cgroups.source && cgroups.sink
    ? `each process in a memory cgroup of ${CONTAINER_MB} MB (${cgroups.sink.dir}), NODE_OPTIONS=${NODE_OPTIONS ?? ''}: as in a container of that size`
    : `no memory cgroup can be made here: the processes run without a limit (NODE_OPTIONS=${NODE_OPTIONS ?? ''}); the figures do not show what a ${CONTAINER_MB} MB container would do`,
);

function connectorConfig(baseUrl: string, opsPort: number): Record<string, unknown> {
  return {
    name,
    postgres: { url: env.PG_URL, tables: [table], snapshot: 'never', heartbeatSeconds: 0 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix, partitions: 3, groupId, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: crm!.kind, baseUrl, auth: { token: crm!.token }, limits: { ...LIMIT }, ...crm!.crm },
    mappings: [
      {
        table,
        object: crm!.mapping.object,
        externalId: { column: 'id', field: crm!.mapping.externalIdField },
        fields: crm!.mapping.fields,
      },
    ],
    ops: { logLevel: 'warn', port: opsPort },
    ...(args['fetch-max-bytes'] ? { sink: { fetchMaxBytesPerPartition: Number(args['fetch-max-bytes']) } } : {}),
  };
}

function configFile(label: string, config: Record<string, unknown>): string {
  parseConfig(config);
  const file = join(tmp, `${label}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

// ---------------------------------------------------------------- sampling
interface Peak {
  rss: number;
  hwm: number;
}
const peaks: Record<'source' | 'sink', Peak> = { source: { rss: 0, hwm: 0 }, sink: { rss: 0, hwm: 0 } };
/** The latest VmRSS per process (at the end: what it holds after the run, against its peak). */
const latest: Record<'source' | 'sink', number> = { source: 0, sink: 0 };
/** The first VmRSS per process (started, before any change): what the process weighs idle. */
const first: Record<'source' | 'sink', number> = { source: 0, sink: 0 };
interface SinkSample {
  at: number;
  /** After the whole backlog was in Kafka. */
  backlogInKafka: boolean;
  paused: number;
  hashKeys: number;
  lag: number;
  consumed: number;
  written: number;
  rss: number;
}
const sinkSamples: SinkSample[] = [];
const memberIds = new Set<string>();
const groupStates = new Map<string, number>();
let describeSamples = 0;
let backlogInKafka = false;

function sampleMemory(procs: Partial<Record<'source' | 'sink', ConnectorProcess>>): void {
  for (const role of ['source', 'sink'] as const) {
    const p = procs[role];
    const m = p && processMemory(p.pid);
    if (!m) continue;
    peaks[role].rss = Math.max(peaks[role].rss, m.rss);
    latest[role] = m.rss;
    if (first[role] === 0) first[role] = m.rss;
    peaks[role].hwm = Math.max(peaks[role].hwm, m.hwm);
  }
}

async function sampleSink(port: number, sink: ConnectorProcess): Promise<void> {
  const m = await scrapeMetrics(port).catch(() => undefined);
  if (!m) return;
  sinkSamples.push({
    at: Date.now(),
    backlogInKafka,
    paused: m.get('pg2crm_paused_partitions') ?? 0,
    hashKeys: m.get('pg2crm_written_hash_keys') ?? 0,
    lag: m.get('pg2crm_consumer_lag') ?? 0,
    consumed: m.get('pg2crm_events_consumed_total') ?? 0,
    written: m.get('pg2crm_records_written_total') ?? 0,
    rss: processMemory(sink.pid)?.rss ?? 0,
  });
}

async function sampleGroup(): Promise<void> {
  const { groups } = await admin.describeGroups([groupId]);
  const g = groups[0];
  // Before the sink joins, the group is Empty or Dead: not a rebalance.
  if (!g || (g.members.length === 0 && memberIds.size === 0)) return;
  describeSamples++;
  groupStates.set(g.state, (groupStates.get(g.state) ?? 0) + 1);
  for (const member of g.members) memberIds.add(member.memberId);
}

async function simStats(sim: CrmSimulator): Promise<SimStats> {
  return (await (await fetch(`${sim.url}/__sim/stats`)).json()) as SimStats;
}

async function kafkaCount(): Promise<number> {
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
}

// ---------------------------------------------------------------- main
let source: ConnectorProcess | undefined;
let sink: ConnectorProcess | undefined;
let sim: CrmSimulator | undefined;
let sampler: NodeJS.Timeout | undefined;
try {
  await db.query(`CREATE SCHEMA ${schema}`);
  await db.query(
    `CREATE TABLE ${table} (id int PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL, company text NOT NULL, n int NOT NULL DEFAULT 0)`,
  );
  sim = await startSimulator({ port: 0, control: true, limit: LIMIT, tokens: [crm.token], ...crm.simulator });
  const [sourcePort, sinkPort] = [await freePort(), await freePort()];
  source = startConnector(configFile('source', connectorConfig(sim.url, sourcePort)), 'source', NODE_OPTIONS, cgroups.source?.dir);
  for (const deadline = Date.now() + 60_000; ; ) {
    source.check('while starting');
    const { rows } = await db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot]);
    if (rows.length && (await admin.listTopics()).includes(topic)) break;
    if (Date.now() > deadline) throw new Error(`the source did not start streaming within 60 s; its output:\n${source.output()}`);
    await sleep(200);
  }
  sink = startConnector(configFile('sink', connectorConfig(sim.url, sinkPort)), 'sink', NODE_OPTIONS, cgroups.sink?.dir);
  const running = { source, sink };
  let ticks = 0;
  let sampling = false;
  sampler = setInterval(() => {
    sampleMemory(running);
    if (sampling) return;
    sampling = true;
    const group = ticks++ % 5 === 0 ? sampleGroup().catch(() => undefined) : Promise.resolve();
    void Promise.all([sampleSink(sinkPort, running.sink), group]).finally(() => {
      sampling = false;
    });
  }, 1000);

  // The backlog: inserts (then updates when --records < --changes) in transactions of --chunk rows.
  const started = performance.now();
  for (let a = 1; a <= RECORDS; a += CHUNK) {
    const b = Math.min(RECORDS, a + CHUNK - 1);
    await db.query(
      `INSERT INTO ${table} (id, first_name, last_name, email, company, n)
       SELECT g, 'First' || g, 'Last' || g, 'c' || g || '@example.com', 'Company ' || (g % 100), 0 FROM generate_series($1::int, $2::int) g`,
      [a, b],
    );
  }
  for (let done = 0; done < CHANGES - RECORDS; ) {
    const from = (done % RECORDS) + 1;
    const to = Math.min(RECORDS, from + Math.min(CHUNK, CHANGES - RECORDS - done) - 1);
    await db.query(`UPDATE ${table} SET n = n + 1, email = 'c' || id || '.' || (n + 1) || '@example.com' WHERE id BETWEEN $1 AND $2`, [
      from,
      to,
    ]);
    done += to - from + 1;
  }
  const committedSeconds = (performance.now() - started) / 1000;
  note(
    `${CHANGES} changes (${RECORDS} records) committed in ${committedSeconds.toFixed(1)} s; waiting for the source to put them in Kafka`,
  );
  for (const deadline = performance.now() + CAPTURE_SECONDS * 1000; (await kafkaCount()) < CHANGES; ) {
    source.check('while capturing the backlog');
    sink.check('while the backlog was captured');
    if (performance.now() > deadline)
      throw new Error(`the source did not capture ${CHANGES} changes within --capture-seconds ${CAPTURE_SECONDS}`);
    await sleep(500);
  }
  const inKafkaSeconds = (performance.now() - started) / 1000;
  backlogInKafka = true;
  note(
    `all ${CHANGES} changes in Kafka after ${inKafkaSeconds.toFixed(1)} s; the sink runs ${SECONDS} s more behind ${LIMIT.requests} calls per ${LIMIT.windowSeconds} s`,
  );
  for (const end = performance.now() + SECONDS * 1000; performance.now() < end; ) {
    source.check('while the sink ran behind the throttle');
    sink.check('while it ran behind the throttle');
    await sleep(1000);
  }
  await sampleGroup();
  sampleMemory(running);
  clearInterval(sampler);
  sampler = undefined;
  const stats = await simStats(sim);
  const last = sinkSamples.at(-1);
  const after = sinkSamples.filter((s) => s.backlogInKafka);
  const pausedShare = after.length ? after.filter((s) => s.paused > 0).length / after.length : 0;
  const hashKeys = Math.max(0, ...sinkSamples.map((s) => s.hashKeys));
  const stable = memberIds.size === 1 && [...groupStates.keys()].every((s) => s === 'Stable');
  const figures = {
    crm: crm.kind,
    limit: `${LIMIT.requests}/${LIMIT.windowSeconds}s`,
    changes: CHANGES,
    records: RECORDS,
    committedSeconds: Number(committedSeconds.toFixed(1)),
    inKafkaSeconds: Number(inKafkaSeconds.toFixed(1)),
    secondsBehindThrottle: SECONDS,
    childNodeOptions: NODE_OPTIONS ?? null,
    containerMb: cgroups.sink ? CONTAINER_MB : null,
    sourceOomKills: cgroups.source?.oomKills() ?? null,
    sinkOomKills: cgroups.sink?.oomKills() ?? null,
    sourceCgroupPeakMb: cgroups.source ? mb(cgroups.source.peakBytes()) : null,
    sinkCgroupPeakMb: cgroups.sink ? mb(cgroups.sink.peakBytes()) : null,
    sinkFetchMaxBytesPerPartition: parseConfig(connectorConfig('http://127.0.0.1:1', 0)).sink.fetchMaxBytesPerPartition,
    sourcePeakRssMb: mb(peaks.source.hwm),
    sinkPeakRssMb: mb(peaks.sink.hwm),
    sourceMaxSampledRssMb: mb(peaks.source.rss),
    sinkMaxSampledRssMb: mb(peaks.sink.rss),
    sourceRssAtStartMb: mb(first.source),
    sinkRssAtStartMb: mb(first.sink),
    sourceRssAtEndMb: mb(latest.source),
    sinkRssAtEndMb: mb(latest.sink),
    sinkPausedShare: Number(pausedShare.toFixed(3)),
    sinkMemberIds: memberIds.size,
    groupStates: Object.fromEntries(groupStates),
    groupDescribes: describeSamples,
    sinkEventsConsumed: last?.consumed ?? 0,
    sinkRecordsWritten: last?.written ?? 0,
    sinkConsumerLagAtEnd: last?.lag ?? 0,
    crmCalls: stats.requests,
    crmThrottled: stats.throttled,
    hashStoreKeys: hashKeys,
    hashStoreMb: mb(hashKeys * HASH_BYTES_PER_RECORD),
    hashStoreMbAtAllRecords: mb(RECORDS * HASH_BYTES_PER_RECORD),
  };
  console.log(JSON.stringify({ bench: 'memory', ...figures }));
  console.log('');
  console.log(
    `memory under a backlog: ${CHANGES} changes (${RECORDS} records) behind ${crm.kind} at ${LIMIT.requests} calls / ${LIMIT.windowSeconds} s; sink ran ${SECONDS} s after the backlog was in Kafka`,
  );
  console.log(
    `source peak RSS (VmHWM)  ${figures.sourcePeakRssMb} MB  (ratio to ${GOAL_MB} MB: ${(figures.sourcePeakRssMb / GOAL_MB).toFixed(3)}); RSS at start ${figures.sourceRssAtStartMb} MB, at the end ${figures.sourceRssAtEndMb} MB`,
  );
  console.log(
    `sink peak RSS (VmHWM)    ${figures.sinkPeakRssMb} MB  (ratio to ${GOAL_MB} MB: ${(figures.sinkPeakRssMb / GOAL_MB).toFixed(3)}); RSS at start ${figures.sinkRssAtStartMb} MB, at the end ${figures.sinkRssAtEndMb} MB`,
  );
  console.log(
    `sink: consumed ${figures.sinkEventsConsumed}, wrote ${figures.sinkRecordsWritten} records in ${figures.crmCalls} calls (${figures.crmThrottled} throttled), lag at end ${figures.sinkConsumerLagAtEnd}`,
  );
  console.log(
    `sink partitions paused (backpressure) in ${(pausedShare * 100).toFixed(0)}% of ${after.length} samples after the backlog was in Kafka; group: ${memberIds.size} member id(s), states ${JSON.stringify(figures.groupStates)} over ${describeSamples} describes`,
  );
  console.log(
    `written-hash store: ${hashKeys} records x ${HASH_BYTES_PER_RECORD} B = ${figures.hashStoreMb} MB of the sink's memory now; ${figures.hashStoreMbAtAllRecords} MB once all ${RECORDS} records are written`,
  );
  const goals: BenchGoal[] = [
    goal(`source peak RSS (MB, <= ${GOAL_MB})`, figures.sourcePeakRssMb, GOAL_MB),
    goal(`sink peak RSS (MB, <= ${GOAL_MB})`, figures.sinkPeakRssMb, GOAL_MB),
    // One member id over the whole run, and the group Stable at every look: never evicted, no rebalance.
    goal('sink group member ids (1 = never evicted or rebalanced)', stable ? 1 : Math.max(2, memberIds.size), 1),
    // Not 1: after each pause the sink refetches and decodes its fetch before it pauses again (seconds on a busy machine).
    goal('share of samples with sink partitions paused (>= 0.5)', pausedShare, 0.5, 'min'),
  ];
  console.log('');
  for (const g of goals) console.log(`goal: ${g.name}: ${g.value} -> ratio ${g.ratio} ${g.met ? 'MET' : 'MISSED'}`);
  const command = benchCommand('bench:memory');
  printResult({ bench: 'memory', command, figures, goals }, args['json-out']);
} finally {
  if (sampler) clearInterval(sampler);
  await Promise.allSettled([sink?.stop(), source?.stop()]);
  await sim?.close();
  await db
    .query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot])
    .catch(() => undefined);
  await db.query(`DROP PUBLICATION IF EXISTS ${slot}`).catch(() => undefined);
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
  // The sink's group and the ones its hash-store loads use (`<groupId>-hashes...`).
  const { groups } = await admin.listGroups().catch(() => ({ groups: [] as { groupId: string }[] }));
  await admin.deleteGroups(groups.map((g) => g.groupId).filter((g) => g.startsWith(groupId))).catch(() => undefined);
  const mine = (await admin.listTopics().catch(() => [] as string[])).filter((t) => t.startsWith(`${topicPrefix}.`));
  if (mine.length) await admin.deleteTopics({ topics: mine }).catch(() => undefined);
  await admin.disconnect();
  await db.end();
  rmSync(tmp, { recursive: true, force: true });
  for (const cg of Object.values(cgroups)) {
    try {
      cg.remove();
    } catch {
      // Still has a process in it (a child that would not stop): the kernel keeps it.
    }
  }
}
