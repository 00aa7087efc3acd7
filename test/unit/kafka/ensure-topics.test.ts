import { createRequire } from 'node:module';
import kafkajs, { type Kafka } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ensureTopics } from '../../../src/kafka/client.ts';

const { KafkaJSNumberOfRetriesExceeded } = kafkajs;
// kafkajs's own constructor of protocol errors (a KafkaJSProtocolError with `type` and `code`), as its broker answers are decoded.
const { createErrorFromCode } = createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  createErrorFromCode(code: number): Error & { type: string };
};
const UNKNOWN_TOPIC_OR_PARTITION = 3;
const LEADER_NOT_AVAILABLE = 5;
const TOPIC_AUTHORIZATION_FAILED = 29;

type Answer = Error | { leader: number }[];

/**
 * A Kafka whose admin creates the topics, then answers metadata requests with `answers` in turn
 * (the last one for good), and offset requests with the errors of `offsetErrors` before it answers.
 */
function fakeKafka(answers: Answer[], offsetErrors: Error[] = []) {
  const seen = { created: [] as string[], metadataCalls: 0, offsetCalls: [] as string[], disconnected: false };
  const admin = {
    connect: async () => undefined,
    disconnect: async () => void (seen.disconnected = true),
    listTopics: async () => [],
    createTopics: async ({ topics }: { topics: { topic: string }[] }) => {
      seen.created.push(...topics.map((t) => t.topic));
      return true;
    },
    fetchTopicMetadata: async ({ topics }: { topics: string[] }) => {
      const answer = answers[Math.min(seen.metadataCalls++, answers.length - 1)]!;
      if (answer instanceof Error) throw answer;
      return { topics: topics.map((name) => ({ name, partitions: answer.map((p, partitionId) => ({ partitionId, ...p })) })) };
    },
    fetchTopicOffsets: async (topic: string) => {
      seen.offsetCalls.push(topic);
      const err = offsetErrors.shift();
      if (err) throw err;
      return [];
    },
  };
  return { kafka: { admin: () => admin } as unknown as Kafka, seen };
}

const opts = { partitions: 2, replicationFactor: 1 };

describe('ensureTopics', () => {
  it('returns once every partition of the new topics has a leader, waiting out the answers of a broker still electing them', async () => {
    const { kafka, seen } = fakeKafka([
      createErrorFromCode(UNKNOWN_TOPIC_OR_PARTITION),
      // kafkajs retries LEADER_NOT_AVAILABLE itself, then gives up wrapping it.
      new KafkaJSNumberOfRetriesExceeded(createErrorFromCode(LEADER_NOT_AVAILABLE), {
        retryCount: 8,
        retryTime: 10_000,
        cause: createErrorFromCode(LEADER_NOT_AVAILABLE),
      } as never),
      [{ leader: 0 }, { leader: -1 }],
      [{ leader: 0 }, { leader: 0 }],
    ]);
    await ensureTopics(kafka, ['t1', 't2'], opts);
    expect(seen.created).toEqual(['t1', 't2']);
    expect(seen.metadataCalls).toBe(4);
    expect(seen.offsetCalls).toEqual(['t1', 't2']);
    expect(seen.disconnected).toBe(true);
  });

  it('waits until the leaders serve their partitions: the metadata names a leader before it does', async () => {
    const NOT_LEADER_FOR_PARTITION = 6;
    const { kafka, seen } = fakeKafka(
      [[{ leader: 0 }, { leader: 0 }]],
      [createErrorFromCode(NOT_LEADER_FOR_PARTITION), createErrorFromCode(UNKNOWN_TOPIC_OR_PARTITION)],
    );
    await ensureTopics(kafka, ['t1'], opts);
    expect(seen.metadataCalls).toBe(3);
    expect(seen.offsetCalls).toEqual(['t1', 't1', 't1']);
  });

  it('leaves existing topics alone and does not wait for them', async () => {
    const { kafka, seen } = fakeKafka([createErrorFromCode(UNKNOWN_TOPIC_OR_PARTITION)]);
    (kafka.admin() as unknown as { listTopics: () => Promise<string[]> }).listTopics = async () => ['t1'];
    await ensureTopics(kafka, ['t1'], opts);
    expect(seen.created).toEqual([]);
    expect(seen.metadataCalls).toBe(0);
  });

  it('gives up after leaderWaitMs with an error naming the topics and what the broker answered', async () => {
    const { kafka, seen } = fakeKafka([createErrorFromCode(UNKNOWN_TOPIC_OR_PARTITION)]);
    const t0 = Date.now();
    await expect(ensureTopics(kafka, ['t1'], { ...opts, leaderWaitMs: 300 })).rejects.toMatchObject({
      code: 'KAFKA_TOPIC_NOT_READY',
      retriable: true,
      message: expect.stringMatching(/t1.*UNKNOWN_TOPIC_OR_PARTITION/),
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(seen.metadataCalls).toBeGreaterThan(1);
    expect(seen.disconnected).toBe(true);
  });

  it('does not wait out another failure: it is thrown at once', async () => {
    const denied = createErrorFromCode(TOPIC_AUTHORIZATION_FAILED);
    const { kafka, seen } = fakeKafka([denied]);
    await expect(ensureTopics(kafka, ['t1'], opts)).rejects.toBe(denied);
    expect(seen.metadataCalls).toBe(1);
  });
});
