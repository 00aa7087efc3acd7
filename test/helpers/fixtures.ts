import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { AssignerProtocol, Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { AvroCodec } from '../../src/events/avro-codec.ts';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { readTopic } from '../../src/kafka/read-topic.ts';
import { dropKafkajsTimerWarning } from '../../src/kafka/timer-warning.ts';
import type { DeadLetter } from '../../src/sink/dead-letter.ts';

// The tests' own kafkajs clients would print Node's TimeoutNegativeWarning (see timer-warning.ts).
dropKafkajsTimerWarning();

/** Helpers for integration tests: isolated names, the demo ERP schema, the connector as a real process. */
export interface StackEnv {
  PG_URL: string;
  KAFKA_BROKERS: string;
  SCHEMA_REGISTRY_URL: string;
}

const repoRoot = new URL('../../', import.meta.url).pathname;

export function uniqueName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** Creates the demo ERP tables in their own PostgreSQL schema, so tests never share tables. */
export async function createErpSchema(pgUrl: string, schema: string): Promise<void> {
  const sql = readFileSync(join(repoRoot, 'scripts/demo/erp-schema.sql'), 'utf8')
    .replaceAll('erp.', `${schema}.`)
    .replace('SCHEMA IF NOT EXISTS erp', `SCHEMA IF NOT EXISTS ${schema}`);
  await withPg(pgUrl, (c) => c.query(sql));
}

export async function withPg<T>(pgUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: pgUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Resolves once a connector streams from `slot`. */
export async function waitSlotActive(pgUrl: string, slot: string): Promise<void> {
  await waitFor(`slot ${slot} streaming`, () =>
    withPg(
      pgUrl,
      async (c) => (await c.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot])).rowCount === 1,
    ),
  );
}

