import { describe, expect, it } from 'vitest';
import { parseConfig, substituteEnv } from '../../src/config.ts';

const valid = {
  name: 'erp',
  postgres: { url: 'postgresql://u:p@h:5432/db', tables: ['erp.customers'] },
  kafka: { brokers: 'k1:9092,k2:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r:8081' } },
  crm: { kind: 'zendesk-sell', baseUrl: 'http://crm', auth: { token: 't' }, limits: { requests: 200, windowSeconds: 60 } },
  mappings: [
    {
      table: 'erp.customers',
      object: 'contacts',
      externalId: { column: 'id', field: 'custom_fields.erp_id' },
      fields: { last_name: 'last_name' },
    },
  ],
};

function errorOf(raw: unknown, env: Record<string, string> = {}): string {
  try {
    parseConfig(raw, env);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('config was accepted');
}

describe('config', () => {
  it('applies defaults and derived names', () => {
    const c = parseConfig(valid, {});
    expect(c.kafka.brokers).toEqual(['k1:9092', 'k2:9092']);
    expect(c.postgres.slot).toBe('pg2crm_erp');
    expect(c.postgres.snapshot).toBe('initial');
    expect(c.kafka.groupId).toBe('pg2crm-erp-sink');
    expect(c.sink.deadLetterTopic).toBe('erp.dlq');
  });

  it('names a missing key with its path', () => {
    const { crm: _c, ...noCrm } = valid;
    expect(errorOf(noCrm)).toMatch(/crm: missing required key/);
  });

  it('names a wrong type with its path', () => {
    expect(errorOf({ ...valid, kafka: { ...valid.kafka, partitions: 'three' } })).toMatch(/kafka\.partitions/);
  });

  it('tells a missing key from a present key of the wrong type', () => {
    const err = errorOf({ ...valid, kafka: { ...valid.kafka, partitions: 'three' }, crm: undefined });
    expect(err).toMatch(/crm: missing required key \(object\)/);
    expect(err).toMatch(/kafka\.partitions: (?!missing required key)/);
  });

  it('rejects an unknown CRM kind and lists the supported ones', () => {
    expect(errorOf({ ...valid, crm: { ...valid.crm, kind: 'sugarcrm' } })).toMatch(/crm\.kind: unknown CRM kind; supported: zendesk-sell/);
  });

  it('rejects unknown keys', () => {
    expect(errorOf({ ...valid, postgres: { ...valid.postgres, slott: 'x' } })).toMatch(/postgres: unknown key\(s\) slott/);
  });

  it('rejects a mapping of a table that is not captured', () => {
    const bad = { ...valid, mappings: [{ ...valid.mappings[0], table: 'erp.orders' }] };
    expect(errorOf(bad)).toMatch(/mappings\.0\.table: table erp\.orders is not captured/);
  });

  it('substitutes ${VAR} and ${VAR:-default}, typed when the scalar is one placeholder', () => {
    expect(substituteEnv({ a: '${A}', b: '${B:-7}', c: 'x-${A}-y', d: '${D:-true}' }, { A: 'one' })).toEqual({
      a: 'one',
      b: 7,
      c: 'x-one-y',
      d: true,
    });
  });

  it('names a missing environment variable and where it is used', () => {
    expect(errorOf({ ...valid, crm: { ...valid.crm, auth: { token: '${SELL_TOKEN}' } } })).toMatch(
      /crm\.auth\.token: environment variable SELL_TOKEN is not set/,
    );
  });
});
