import pg from 'pg';
import type { Config } from '../config.ts';
import { buildSnapshotRow, type TxContext } from '../capture/change-builder.ts';
import { quoteIdent, selectAsText } from '../capture/sql-identifiers.ts';
import { describeTables, type TableInfo } from '../capture/table-catalog.ts';
import type { ChangeEvent, Row } from '../events/change-event.ts';
import { avroName } from '../events/row-codec.ts';
import { topicFor } from '../events/topic-router.ts';
import { createKafka } from '../kafka/client.ts';
import { EventEncoder } from '../kafka/event-encoder.ts';
import { Publisher } from '../kafka/publisher.ts';
import type { DeadLetter } from './dead-letter.ts';

/**
 * `pg2crm dlq replay`: re-drives the records of the dead-letter topic.
 *
 * A dead letter is not re-sent as it was: by now a later change of the same record may have
 * been written, and replaying the old event would overwrite it with older values. Instead the
 * record's CURRENT row is read from PostgreSQL and published as a snapshot event (op `r`), or a
 * delete when the row is gone, so the CRM converges on PostgreSQL's present state. The replay
 * group's offsets then move past the letters handled, so the next replay takes only new ones.
 */
export interface ReplayResult {
  letters: number;
  records: number;
  deleted: number;
}

type Admin = ReturnType<ReturnType<typeof createKafka>['admin']>;

async function pendingRange(admin: Admin, topic: string, group: string): Promise<Map<number, { from: number; to: number }>> {
  const ends = await admin.fetchTopicOffsets(topic);
  const committed = (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0]?.partitions ?? [];
  const out = new Map<number, { from: number; to: number }>();
  for (const end of ends) {
    const c = Number(committed.find((p) => p.partition === end.partition)?.offset ?? -1);
    const from = Math.max(c, Number(end.low));
    if (Number(end.high) > from) out.set(end.partition, { from, to: Number(end.high) });
  }
  return out;
}

export async function replayDeadLetters(config: Config): Promise<ReplayResult> {
  const dlqTopic = config.sink.deadLetterTopic;
  const group = `${config.kafka.groupId}-dlq-replay`;
  const kafka = createKafka(config.kafka, 'dlq-replay');
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(dlqTopic)) return { letters: 0, records: 0, deleted: 0 };
    const pending = await pendingRange(admin, dlqTopic, group);
    if (pending.size === 0) return { letters: 0, records: 0, deleted: 0 };

    const letters = await readLetters(kafka, dlqTopic, group, pending);
    const result = await republish(config, letters);
    // Only now, with the records re-published, do the letters count as handled.
    for (const [partition, range] of pending) {
      await admin.setOffsets({ groupId: group, topic: dlqTopic, partitions: [{ partition, offset: String(range.to) }] });
    }
    return { letters: letters.length, ...result };
  } finally {
    await admin.disconnect();
  }
}

async function readLetters(
  kafka: ReturnType<typeof createKafka>,
  topic: string,
  group: string,
  pending: Map<number, { from: number; to: number }>,
): Promise<DeadLetter[]> {
  const consumer = kafka.consumer({ groupId: group });
  const letters: DeadLetter[] = [];
  const open = new Set(pending.keys());
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            const range = pending.get(partition);
            const offset = Number(message.offset);
            if (range && offset >= range.from && offset < range.to && message.value) letters.push(JSON.parse(message.value.toString('utf8')) as DeadLetter);
            if (range && offset >= range.to - 1) open.delete(partition);
            if (open.size === 0) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return letters;
}

async function republish(config: Config, letters: DeadLetter[]): Promise<Omit<ReplayResult, 'letters'>> {
  const db = new pg.Client({ connectionString: config.postgres.url });
  await db.connect();
  const publisher = new Publisher(createKafka(config.kafka, 'dlq-replay-producer'));
  await publisher.start();
  const encoder = new EventEncoder(config.kafka);
  let records = 0;
  let deleted = 0;
  try {
    const tables = await describeTables(db, config.postgres.tables);
    const byTopic = new Map<string, TableInfo>([...tables.values()].map((t) => [topicFor(config.kafka.topicPrefix, t.schema, t.table), t]));
    const lsn = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
    const tx: TxContext = { lsn, xid: 0, commitTsMicros: BigInt(Date.now()) * 1000n, seq: 0 };
    const seen = new Set<string>();
    for (const letter of letters) {
      const table = byTopic.get(letter.topic);
      if (!table || letter.key === null || seen.has(`${letter.topic}\n${letter.key}`)) continue;
      seen.add(`${letter.topic}\n${letter.key}`);
      const key = JSON.parse(letter.key) as Row;
      const event = (await currentRow(db, table, key, tx)) ?? deletion(table, key, tx);
      if (event.op === 'd') deleted++;
      await publisher.send(await encoder.encode(event, table));
      records++;
    }
  } finally {
    await publisher.stop();
    await db.end();
  }
  return { records, deleted };
}

async function currentRow(db: pg.Client, table: TableInfo, key: Row, tx: TxContext): Promise<ChangeEvent | undefined> {
  const select = selectAsText(table.columns);
  const where = table.primaryKey
    .map((k, i) => `${quoteIdent(k)} = $${i + 1}::${table.columns.find((c) => c.name === k)?.typeName ?? 'text'}`)
    .join(' AND ');
  const res = await db.query<(string | null)[]>({
    text: `SELECT ${select} FROM ${quoteIdent(table.schema)}.${quoteIdent(table.table)} WHERE ${where}`,
    values: table.primaryKey.map((k) => String(key[avroName(k)])),
    rowMode: 'array',
  });
  const row = res.rows[0];
  return row ? buildSnapshotRow(table, row, tx) : undefined;
}

function deletion(table: TableInfo, key: Row, tx: TxContext): ChangeEvent {
  return {
    op: 'd',
    key,
    before: null,
    after: null,
    changed: null,
    unchanged: [],
    source: { lsn: tx.lsn, seq: tx.seq++, xid: 0, commitTsMicros: tx.commitTsMicros, schema: table.schema, table: table.table, snapshot: true },
  };
}
