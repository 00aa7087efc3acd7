import { describe, expect, it } from 'vitest';
import type { MappingConfig } from '../../../src/config.ts';
import { ConnectorError } from '../../../src/errors.ts';
import type { ChangeEvent } from '../../../src/events/change-event.ts';
import { decodeBatch } from '../../../src/sink/batch-decoder.ts';
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
    expect(out.changes.map((c) => [c.offset, c.write?.externalId ?? null, c.restore])).toEqual([
      [10n, '1', false],
      [11n, null, false],
      [12n, '2', true],
    ]);
    expect([...out.events.keys()]).toEqual([10n, 12n]);
    expect([...out.messages.keys()]).toEqual([10n, 11n, 12n]);
    expect(out.letters).toEqual([]);
    expect(out.stoppedAt).toBeUndefined();
  });

  it('dead-letters a poison message with its reason, and goes on', async () => {
    const batch = fakeBatch({ messages: [message(0, 'poison'), message(1, 'ok:1')] }).payload.batch;
    const out = await decodeBatch(batch, mapping, decode);
    expect(out.letters.map((l) => [l.offset, l.error.code, l.attempts, l.object])).toEqual([['0', 'NOT_AVRO', 1, 'contacts']]);
    expect(out.changes.map((c) => c.write?.externalId ?? null)).toEqual([null, '1']);
  });

  it('a message that cannot be decoded yet stops decoding there, keeping the changes before it', async () => {
    const batch = fakeBatch({ messages: [message(0, 'ok:1'), message(1, 'registry-down'), message(2, 'ok:2')] }).payload.batch;
    const out = await decodeBatch(batch, mapping, decode);
    expect(out.stoppedAt?.offset).toBe(1n);
    expect(out.stoppedAt?.err.code).toBe('SCHEMA_FETCH');
    expect(out.changes.map((c) => c.offset)).toEqual([0n]);
    expect(out.letters).toEqual([]);
  });
});
