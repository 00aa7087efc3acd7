import type { Kafka } from 'kafkajs';
import { openPg } from '../capture/pg-connect.ts';
import type { Config } from '../config.ts';
import { topicFor } from '../events/topic-router.ts';
import { createKafka } from '../kafka/client.ts';
import { readTopic } from '../kafka/read-topic.ts';
import { type InstanceReport, REPORT_INTERVAL_MS } from '../kafka/instance-report.ts';

/**
 * What `pg2crm status` reports, read from outside the connector (any machine with access):
 * consumer lag per topic-partition (end offset - committed offset of the sink group, the number
 * operators alert on), the replication slot and how much WAL it holds, and the dead-letter count.
 */
export interface PartitionStatus {
  topic: string;
  partition: number;
  committed: number | null;
  end: number;
  lag: number;
  /** Paused by a sink's backpressure (from the instances' reports); null when no instance reports the partition. */
  paused?: boolean | null;
  /**
   * Seconds the committed offset has stood still while messages wait behind it (the sink
   * instances' reports, or the lag monitor's samples); null when nobody reports it.
   */
  stalledSeconds?: number | null;
}

export interface ConnectorStatus {
  name: string;
  group: string;
  partitions: PartitionStatus[];
  totalLag: number;
  slot: { name: string; exists: boolean; active: boolean; confirmedFlushLsn: string | null; lagBytes: number | null };
  deadLetters: { topic: string; count: number };
  /** Live sink instances (reported within the last 15 s) and their budget use. */
  instances: InstanceReport[];
}

/** The latest report of every sink instance that is still alive. */
export async function readInstances(kafka: Kafka, config: Pick<Config, 'sink' | 'kafka'>, now = Date.now()): Promise<InstanceReport[]> {
  const latest = new Map<string, InstanceReport | null>();
  await readTopic(
    kafka,
    config.sink.statusTopic,
    (m) => {
      const key = m.key?.toString() ?? '';
      latest.set(key, m.value ? (JSON.parse(m.value.toString()) as InstanceReport) : null);
    },
    { groupPrefix: `${config.kafka.groupId}-status-reader`, timeoutMs: 15_000 },
  );
  return [...latest.values()].filter((r): r is InstanceReport => r !== null && now - Date.parse(r.at) < 3 * REPORT_INTERVAL_MS);
}

type Admin = ReturnType<Kafka['admin']>;

/** Lag of the sink group on every partition of the mapped tables' topics. */
export async function readConsumerLag(admin: Admin, config: Pick<Config, 'kafka' | 'mappings'>): Promise<PartitionStatus[]> {
  const topics = config.mappings.map((m) => {
    const [schema, table] = m.table.split('.') as [string, string];
    return topicFor(config.kafka.topicPrefix, schema, table);
  });
  const existing = new Set(await admin.listTopics());
  const present = topics.filter((t) => existing.has(t));
  const committed = present.length ? await admin.fetchOffsets({ groupId: config.kafka.groupId, topics: present }) : [];
  const partitions: PartitionStatus[] = [];
  for (const topic of present) {
    const ends = await admin.fetchTopicOffsets(topic);
    const group = committed.find((c) => c.topic === topic)?.partitions ?? [];
    for (const end of ends.sort((a, b) => a.partition - b.partition)) {
      const c = Number(group.find((p) => p.partition === end.partition)?.offset ?? -1);
      const high = Number(end.high);
      // No committed offset yet: the group starts from the beginning, so all of it is lag.
      const from = c >= 0 ? c : Number(end.low);
      partitions.push({ topic, partition: end.partition, committed: c >= 0 ? c : null, end: high, lag: Math.max(0, high - from) });
    }
  }
  return partitions;
}

