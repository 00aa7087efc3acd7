import type { KafkaMessage } from 'kafkajs';
import type { Publisher } from '../kafka/publisher.ts';

/**
 * Dead-letter records: what could not be written, with everything needed to understand and
 * re-drive it (`pg2crm dlq replay`): the original message bytes and position, the CRM's error
 * and the attempts made. The original value is kept as the Avro bytes it was (base64), so a
 * replay produces exactly the message that failed.
 */
export interface DeadLetter {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  /** Original message value, base64 (null for a tombstone). */
  value: string | null;
  object: string | null;
  externalId: string | null;
  error: { code: string; message: string; field?: string };
  attempts: number;
  failedAt: string;
}

export function deadLetterOf(
  topic: string,
  partition: number,
  message: KafkaMessage,
  details: Pick<DeadLetter, 'object' | 'externalId' | 'error' | 'attempts'>,
): DeadLetter {
  return {
    topic,
    partition,
    offset: message.offset,
    key: message.key ? message.key.toString('utf8') : null,
    value: message.value ? message.value.toString('base64') : null,
    ...details,
    failedAt: new Date().toISOString(),
  };
}

export async function sendDeadLetters(publisher: Publisher, dlqTopic: string, letters: DeadLetter[]): Promise<void> {
  await publisher.send(
    letters.map((l) => ({ topic: dlqTopic, key: l.key ?? `${l.topic}/${l.partition}/${l.offset}`, value: Buffer.from(JSON.stringify(l)) })),
  );
}
