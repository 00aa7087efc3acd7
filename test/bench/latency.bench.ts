import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { parseConfig } from '../../src/config.ts';
import type { CrmSimulator, SimRecord, SimStats } from '../../src/crm/sim-server.ts';
import { topicFor } from '../../src/events/topic-router.ts';
import { benchCommand } from './bench-command.ts';
import { type BenchGoal, goal, printResult } from './bench-result.ts';
import { benchStack } from './bench-stack.ts';
import { type ConnectorProcess, freePort, startConnector } from './connector-process.ts';
import { WRITE_SIMULATORS } from './write-simulators.ts';
import { sinkBenchCrms } from './sink-bench-crms.ts';

/**
 * `npm run bench:latency [-- --rate 1000 --seconds 60 --warmup 10 --crm hubspot --json-out f.json]`:
 * end-to-end latency, PostgreSQL commit -> the CRM simulator accepted the write, at a steady
 * --rate of changes per second into an unthrottled simulator, with the sink's `lingerMs` 0 and
 * with its default, one after the other in one run (same source, same workload, a fresh sink and
 * consumer group each, starting at the topic's end).
 *
 * The real connector: `pg2crm run --role source` (one child for the whole run) and
 * `pg2crm run --role sink` (one child per linger). The bench paces committed single-row
 * transactions from 4 sessions: half inserts of new rows, half updates of rows inserted ~5 s
 * before, so every change is a distinct record in its fetch (compaction folds none: each change
 * is timed by its own write). Each change carries its sequence number in column `n`, mapped to a
 * CRM field. Commit time: the bench's clock when COMMIT returned to the session; accept time:
 * the simulator's write listener (CrmSimulator.onWrite), called in this process as the record is
 * stored — one clock. Changes of the --warmup seconds are not counted; a change not accepted
 * within --grace seconds after the last one is reported missing.
 *
 * Default CRM hubspot: its batch upsert (1-100 records per call) answers synchronously, so a
 * write is accepted when its call returns, and it is where linger matters (waiting to fill a
 * call). Zendesk Sell writes one record per call: linger does not apply to it.
 * Goal: p99 <= 250 ms with linger 0.
 */
const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '10' },
    grace: { type: 'string', default: '10' },
    crm: { type: 'string', default: 'hubspot' },
    'json-out': { type: 'string' },
  },
});
const RATE = Number(args.rate);
const SECONDS = Number(args.seconds);
const WARMUP = Number(args.warmup);
const GRACE = Number(args.grace);
for (const [name, v] of Object.entries({ rate: RATE, seconds: SECONDS, warmup: WARMUP, grace: GRACE })) {
  if (!Number.isFinite(v) || v < 0 || ((name === 'rate' || name === 'seconds') && v === 0)) {
    console.error(`--${name} must be a positive number`);
    process.exit(2);
  }
}
const GOAL_P99_MS = 250;
/** Sessions committing changes: one would fall behind at 1,000/s on a loaded 2-core machine. */
const WRITERS = 4;
/** Updates hit rows inserted this long before: never two changes of one record in a fetch. */
const UPDATE_AGE_SECONDS = 5;
const crm = sinkBenchCrms.find((c) => c.kind === args.crm);
const startSimulator = WRITE_SIMULATORS[args.crm];
if (!crm || !startSimulator) {
  console.error(
    `--crm ${args.crm}: choose one of ${Object.keys(WRITE_SIMULATORS).join(', ')} (simulators that report each accepted write)`,
  );
  process.exit(2);
}
/** The CRM field that carries column `n` (the change's sequence number), as a path into the stored record. */
const seqField = Object.entries(crm.mapping.fields).find(([, column]) => column === 'n')?.[0];
if (!seqField) throw new Error(`sink-bench-crms.ts maps no CRM field of ${crm.kind} to column n`);
const seqPath = seqField.split('.');

