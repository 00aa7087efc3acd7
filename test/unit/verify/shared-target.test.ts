import { describe, expect, it } from 'vitest';
import type { MappingConfig } from '../../../src/config.ts';
import { sharingTarget } from '../../../src/verify/verify.ts';

const m = (table: string, object: string, field: string): MappingConfig => ({
  table,
  object,
  externalId: { column: 'id', field },
  fields: { last_name: 'last_name' },
  lookups: {},
  onDelete: 'delete',
  priority: 5,
});

describe('verify: mappings sharing a CRM id space', () => {
  it('finds the other mappings to the same object and external id field, whatever --table chose', () => {
    const eu = m('erp.customers_eu', 'contacts', 'erp_id');
    const us = m('erp.customers_us', 'contacts', 'erp_id');
    const orders = m('erp.orders', 'deals', 'erp_id');
    const other = m('erp.leads', 'contacts', 'lead_id');
    expect(sharingTarget([eu, us, orders, other], eu)).toEqual([us]);
    expect(sharingTarget([eu, us, orders, other], orders)).toEqual([]);
  });
});
