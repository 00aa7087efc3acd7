import type { Kafka, KafkaMessage } from 'kafkajs';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { metrics } from '../../../src/metrics.ts';

/**
 * The written-hash store against a fake producer and a fake changelog read (no Kafka): what it
 * skips, what it sends to the topic (the topic format other instances and older versions read),
 * and how a reload merges the changes made while it ran.
 */
type Sent = { key: string; value: string | null; partition: number };
let topic: { key: string; value: string | null }[] = [];
/** Lets a test hold a load open, to make changes while it runs. */
let gate: Promise<void> = Promise.resolve();
let loadFails = false;
vi.mock('../../../src/kafka/read-topic.ts', () => ({
  readTopic: async (_k: unknown, _t: string, onMessage: (m: KafkaMessage, p: number) => void) => {
    const snapshot = [...topic];
    await gate;
    if (loadFails) throw new Error('broker down');
    for (const { key, value } of snapshot) {
      onMessage({ key: Buffer.from(key), value: value === null ? null : Buffer.from(value) } as KafkaMessage, 0);
    }
  },
}));

const { WrittenHashes, recordKey, writeHash } = await import('../../../src/sink/written-hashes.ts');

const sent: Sent[] = [];
const kafka = {
  producer: () => ({
    connect: async () => undefined,
    disconnect: async () => undefined,
    send: async ({ messages }: { messages: Sent[] }) => {
      sent.push(...messages);
    },
  }),
} as unknown as Kafka;

const ALL = 2;
const write = (externalId: string, fields: Record<string, unknown> = { a: 1, b: 'x' }, op: CrmWrite['op'] = 'upsert'): CrmWrite => ({
  op,
  object: 'contacts',
  externalIdField: 'erp_id',
  externalId,
  fields,
});
const gauge = async (): Promise<number | undefined> => (await metrics.writtenHashKeys.get()).values[0]?.value;

async function loadedStore(): Promise<InstanceType<typeof WrittenHashes>> {
  const store = new WrittenHashes(kafka, 'p.sink-hashes', 'g');
  await store.start();
  store.reload();
  await vi.waitFor(() => expect(store.ready()).toBe(true));
  return store;
}

beforeEach(() => {
  topic = [];
  sent.length = 0;
  gate = Promise.resolve();
  loadFails = false;
});