const note = (line: string): void => void process.stderr.write(`# ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const now = (): number => performance.timeOrigin + performance.now();

const { env, admin, db } = await benchStack('bench-latency');
const runId = Date.now().toString(36);
const name = `bench_latency_${runId}`;
const schema = name;
const table = `${schema}.contacts`;
const topicPrefix = `blat_${runId}`;
const topic = topicFor(topicPrefix, schema, 'contacts');
const slot = `pg2crm_${name}`;
const tmp = mkdtempSync(join(tmpdir(), 'pg2crm-bench-latency-'));
const groups: string[] = [];
/** Effectively unlimited: the simulator's and the connector's budget never hold a call back. */
const UNLIMITED = { requests: 1_000_000_000, windowSeconds: 10 };

function connectorConfig(baseUrl: string, groupId: string, sink: Record<string, unknown>, opsPort = 0): Record<string, unknown> {
  return {
    name,
    postgres: { url: env.PG_URL, tables: [table], snapshot: 'never', heartbeatSeconds: 0 },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix, partitions: 3, groupId, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: { kind: crm!.kind, baseUrl, auth: { token: crm!.token }, limits: { ...UNLIMITED }, ...crm!.crm },
    mappings: [
      {
        table,
        object: crm!.mapping.object,
        externalId: { column: 'id', field: crm!.mapping.externalIdField },
        fields: crm!.mapping.fields,
      },
    ],
    sink: { hashTopic: `${topicPrefix}.${groupId}.sink-hashes`, statusTopic: `${topicPrefix}.${groupId}.sink-status`, ...sink },
    ops: { logLevel: 'warn', port: opsPort },
  };
}

function configFile(label: string, config: Record<string, unknown>): string {
  parseConfig(config); // fails here, with the setting to fix, rather than in the child
  const file = join(tmp, `${label}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

// ---------------------------------------------------------------- the paced workload
/** Per sequence number: when COMMIT returned, and when the simulator accepted the write (epoch ms; 0 = not yet). */
const capacity = Math.ceil(RATE * (WARMUP + SECONDS) * 2 * 1.05) + 1000;
const committedAt = new Float64Array(capacity);
const acceptedAt = new Float64Array(capacity);
let nextSeq = 1;
let nextId = 1;
let nextUpdate = 1;

function onWrite(_object: string, record: SimRecord, at: number): void {
  let v: unknown = record;
  for (const k of seqPath) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  const seq = Number(v);
  if (Number.isInteger(seq) && seq > 0 && seq < capacity && acceptedAt[seq] === 0) acceptedAt[seq] = at;
}

interface PacedRun {
  /** Sequence numbers [first, end) that are measured (after the warm-up). */
  first: number;
  end: number;
  /** How late the writers got behind their schedule at worst (ms). */
  maxLateMs: number;
}

/** Commits `RATE` single-row changes per second for `warmup + seconds` from WRITERS sessions. */
async function paced(sessions: pg.Client[]): Promise<PacedRun> {
  const total = Math.round(RATE * (WARMUP + SECONDS));
  const warmupChanges = Math.round(RATE * WARMUP);
  const base = nextSeq;
  if (base + total >= capacity) throw new Error('sequence numbers beyond the bench arrays');
  nextSeq += total;
  let k = 0;
  let maxLateMs = 0;
  const t0 = performance.now() + 50;
  const lag = Math.round((RATE * UPDATE_AGE_SECONDS) / 2);
  await Promise.all(
    sessions.map(async (session) => {
      for (;;) {
        const i = k++;
        if (i >= total) return;
        const due = t0 + (i * 1000) / RATE;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        else maxLateMs = Math.max(maxLateMs, -wait);
        const seq = base + i;
        // Half inserts, half updates of a row inserted UPDATE_AGE_SECONDS before (inserts until there is one).
        if (i % 2 === 1 && nextUpdate <= nextId - 1 - lag) {
          await session.query(`UPDATE ${table} SET n = $2 WHERE id = $1`, [nextUpdate++, seq]);
        } else {
          const id = nextId++;
          await session.query(
            `INSERT INTO ${table} (id, first_name, last_name, email, company, n) VALUES ($1::int, 'First' || $1::text, 'Last' || $1::text, 'c' || $1::text || '@example.com', 'Company', $2::int)`,
            [id, seq],
          );
        }
        committedAt[seq] = now();
      }
    }),
  );
  return { first: base + warmupChanges, end: base + total, maxLateMs };
}

// ---------------------------------------------------------------- one sink, one linger
interface Figures {
  lingerMs: number;
  changes: number;
  ratePerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
  missing: number;
  /** CRM calls and records per call over the whole phase, warm-up included. */
  crmCalls: number;
  recordsPerCall: number;
  writerMaxLateMs: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const r1 = (v: number): number => Math.round(v * 10) / 10;

async function simStats(sim: CrmSimulator): Promise<SimStats> {
  return (await (await fetch(`${sim.url}/__sim/stats`)).json()) as SimStats;
}

async function waitReady(port: number, sink: ConnectorProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    sink.check('before it joined its group');
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`the sink was not ready within 60 s; its output:\n${sink.output()}`);
    await sleep(200);
  }
}

