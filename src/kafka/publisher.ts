import type { Kafka, Message, Producer } from 'kafkajs';
import { CompressionTypes } from 'kafkajs';
import { ConnectorError } from '../errors.ts';
import { KeyPartitioner } from './key-partitioner.ts';

export interface OutgoingMessage {
  topic: string;
  key: string;
  /** null = tombstone. */
  value: Buffer | null;
}

/**
 * Idempotent producer with acks=all: a send resolves only when every in-sync replica has the
 * messages, and broker-side sequence numbers drop the duplicates of producer retries.
 * https://kafka.apache.org/39/documentation/#producerconfigs_enable.idempotence
 */
export class Publisher {
  private readonly producer: Producer;
  private started = false;

  constructor(kafka: Kafka) {
    // maxInFlightRequests <= 5 keeps per-partition order under idempotence; unbounded retries
    // are what idempotence assumes (a send gives up only through our own timeout and restart).
    this.producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 5,
      allowAutoTopicCreation: false,
      createPartitioner: KeyPartitioner,
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 200, maxRetryTime: 10_000 },
    });
  }

  async start(): Promise<void> {
    if (this.started) return;
    await this.producer.connect();
    this.started = true;
  }

  /** Sends all messages (any topics) and resolves when Kafka acknowledged every one. */
  async send(messages: OutgoingMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const byTopic = new Map<string, Message[]>();
    for (const m of messages) {
      let list = byTopic.get(m.topic);
      if (!list) byTopic.set(m.topic, (list = []));
      list.push({ key: m.key, value: m.value });
    }
    try {
      await this.producer.sendBatch({
        acks: -1,
        compression: CompressionTypes.None,
        topicMessages: [...byTopic].map(([topic, msgs]) => ({ topic, messages: msgs })),
      });
    } catch (err) {
      if ((err as { type?: string }).type === 'MESSAGE_TOO_LARGE') {
        // No retry can fix this: the row is larger than the topic accepts.
        const largest = Math.max(...messages.map((m) => m.value?.length ?? 0));
        throw new ConnectorError(
          'KAFKA_MESSAGE_TOO_LARGE',
          `Kafka rejected a change event of ${largest} bytes as too large; raise kafka.maxMessageBytes (new topics) or the topic's max.message.bytes (existing topics)`,
          { cause: err },
        );
      }
      throw new ConnectorError('KAFKA_PRODUCE', `Kafka did not acknowledge ${messages.length} message(s): ${(err as Error).message}`, {
        retriable: true,
        cause: err,
      });
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.producer.disconnect();
  }
}
