import { describe, expect, it } from 'vitest';
import type { TableInfo } from '../../../src/capture/table-catalog.ts';
import type { MappingConfig } from '../../../src/config.ts';
import { extraPolicy } from '../../../src/verify/repair.ts';
import { formatReport, reportOf } from '../../../src/verify/report.ts';
import type { MappingCheck, VerifyOptions } from '../../../src/verify/verify.ts';

const table: TableInfo = {
  schema: 'erp',
  table: 'customers',
  columns: [
    { name: 'id', typeOid: 20, typeMod: -1, typeName: 'bigint' },
    { name: 'code', typeOid: 25, typeMod: -1, typeName: 'text' },
  ],
  primaryKey: ['id'],
  replicaIdentity: 'f',
};
const mapping = (onDelete: MappingConfig['onDelete'], column = 'id'): MappingConfig => ({
  table: 'erp.customers',
  object: 'contacts',
  externalId: { column, field: 'erp_id' },
  fields: { last_name: 'last_name' },
  lookups: {},
  onDelete,
  priority: 5,
});
const options: VerifyOptions = { repair: false, readShare: 0.25, maxWaitSeconds: 600, settleSeconds: 0, examples: 2 };

function check(m: MappingConfig, extra: string[] | undefined): MappingCheck {
  return { mapping: m, table, expected: new Map(), unmappable: [], drift: { checked: 5, missing: [], stale: [], extra } };
}

describe('verify report', () => {
  it('decides per mapping what --repair does with extras', () => {
    expect(extraPolicy(mapping('delete'), table)).toBe('delete');
    expect(extraPolicy(mapping('ignore'), table)).toBe('retained');
    expect(extraPolicy(mapping({ set: { status: 'gone' } }), table)).toBe('retained');
    expect(extraPolicy(mapping('delete', 'code'), table)).toBe('manual'); // no key to publish a delete under
  });

  it('counts extras as drift unless the mapping keeps records of deleted rows; examples are capped', () => {
    const drift = reportOf(check(mapping('delete'), ['7', '8', '9']), options, undefined);
    expect(drift).toMatchObject({ drift: true, extra: { count: 3, examples: ['7', '8'], policy: 'delete' } });
    expect(reportOf(check(mapping('ignore'), ['7']), options, undefined)).toMatchObject({ drift: false, extra: { policy: 'retained' } });
    expect(reportOf(check(mapping('delete'), undefined), { ...options, sample: 5 }, undefined)).toMatchObject({
      drift: false,
      sample: true,
      extra: null,
    });
  });

  it('prints counts, examples by id and field name, and the reads against the budget', () => {
    const c = check(mapping('delete'), ['9']);
    c.drift.missing.push('3');
    c.drift.stale.push({ externalId: '5', fields: ['last_name'] });
    const lines = formatReport({
      sample: null,
      mappings: [reportOf(c, options, undefined)],
      reads: { calls: 2, throttled: 0, quota: 75, windowSeconds: 60, share: 0.25 },
      drift: true,
    });
    expect(lines).toEqual([
      'erp.customers -> contacts: checked 5 row(s)',
      '  missing 1  e.g. 3',
      '  stale   1  e.g. 5 (last_name)',
      '  extra   1  e.g. 9',
      'CRM reads: 2 call(s), 0 throttled; budget 75 per 60 s (--read-share 0.25 of crm.limits)',
      'DRIFT found',
    ]);
  });
});