export async function readStatus(config: Config): Promise<ConnectorStatus> {
  const kafka = createKafka(config.kafka, 'status', 2);
  const admin = kafka.admin();
  await admin.connect();
  try {
    const partitions = await readConsumerLag(admin, config);
    const instances = await readInstances(kafka, config);
    const paused = new Set(instances.flatMap((i) => i.paused));
    const reported = instances.length > 0;
    for (const p of partitions) {
      const id = `${p.topic}/${p.partition}`;
      p.paused = reported ? paused.has(id) : null;
      p.stalledSeconds = reported ? Math.max(0, ...instances.map((i) => (p.lag > 0 ? (i.stalled?.[id] ?? 0) : 0))) : null;
    }
    const existing = new Set(await admin.listTopics());
    let deadLetters = 0;
    if (existing.has(config.sink.deadLetterTopic)) {
      for (const p of await admin.fetchTopicOffsets(config.sink.deadLetterTopic)) deadLetters += Number(p.high) - Number(p.low);
    }
    return {
      name: config.name,
      group: config.kafka.groupId,
      partitions,
      totalLag: partitions.reduce((n, p) => n + p.lag, 0),
      slot: await slotStatus(config),
      deadLetters: { topic: config.sink.deadLetterTopic, count: deadLetters },
      instances,
    };
  } finally {
    await admin.disconnect();
  }
}

export async function slotStatus(config: Pick<Config, 'postgres'>): Promise<ConnectorStatus['slot']> {
  const client = await openPg(config.postgres);
  try {
    const r = await client.query<{ active: boolean; confirmed: string | null; lag: string | null }>(
      `SELECT active, confirmed_flush_lsn::text AS confirmed, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text AS lag
         FROM pg_replication_slots WHERE slot_name = $1`,
      [config.postgres.slot],
    );
    const row = r.rows[0];
    return {
      name: config.postgres.slot,
      exists: !!row,
      active: row?.active ?? false,
      confirmedFlushLsn: row?.confirmed ?? null,
      lagBytes: row?.lag ? Number(row.lag) : null,
    };
  } finally {
    await client.end();
  }
}

export function formatStatus(s: ConnectorStatus): string {
  const lines = [`connector ${s.name}   group ${s.group}`, ''];
  table(
    lines,
    ['TOPIC', 'PARTITION', 'COMMITTED', 'END', 'LAG', 'PAUSED', 'STALLED'],
    s.partitions.map((p) => [
      p.topic,
      String(p.partition),
      p.committed === null ? '-' : String(p.committed),
      String(p.end),
      String(p.lag),
      p.paused == null ? '?' : p.paused ? 'yes' : 'no',
      p.stalledSeconds == null ? '?' : `${p.stalledSeconds}s`,
    ]),
  );
  lines.push('', `total lag ${s.totalLag}`);
  const stuck = s.partitions.filter((p) => (p.stalledSeconds ?? 0) >= 300);
  if (stuck.length > 0) {
    lines.push(
      `stalled: ${stuck.map((p) => `${p.topic}/${p.partition} (${p.stalledSeconds}s)`).join(', ')} have not committed for 5 minutes or more with messages waiting: see the sink's logs for the record retried there`,
    );
  }
  lines.push(
    s.slot.exists
      ? `slot ${s.slot.name}: ${s.slot.active ? 'streaming' : 'inactive'}, confirmed ${s.slot.confirmedFlushLsn}, holding ${s.slot.lagBytes} bytes of WAL`
      : `slot ${s.slot.name}: does not exist (the source has not run yet)`,
  );
  lines.push(`dead letters ${s.deadLetters.count} in ${s.deadLetters.topic}`);
  lines.push('');
  if (s.instances.length === 0) lines.push('sink instances: none reporting (no sink running, or started before this version)');
  else {
    const quota = s.instances[0]!.budget;
    lines.push(
      `budget: ${quota.quota} requests per ${quota.windowSeconds} s for the credential${quota.dailyQuota ? `, ${quota.dailyQuota} per day` : ''}`,
    );
    table(
      lines,
      ['INSTANCE', 'SHARE', 'LIMIT', 'USED', 'CIRCUIT', 'IN FLIGHT', 'PAUSED'],
      s.instances.map((i) => [
        i.instance,
        `${(i.budget.share * 100).toFixed(1)}%`,
        String(i.budget.limit),
        String(i.budget.used),
        i.circuit,
        String(i.inFlight),
        String(i.paused.length),
      ]),
    );
  }
  return lines.join('\n');
}

function table(lines: string[], header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [header, ...rows])
    lines.push(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    );
}
