import { describe, expect, it } from 'vitest';
import { buildDelete, buildInsert, buildUpdate } from '../../../src/capture/change-builder.ts';
import { formatLsn, parseLsn } from '../../../src/capture/lsn.ts';
import { PgoutputDecoder, type Relation, UNCHANGED_TOAST } from '../../../src/capture/pgoutput-decoder.ts';
import { PgDecimal, PgTimestamp } from '../../../src/events/pg-values.ts';
import { pgoutput } from '../../helpers/pgoutput-buffers.ts';

const OID = 16384;
const columns = [
  { name: 'id', key: true, typeOid: 20 },
  { name: 'name', typeOid: 25 },
  { name: 'bio', typeOid: 25 },
  { name: 'balance', typeOid: 1700 },
  { name: 'at', typeOid: 1184 },
];

function decoderWithRelation(identity = 'f'): { d: PgoutputDecoder; relation: Relation } {
  const d = new PgoutputDecoder();
  const msg = d.decode(pgoutput.relation(OID, 'erp', 'customers', identity, columns));
  if (msg.tag !== 'relation') throw new Error('expected relation');
  return { d, relation: msg.relation };
}

const tx = () => ({ lsn: '0/16B3748', xid: 7, commitTsMicros: 1_700_000_000_000_000n, seq: 0 });

describe('LSN', () => {
  it('round-trips text and bigint forms', () => {
    expect(parseLsn('16/B374D848')).toBe(0x16b374d848n);
    expect(formatLsn(0x16b374d848n)).toBe('16/B374D848');
    expect(formatLsn(parseLsn('0/0'))).toBe('0/00000000');
  });
});

describe('PgoutputDecoder', () => {
  it('decodes begin and commit with Unix-epoch microseconds', () => {
    const d = new PgoutputDecoder();
    expect(d.decode(pgoutput.begin(0x100n, 1_000_000n, 42))).toEqual({
      tag: 'begin',
      finalLsn: 0x100n,
      commitTimeMicros: 946_684_801_000_000n,
      xid: 42,
    });
    expect(d.decode(pgoutput.commit(0x100n, 0x130n, 0n))).toMatchObject({ tag: 'commit', commitLsn: 0x100n, endLsn: 0x130n });
  });

  it('keeps values as exact text and marks unchanged TOAST values', () => {
    const { d } = decoderWithRelation();
    const msg = d.decode(
      pgoutput.update(
        OID,
        ['9007199254740993', 'Ann', 'UNCHANGED_TOAST', '12345678901234567890.123456789', '2026-01-02 03:04:05.123456+00'],
        { kind: 'O', values: ['9007199254740993', 'Anne', 'UNCHANGED_TOAST', '1.5', null] },
      ),
    );
    expect(msg.tag).toBe('update');
    if (msg.tag !== 'update') return;
    expect(msg.after).toEqual([
      '9007199254740993',
      'Ann',
      UNCHANGED_TOAST,
      '12345678901234567890.123456789',
      '2026-01-02 03:04:05.123456+00',
    ]);
    expect(msg.beforeIsKeyOnly).toBe(false);
  });

  it('decodes logical messages (heartbeats)', () => {
    expect(new PgoutputDecoder().decode(pgoutput.message(0x200n, 'pg2crm.heartbeat', ''))).toMatchObject({
      tag: 'message',
      transactional: true,
      prefix: 'pg2crm.heartbeat',
    });
  });

  it('fails loudly on a change before its relation', () => {
    expect(() => new PgoutputDecoder().decode(pgoutput.insert(OID, ['1']))).toThrow(/before its Relation message/);
  });
});

describe('change builder', () => {
  it('builds an insert with exact types', () => {
    const { d, relation } = decoderWithRelation();
    const m = d.decode(pgoutput.insert(OID, ['9007199254740993', 'Ann', null, '0.10', '2026-01-02 03:04:05.123456+00']));
    if (m.tag !== 'insert') throw new Error();
    const e = buildInsert(relation, ['id'], m.after, tx());
    expect(e).toMatchObject({ op: 'c', key: { id: 9007199254740993n }, after: { id: 9007199254740993n, name: 'Ann', bio: null } });
    expect(e.after?.balance).toEqual(new PgDecimal(10n, 2));
    expect(e.after?.at).toEqual(new PgTimestamp(1_767_323_045_123_456n, true));
    expect(e.source).toMatchObject({ lsn: '0/16B3748', seq: 0, xid: 7, schema: 'erp', table: 'customers' });
  });

  it('lists changed columns under REPLICA IDENTITY FULL and never nulls unchanged TOAST', () => {
    const { d, relation } = decoderWithRelation('f');
    const m = d.decode(
      pgoutput.update(OID, ['1', 'Ann', 'UNCHANGED_TOAST', '2', null], { kind: 'O', values: ['1', 'Anne', 'UNCHANGED_TOAST', '2', null] }),
    );
    if (m.tag !== 'update') throw new Error();
    const [e] = buildUpdate(relation, ['id'], m.before, m.beforeIsKeyOnly, m.after, tx());
    expect(e?.changed).toEqual(['name']);
    expect(e?.unchanged).toEqual(['bio']);
  });

  it('says "unknown" (null) for changed columns without the old row', () => {
    const { d, relation } = decoderWithRelation('d');
    const m = d.decode(pgoutput.update(OID, ['1', 'Ann', 'x', '2', null]));
    if (m.tag !== 'update') throw new Error();
    expect(buildUpdate(relation, ['id'], m.before, m.beforeIsKeyOnly, m.after, tx())[0]?.changed).toBeNull();
  });

  it('turns a primary-key change into delete + insert, with increasing sequence numbers', () => {
    const { d, relation } = decoderWithRelation('d');
    const m = d.decode(pgoutput.update(OID, ['2', 'Ann', 'x', '2', null], { kind: 'K', values: ['1', null, null, null, null] }));
    if (m.tag !== 'update') throw new Error();
    const events = buildUpdate(relation, ['id'], m.before, m.beforeIsKeyOnly, m.after, tx());
    expect(events.map((e) => [e.op, e.key.id, e.source.seq])).toEqual([
      ['d', 1n, 0],
      ['c', 2n, 1],
    ]);
  });

  it('builds a delete from the key', () => {
    const { d, relation } = decoderWithRelation('d');
    const m = d.decode(pgoutput.delete(OID, 'K', ['5', null, null, null, null]));
    if (m.tag !== 'delete') throw new Error();
    expect(buildDelete(relation, ['id'], m.before, m.beforeIsKeyOnly, tx())).toMatchObject({
      op: 'd',
      key: { id: 5n },
      before: null,
      after: null,
    });
  });
});
