import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';

/** postgres.publish: the operations pg2crm's publication sends. */
const config = (publish?: unknown) => ({
  name: 'erp',
  postgres: { url: 'postgresql://u:p@h:5432/db', tables: ['erp.customers'], ...(publish === undefined ? {} : { publish }) },
  kafka: { brokers: 'k1:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r:8081' } },
  crm: { kind: 'zendesk-sell', baseUrl: 'http://crm', auth: { token: 't' }, limits: { requests: 200, windowSeconds: 60 } },
  mappings: [
    { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { last_name: 'last_name' } },
  ],
});

describe('postgres.publish', () => {
  it('defaults to all four operations', () => {
    expect(parseConfig(config(), {}).postgres.publish).toEqual(['insert', 'update', 'delete', 'truncate']);
    expect(parseConfig(config(['insert', 'update']), {}).postgres.publish).toEqual(['insert', 'update']);
  });

  it('rejects unknown, repeated or no operations, naming the path', () => {
    expect(() => parseConfig(config(['insert', 'upsert']), {})).toThrow(/postgres\.publish\.1: .*insert.*update.*delete.*truncate/);
    expect(() => parseConfig(config(['insert', 'insert']), {})).toThrow(/postgres\.publish: list each operation once/);
    expect(() => parseConfig(config([]), {})).toThrow(/postgres\.publish: publish at least one of insert, update, delete, truncate/);
  });
});