async function phase(lingerMs: number, sessions: pg.Client[]): Promise<Figures> {
  const sim = await startSimulator!({
    port: 0,
    control: true,
    limit: UNLIMITED,
    daily: 1_000_000_000_000,
    tokens: [crm!.token],
    ...crm!.simulator,
  });
  if (!sim.onWrite) throw new Error(`the ${crm!.kind} simulator reports no writes (CrmSimulator.onWrite)`);
  sim.onWrite(onWrite);
  const groupId = `bench-latency-${runId}-linger-${lingerMs}`;
  groups.push(groupId);
  // From the topic's end: the changes of this phase only.
  await admin.setOffsets({
    groupId,
    topic,
    partitions: (await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, offset: p.high })),
  });
  const port = await freePort();
  const sink = startConnector(configFile(`sink-${lingerMs}`, connectorConfig(sim.url, groupId, { lingerMs }, port)), 'sink');
  try {
    await waitReady(port, sink);
    note(`linger ${lingerMs} ms: ${WARMUP} s warm-up + ${SECONDS} s at ${RATE} changes/s`);
    const s0 = await simStats(sim);
    const run = await paced(sessions);
    const deadline = performance.now() + GRACE * 1000;
    const pending = (): number => {
      let n = 0;
      for (let s = run.first; s < run.end; s++) if (acceptedAt[s] === 0) n++;
      return n;
    };
    while (pending() > 0 && performance.now() < deadline) {
      sink.check('while the workload ran');
      await sleep(200);
    }
    const s1 = await simStats(sim);
    const latencies: number[] = [];
    let firstCommit = Number.POSITIVE_INFINITY;
    let lastCommit = 0;
    for (let s = run.first; s < run.end; s++) {
      firstCommit = Math.min(firstCommit, committedAt[s]!);
      lastCommit = Math.max(lastCommit, committedAt[s]!);
      if (acceptedAt[s]! > 0) latencies.push(acceptedAt[s]! - committedAt[s]!);
    }
    const sorted = Float64Array.from(latencies).sort();
    const changes = run.end - run.first;
    const calls = s1.requests - s0.requests;
    return {
      lingerMs,
      changes,
      ratePerSecond: Math.round(changes / Math.max(0.001, (lastCommit - firstCommit) / 1000)),
      p50Ms: r1(percentile(sorted, 50)),
      p90Ms: r1(percentile(sorted, 90)),
      p99Ms: r1(percentile(sorted, 99)),
      maxMs: r1(sorted.length ? sorted[sorted.length - 1]! : Number.NaN),
      meanMs: r1(latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length)),
      missing: changes - latencies.length,
      crmCalls: calls,
      recordsPerCall: r1((s1.recordsWritten - s0.recordsWritten) / Math.max(1, calls)),
      writerMaxLateMs: Math.round(run.maxLateMs),
    };
  } finally {
    await sink.stop();
    sim.onWrite(undefined);
    await sim.close();
  }
}

