import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaptureSource } from '../../src/capture/capture-source.ts';
import { parseConfig } from '../../src/config.ts';
import type { CrmWrite } from '../../src/crm/crm-adapter.ts';
import type { CrmSimulator, SimStats } from '../../src/crm/sim-server.ts';
import { topicFor } from '../../src/events/topic-router.ts';
import { type BenchStack, benchStack } from './bench-stack.ts';
import type { SinkBenchCrm } from './sink-bench-crms.ts';
import { writesPerChangeFloor } from './sink-figures.ts';
import { distinctKeys, hotShare, zipfExponentFor, zipfKeys } from './zipf-workload.ts';

/**
 * What the sink benches share (bench:sink, bench:scale): the two skewed update workloads put
 * through the real source into Kafka, the connector config of a CRM, `pg2crm run --role sink`
 * child processes, simulator stats and committed offsets. Everything a bench creates (schema,
 * slot, publication, topics, groups, temp files) is named after one run id and removed by
 * `cleanup()`.
 */
export const HOT_KEYS = 0.05;
export const HOT_UPDATES = 0.8;
const root = new URL('../../', import.meta.url).pathname;

export const note = (line: string): void => void process.stderr.write(`# ${line}\n`);
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
export const total = (m: Map<number, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

/** One table's backlog in Kafka: where every contender starts, where it ends, and each partition's keys in between. */
export interface Workload {
  name: 'capacity' | 'hourly-sync';
  table: string;
  topic: string;
  /** First update's offset per partition: where every contender starts. */
  start: { partition: number; offset: string }[];
  ends: Map<number, number>;
  /** Message keys per partition from `start` to `ends`, in offset order (for the calls-per-change floor). */
  keys: Map<number, string[]>;
}

export interface Interval {
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

/** `pg2crm run --role sink` as a child process. */
export interface SinkProcess {
  groupId: string;
  /** Fails the bench with the child's output when it has exited. */
  check(when: string): void;
  output(): string;
  stop(): Promise<void>;
}

export interface WorkbenchOptions {
  /** Names the run's schema, topics and groups (`bench-sink`, `bench-scale`). */
  name: string;
  records: number;
  updates: number;
  hourlyRecords: number;
  hourlyUpdates: number;
  seed: number;
  /** Partitions of the change topics (the source creates them). */
  partitions: number;
}

export type StartSimulator = (opts: Record<string, unknown>) => Promise<CrmSimulator>;

/** The CRM's simulator factory (`start<X>Simulator`), or why it cannot be used. */
export async function simulatorOf(crm: SinkBenchCrm): Promise<StartSimulator | string> {
  const dir = join(root, 'src/crm', crm.kind);
  if (!existsSync(join(dir, 'adapter.ts'))) return `adapter not present (src/crm/${crm.kind}/adapter.ts)`;
  if (!existsSync(join(dir, 'simulator.ts'))) return `simulator not present (src/crm/${crm.kind}/simulator.ts)`;
  const mod = (await import(join(dir, 'simulator.ts'))) as Record<string, unknown>;
  const name = Object.keys(mod).find((k) => /^start\w*Simulator$/.test(k));
  return name ? (mod[name] as StartSimulator) : `src/crm/${crm.kind}/simulator.ts exports no start<X>Simulator`;
}

export function sampleWrites(crm: SinkBenchCrm, n: number): CrmWrite[] {
  return Array.from({ length: n }, (_, i) => ({
    op: 'upsert' as const,
    object: crm.mapping.object,
    externalIdField: crm.mapping.externalIdField,
    externalId: String(i + 1),
    fields: {},
  }));
}

export async function simStats(sim: { url: string }): Promise<SimStats> {
  return (await (await fetch(`${sim.url}/__sim/stats`)).json()) as SimStats;
}

export async function simReset(sim: { url: string }): Promise<void> {
  const res = await fetch(`${sim.url}/__sim/reset`, { method: 'POST' });
  if (!res.ok) throw new Error(`POST ${sim.url}/__sim/reset answered ${res.status}`);
}

export function delta(a: SimStats, b: SimStats): Pick<Interval, 'records' | 'calls' | 'throttled'> {
  return { records: b.recordsWritten - a.recordsWritten, calls: b.requests - a.requests, throttled: b.throttled - a.throttled };
}

/** Options of one sink child: its group (default a fresh one) and `crm` keys that replace the CRM's (e.g. `credentials`). */
export interface SinkStart {
  groupId?: string;
  /** Tells apart the config files of several instances of one group. */
  instance?: number;
  crm?: Record<string, unknown>;
  /** Names the sink's own topics (dead letters, written hashes, status) instead of the CRM and workload: a run that must not see another's written hashes. */
  tag?: string;
}

export type SinkWorkbench = Awaited<ReturnType<typeof sinkWorkbench>>;

export async function sinkWorkbench(o: WorkbenchOptions) {
  const stack: BenchStack = await benchStack(o.name);
  const { env, kafka, admin, db } = stack;
  const runId = Date.now().toString(36);
  const prefix = o.name.replace(/^bench-/, '').replace(/-/g, '_');
  const schema = `bench_${prefix}_${runId}`;
  const topicPrefix = `b${prefix}_${runId}`;
  const slot = `pg2crm_${schema}`;
  const tmp = mkdtempSync(join(tmpdir(), `pg2crm-${o.name}-`));
  const groups: string[] = [];

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
  function connectorConfig(
    crm: SinkBenchCrm,
    baseUrl: string,
    groupId: string,
    w: Workload = capacityWl,
    crmKeys: Record<string, unknown> = {},
    sinkTag?: string,
  ): Record<string, unknown> {
    const tag = sinkTag ?? (w === capacityWl ? crm.kind : `${crm.kind}.${w.name}`);
    const crmConfig: Record<string, unknown> = {
      kind: crm.kind,
      baseUrl,
      auth: { token: crm.token },
      limits: { ...crm.limit },
      ...crm.crm,
      ...crmKeys,
    };
    if (crmKeys.credentials) delete crmConfig.auth;
    return {
      name: `${o.name.replace(/-/g, '_')}_${crm.kind.replace(/-/g, '_')}_${runId}`,
      postgres: { url: env.PG_URL, tables: [capacityWl.table, hourlyWl.table], snapshot: 'never', heartbeatSeconds: 0 },
      kafka: {
        brokers: env.KAFKA_BROKERS,
        topicPrefix,
        partitions: o.partitions,
        groupId,
        schemaRegistry: { url: env.SCHEMA_REGISTRY_URL },
      },
      crm: crmConfig,
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
    const keys = zipfKeys(records, updates, s, o.seed);
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

  /** Both tables created and updated through the real source (CaptureSource: slot -> Kafka), then each range's keys read. */
  async function prepareWorkloads(crm: SinkBenchCrm): Promise<void> {
    await db.query(`CREATE SCHEMA ${schema}`);
    await createTable(capacityWl);
    await createTable(hourlyWl);
    await db.query(`CREATE PUBLICATION ${slot} FOR TABLE ${capacityWl.table}, ${hourlyWl.table}`);
    await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);

    const sourceConfig = parseConfig(connectorConfig(crm, 'http://127.0.0.1:1', 'unused'));
    const source = new CaptureSource({ ...sourceConfig.postgres, slot, publication: slot }, sourceConfig.kafka, (err) => {
      console.error('source failed', err);
      process.exit(1);
    });
    const started = performance.now();
    await db.query(`CALL ${schema}.create_contacts($1)`, [o.records]);
    await db.query(`CALL ${schema}.create_active_contacts($1)`, [o.hourlyRecords]);
    await source.start();
    await waitCount(capacityWl.topic, o.records);
    await waitCount(hourlyWl.topic, o.hourlyRecords);
    note(
      `created ${o.records} + ${o.hourlyRecords} records in PostgreSQL and Kafka in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    console.log(JSON.stringify(await skewedUpdates(capacityWl, o.records, o.updates)));
    console.log(JSON.stringify(await skewedUpdates(hourlyWl, o.hourlyRecords, o.hourlyUpdates)));
    await source.stop();
    await readKeys(capacityWl);
    await readKeys(hourlyWl);
  }

  /** Every message key of the workload's range, per partition (keys only: nothing is decoded). */
  async function readKeys(w: Workload): Promise<void> {
    const groupId = `${o.name}-${runId}-keys-${w.name}`;
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

  /** The group's committed offset per partition (each partition starts at the workload's start). */
  async function committed(groupId: string, w: Workload): Promise<Map<number, number>> {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [w.topic] });
    return new Map((offsets?.partitions ?? []).map((p) => [p.partition, Math.max(0, Number(p.offset))]));
  }

  async function freshGroup(kind: string, contender: string, w: Workload): Promise<string> {
    const groupId = `${o.name}-${runId}-${kind}-${contender}-${w.name}`;
    groups.push(groupId);
    await admin.setOffsets({ groupId, topic: w.topic, partitions: w.start });
    return groupId;
  }

  /** `pg2crm run --role sink` on workload `w` (a fresh group unless `opts.groupId`), as a child process. */
  async function startSink(crm: SinkBenchCrm, baseUrl: string, w: Workload, opts: SinkStart = {}): Promise<SinkProcess> {
    const groupId = opts.groupId ?? (await freshGroup(crm.kind, 'pg2crm', w));
    const file = join(tmp, `${crm.kind}-${w.name}-${groupId}-${opts.instance ?? 0}.json`);
    writeFileSync(file, JSON.stringify(connectorConfig(crm, baseUrl, groupId, w, opts.crm, opts.tag), null, 2));
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
  async function firstCall(crm: SinkBenchCrm, stats: () => Promise<SimStats>, sink: SinkProcess): Promise<string | undefined> {
    const deadline = Date.now() + 30_000;
    while ((await stats()).requests === 0) {
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

  /** Drops what the run created: slot, publication, schema, groups, topics, temp files; disconnects. */
  async function cleanup(): Promise<void> {
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

  return {
    ...stack,
    runId,
    groups,
    capacityWl,
    hourlyWl,
    connectorConfig,
    prepareWorkloads,
    floorOf,
    committed,
    freshGroup,
    startSink,
    firstCall,
    cleanup,
  };
}
