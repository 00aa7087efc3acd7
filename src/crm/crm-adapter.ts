import { ConnectorError, type ErrorKind } from '../errors.ts';

/**
 * What the sink hands a CRM adapter and what it gets back. Adapters map these to the CRM's own
 * requests; they never retry or sleep themselves: throttles and transient failures surface as
 * results (per record) or as a retriable ConnectorError (whole call), and the sink decides.
 */

/** One record to write, already mapped to CRM field names. */
export interface CrmWrite {
  op: 'upsert' | 'delete';
  /** CRM object, e.g. `contacts`. */
  object: string;
  /** CRM field that holds the ERP key, e.g. `custom_fields.erp_id`. */
  externalIdField: string;
  externalId: string;
  /** CRM field -> value. Fields named `custom_fields.<name>` are custom fields. */
  fields: Record<string, unknown>;
  /**
   * CRM fields whose value is the CRM id of another record, found by that record's external id
   * (e.g. a deal's `contact_id` from the order's customer key).
   */
  lookups?: Record<string, CrmLookup>;
}

/** A lookup: the CRM record another record points to, named by its external id. */
export interface CrmLookup {
  object: string;
  externalIdField: string;
  /**
   * null: the lookup column is NULL, so the record points to nothing and the CRM's lookup must
   * be cleared (a lookup left out of the write would keep pointing to the old target).
   */
  externalId: string | null;
  /**
   * The external id this lookup pointed to in the CRM before this write, when known (the change
   * carried the old row, i.e. REPLICA IDENTITY FULL) and different from `externalId`. CRMs whose
   * links are many-to-many (HubSpot associations) need it to remove the old link; CRMs that
   * overwrite a single-valued lookup field ignore it.
   */
  previousExternalId?: string;
  /**
   * Other targets this record may be linked to in the CRM: those its changes named inside the
   * compacted window (and a deleted row's target when the window folded the delete into a
   * re-insert). A redelivered window may have linked any of them already (at-least-once), and a
   * folded delete never removed the old links. Many-to-many CRMs remove these links too; CRMs
   * that overwrite a single-valued lookup field ignore them.
   */
  staleExternalIds?: string[];
}

export type WriteOutcome =
  | { status: 'done'; crmId?: string; created?: boolean }
  /**
   * Transient: try the same record again later (after `retryAfterSeconds` when given). `kind`
   * says why, for the sink's retry policy: a `throttle` is the CRM's budget, never the record's
   * fault, and never counts as an attempt; `server` and `bad-response` count toward the circuit
   * breaker.
   */
  | { status: 'retry'; code: string; message: string; retryAfterSeconds?: number; kind?: RetryKind }
  /** Permanent: the CRM rejected this record (validation); dead-letter it. */
  | { status: 'rejected'; code: string; message: string; field?: string };

/** An object and the field that holds the external id, as the mappings and lookups name them. */
export interface CrmTarget {
  object: string;
  externalIdField: string;
}

/**
 * Why a record must be tried again. Absent: the record's own transient trouble (a locked row),
 * which counts as an attempt. `server`, `unreachable`, `timeout` and `bad-response` mean the CRM
 * itself is failing and feed the circuit breaker; `pending` is a lookup whose target is not
 * written yet.
 */
export type RetryKind = 'throttle' | 'server' | 'unreachable' | 'timeout' | 'bad-response' | 'pending';

/** What the CRM told us about its budget on the last response. */
export interface RateSignal {
  /** Requests left in the current window, when the CRM says (X-RateLimit-Remaining, ...). */
  remaining?: number;
  /** Left of the daily quota, when the CRM says (Sforce-Limit-Info, X-HubSpot-RateLimit-Daily-Remaining, X-API-CREDITS-REMAINING). */
  dailyRemaining?: number;
  /** The CRM throttled us; wait this long (seconds) before the next request. */
  retryAfterSeconds?: number;
  throttled?: boolean;
  /**
   * Requests the adapter made that `cost()` did not announce (HubSpot splitting a batch it
   * refused whole, reading a property definition or the daily reset): the budget counts them as
   * spent, in the window and in the daily quota.
   */
  extraRequests?: number;
}

