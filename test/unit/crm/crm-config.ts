import { type CrmConfig, parseConfig } from '../../../src/config.ts';

/**
 * The `crm` slice of a parsed config for an adapter under test, pointed at `baseUrl` (a
 * simulator or a proxy in front of one); `crm` adds or overrides settings, `mapping` names the
 * object (the adapters read mappings only through the records they are given, but the config
 * schema wants one).
 */
export function crmConfig(
  kind: CrmConfig['kind'],
  baseUrl: string,
  crm: Record<string, unknown> = {},
  mapping: Record<string, unknown> = {},
): CrmConfig {
  return parseConfig({
    name: 't',
    postgres: { url: 'postgresql://x/y', tables: ['erp.customers'] },
    kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
    crm: { kind, baseUrl, auth: { token: 'sim-token' }, limits: { requests: 100_000, windowSeconds: 86_400 }, ...crm },
    mappings: [
      { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { last_name: 'l' }, ...mapping },
    ],
  }).crm;
}
