/**
 * The CRMs `bench:sink` measures: one entry per CRM, nothing else to change to add one. An entry
 * is used when `src/crm/<kind>/adapter.ts` and `simulator.ts` exist and `createAdapter` knows the
 * kind; otherwise the bench prints a "skipped" line for it.
 *
 * Limits are the documented ones scaled to a 10 s window, so a 30 s interval spans several
 * windows (reference/crm-apis.md for the documented figures).
 */
export interface SinkBenchCrm {
  kind: string;
  /** The simulator's limit in this bench, and the connector's `crm.limits` (requests per window). */
  limit: { requests: number; windowSeconds: number };
  /** How `limit` was derived from the documented limit (printed with the results). */
  scaling: string;
  token: string;
  /** Extra simulator options besides {port, limit, tokens}. */
  simulator?: Record<string, unknown>;
  /** Extra `crm` config keys (apiVersion, bulkThreshold, ...). */
  crm?: Record<string, unknown>;
  /** CRM object, external-id field and CRM field -> column of the bench table (id, first_name, last_name, email, company, n). */
  mapping: { object: string; externalIdField: string; fields: Record<string, string> };
}

export const sinkBenchCrms: SinkBenchCrm[] = [
  {
    kind: 'zendesk-sell',
    limit: { requests: 50, windowSeconds: 10 },
    // The lockout after a throttle stays as reported (Retry-After 3600 s): scaling it down would
    // hide the failure mode users hit (a sync that stops for an hour).
    scaling: 'documented 36,000/h (field report 200/min); bench 50 per 10 s; Retry-After 3600 s after a throttle, as reported (not scaled)',
    token: 'sim-token',
    mapping: {
      object: 'contacts',
      externalIdField: 'custom_fields.erp_id',
      fields: { first_name: 'first_name', last_name: 'last_name', email: 'email', 'custom_fields.n': 'n' },
    },
  },
  {
    kind: 'hubspot',
    limit: { requests: 100, windowSeconds: 10 },
    scaling: 'documented burst limit 100 per rolling 10 s (Free/Starter), used as is',
    token: 'sim-token',
    mapping: {
      object: 'contacts',
      externalIdField: 'erp_id',
      fields: { firstname: 'first_name', lastname: 'last_name', email: 'email', erp_n: 'n' },
    },
  },
  {
    kind: 'salesforce',
    limit: { requests: 50, windowSeconds: 10 },
    scaling:
      'documented as a rolling 24 h quota (100k + per licence); bench 50 per 10 s; sObject Collections (200 per call), Bulk API off (bulkThreshold 0)',
    token: 'sim-token',
    crm: { bulkThreshold: 0 },
    mapping: {
      object: 'Contact',
      externalIdField: 'ERP_Id__c',
      fields: { FirstName: 'first_name', LastName: 'last_name', Email: 'email', ERP_N__c: 'n' },
    },
  },
  {
    kind: 'dynamics',
    limit: { requests: 200, windowSeconds: 10 },
    scaling: 'documented 6,000 per 5 min sliding window, each $batch operation counting; bench 200 per 10 s (same 20/s)',
    token: 'sim-token',
    mapping: {
      object: 'contacts',
      externalIdField: 'erp_id',
      fields: { firstname: 'first_name', lastname: 'last_name', emailaddress1: 'email', erp_n: 'n' },
    },
  },
  {
    kind: 'zoho',
    limit: { requests: 100, windowSeconds: 10 },
    scaling:
      'documented as credits per rolling 24 h (1 credit per 10 records upserted); bench 100 credits per 10 s; upsert API (100 per call), Bulk Write off (bulkThreshold 0)',
    token: 'sim-token',
    crm: { bulkThreshold: 0 },
    mapping: {
      object: 'Contacts',
      externalIdField: 'ERP_Id',
      fields: { First_Name: 'first_name', Last_Name: 'last_name', Email: 'email', ERP_N: 'n' },
    },
  },
];
