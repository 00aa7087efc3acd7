import { describe, expect, it } from 'vitest';
import type { CrmLookup, CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { compact, type KeyedChange } from '../../../src/sink/compactor.ts';

function upsert(id: string, fields: Record<string, unknown>): CrmWrite {
  return { op: 'upsert', object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: id, fields };
}
function del(id: string): CrmWrite {
  return { op: 'delete', object: 'contacts', externalIdField: 'custom_fields.erp_id', externalId: id, fields: {} };
}
/** `restore`: the change is a snapshot row (op `r`). */
function change(offset: number, write: CrmWrite | null, restore = false): KeyedChange {
  return { offset: BigInt(offset), write, restore };
}

describe('compact', () => {
  it('merges updates of one record, later values winning, and keeps every offset', () => {
    const out = compact([change(1, upsert('a', { x: 1, y: 1 })), change(2, upsert('b', { x: 9 })), change(3, upsert('a', { y: 2 }))]);
    expect(out).toHaveLength(2);
    expect(out[0]).toMatchObject({ write: { fields: { x: 1, y: 2 } }, offsets: [1n, 3n], firstOffset: 1n });
    expect(out[1]).toMatchObject({ write: { externalId: 'b' }, offsets: [2n] });
  });

  it('lets a delete supersede earlier updates', () => {
    const out = compact([change(1, upsert('a', { x: 1 })), change(2, del('a'))]);
    expect(out).toEqual([{ write: del('a'), offsets: [1n, 2n], firstOffset: 1n, restore: false }]);
  });

  // At-least-once: the window may be a redelivery whose create already reached the CRM.
  it('sends the delete of a record created and deleted inside the window', () => {
    const out = compact([change(1, upsert('a', { x: 1 })), change(2, upsert('a', { x: 2 })), change(3, del('a'))]);
    expect(out).toEqual([{ write: del('a'), offsets: [1n, 2n, 3n], firstOffset: 1n, restore: false }]);
  });

  it('sends the delete after a snapshot row: a snapshot row says nothing about what the CRM holds', () => {
    const out = compact([change(1, upsert('a', { x: 1 }), true), change(2, del('a'))]);
    expect(out).toEqual([{ write: del('a'), offsets: [1n, 2n], firstOffset: 1n, restore: false }]);
  });

  it('keeps the last delete of delete -> insert -> delete', () => {
    const out = compact([change(1, del('a')), change(2, upsert('a', { x: 1 })), change(3, del('a'))]);
    expect(out).toEqual([{ write: del('a'), offsets: [1n, 2n, 3n], firstOffset: 1n, restore: false }]);
  });

  it('turns delete then insert into an upsert that no hash may skip (the delete may have reached the CRM)', () => {
    const out = compact([change(1, del('a')), change(2, upsert('a', { x: 3 }))]);
    expect(out).toEqual([{ write: upsert('a', { x: 3 }), offsets: [1n, 2n], firstOffset: 1n, restore: true }]);
  });

  describe('restore: an upsert folding in a snapshot row is never skipped as unchanged', () => {
    const restoreOf = (...changes: KeyedChange[]) => compact(changes).map((o) => o.restore);

    it('a snapshot row alone, or merged before or after updates', () => {
      expect(restoreOf(change(1, upsert('a', { x: 1 }), true))).toEqual([true]);
      expect(restoreOf(change(1, upsert('a', { x: 1 }), true), change(2, upsert('a', { x: 2 })))).toEqual([true]);
      expect(restoreOf(change(1, upsert('a', { x: 1 })), change(2, upsert('a', { x: 1 }), true))).toEqual([true]);
    });

    it('updates only: false; per record', () => {
      expect(restoreOf(change(1, upsert('a', { x: 1 })), change(2, upsert('a', { x: 2 })))).toEqual([false]);
      expect(restoreOf(change(1, upsert('a', { x: 1 }), true), change(2, upsert('b', { x: 2 })))).toEqual([true, false]);
    });

    it('a delete is never a restore; nothing to write is never a restore', () => {
      expect(restoreOf(change(1, upsert('a', { x: 1 }), true), change(2, del('a')))).toEqual([false]);
      expect(restoreOf(change(1, null, true))).toEqual([false]);
    });
  });

  it('keeps changes with nothing to write as their own entries, in offset order', () => {
    const out = compact([change(5, upsert('a', {})), change(4, null)]);
    expect(out.map((o) => o.firstOffset)).toEqual([4n, 5n]);
  });

  describe('lookups: the merged write names the target the CRM held before the window', () => {
    const company = (externalId: string | null, previousExternalId?: string): CrmLookup => ({
      object: 'companies',
      externalIdField: 'erp_company_id',
      externalId,
      ...(previousExternalId !== undefined ? { previousExternalId } : {}),
    });
    const deal = (lookup: CrmLookup): CrmWrite => ({ ...upsert('d', {}), object: 'deals', lookups: { company: lookup } });
    const merged = (...lookups: CrmLookup[]) => compact(lookups.map((l, i) => change(i + 1, deal(l))))[0]?.write?.lookups?.company;

    // A redelivered window may have linked any target it names: those stay as staleExternalIds.
    const stale = (l: CrmLookup, ...ids: string[]): CrmLookup => ({ ...l, staleExternalIds: ids });

    it('A->B then B->C: previous A, target C, B possibly linked by an earlier delivery', () => {
      expect(merged(company('B', 'A'), company('C', 'B'))).toEqual(stale(company('C', 'A'), 'B'));
    });

    it('A->B then B->A: back where it started, only the stale B to remove', () => {
      expect(merged(company('B', 'A'), company('A', 'B'))).toEqual(stale(company('A'), 'B'));
      // ... and a third move still knows the CRM holds A.
      expect(merged(company('B', 'A'), company('A', 'B'), company('C', 'A'))).toEqual(stale(company('C', 'A'), 'B'));
    });

    it('delete then re-insert: the target of the deleted row (held) becomes stale', () => {
      const del: CrmWrite = { op: 'delete', object: 'deals', externalIdField: 'erp_id', externalId: 'd', fields: {} };
      const out = compact([{ offset: 1n, write: del, restore: false, held: { company: 'A' } }, change(2, deal(company('B')))]);
      expect(out[0]?.write?.lookups?.company).toEqual(stale(company('B'), 'A'));
      expect(out[0]?.restore).toBe(true);
    });

    it('unchanged A then A->B: previous A', () => {
      expect(merged(company('A'), company('B', 'A'))).toEqual(company('B', 'A'));
      expect(merged(company('A', 'X'), company('A'))).toEqual(company('A', 'X'));
    });

    it('cleared lookups (null): A->B then B->null clears with previous A; null then ->B has nothing to remove', () => {
      expect(merged(company('B', 'A'), company(null, 'B'))).toEqual(stale(company(null, 'A'), 'B'));
      expect(merged(company(null, 'A'), company('A'))).toEqual(company('A'));
      expect(merged(company(null), company('B'))).toEqual(company('B'));
      expect(merged(company(null, 'A'), company(null))).toEqual(company(null, 'A'));
    });
  });
});
