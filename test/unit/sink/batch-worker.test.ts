import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmAdapter, CrmWrite, WriteOutcome } from '../../../src/crm/crm-adapter.ts';
import { BatchSizer } from '../../../src/sink/batch-sizer.ts';
import { BatchWorker } from '../../../src/sink/batch-worker.ts';
import { CircuitBreaker } from '../../../src/sink/circuit-breaker.ts';
import type { DeadLetter } from '../../../src/sink/dead-letter.ts';
import { QuotaLanes } from '../../../src/sink/quota-lanes.ts';
import { decode, fakeBatch, message, silentLog } from './fake-batch.ts';
import type { WrittenHashes } from '../../../src/sink/written-hashes.ts';
import { HASH_LOAD_WAIT_MS } from '../../../src/sink/hash-load-wait.ts';

const TOPIC = 'erp.public.customers';
const config = parseConfig(
  {
    name: 'c',
    postgres: { url: 'postgresql://u@h/db', tables: ['public.customers'] },
    kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
    crm: { kind: 'hubspot', baseUrl: 'http://h', auth: { token: 't' }, limits: { requests: 1000, windowSeconds: 60 } },
    sink: { lingerMs: 0, maxAttempts: 3 },
    mappings: [{ table: 'public.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { name: 'name' } }],
  },
  {},
);
const mapping = config.mappings[0]!;

let workers: BatchWorker[] = [];
afterEach(() => {
  for (const w of workers) w.stop();
  workers = [];
});

/** A worker over a fake CRM that answers each record by `answer(externalId)`; events of CRM and topics go to `events`. */
function setup(
  answer: (externalId: string) => WriteOutcome,
  events: string[],
  sink = config.sink,
  opts: { batch?: number; concurrency?: number; hashes?: WrittenHashes } = {},
) {
  const batch = opts.batch ?? 10;
  const calls: CrmWrite[][] = [];
  const adapter: CrmAdapter = {
    kind: 'fake',
    maxBatchSize: () => batch,
    cost: () => 1,
    write: async (records) => {
      calls.push(records);
      events.push(`write:${records.map((r) => r.externalId).join(',')}`);
      return records.map((r) => answer(r.externalId));
    },
    ping: async () => undefined,
    close: async () => undefined,
  };
  const letters: DeadLetter[] = [];
  const worker = new BatchWorker({
    sink,
    concurrency: opts.concurrency ?? config.crm.limits.concurrency,
    budget: new QuotaLanes(config.crm, () => adapter),
    breaker: new CircuitBreaker(),
    sizer: new BatchSizer(() => batch, 60_000),
    adapter,
    codec: { decode },
    mappingFor: (topic) => (topic === TOPIC ? mapping : undefined),
    hashes: opts.hashes,
    hashPartitions: () => 1,
    sendDeadLetters: async (l) => {
      events.push(`letters:${l.map((x) => x.offset).join(',')}`);
      letters.push(...l);
    },
    log: silentLog,
  });
  workers.push(worker);
  return { worker, calls, letters };
}

describe('BatchWorker.onBatch: the story of one batch', () => {
  it('waits for a written-hash store still loading only HASH_LOAD_WAIT_MS, then writes without the no-op skip', async () => {
    let now = Date.now();
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    const forgotten: string[][] = [];
    // A store whose load never ends (its read hangs until its 2-minute timeout): nothing is
    // skipped while it loads, and every written record's hash is dropped first.
    const loading = {
      ready: () => false,
      unchanged: () => false,
      forgetBeforeWrite: async (_p: number, writes: CrmWrite[]) => void forgotten.push(writes.map((w) => w.externalId)),
      remember: async () => undefined,
    } as unknown as WrittenHashes;
    const events: string[] = [];
    const { worker, calls } = setup(() => ({ status: 'done' }), events, config.sink, { hashes: loading });
    // Old enough not to linger; the pause timer of the first batch still runs for the later
    // ones (the pauser ignores a second pause), so what is checked is whether a call was made.
    const batchOf = () => fakeBatch({ topic: TOPIC, messages: [message(0, '1', now - 60_000)] });
    const first = batchOf();
    await worker.onBatch(first.payload);
    expect(first.pauses).toBe(1);
    expect(calls).toEqual([]);
    now += HASH_LOAD_WAIT_MS - 1;
    await worker.onBatch(batchOf().payload);
    expect(calls).toEqual([]);
    now += 1;
    const third = batchOf();
    await worker.onBatch(third.payload);
    expect(calls.map((c) => c.map((w) => w.externalId))).toEqual([['1']]);
    expect(forgotten).toEqual([['1']]);
    expect(third.resolved).toEqual(['0']);
    vi.restoreAllMocks();
  });

  it('writes the batch in one call and resolves and commits every offset', async () => {
    const fake = fakeBatch({ topic: TOPIC, messages: [message(0, '1'), message(1, '2'), message(2, '3')] });
    const { worker, calls } = setup(() => ({ status: 'done' }), fake.events);
    await worker.onBatch(fake.payload);
    expect(calls.map((c) => c.map((w) => w.externalId))).toEqual([['1', '2', '3']]);
    expect(fake.resolved).toEqual(['0', '1', '2']);
    expect(fake.events.at(-1)).toBe('commit');
    expect(fake.pauses).toBe(0);
    expect(worker.pausedPartitions()).toEqual([]);
  });

  it('a rejected record is dead-lettered before its offset is resolved; the rest are written', async () => {
    const fake = fakeBatch({ topic: TOPIC, messages: [message(0, '1'), message(1, 'bad'), message(2, '3')] });
    const { worker, letters } = setup(
      (id) => (id === 'bad' ? { status: 'rejected', code: 'INVALID', message: 'no' } : { status: 'done' }),
      fake.events,
    );
    await worker.onBatch(fake.payload);
    expect(letters.map((l) => [l.offset, l.error.code])).toEqual([['1', 'INVALID']]);
    expect(fake.events.filter((e) => !e.startsWith('heartbeat'))).toEqual([
      'write:1,bad,3',
      'letters:1',
      'resolve:0',
      'resolve:1',
      'resolve:2',
      'commit',
    ]);
  });

  it('a record to retry pauses the partition and stops resolution there; a later batch picks it up', async () => {
    let failing = true;
    const events: string[] = [];
    const { worker } = setup(
      (id) => (id === '2' && failing ? { status: 'retry', code: 'LOCKED', message: 'locked' } : { status: 'done' }),
      events,
    );
    const first = fakeBatch({ topic: TOPIC, messages: [message(0, '1'), message(1, '2'), message(2, '3')], events });
    await worker.onBatch(first.payload);
    expect(first.resolved).toEqual(['0']);
    expect(first.pauses).toBe(1);
    expect(worker.pausedPartitions()).toEqual([`${TOPIC}/0`]);
    // kafkajs delivers again from the first unresolved offset.
    failing = false;
    worker.stop();
    const again = fakeBatch({ topic: TOPIC, messages: [message(1, '2'), message(2, '3')] });
    await setup(() => ({ status: 'done' }), again.events).worker.onBatch(again.payload);
    expect(again.resolved).toEqual(['1', '2']);
  });

  it('nothing after a record to retry is sent: the partition blocks there', async () => {
    const fake = fakeBatch({ topic: TOPIC, messages: [message(0, '1'), message(1, '2'), message(2, '3')] });
    const answer = (id: string): WriteOutcome =>
      id === '2' ? { status: 'retry', code: 'E', message: 'x', kind: 'server' } : { status: 'done' };
    const { worker, calls } = setup(answer, fake.events, config.sink, { batch: 1, concurrency: 1 });
    await worker.onBatch(fake.payload);
    expect(calls.map((c) => c.map((w) => w.externalId))).toEqual([['1'], ['2']]);
    expect(fake.resolved).toEqual(['0']);
  });

  it('a tombstone needs no call; a batch of another topic is left alone', async () => {
    const fake = fakeBatch({ topic: TOPIC, messages: [message(5, null)] });
    const { worker, calls } = setup(() => ({ status: 'done' }), fake.events);
    await worker.onBatch(fake.payload);
    expect(calls).toEqual([]);
    expect(fake.resolved).toEqual(['5']);
    const other = fakeBatch({ topic: 'erp.public.other', offsets: [0] });
    await worker.onBatch(other.payload);
    expect(other.events).toEqual([]);
  });

  it('a batch smaller than a call and younger than lingerMs waits (linger), not reported as paused', async () => {
    const fake = fakeBatch({ topic: TOPIC, messages: [message(0, '1')] });
    const { worker, calls } = setup(() => ({ status: 'done' }), fake.events, { ...config.sink, lingerMs: 60_000 });
    await worker.onBatch(fake.payload);
    expect(fake.pauses).toBe(1);
    expect(worker.pausedPartitions()).toEqual([]);
    expect(fake.resolved).toEqual([]);
    expect(calls).toEqual([]);
  });
});
