import type { KafkaMessage } from 'kafkajs';
import type { Publisher } from '../kafka/publisher.ts';
import { scrubAndCap } from '../secrets.ts';

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
  /**
   * Set when the original value was left out because the letter would not fit the dead-letter
   * topic's `max.message.bytes`: its size. `dlq replay` does not need it (it re-reads the current
   * row by key); topic/partition/offset still find the original message.
   */
  valueOmittedBytes?: number;
}

/**
 * Longest CRM error text a letter keeps. CRMs echo requests in errors (whole records, once a
 * `Bearer` header): uncapped, one letter could outgrow the topic and crash-loop the sink. The
 * text is scrubbed of credentials first (secrets.ts): a dead-letter topic is read by more people
 * and tools than the connector's config.
 */
export const MAX_ERROR_CHARS = 1_000;
/** Room left in a produce request for the record batch's own framing and the message key. */
const BATCH_OVERHEAD_BYTES = 512;

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
    error: { ...details.error, message: scrubAndCap(details.error.message, MAX_ERROR_CHARS) },
    failedAt: new Date().toISOString(),
  };
}

function capText(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length} characters, cut)`;
}

/**
 * The letter as it goes to Kafka, within `maxBytes`: whole when it fits; else without the
 * original value (`valueOmittedBytes`); else with the error text cut short too. The position
 * (topic, partition, offset) and the key always stay: they are what a replay needs.
 */
export function encodeDeadLetter(letter: DeadLetter, maxBytes: number): Buffer {
  const whole = Buffer.from(JSON.stringify(letter));
  if (whole.length <= maxBytes) return whole;
  const lean: DeadLetter = { ...letter, value: null, valueOmittedBytes: letter.value ? Buffer.byteLength(letter.value, 'base64') : 0 };
  const leaner = Buffer.from(JSON.stringify(lean));
  if (leaner.length <= maxBytes) return leaner;
  return Buffer.from(JSON.stringify({ ...lean, error: { ...lean.error, message: capText(lean.error.message, 100) } }));
}

/**
 * Publishes the letters in produce requests that each fit `maxMessageBytes` of the topic: the
 * broker checks a whole record batch against it, and kafkajs puts one request's messages for a
 * partition into one batch.
 */
export async function sendDeadLetters(
  publisher: Publisher,
  dlqTopic: string,
  letters: DeadLetter[],
  maxMessageBytes: number,
): Promise<void> {
  const limit = Math.max(1024, maxMessageBytes - BATCH_OVERHEAD_BYTES);
  let chunk: { topic: string; key: string; value: Buffer }[] = [];
  let size = 0;
  for (const l of letters) {
    const key = l.key ?? `${l.topic}/${l.partition}/${l.offset}`;
    const value = encodeDeadLetter(l, limit - Buffer.byteLength(key));
    const bytes = value.length + Buffer.byteLength(key) + 64;
    if (chunk.length > 0 && size + bytes > limit) {
      await publisher.send(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push({ topic: dlqTopic, key, value });
    size += bytes;
  }
  if (chunk.length > 0) await publisher.send(chunk);
}
