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
  /**
   * The simulator's limit in this bench, and the connector's `crm.limits` (requests per window;
   * `concurrency`, calls in flight, where the CRM allows more than the connector's default 4).
   */
  limit: { requests: number; windowSeconds: number; concurrency?: number };
  /** How `limit` was derived from the documented limit (printed with the results). */
  scaling: string;
  token: string;
  /** Extra simulator options besides {port, limit, tokens}. */
  simulator?: Record<string, unknown>;
  /** Extra `crm` config keys (apiVersion, bulkThreshold, ...). */
  crm?: Record<string, unknown>;
  /** CRM object, external-id field and CRM field -> column of the bench table (id, first_name, last_name, email, company, n). */
  mapping: { object: string; externalIdField: string; fields: Record<string, string> };
  /** Records per window another limit allows, when it binds before the request limit (theoretical = the lower). */
  bound?: { recordsPerWindow: number; why: string };
  /** The documented (or field-reported) window when it is longer than the bench's 10 s: `bench:sink --real-windows` runs it. */
  real?: RealWindow;
}

export interface RealWindow {
  limit: { requests: number; windowSeconds: number; concurrency?: number };
  scaling: string;
  /** Extra simulator options at the real window (they replace `simulator`'s keys). */
  simulator?: Record<string, unknown>;
  /** Records per window another documented limit allows, when it binds before the request limit. */
  bound?: { recordsPerWindow: number; why: string };
}

/** The CRM at its real window (limit, scaling note and simulator options replaced), or undefined when it has none. */
export function realWindowCrm(crm: SinkBenchCrm): (SinkBenchCrm & { real: RealWindow }) | undefined {
  if (!crm.real) return undefined;
  return {
    ...crm,
    limit: crm.real.limit,
    scaling: crm.real.scaling,
    simulator: { ...crm.simulator, ...crm.real.simulator },
    bound: crm.real.bound,
    real: crm.real,
  };
}

export const sinkBenchCrms: SinkBenchCrm[] = [
  {
    kind: 'zendesk-sell',
    limit: { requests: 50, windowSeconds: 10 },
    // The lockout after a throttle stays as reported (Retry-After 3600 s): scaling it down would
    // hide the failure mode users hit (a sync that stops for an hour).
    scaling: 'documented 36,000/h (field report 200/min); bench 50 per 10 s; Retry-After 3600 s after a throttle, as reported (not scaled)',
    token: 'sim-token',
    real: {
      limit: { requests: 200, windowSeconds: 60 },
      scaling:
        "field report 200 per minute per account (the simulator's default; Sell documents 36,000/h per token, i.e. 600/min, so the field report is the stricter); Retry-After 3600 s after a throttle",
    },
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
    // 16 calls in flight (Dataverse allows 52): at the execution-time limit 4 calls' worth of
    // operations run at any moment, so the default 4 slots would leave no room for the gaps
    // between a partition's calls.
    limit: { requests: 200, windowSeconds: 10, concurrency: 16 },
    scaling:
      'documented 6,000 per 5 min sliding window, a $batch counting as one request, and 1,200 s of execution time per 5 min; bench 200 requests and 40 s of execution time per 10 s (same 20/s and 4 s/s), 100 ms per operation charged and spent answering (400 operations per window)',
    token: 'sim-token',
    // Microsoft documents the 1,200 s, not the time an operation takes: 100 ms is the simulator's
    // default. A $batch runs its operations in order, so its answer takes that long too.
    simulator: { executionSeconds: 40, executionMsPerOperation: 100, answerMsPerOperation: 100 },
    bound: { recordsPerWindow: 400, why: 'execution time: 40 s per 10 s at 100 ms per operation' },
    real: {
      limit: { requests: 6000, windowSeconds: 300, concurrency: 16 },
      scaling:
        'documented 6,000 requests per user per 5 min sliding window, a $batch counting as one request; 1,200 s of execution time per 5 min, 100 ms per operation charged and spent answering in the simulator (12,000 operations per window)',
      simulator: { executionSeconds: 1200, executionMsPerOperation: 100, answerMsPerOperation: 100 },
      bound: { recordsPerWindow: 12_000, why: 'execution time: 1,200 s per 5 min at 100 ms per operation' },
    },
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