/** Drops what a connector left in PostgreSQL (slot, publication) so the cluster stays clean. */
export async function dropCapture(pgUrl: string, slot: string, publication: string): Promise<void> {
  await withPg(pgUrl, async (c) => {
    for (let i = 0; i < 20; i++) {
      const r = await c.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      if (!r.rows[0]?.active) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    await c.query(`DROP PUBLICATION IF EXISTS ${publication}`);
  });
}

export interface TestConnector {
  name: string;
  schema: string;
  topicPrefix: string;
  groupId: string;
  slot: string;
  publication: string;
  configFile: string;
}

/** A connector config for the demo ERP schema `schema`, written to a temp file. */
export function writeConnectorConfig(
  env: StackEnv,
  schema: string,
  crmUrl: string,
  overrides: { limits?: Record<string, unknown>; customersOnDelete?: unknown; snapshot?: string; extra?: Record<string, unknown> } = {},
): TestConnector {
  const name = schema;
  const topicPrefix = `t.${schema}`;
  const dir = mkdtempSync(join(tmpdir(), 'pg2crm-test-'));
  const configFile = join(dir, 'connector.json');
  const config = {
    name,
    postgres: {
      url: env.PG_URL,
      tables: [`${schema}.customers`, `${schema}.orders`],
      snapshot: overrides.snapshot ?? 'initial',
      heartbeatSeconds: 2,
    },
    kafka: { brokers: env.KAFKA_BROKERS, topicPrefix, partitions: 3, schemaRegistry: { url: env.SCHEMA_REGISTRY_URL } },
    crm: {
      kind: 'zendesk-sell',
      baseUrl: crmUrl,
      auth: { token: 'sim-token' },
      limits: { requests: 100_000, windowSeconds: 60, concurrency: 4, ...overrides.limits },
    },
    mappings: [
      {
        table: `${schema}.customers`,
        object: 'contacts',
        externalId: { column: 'id', field: 'custom_fields.erp_id' },
        fields: { first_name: 'first_name', last_name: 'last_name', email: 'email', 'custom_fields.company': 'company' },
        onDelete: overrides.customersOnDelete ?? 'delete',
      },
      {
        table: `${schema}.orders`,
        object: 'deals',
        externalId: { column: 'id', field: 'custom_fields.erp_order_id' },
        fields: { name: 'title', value: 'amount', 'custom_fields.status': 'status' },
        lookups: { contact_id: { object: 'contacts', column: 'customer_id' } },
      },
    ],
    sink: { lingerMs: 50, maxAttempts: 20 },
    ...overrides.extra,
  };
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  return { name, schema, topicPrefix, groupId: `pg2crm-${name}-sink`, slot: `pg2crm_${name}`, publication: `pg2crm_${name}`, configFile };
}

/** `pg2crm <args>` as a child process, the way operators run it. */
export class CliProcess {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [join(repoRoot, 'bin/pg2crm.js'), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

export async function runCli(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; output: string }> {
  const p = new CliProcess(args);
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, output: p.output };
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 120_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function simRecords(simUrl: string, object: string): Promise<Record<string, unknown>[]> {
  const res = await fetch(`${simUrl}/__sim/records/${object}`);
  if (res.status === 404) throw new Error(`${simUrl}/__sim/records answered 404: start the simulator with control: true`);
  return (await res.json()) as Record<string, unknown>[];
}

/** A field of a simulator record; Zendesk Sell nests some (`custom_fields.erp_id`), the others store fields flat. */
export function recordField(record: Record<string, unknown>, name: string): unknown {
  if (name in record) return record[name];
  return name.split('.').reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), record);
}

const text = (v: unknown): string => (v === null || v === undefined ? '' : String(v));

/**
 * Differences between a simulator's records and the table's rows on every mapped column, by
 * external id (rows whose id is in `skip` must be absent: the CRM rejected them). Empty = equal.
 */
export function crmDifferences(
  records: Record<string, unknown>[],
  rows: Record<string, unknown>[],
  mapping: { externalId: { field: string }; fields: Record<string, string> },
  skip: Set<string> = new Set(),
): string[] {
  const byId = new Map(records.map((r) => [text(recordField(r, mapping.externalId.field)), r]));
  const out: string[] = [];
  for (const row of rows) {
    const id = String(row.id);
    const rec = byId.get(id);
    if (skip.has(id)) {
      if (rec) out.push(`${id}: present but should have been rejected`);
      continue;
    }
    if (!rec) {
      out.push(`${id}: missing`);
      continue;
    }
    for (const [crmField, column] of Object.entries(mapping.fields)) {
      const have = text(recordField(rec, crmField));
      if (have !== text(row[column])) out.push(`${id}.${crmField}: ${have} != ${text(row[column])}`);
    }
  }
  if (records.length !== rows.length - skip.size) out.push(`${records.length} records for ${rows.length - skip.size} rows`);
  return out;
}

/** Every dead letter in `topic` (read to its current end). */
export async function readDeadLetters(brokers: string, topic: string): Promise<DeadLetter[]> {
  const letters: DeadLetter[] = [];
  await readTopic(kafkaOf(brokers), topic, (m) => letters.push(JSON.parse(m.value!.toString('utf8')) as DeadLetter), {
    groupPrefix: 'test-dlq',
    timeoutMs: 30_000,
  });
  return letters;
}

function kafkaOf(brokers: string): Kafka {
  return new Kafka({ clientId: 'pg2crm-test', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
}

/** A TCP port free on loopback now (for a connector's ops endpoints). */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function withAdmin<T>(brokers: string, fn: (admin: ReturnType<Kafka['admin']>) => Promise<T>): Promise<T> {
  const admin = kafkaOf(brokers).admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

/** Messages a topic holds now (0 when it does not exist). */
export function topicSize(brokers: string, topic: string): Promise<number> {
  return withAdmin(brokers, async (admin) => {
    if (!(await admin.listTopics()).includes(topic)) return 0;
    return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  });
}

/** The group's members, sorted by id, with how many partitions each is assigned. */
export function groupMembers(brokers: string, groupId: string): Promise<{ memberId: string; partitions: number }[]> {
  return withAdmin(brokers, async (admin) => {
    const { groups } = await admin.describeGroups([groupId]);
    return (groups[0]?.members ?? [])
      .map((m) => {
        const a = m.memberAssignment.length ? AssignerProtocol.MemberAssignment.decode(m.memberAssignment) : null;
        return { memberId: m.memberId, partitions: Object.values(a?.assignment ?? {}).reduce((n, ps) => n + ps.length, 0) };
      })
      .sort((x, y) => x.memberId.localeCompare(y.memberId));
  });
}

/** Sum over partitions of (end offset - committed offset) for the group: the lag operators watch. */
export function groupLag(brokers: string, groupId: string, topics: string[]): Promise<number> {
  return withAdmin(brokers, async (admin) => {
    let lag = 0;
    const committed = await admin.fetchOffsets({ groupId, topics });
    for (const { topic, partitions } of committed) {
      const ends = await admin.fetchTopicOffsets(topic);
      for (const end of ends) {
        const c = partitions.find((p) => p.partition === end.partition)?.offset ?? '-1';
        lag += Number(end.high) - Math.max(0, Number(c));
      }
    }
    return lag;
  });
}

/** Every change event in `topic`, read from the beginning to the current end offsets. */
export async function readAllEvents(env: StackEnv, topic: string): Promise<ChangeEvent[]> {
  const kafka = kafkaOf(env.KAFKA_BROKERS);
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const remaining = new Map(ends.filter((e) => Number(e.high) > 0).map((e) => [e.partition, Number(e.high)]));
  const codec = new AvroCodec({ url: env.SCHEMA_REGISTRY_URL });
  const events: ChangeEvent[] = [];
  if (remaining.size === 0) return events;
  const consumer = kafka.consumer({ groupId: uniqueName('reader') });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    consumer
      .run({
        eachBatch: async ({ batch }) => {
          for (const m of batch.messages) {
            if (m.value) events.push(await codec.decode(m.value));
          }
          const end = remaining.get(batch.partition);
          if (end !== undefined && Number(batch.lastOffset()) + 1 >= end) remaining.delete(batch.partition);
          if (remaining.size === 0) resolve();
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return events;
}
