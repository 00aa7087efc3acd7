import { afterAll, describe, expect, inject, it } from 'vitest';
import { createKafka, ensureTopics } from '../../src/kafka/client.ts';
import { uniqueName } from '../helpers/fixtures.ts';

const env = inject('stack');

/**
 * Several connectors creating their topics at the same moment (pg2crm plan's test starts five):
 * kafkajs's own wait for leaders failed on the busy broker's UNKNOWN_TOPIC_OR_PARTITION (8 of 10
 * here), and a leader named in the metadata may not serve its partition yet. After ensureTopics,
 * a producer that does not retry writes to every partition.
 */
describe('ensureTopics on a busy broker', () => {
  const kafka = createKafka({ brokers: env.KAFKA_BROKERS.split(','), clientId: 'pg2crm' }, 'ensure-topics-test');
  const prefix = uniqueName('ensure');
  afterAll(async () => {
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: (await admin.listTopics()).filter((t) => t.startsWith(prefix)) });
    await admin.disconnect();
  });

  it('ten at once: every partition takes a write right after, without a retry', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, async (_, i) => {
        const topics = [0, 1, 2, 3].map((j) => `${prefix}.${i}.${j}`);
        await ensureTopics(kafka, topics, { partitions: 4, replicationFactor: 1 });
        const producer = kafka.producer({ retry: { retries: 0 } });
        await producer.connect();
        try {
          for (const topic of topics) {
            await producer.send({ topic, acks: -1, messages: [0, 1, 2, 3].map((partition) => ({ partition, value: 'x' })) });
          }
        } finally {
          await producer.disconnect();
        }
      }),
    );
    expect(results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []))).toEqual([]);
  }, 120_000);
});