describe('WrittenHashes', () => {
  it('skips a write only once loaded and only when it matches what the topic holds for that record', async () => {
    topic = [{ key: recordKey('contacts', '1'), value: writeHash(write('1')) }];
    const store = new WrittenHashes(kafka, 'p.sink-hashes', 'g');
    expect(store.ready()).toBe(false);
    expect(store.unchanged(write('1'), ALL)).toBe(false);
    store.reload();
    await vi.waitFor(() => expect(store.ready()).toBe(true));
    expect(store.unchanged(write('1'), ALL)).toBe(true);
    expect(store.unchanged(write('1', { b: 'x', a: 1 }), ALL)).toBe(true);
    expect(store.unchanged(write('1', { a: 2, b: 'x' }), ALL)).toBe(false);
    expect(store.unchanged(write('2'), ALL)).toBe(false);
    expect(store.unchanged({ ...write('1'), object: 'leads' }, ALL)).toBe(false);
    // Not every mapped field: never skipped.
    expect(store.unchanged(write('1'), ALL + 1)).toBe(false);
    expect(await gauge()).toBe(1);
  });

  it('loads the topic in order: a later value replaces, a tombstone removes', async () => {
    topic = [
      { key: recordKey('contacts', '1'), value: writeHash(write('1', { a: 0, b: 'x' })) },
      { key: recordKey('contacts', '1'), value: writeHash(write('1')) },
      { key: recordKey('contacts', '2'), value: writeHash(write('2')) },
      { key: recordKey('contacts', '2'), value: null },
      { key: recordKey('contacts', '3'), value: 'not a hash' },
    ];
    const store = await loadedStore();
    expect(store.unchanged(write('1'), ALL)).toBe(true);
    expect(store.unchanged(write('1', { a: 0, b: 'x' }), ALL)).toBe(false);
    expect(store.unchanged(write('2'), ALL)).toBe(false);
    expect(store.unchanged(write('3'), ALL)).toBe(false);
  });

  it('remember writes the hash (or a tombstone for a partial write or a delete) to the topic and skips the same write next', async () => {
    const store = await loadedStore();
    await store.remember(3, [
      { write: write('1'), full: true },
      { write: write('2'), full: false },
      { write: write('3', {}, 'delete'), full: true },
    ]);
    expect(sent).toEqual([
      { key: recordKey('contacts', '1'), value: writeHash(write('1')), partition: 3 },
      { key: recordKey('contacts', '2'), value: null, partition: 3 },
      { key: recordKey('contacts', '3'), value: null, partition: 3 },
    ]);
    expect(writeHash(write('1'))).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(store.unchanged(write('1'), ALL)).toBe(true);
    expect(store.unchanged(write('2'), ALL)).toBe(false);
    expect(await gauge()).toBe(1);
    await store.remember(3, [{ write: write('1'), full: false }]);
    expect(store.unchanged(write('1'), ALL)).toBe(false);
    expect(await gauge()).toBe(0);
  });

  it('forgetBeforeWrite drops, durably, a held hash the write changes; keeps one it does not; sends nothing for unknown records', async () => {
    topic = [
      { key: recordKey('contacts', '1'), value: writeHash(write('1')) },
      { key: recordKey('contacts', '2'), value: writeHash(write('2')) },
      { key: recordKey('contacts', '3'), value: writeHash(write('3')) },
    ];
    const store = await loadedStore();
    await store.forgetBeforeWrite(5, [write('1', { a: 9, b: 'x' }), write('2'), write('3', {}, 'delete'), write('4')]);
    expect(sent).toEqual([
      { key: recordKey('contacts', '1'), value: null, partition: 5 },
      { key: recordKey('contacts', '3'), value: null, partition: 5 },
    ]);
    expect(store.unchanged(write('1'), ALL)).toBe(false);
    expect(store.unchanged(write('2'), ALL)).toBe(true);
    expect(store.unchanged(write('3'), ALL)).toBe(false);
    expect(await gauge()).toBe(1);
    sent.length = 0;
    await store.forgetBeforeWrite(5, [write('2'), write('4')]);
    expect(sent).toEqual([]);
  });

  it('forgetBeforeWrite drops every record written while the store is not loaded', async () => {
    const store = new WrittenHashes(kafka, 'p.sink-hashes', 'g');
    await store.forgetBeforeWrite(1, [write('1'), write('1'), write('2')]);
    expect(sent).toEqual([
      { key: recordKey('contacts', '1'), value: null, partition: 1 },
      { key: recordKey('contacts', '2'), value: null, partition: 1 },
    ]);
  });

  it('applies the changes made while a reload runs over what it loaded', async () => {
    topic = [
      { key: recordKey('contacts', '1'), value: writeHash(write('1')) },
      { key: recordKey('contacts', '2'), value: writeHash(write('2')) },
    ];
    const store = await loadedStore();
    let open!: () => void;
    gate = new Promise((r) => {
      open = r;
    });
    store.reload();
    expect(store.ready()).toBe(false);
    expect(store.unchanged(write('2'), ALL)).toBe(false);
    // The load has read the topic as it was; these land in Kafka after that point.
    await store.forgetBeforeWrite(0, [write('1', { a: 5, b: 'x' })]);
    await store.remember(0, [
      { write: write('1', { a: 5, b: 'x' }), full: true },
      { write: write('3'), full: true },
    ]);
    await store.remember(0, [{ write: write('2'), full: false }]);
    open();
    await vi.waitFor(() => expect(store.ready()).toBe(true));
    expect(store.unchanged(write('1', { a: 5, b: 'x' }), ALL)).toBe(true);
    expect(store.unchanged(write('1'), ALL)).toBe(false);
    expect(store.unchanged(write('2'), ALL)).toBe(false);
    expect(store.unchanged(write('3'), ALL)).toBe(true);
    expect(await gauge()).toBe(2);
  });

  it('a reload superseded by a newer one does not install its result', async () => {
    topic = [{ key: recordKey('contacts', '1'), value: writeHash(write('1')) }];
    const store = new WrittenHashes(kafka, 'p.sink-hashes', 'g');
    let open!: () => void;
    gate = new Promise((r) => {
      open = r;
    });
    store.reload();
    topic = [];
    const first = gate;
    gate = Promise.resolve();
    store.reload();
    await vi.waitFor(() => expect(store.ready()).toBe(true));
    open();
    await first;
    await new Promise((r) => setTimeout(r, 10));
    expect(store.unchanged(write('1'), ALL)).toBe(false);
  });

  it('a failed load leaves the store ready but skipping nothing until the next reload', async () => {
    topic = [{ key: recordKey('contacts', '1'), value: writeHash(write('1')) }];
    loadFails = true;
    const store = new WrittenHashes(kafka, 'p.sink-hashes', 'g');
    store.reload();
    await vi.waitFor(() => expect(store.ready()).toBe(true));
    expect(store.unchanged(write('1'), ALL)).toBe(false);
    await store.forgetBeforeWrite(0, [write('1')]);
    expect(sent).toEqual([{ key: recordKey('contacts', '1'), value: null, partition: 0 }]);
    loadFails = false;
    store.reload();
    await vi.waitFor(() => expect(store.ready()).toBe(true));
    expect(store.unchanged(write('1'), ALL)).toBe(true);
  });

  it('hashes writes as older versions wrote them to the topic, so existing topics still load and match', () => {
    // Values computed by the Map-based store this replaced (the topic format is unchanged).
    expect(
      writeHash({
        ...write('42'),
        object: 'deals',
        fields: { title: 'Order 42', amount: 420, note: null },
        lookups: {
          contact_id: { object: 'contacts', externalIdField: 'erp_id', externalId: '7' },
          owner: { object: 'users', externalIdField: 'e', externalId: null },
        },
      }),
    ).toBe('POXxhY2GhTCGjTsX_lpecA');
    expect(writeHash(write('1', { email: 'a@b', n: 1.5 }))).toBe('igu0L6ogGnENtZmVioRssA');
  });

  it('keeps a cleared lookup apart from any external id', async () => {
    const lookup = (externalId: string | null): CrmWrite => ({
      ...write('1'),
      lookups: { account: { object: 'accounts', externalIdField: 'erp_id', externalId } },
    });
    const store = await loadedStore();
    await store.remember(0, [{ write: lookup(null), full: true }]);
    expect(store.unchanged(lookup(null), ALL)).toBe(true);
    for (const id of ['null', '', '\u0002']) expect(store.unchanged(lookup(id), ALL)).toBe(false);
    // A write that names a link to remove is never skipped.
    expect(
      store.unchanged({ ...lookup(null), lookups: { account: { ...lookup(null).lookups!.account!, previousExternalId: '7' } } }, ALL),
    ).toBe(false);
  });
});
