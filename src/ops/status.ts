import type { Kafka } from 'kafkajs';
import pg from 'pg';
import type { Config } from '../config.ts';
import { topicFor } from '../events/topic-router.ts';
import { createKafka } from '../kafka/client.ts';

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
}

export interface ConnectorStatus {
  name: string;
  group: string;
  partitions: PartitionStatus[];
  totalLag: number;
  slot: { name: string; exists: boolean; active: boolean; confirmedFlushLsn: string | null; lagBytes: number | null };
  deadLetters: { topic: string; count: number };
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
    };
  } finally {
    await admin.disconnect();
  }
}

export async function slotStatus(config: Pick<Config, 'postgres'>): Promise<ConnectorStatus['slot']> {
  const client = new pg.Client({ connectionString: config.postgres.url, connectionTimeoutMillis: 5000 });
  await client.connect();
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
  const header = ['TOPIC', 'PARTITION', 'COMMITTED', 'END', 'LAG'];
  const rows = s.partitions.map((p) => [p.topic, String(p.partition), p.committed === null ? '-' : String(p.committed), String(p.end), String(p.lag)]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [header, ...rows]) lines.push(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  lines.push('', `total lag ${s.totalLag}`);
  lines.push(
    s.slot.exists
      ? `slot ${s.slot.name}: ${s.slot.active ? 'streaming' : 'inactive'}, confirmed ${s.slot.confirmedFlushLsn}, holding ${s.slot.lagBytes} bytes of WAL`
      : `slot ${s.slot.name}: does not exist (the source has not run yet)`,
  );
  lines.push(`dead letters ${s.deadLetters.count} in ${s.deadLetters.topic}`);
  return lines.join('\n');
}
