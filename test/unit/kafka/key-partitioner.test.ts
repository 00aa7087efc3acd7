import { createRequire } from 'node:module';
import fc from 'fast-check';
import { Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { KeyPartitioner, murmur2 } from '../../../src/kafka/key-partitioner.ts';

// kafkajs's own murmur2 (64-bit Long arithmetic), the reference the fast one must equal.
const kafkajsMurmur2 = createRequire(import.meta.url)('kafkajs/src/producer/partitioners/default/murmur2.js') as (key: Buffer) => number;

const metadata = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ partitionErrorCode: 0, partitionId: i, leader: 0, replicas: [0], isr: [0], offlineReplicas: [] }));

describe('KeyPartitioner', () => {
  it('hashes like Java and kafkajs: known values of Kafka clients', () => {
    // org.apache.kafka.common.utils.UtilsTest#testMurmur2
    const cases: [string, number][] = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ];
    for (const [key, hash] of cases) expect(murmur2(Buffer.from(key))).toBe(hash);
  });

  it('gives every key the partition kafkajs DefaultPartitioner gives it (any length, any characters)', () => {
    const ours = KeyPartitioner();
    const theirs = Partitioners.DefaultPartitioner();
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 40 })),
        fc.integer({ min: 1, max: 64 }),
        (key, n) => {
          expect(murmur2(Buffer.from(key))).toBe(kafkajsMurmur2(Buffer.from(key)));
          const args = { topic: 't', partitionMetadata: metadata(n), message: { key, value: null } };
          expect(ours(args)).toBe(theirs(args));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('keeps an explicit partition', () => {
    expect(KeyPartitioner()({ topic: 't', partitionMetadata: metadata(3), message: { key: 'k', value: null, partition: 2 } })).toBe(2);
  });
});
