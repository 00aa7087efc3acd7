import { randomUUID } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';

/**
 * Reads a whole (usually compacted) topic from the beginning up to the end offsets it had when
 * the read began, and calls `onMessage` in offset order per partition. kafkajs cannot assign
 * partitions without a group, so the read joins a throwaway group, deleted afterwards.
 */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  onMessage: (message: KafkaMessage, partition: number) => void,
  opts: { groupPrefix: string; timeoutMs?: number },
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const group = `${opts.groupPrefix}-${randomUUID()}`;
  try {
    if (!(await admin.listTopics()).includes(topic)) return;
    const offsets = await admin.fetchTopicOffsets(topic);
    const ends = new Map(offsets.map((p) => [p.partition, BigInt(p.high)]));
    const open = new Set(offsets.filter((p) => BigInt(p.high) > BigInt(p.low)).map((p) => p.partition));
    if (open.size === 0) return;
    const consumer = kafka.consumer({ groupId: group, sessionTimeout: 30_000 });
    await consumer.connect();
    let timer: NodeJS.Timeout | undefined;
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(
          () => reject(new Error(`reading ${topic} took more than ${opts.timeoutMs ?? 120_000} ms`)),
          opts.timeoutMs ?? 120_000,
        );
        consumer
          .run({
            eachBatch: async ({ batch }) => {
              const end = ends.get(batch.partition) ?? 0n;
              for (const m of batch.messages) if (BigInt(m.offset) < end) onMessage(m, batch.partition);
              if (BigInt(batch.lastOffset()) + 1n >= end) open.delete(batch.partition);
              if (open.size === 0) resolve();
            },
          })
          .catch(reject);
      });
    } finally {
      clearTimeout(timer);
      await consumer.disconnect();
    }
    await admin.deleteGroups([group]).catch(() => undefined);
  } finally {
    await admin.disconnect();
  }
}
