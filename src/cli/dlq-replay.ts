import type { TableInfo } from '../capture/table-catalog.ts';
import type { Config } from '../config.ts';
import { errorMessage } from '../errors.ts';
import type { Row } from '../events/change-event.ts';
import { avroName } from '../events/row-codec.ts';
import { createKafka } from '../kafka/client.ts';
import type { DeadLetter } from '../sink/dead-letter.ts';
import { CurrentRowPublisher, isDataException } from '../replay/current-row-publisher.ts';

/**
 * `pg2crm dlq replay`: re-drives the records of the dead-letter topic.
 *
 * A dead letter is not re-sent as it was: by now a later change of the same record may have
 * been written, and replaying the old event would overwrite it with older values. Instead the
 * record's CURRENT row is read from PostgreSQL and published as a snapshot event (op `r`), or a
 * delete when the row is gone, so the CRM converges on PostgreSQL's present state. The replay
 * group's offsets then move past the letters handled, so the next replay takes only new ones.
 *
 * A letter that cannot be replayed (not a dead letter, a key that is not the table's primary key
 * as JSON, a topic no longer captured) is skipped and reported, never allowed to stop the rest:
 * replaying it again would fail the same way, and it would hold every valid letter behind it.
 * Failures of PostgreSQL or Kafka themselves still fail the replay, with the group left where it
 * was, so a later replay retries them all.
 */
export interface ReplayResult {
  /** Letters replayed (their records re-published; duplicates of one record count each). */
  letters: number;
  records: number;
  deleted: number;
  /** Letters that cannot be replayed, in the order met; the group moved past them too. */
  skipped: SkippedLetter[];
}

export interface SkippedLetter {
  /** Where the letter is: the dead-letter topic, its partition and offset. */
  at: { topic: string; partition: number; offset: string };
  /** Where the record's message was, as the letter says (absent when the letter is unreadable). */
  original?: { topic: string; partition: number; offset: string };
  reason: string;
}

/** `dlq/0@12 (orders/2@40): reason`: one line an operator can act on. */
export function describeSkipped(s: SkippedLetter): string {
  const original = s.original ? ` (${s.original.topic}/${s.original.partition}@${s.original.offset})` : '';
  return `${s.at.topic}/${s.at.partition}@${s.at.offset}${original}: ${s.reason}`;
}

/** A letter as read: the parsed letter, or why it is not one, with its position in the topic. */
interface ReadLetter {
  at: SkippedLetter['at'];
  letter?: DeadLetter;
  unreadable?: string;
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
    if (!(await admin.listTopics()).includes(dlqTopic)) return { letters: 0, records: 0, deleted: 0, skipped: [] };
    const pending = await pendingRange(admin, dlqTopic, group);
    if (pending.size === 0) return { letters: 0, records: 0, deleted: 0, skipped: [] };

    const letters = await readLetters(kafka, dlqTopic, group, pending);
    const result = await republish(config, letters);
    // Only now, with the records re-published, do the letters count as handled; the skipped ones
    // too: they cannot be replayed, and leaving the group before them would block every later one.
    for (const [partition, range] of pending) {
      await admin.setOffsets({ groupId: group, topic: dlqTopic, partitions: [{ partition, offset: String(range.to) }] });
    }
    return result;
  } finally {
    await admin.disconnect();
  }
}

async function readLetters(
  kafka: ReturnType<typeof createKafka>,
  topic: string,
  group: string,
  pending: Map<number, { from: number; to: number }>,
): Promise<ReadLetter[]> {
  const consumer = kafka.consumer({ groupId: group });
  const letters: ReadLetter[] = [];
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
            // Parsed here without throwing: an exception in eachMessage would make kafkajs retry
            // the same message for ever.
            if (range && offset >= range.from && offset < range.to)
              letters.push(parseLetter({ topic, partition, offset: message.offset }, message.value));
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

function parseLetter(at: SkippedLetter['at'], value: Buffer | null): ReadLetter {
  if (!value) return { at, unreadable: 'not a dead letter (an empty message)' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch {
    return { at, unreadable: 'not a dead letter (not JSON)' };
  }
  const l = parsed as Partial<DeadLetter> | null;
  if (!l || typeof l !== 'object' || typeof l.topic !== 'string' || !(typeof l.key === 'string' || l.key === null)) {
    return { at, unreadable: 'not a dead letter (no topic or key)' };
  }
  return { at, letter: l as DeadLetter };
}

/** The letter's key as the table's primary key, or why it is not one. */
function keyOfLetter(letter: DeadLetter, table: TableInfo): Row | string {
  if (letter.key === null) return 'it has no key (the original message had none)';
  let key: unknown;
  try {
    key = JSON.parse(letter.key);
  } catch (err) {
    return `its key ${JSON.stringify(letter.key)} is not JSON (${errorMessage(err)}); pg2crm keys are the primary key as JSON, e.g. {"id":1}`;
  }
  if (!key || typeof key !== 'object' || Array.isArray(key)) return `its key ${letter.key} is not a JSON object of the primary key`;
  const missing = table.primaryKey.filter((k) => {
    const v = (key as Row)[avroName(k)];
    return v === undefined || v === null;
  });
  if (missing.length > 0) return `its key ${letter.key} lacks primary key column ${missing.join(', ')} of ${table.schema}.${table.table}`;
  return key as Row;
}

async function republish(config: Config, read: ReadLetter[]): Promise<ReplayResult> {
  const skipped: SkippedLetter[] = [];
  const skip = (r: ReadLetter, reason: string): void => {
    skipped.push({
      at: r.at,
      ...(r.letter ? { original: { topic: r.letter.topic, partition: r.letter.partition, offset: String(r.letter.offset) } } : {}),
      reason,
    });
  };
  for (const r of read) if (r.unreadable) skip(r, r.unreadable);
  const letters = read.filter((r) => r.letter);
  if (letters.length === 0) return { letters: 0, records: 0, deleted: 0, skipped };

  const out = await CurrentRowPublisher.open(config, 'dlq-replay-producer');
  let records = 0;
  let deleted = 0;
  let replayed = 0;
  try {
    const seen = new Set<string>();
    for (const r of letters) {
      const letter = r.letter!;
      const table = out.tableOfTopic(letter.topic);
      if (!table) {
        skip(r, `its topic ${letter.topic} is not the topic of any table in postgres.tables`);
        continue;
      }
      const key = keyOfLetter(letter, table);
      if (typeof key === 'string') {
        skip(r, key);
        continue;
      }
      const id = `${letter.topic}\n${letter.key}`;
      if (seen.has(id)) {
        replayed++; // the record's current row is already re-published
        continue;
      }
      try {
        if ((await out.publish(table, key)) === 'd') deleted++;
      } catch (err) {
        if (!isDataException(err)) throw err;
        skip(r, `its key ${letter.key} does not fit ${table.schema}.${table.table}'s primary key: ${errorMessage(err)}`);
        continue;
      }
      seen.add(id);
      records++;
      replayed++;
    }
  } finally {
    await out.close();
  }
  return { letters: replayed, records, deleted, skipped };
}
