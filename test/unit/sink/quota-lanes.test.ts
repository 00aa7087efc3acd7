import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import type { CrmAdapter, CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { QuotaLanes } from '../../../src/sink/quota-lanes.ts';

const base = {
  name: 'c',
  postgres: { url: 'postgresql://u@h/db', tables: ['public.customers'] },
  kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
  mappings: [{ table: 'public.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { email: 'email' } }],
};
// 30 per minute per group, of which a tenth (3) may go at once: the rest is paced.
const limits = { requests: 30, windowSeconds: 60 };

/** A fake adapter (pure logic: which token a call would use), one request per call. */
function fake(token: string): CrmAdapter {
  return {
    kind: token,
    maxBatchSize: () => 10,
    cost: () => 1,
    write: async () => [],
    ping: async () => undefined,
    close: async () => undefined,
  };
}
const write: CrmWrite[] = [{ op: 'upsert', object: 'contacts', externalIdField: 'erp_id', externalId: '1', fields: {} }];

describe('credentials and quota groups', () => {
  it('normalises crm.auth to one credential and rejects both or neither', () => {
    const one = parseConfig({ ...base, crm: { kind: 'hubspot', baseUrl: 'http://h', auth: { token: 't' }, limits } }, {});
    expect(one.crm.credentials).toEqual([{ token: 't', quotaGroup: 'default', name: 'crm.auth' }]);
    expect(() => parseConfig({ ...base, crm: { kind: 'hubspot', baseUrl: 'http://h', limits } }, {})).toThrow(
      /crm\.auth: set crm\.auth\.token .* or crm\.credentials/,
    );
    expect(() =>
      parseConfig(
        { ...base, crm: { kind: 'hubspot', baseUrl: 'http://h', auth: { token: 't' }, credentials: [{ token: 'u' }], limits } },
        {},
      ),
    ).toThrow(/not both/);
  });

  it('tokens of one group share a budget and take turns; separate groups add capacity', () => {
    const cfg = parseConfig(
      {
        ...base,
        crm: {
          kind: 'hubspot',
          baseUrl: 'http://h',
          credentials: [
            { token: 'a1', quotaGroup: 'a' },
            { token: 'a2', quotaGroup: 'a' },
            { token: 'b1', quotaGroup: 'b' },
          ],
          limits,
        },
      },
      {},
    );
    expect(cfg.crm.auth.token).toBe('a1');
    const lanes = new QuotaLanes(cfg.crm, (c) => fake(c.token ?? ''));
    expect(lanes.quota).toBe(60);
    const used: string[] = [];
    for (let i = 0; i < 7; i++) {
      const t = lanes.take(write, { priority: 5, who: 'p' });
      if (t) used.push(`${t.lane.group}:${t.adapter.kind}`);
    }
    expect(used).toHaveLength(6); // 3 per group at once, then paced
    expect(used.filter((u) => u.startsWith('a:')).sort()).toEqual(['a:a1', 'a:a1', 'a:a2']);
    expect(used.filter((u) => u.startsWith('b:'))).toEqual(['b:b1', 'b:b1', 'b:b1']);
    // the next call is paced: 30 per minute = one every 2 s
    expect(lanes.waitMs(write)).toBeGreaterThan(1_500);
    expect(lanes.waitMs(write)).toBeLessThanOrEqual(2_000);
  });
});
