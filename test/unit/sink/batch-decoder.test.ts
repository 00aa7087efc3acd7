import { describe, expect, it } from 'vitest';
import type { MappingConfig } from '../../../src/config.ts';
import { ConnectorError } from '../../../src/errors.ts';
import type { ChangeEvent } from '../../../src/events/change-event.ts';
import { decodeBatch, fetchHeapProblem, messageAt } from '../../../src/sink/batch-decoder.ts';
import { fakeBatch, message } from './fake-batch.ts';

const mapping: MappingConfig = {
  table: 'erp.customers',
  object: 'contacts',
  externalId: { column: 'id', field: 'erp_id' },
  fields: { name: 'name' },
  lookups: {},
  onDelete: 'delete',
  priority: 5,
};

function event(id: number, op: ChangeEvent['op'] = 'c'): ChangeEvent {
  return {
    op,
    key: { id },
    before: null,
    after: { id, name: `n${id}` },
    changed: null,
    unchanged: [],
    source: { lsn: '0/1', seq: 0, xid: 1, commitTsMicros: 0n, schema: 'erp', table: 'customers', snapshot: op === 'r' },
  };
}

/** Values name what decoding them does: `ok:<id>`, `snap:<id>`, `poison`, `registry-down`. */
async function decode(value: Buffer): Promise<ChangeEvent> {
  const [what, id] = value.toString().split(':');
  if (what === 'ok') return event(Number(id));
  if (what === 'snap') return event(Number(id), 'r');
  if (what === 'registry-down') throw new ConnectorError('SCHEMA_FETCH', 'registry unreachable', { retriable: true });
  throw new ConnectorError('NOT_AVRO', 'not an Avro message');
}

describe('decodeBatch', () => {
  it('maps each message to a change in offset order: writes, a snapshot row to restore, a tombstone to nothing', async () => {
    const batch = fakeBatch({ messages: [message(10, 'ok:1'), message(11, null), message(12, 'snap:2')] }).payload.batch;
    const out = await decodeBatch(batch, mapping, decode);
    expect(out.writes.map((c) => [c.firstOffset, c.write?.externalId ?? null, c.restore])).toEqual([
      [10n, '1', false],
      [11n, null, false],
      [12n, '2', true],
    ]);
    expect(out.events).toBe(2);
    expect(out.letters).toEqual([]);
    expect(out.stoppedAt).toBeUndefined();
  });

  it('dead-letters a poison message with its reason, and goes on', async () => {
    const batch = fakeBatch({ messages: [message(0, 'poison'), message(1, 'ok:1')] }).payload.batch;
    const out = await decodeBatch(batch, mapping, decode);
    expect(out.letters.map((l) => [l.offset, l.error.code, l.attempts, l.object])).toEqual([['0', 'NOT_AVRO', 1, 'contacts']]);
    expect(out.writes.map((c) => c.write?.externalId ?? null)).toEqual([null, '1']);
  });

  it('a message that cannot be decoded yet stops decoding there, keeping the changes before it', async () => {
    const batch = fakeBatch({ messages: [message(0, 'ok:1'), message(1, 'registry-down'), message(2, 'ok:2')] }).payload.batch;
    const out = await decodeBatch(batch, mapping, decode);
    expect(out.stoppedAt?.offset).toBe(1n);
    expect(out.stoppedAt?.err.code).toBe('SCHEMA_FETCH');
    expect(out.writes.map((c) => c.firstOffset)).toEqual([0n]);
    expect(out.letters).toEqual([]);
  });

  it('folds the changes of one record into one write as it decodes, with the earliest commit time', async () => {
    const at = (id: number, ms: number) => ({ ...event(id), source: { ...event(id).source, commitTsMicros: BigInt(ms) * 1000n } });
    const times: Record<string, number> = { '1': 5_000, '2': 6_000, '3': 7_000 };
    let n = 0;
    const timed = async (value: Buffer): Promise<ChangeEvent> => {
      const id = value.toString().split(':')[1]!;
      return at(Number(id), times[id]! + n++);
    };
    const batch = fakeBatch({ messages: [message(0, 'ok:1'), message(1, 'ok:2'), message(2, 'ok:1'), message(3, 'ok:3')] }).payload.batch;
    const out = await decodeBatch(batch, mapping, timed);
    expect(out.writes.map((w) => [w.write?.externalId, w.offsets, w.commitMs])).toEqual([
      ['1', [0n, 2n], 5_000],
      ['2', [1n], 6_001],
      ['3', [3n], 7_003],
    ]);
    expect(out.events).toBe(4);
  });
});

describe('messageAt', () => {
  it('finds a message by offset in ascending offsets with gaps, and nothing for an offset not there', () => {
    const { messages } = fakeBatch({ messages: [message(3, 'a'), message(4, 'b'), message(9, 'c'), message(12, 'd')] }).payload.batch;
    expect([3n, 4n, 9n, 12n].map((o) => messageAt(messages, o)?.value?.toString())).toEqual(['a', 'b', 'c', 'd']);
    expect([0n, 5n, 13n].map((o) => messageAt(messages, o))).toEqual([undefined, undefined, undefined]);
  });
});

describe('fetchHeapProblem', () => {
  const MiB = 1024 * 1024;
  it('is silent when fetches fit in half the heap, and names the setting and the fix when they do not', () => {
    // Default 1 MiB x 3 partitions x 8 = 24 MiB of a 128 MiB heap (a 256 MB container at half).
    expect(fetchHeapProblem(MiB, 3, 128 * MiB)).toBeUndefined();
    // The old default, 8 MiB: 192 MiB, more than the whole heap.
    const problem = fetchHeapProblem(8 * MiB, 3, 128 * MiB);
    expect(problem).toContain('sink.fetchMaxBytesPerPartition (8 MiB)');
    expect(problem).toContain('about 192 MiB');
    expect(problem).toContain('lower sink.fetchMaxBytesPerPartition');
  });
});
