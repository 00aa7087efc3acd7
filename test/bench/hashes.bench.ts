import type { Kafka, KafkaMessage } from 'kafkajs';
import type { CrmWrite } from '../../src/crm/crm-adapter.ts';
import { recordKey, WrittenHashes, writeHash } from '../../src/sink/written-hashes.ts';
import { benchCommand } from './bench-command.ts';
import { goal, jsonOutArg, printResult } from './bench-result.ts';

/**
 * Memory per CRM record of the sink's written-hash store (the no-op skip), measured the only
 * way that counts V8's real layout: fill the store through its own code and compare memory
 * before and after, V8 heap plus ArrayBuffers (the table's typed array lives outside the heap).
 * The store is filled twice: by remember() (records written by this process) and by a reload
 * from a fake changelog topic (records loaded after a rebalance). Side by side, the
 * `Map<string, string>` the store used to be, filled with the same records.
 * `npm run bench:hashes [-- --keys N]`; prints JSON.
 */
const keysArg = process.argv.indexOf('--keys');
const keys = keysArg > 0 ? Number(process.argv[keysArg + 1]) : 1_000_000;
/** The bound for the store: ~40 B a record. */
const GOAL_BYTES_PER_KEY = 40;
const BATCH = 1000;
const TOPIC = 'bench.sink-hashes';
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc (npm run bench:hashes does)');

const record = (i: number): CrmWrite => ({
  op: 'upsert',
  object: 'contacts',
  externalIdField: 'erp_id',
  externalId: String(1_000_000 + i),
  fields: { email: `c${i}@example.com`, last_name: `L${i}` },
});

/**
 * V8 heap + ArrayBuffer backing stores, after full collections. V8 frees the backing stores of
 * dead ArrayBuffers (the arrays a growing table left behind) after the collection, off the
 * main thread: without the pauses between collections they would still count.
 */
async function used(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** The changelog as Kafka would deliver it, a batch at a time (built on the fly: holding it all would dwarf the store). */
function topicBatch(from: number): KafkaMessage[] {
  const messages: KafkaMessage[] = [];
  for (let i = from; i < Math.min(keys, from + BATCH); i++) {
    const w = record(i);
    const key = Buffer.from(recordKey(w.object, w.externalId));
    messages.push({ offset: String(i), key, value: Buffer.from(writeHash(w)) } as KafkaMessage);
  }
  return messages;
}

// The old store: a Map filled as the old bench did (keys not built from interned literals),
// so its figure is the 125 B the README gave.
let before = await used();
let map: Map<string, string> | undefined = new Map<string, string>();
for (let i = 0; i < keys; i++) {
  const externalId = String(1_000_000 + i);
  map.set(
    recordKey('contacts', externalId),
    writeHash({
      op: 'upsert',
      object: 'contacts',
      externalIdField: 'erp_id',
      externalId,
      fields: { email: `c${i}@example.com`, last_name: `L${i}` },
    }),
  );
}
const mapBytes = (await used()) - before;
if (map.size !== keys) throw new Error('lost keys');
map = undefined;

// A Kafka that sends nowhere and whose changelog is `topicBatch`, absent until `topicExists`.
let topicExists = false;
const kafka = {
  producer: () => ({ connect: async () => undefined, disconnect: async () => undefined, send: async () => [] }),
  admin: () => ({
    connect: async () => undefined,
    disconnect: async () => undefined,
    listTopics: async () => (topicExists ? [TOPIC] : []),
    fetchTopicOffsets: async () => [{ partition: 0, low: '0', high: String(keys) }],
    deleteGroups: async () => [],
  }),
  consumer: () => ({
    connect: async () => undefined,
    disconnect: async () => undefined,
    subscribe: async () => undefined,
    run: async ({ eachBatch }: { eachBatch: (p: { batch: unknown }) => Promise<void> }) => {
      for (let i = 0; i < keys; i += BATCH) {
        const messages = topicBatch(i);
        await eachBatch({ batch: { partition: 0, messages, lastOffset: () => messages.at(-1)!.offset } });
      }
    },
  }),
} as unknown as Kafka;

async function loaded(store: WrittenHashes): Promise<void> {
  store.reload();
  while (!store.ready()) await new Promise((r) => setTimeout(r, 1));
}

/** Every 1000th record is skipped as unchanged (the store holds what it was given). */
function check(store: WrittenHashes): void {
  const step = Math.max(1, Math.floor(keys / 1000));
  let skipped = 0;
  for (let i = 0; i < keys; i += step) if (store.unchanged(record(i), 2)) skipped++;
  if (skipped !== Math.ceil(keys / step)) throw new Error(`lost keys: ${skipped} skipped`);
}

// 1. Filled by remember(), the way a sink fills it as it writes.
const store = new WrittenHashes(kafka, TOPIC, 'bench');
await store.start();
await loaded(store);
before = await used();
let started = performance.now();
for (let i = 0; i < keys; i += BATCH) {
  const writes = [];
  for (let j = i; j < Math.min(keys, i + BATCH); j++) writes.push({ write: record(j), full: true });
  await store.remember(0, writes);
}
const rememberMs = performance.now() - started;
const storeBytes = (await used()) - before;
check(store);

// 2. Reloaded from the changelog (a reload drops the table it had first). The time includes
// building the fake messages; `topicMs` is that part alone.
started = performance.now();
for (let i = 0; i < keys; i += BATCH) topicBatch(i);
const topicMs = performance.now() - started;
topicExists = true;
before = await used();
started = performance.now();
await loaded(store);
const reloadMs = performance.now() - started;
const reloadedBytes = (await used()) - before + storeBytes;
check(store);
await store.stop();

const round1 = (n: number): number => Math.round(n * 10) / 10;
const bytesPerKey = storeBytes / keys;
const mapBytesPerKey = mapBytes / keys;
const figures = {
  keys,
  storeBytes,
  bytesPerKey: round1(bytesPerKey),
  mbPerMillionKeys: Math.round(bytesPerKey),
  reloadedBytesPerKey: round1(reloadedBytes / keys),
  mapBytes,
  mapBytesPerKey: round1(mapBytesPerKey),
  mapToStoreRatio: round1(mapBytesPerKey / bytesPerKey),
  rememberUsPerKey: round1((rememberMs * 1000) / keys),
  reloadUsPerKey: round1(((reloadMs - topicMs) * 1000) / keys),
};
process.stdout.write(`${JSON.stringify({ scenario: 'written-hash store', ...figures })}\n`);
printResult(
  {
    bench: 'hashes',
    command: benchCommand('bench:hashes'),
    figures,
    goals: [goal(`written-hash store bytes per record (<= ${GOAL_BYTES_PER_KEY})`, bytesPerKey, GOAL_BYTES_PER_KEY)],
  },
  jsonOutArg(),
);
