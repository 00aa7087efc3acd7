import { type ICustomPartitioner, Partitioners } from 'kafkajs';

/**
 * Java's murmur2 (org.apache.kafka.common.utils.Utils#murmur2), the hash of Kafka's default
 * partitioner: partition = toPositive(murmur2(UTF-8 key bytes)) % partitions. Every step of the
 * Java code is 32-bit integer arithmetic, so Math.imul gives it exactly; kafkajs's copy does
 * the same in 64-bit Long objects, which cost a twelfth of the source's CPU on small events.
 * https://github.com/apache/kafka/blob/3.9/clients/src/main/java/org/apache/kafka/common/utils/Utils.java
 */
export function murmur2(data: Uint8Array, length = data.length): number {
  const m = 0x5bd1e995;
  let h = 0x9747b28c ^ length;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = data[i4]! | (data[i4 + 1]! << 8) | (data[i4 + 2]! << 16) | (data[i4 + 3]! << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  const tail = length & ~3;
  // The Java switch falls through from 3 to 2 to 1.
  const rest = length & 3;
  if (rest === 3) h ^= data[tail + 2]! << 16;
  if (rest >= 2) h ^= data[tail + 1]! << 8;
  if (rest >= 1) {
    h ^= data[tail]!;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/** Scratch for ASCII keys (nearly all: primary keys as JSON), hashed without a Buffer per key. */
const ascii = new Uint8Array(256);

function hashKey(key: string | Buffer): number {
  if (typeof key !== 'string') return murmur2(key);
  if (key.length <= ascii.length) {
    let i = 0;
    for (; i < key.length; i++) {
      const c = key.charCodeAt(i);
      if (c >= 0x80) break;
      ascii[i] = c;
    }
    if (i === key.length) return murmur2(ascii, i);
  }
  return murmur2(Buffer.from(key, 'utf8'));
}

/**
 * kafkajs's DefaultPartitioner for keyed messages (the same partition for the same key, so a
 * record's changes stay in order across versions and clients), with the fast murmur2 above;
 * messages without a key or with an explicit partition go to kafkajs's own.
 */
export const KeyPartitioner: ICustomPartitioner = () => {
  const fallback = Partitioners.DefaultPartitioner();
  return (args) => {
    const { message, partitionMetadata } = args;
    if (message.partition !== undefined && message.partition !== null) return message.partition;
    if (message.key === null || message.key === undefined) return fallback(args);
    return (hashKey(message.key) & 0x7fffffff) % partitionMetadata.length;
  };
};