// ---------------------------------------------------------------- main
let source: ConnectorProcess | undefined;
const sessions: pg.Client[] = [];
try {
  await db.query(`CREATE SCHEMA ${schema}`);
  await db.query(
    `CREATE TABLE ${table} (id int PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, email text NOT NULL, company text NOT NULL, n int NOT NULL DEFAULT 0)`,
  );
  const defaultLinger = parseConfig(connectorConfig('http://127.0.0.1:1', 'unused', {})).sink.lingerMs;
  source = startConnector(configFile('source', connectorConfig('http://127.0.0.1:1', 'unused', {})), 'source');
  // The source creates the slot (snapshot: never): changes committed before that are not captured.
  for (const deadline = Date.now() + 60_000; ; ) {
    source.check('while starting');
    const { rows } = await db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot]);
    const topics = await admin.listTopics();
    if (rows.length && topics.includes(topic)) break;
    if (Date.now() > deadline) throw new Error(`the source did not start streaming within 60 s; its output:\n${source.output()}`);
    await sleep(200);
  }
  for (let i = 0; i < WRITERS; i++) {
    const c = new pg.Client({ connectionString: env.PG_URL });
    await c.connect();
    sessions.push(c);
  }
  const results: Figures[] = [];
  for (const linger of [0, defaultLinger]) {
    const f = await phase(linger, sessions);
    source.check('during the run');
    console.log(JSON.stringify({ bench: 'latency', crm: crm.kind, ...f }));
    results.push(f);
  }
  const [zero, dflt] = results as [Figures, Figures];
  const pad = (s: string | number, n: number): string => String(s).padEnd(n);
  console.log('');
  console.log(
    `end-to-end latency, PostgreSQL commit -> ${crm.kind} simulator accepted the write (unthrottled), ${RATE} changes/s, ${SECONDS} s measured`,
  );
  console.log(`${pad('', 22)}${pad('linger 0', 16)}linger ${defaultLinger} ms (default)`);
  for (const [label, key] of [
    ['changes measured', 'changes'],
    ['changes/s achieved', 'ratePerSecond'],
    ['p50 ms', 'p50Ms'],
    ['p90 ms', 'p90Ms'],
    ['p99 ms', 'p99Ms'],
    ['max ms', 'maxMs'],
    ['mean ms', 'meanMs'],
    ['missing', 'missing'],
    ['CRM calls (+warm-up)', 'crmCalls'],
    ['records per call', 'recordsPerCall'],
    ['writer max late ms', 'writerMaxLateMs'],
  ] as const) {
    console.log(`${pad(label, 22)}${pad(zero[key], 16)}${dflt[key]}`);
  }
  const goals: BenchGoal[] = [goal(`p99 latency with linger 0 (ms, <= ${GOAL_P99_MS})`, zero.p99Ms, GOAL_P99_MS)];
  if (zero.missing > 0) goals.push(goal('changes not accepted within --grace (linger 0)', zero.missing, 0));
  console.log('');
  for (const g of goals) console.log(`goal: ${g.name}: ${g.value} -> ratio ${g.ratio} ${g.met ? 'MET' : 'MISSED'}`);
  const command = benchCommand('bench:latency');
  printResult(
    {
      bench: 'latency',
      command,
      figures: {
        crm: crm.kind,
        ratePerSecond: RATE,
        seconds: SECONDS,
        warmupSeconds: WARMUP,
        linger0: zero,
        [`linger${defaultLinger}`]: dflt,
        defaultLingerMs: defaultLinger,
      },
      goals,
    },
    args['json-out'],
  );
} finally {
  await Promise.allSettled(sessions.map((s) => s.end()));
  await source?.stop();
  await db
    .query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot])
    .catch(() => undefined);
  await db.query(`DROP PUBLICATION IF EXISTS ${slot}`).catch(() => undefined);
  await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
  // The sinks' groups and the ones their hash-store loads use (`<groupId>-hashes...`).
  const listed = (await admin.listGroups().catch(() => ({ groups: [] as { groupId: string }[] }))).groups.map((g) => g.groupId);
  await admin.deleteGroups(listed.filter((g) => groups.some((mine) => g.startsWith(mine)))).catch(() => undefined);
  const mine = (await admin.listTopics().catch(() => [] as string[])).filter((t) => t.startsWith(`${topicPrefix}.`));
  if (mine.length) await admin.deleteTopics({ topics: mine }).catch(() => undefined);
  await admin.disconnect();
  await db.end();
  rmSync(tmp, { recursive: true, force: true });
}