export interface CrmAdapter {
  readonly kind: string;
  /** Largest number of records one call may carry for `object` (1 = single-record API). */
  maxBatchSize(object: string): number;
  /**
   * Writes the records; returns one outcome per record, in order. Calls `onSignal` with the rate
   * information of every response. Throws a ConnectorError for failures of the whole call
   * (retriable: network, 5xx, throttle; permanent: auth).
   */
  write(records: CrmWrite[], onSignal: (signal: RateSignal) => void): Promise<WriteOutcome[]>;
  /** Requests that `write(records)` will spend (used by the rate budget before calling). */
  cost(records: CrmWrite[]): number;
  /**
   * What `write(records)` spends of the daily quota (`limits.daily`), in the CRM's unit: Zoho
   * credits (1 per 10 records, 500 per Bulk Write job); calls elsewhere. Default: `cost`.
   */
  dailyCost?(records: CrmWrite[]): number;
  /**
   * Changes what `cost` counts as a quick, successful `write(records)` would, without sending
   * anything: `pg2crm plan` replays the sink's calls with it (Dynamics starts its $batch
   * requests small and grows them while they stay fast). Absent: `cost` never changes.
   */
  warm?(records: CrmWrite[]): void;
  /**
   * Combined execution time (seconds) the CRM allows one credential per window of
   * `windowSeconds`, when it limits that besides requests (Dataverse: 1,200 s per 5 minutes).
   * The sink then counts its calls' durations against it (execution-meter.ts);
   * `crm.limits.executionSeconds` overrides it. Absent: no such limit.
   */
  executionSeconds?(windowSeconds: number): number;
  /**
   * Seconds `write(records)` waits for asynchronous bulk jobs to finish, under the same
   * assumptions `cost` counts their polls with (for `pg2crm plan`). Absent: no such waits.
   */
  jobSeconds?(records: CrmWrite[]): number;
  /**
   * Drops what the adapter remembers of the CRM (ids, links; see crm-caches.ts). The sink calls
   * it on every rebalance: another instance may have written these partitions' records meanwhile.
   */
  forget?(): void;
  /** Verifies the credentials with one cheap request (used by `pg2crm check`). */
  ping(): Promise<void>;
  /** The credential's token as `check` reports it: its flow and expiry (e.g. "client_credentials token, expires in 59m58s"). */
  describeAuth?(): string;
  /**
   * What the CRM must have for these writes to work, read from the CRM (used by `pg2crm check`):
   * e.g. HubSpot id properties with unique values, Zendesk Sell external-id fields that are
   * filterable. One line per check: `ok` false means the connector would fail, `detail` says
   * what was found and how to fix it.
   */
  preflight?(targets: CrmTarget[]): Promise<{ name: string; ok: boolean; detail: string }[]>;
  /**
   * Most external ids one `readByExternalIds` call takes (`pg2crm verify`); every such call is
   * one request of the CRM's quota. With the two read methods below; absent: verify refuses.
   */
  readBatchSize?(object: string): number;
  /**
   * The records holding these external ids (at most `readBatchSize`), in ONE request: external
   * id -> the `fields` (pg2crm's field names, e.g. `custom_fields.company`) as the CRM holds
   * them. Ids without a record are absent. Throws a ThrottledCall (after `onSignal`) when the
   * CRM throttles, another ConnectorError when the call fails.
   */
  readByExternalIds?(
    target: CrmTarget,
    ids: string[],
    fields: string[],
    onSignal: (signal: RateSignal) => void,
  ): Promise<Map<string, Record<string, unknown>>>;
  /**
   * One page (ONE request) of the records of `target.object` that hold an external id, from
   * `cursor` (undefined: the first page); `next` absent on the last page. For `pg2crm verify`'s
   * full check: records in the CRM with no row in PostgreSQL ("extra").
   */
  listRecords?(
    target: CrmTarget,
    fields: string[],
    cursor: string | undefined,
    onSignal: (signal: RateSignal) => void,
  ): Promise<CrmReadPage>;
  close(): Promise<void>;
}

/** A page of records as `listRecords` reads them. */
export interface CrmReadPage {
  records: { externalId: string; fields: Record<string, unknown> }[];
  /** Where the next page starts (an offset, a page number, a vendor's cursor); absent on the last page. */
  next?: string;
}

/** The retry kind of each error kind that means the CRM itself (or its budget) is the trouble. */
const RETRY_KIND_OF: Partial<Record<ErrorKind, RetryKind>> = {
  throttle: 'throttle',
  server: 'server',
  unreachable: 'unreachable',
  timeout: 'timeout',
  'bad-response': 'bad-response',
};

/**
 * A whole-call failure as the outcome of the records it left undecided (an adapter that settled
 * part of a call keeps those outcomes and gives the rest this one). The kind comes from the
 * error's kind, never from its code's spelling; an error of another kind (a TLS trust refusal
 * retried) gets none. Undefined when the error is not a retriable ConnectorError: that one
 * fails the call.
 */
export function retryOutcomeOf(err: unknown): Extract<WriteOutcome, { status: 'retry' }> | undefined {
  if (!(err instanceof ConnectorError) || !err.retriable) return undefined;
  const kind = RETRY_KIND_OF[err.kind];
  return {
    status: 'retry',
    code: err.code,
    message: err.message,
    ...(kind ? { kind } : {}),
    ...(err.retryAfterSeconds !== undefined ? { retryAfterSeconds: err.retryAfterSeconds } : {}),
  };
}
