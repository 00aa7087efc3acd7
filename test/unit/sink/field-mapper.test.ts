import { describe, expect, it } from 'vitest';
import type { MappingConfig } from '../../../src/config.ts';
import type { ChangeEvent, Row } from '../../../src/events/change-event.ts';
import { mapEvent } from '../../../src/sink/field-mapper.ts';

const mapping: MappingConfig = {
  table: 'erp.orders',
  object: 'deals',
  externalId: { column: 'id', field: 'erp_order_id' },
  fields: { dealname: 'title' },
  lookups: { company: { object: 'companies', column: 'customer_id', externalIdField: 'erp_company_id' } },
  onDelete: 'delete',
  priority: 5,
};

function update(before: Row | null, after: Row): ChangeEvent {
  return {
    op: 'u',
    key: { id: after.id },
    before,
    after,
    changed: before ? Object.keys(after).filter((c) => before[c] !== after[c]) : null,
    unchanged: [],
    source: { lsn: '0/1', seq: 0, xid: 1, commitTsMicros: 0n, schema: 'erp', table: 'orders', snapshot: false },
  };
}

describe('mapEvent lookups', () => {
  it('carries the old target as previousExternalId when the old row shows the lookup column changed', () => {
    const w = mapEvent(update({ id: 7, title: 'O', customer_id: 1n }, { id: 7, title: 'O', customer_id: 2n }), mapping);
    expect(w?.lookups?.company).toEqual({
      object: 'companies',
      externalIdField: 'erp_company_id',
      externalId: '2',
      previousExternalId: '1',
    });
  });

  it('no previousExternalId when the lookup did not change, had no old link (null), or the old row is unknown', () => {
    const plain = { object: 'companies', externalIdField: 'erp_company_id', externalId: '2' };
    expect(
      mapEvent(update({ id: 7, title: 'Old', customer_id: 2n }, { id: 7, title: 'New', customer_id: 2n }), mapping)?.lookups?.company,
    ).toEqual(plain);
    expect(
      mapEvent(update({ id: 7, title: 'O', customer_id: null }, { id: 7, title: 'O', customer_id: 2n }), mapping)?.lookups?.company,
    ).toEqual(plain);
    // Without REPLICA IDENTITY FULL the event has no old row: the old target is unknown.
    expect(mapEvent(update(null, { id: 7, title: 'O', customer_id: 2n }), mapping)?.lookups?.company).toEqual(plain);
    // An insert has no previous target.
    const insert: ChangeEvent = { ...update(null, { id: 8, title: 'O', customer_id: 2n }), op: 'c' };
    expect(mapEvent(insert, mapping)?.lookups?.company).toEqual(plain);
  });

  it('a NULL lookup column clears the lookup (externalId null), naming the old target when the old row shows it', () => {
    const cleared = { object: 'companies', externalIdField: 'erp_company_id', externalId: null };
    expect(
      mapEvent(update({ id: 7, title: 'O', customer_id: 1n }, { id: 7, title: 'O', customer_id: null }), mapping)?.lookups?.company,
    ).toEqual({ ...cleared, previousExternalId: '1' });
    expect(mapEvent(update(null, { id: 7, title: 'O', customer_id: null }), mapping)?.lookups?.company).toEqual(cleared);
    const insert: ChangeEvent = { ...update(null, { id: 8, title: 'O', customer_id: null }), op: 'c' };
    expect(mapEvent(insert, mapping)?.lookups?.company).toEqual(cleared);
  });
});
