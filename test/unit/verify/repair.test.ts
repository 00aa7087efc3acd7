import { describe, expect, it, vi } from 'vitest';
import type { TableInfo } from '../../../src/capture/table-catalog.ts';
import type { Config, MappingConfig } from '../../../src/config.ts';
import type { Row } from '../../../src/events/change-event.ts';
import type { MappingCheck } from '../../../src/verify/verify.ts';

/** What the repair published, through a fake publisher (no PostgreSQL, no Kafka). */
const published: Row[] = [];
const fake = {
  async publish(_t: TableInfo, key: Row): Promise<'r' | 'd'> {
    published.push(key);
    return key.id === 9n || key.id === '9' ? 'd' : 'r';
  },
  async close() {},
};
vi.mock('../../../src/replay/current-row-publisher.ts', () => ({ CurrentRowPublisher: { open: async () => fake } }));

const { repairDrift } = await import('../../../src/verify/repair.ts');

const table: TableInfo = {
  schema: 'erp',
  table: 'customers',
  columns: [{ name: 'id', typeOid: 20, typeMod: -1, typeName: 'bigint' }],
  primaryKey: ['id'],
  replicaIdentity: 'f',
};
const mapping: MappingConfig = {
  table: 'erp.customers',
  object: 'contacts',
  externalId: { column: 'id', field: 'erp_id' },
  fields: { last_name: 'last_name' },
  lookups: {},
  onDelete: 'delete',
  priority: 5,
};
const check: MappingCheck = {
  mapping,
  table,
  expected: new Map([['1', { key: { id: 1n }, fields: { last_name: 'A' } }]]),
  unmappable: [],
  drift: { checked: 1, missing: ['1'], stale: [], extra: ['9'] },
};

describe('verify --repair', () => {
  it('re-drives missing and stale but deletes no extra without --delete-extras', async () => {
    published.length = 0;
    const [result] = await repairDrift({} as Config, [check], { deleteExtras: false });
    expect(published).toEqual([{ id: 1n }]);
    expect(result).toMatchObject({ upserts: 1, deletes: 0 });
    expect(result!.left).toEqual([{ externalId: '9', reason: expect.stringContaining('--delete-extras') }]);
  });

  it('publishes deletes for extras with --delete-extras', async () => {
    published.length = 0;
    const [result] = await repairDrift({} as Config, [check], { deleteExtras: true });
    expect(result).toMatchObject({ upserts: 1, deletes: 1, left: [] });
  });
});
