import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { TableInfo } from '../../../src/capture/table-catalog.ts';
import type { MappingConfig } from '../../../src/config.ts';
import { confirmDrift } from '../../../src/verify/confirm.ts';
import type { MappingCheck } from '../../../src/verify/verify.ts';

/**
 * The second look (confirm.ts) against a fake PostgreSQL that answers the two lookups the way
 * PostgreSQL would: `format('%s', col) = ANY($1)` matches the column's text output (the text
 * selectAsText reads too), a lookup by primary key (unnest of key texts) matches the key's text.
 */
const table: TableInfo = {
  schema: 'erp',
  table: 'items',
  columns: [
    { name: 'id', typeOid: 20, typeMod: -1, typeName: 'bigint' },
    { name: 'ref', typeOid: 1700, typeMod: -1, typeName: 'numeric' },
    { name: 'name', typeOid: 25, typeMod: -1, typeName: 'text' },
  ],
  primaryKey: ['id'],
  replicaIdentity: 'f',
};
const mapping: MappingConfig = {
  table: 'erp.items',
  object: 'products',
  externalId: { column: 'ref', field: 'erp_ref' },
  fields: { Name: 'name' },
  lookups: {},
  onDelete: 'delete',
  priority: 5,
};

function fakeDb(rows: (string | null)[][]): { db: pg.Client; queries: string[] } {
  const queries: string[] = [];
  const db = {
    async query(q: { text: string; values: unknown[] }) {
      queries.push(q.text);
      if (q.text.includes(`format('%s', "ref") = ANY`)) {
        const ids = q.values[0] as string[];
        return { rows: rows.filter((r) => ids.includes(r[1]!)) };
      }
      if (q.text.includes('unnest')) {
        const keys = q.values[0] as string[];
        return { rows: rows.filter((r) => keys.includes(r[0]!)) };
      }
      throw new Error(`unexpected query: ${q.text}`);
    },
  };
  return { db: db as unknown as pg.Client, queries };
}

function check(drift: MappingCheck['drift'], expected: MappingCheck['expected'] = new Map()): MappingCheck {
  return { mapping, table, expected, unmappable: [], drift };
}

describe('verify second look', () => {
  it('keeps as extra only the first look extras, not a missing record whose row went away meanwhile', async () => {
    const { db } = fakeDb([]);
    const first = check(
      { checked: 1, missing: ['1'], stale: [], extra: ['9'] },
      new Map([['1', { key: { id: 1n }, fields: { Name: 'A' } }]]),
    );
    const crm = {
      read: async () =>
        new Map([
          ['1', { Name: 'A' }],
          ['9', { Name: 'Z' }],
        ]),
    };
    const again = await confirmDrift(db, first, crm, 0);
    expect(again.drift.extra).toEqual(['9']);
    expect(again.drift.missing).toEqual([]);
  });

  it('re-reads missing and stale candidates by primary key, so a numeric external id ("1.5" from 1.50) stays stale', async () => {
    // The row's external id as the sink writes it is String(toCrmValue(1.50)) = "1.5"; its text in PostgreSQL is "1.50".
    const { db } = fakeDb([['1', '1.50', 'New name']]);
    const first = check(
      { checked: 1, missing: [], stale: [{ externalId: '1.5', fields: ['Name'] }], extra: [] },
      new Map([['1.5', { key: { id: 1n }, fields: { Name: 'New name' } }]]),
    );
    const crm = { read: async (ids: string[]) => new Map(ids.filter((id) => id === '1.5').map((id) => [id, { Name: 'Old name' }])) };
    const again = await confirmDrift(db, first, crm, 0);
    expect(again.drift.stale).toEqual([{ externalId: '1.5', fields: ['Name'] }]);
  });
});
