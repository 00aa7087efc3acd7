/**
 * The change event: one row change, as captured, published to Kafka and consumed by sinks.
 * Values are typed (see row-codec.ts); `source` identifies the event: (lsn, seq) is unique and
 * stable across re-deliveries, so it is the idempotency key downstream.
 */
export type Op = 'c' | 'u' | 'd' | 'r';

export type Row = Record<string, unknown>;

export interface ChangeSource {
  /** Commit LSN of the transaction (`XXXXXXXX/XXXXXXXX`); snapshot rows carry the slot's consistent point. */
  lsn: string;
  /** Position of the event within its transaction (or snapshot): several rows share one LSN. */
  seq: number;
  xid: number;
  /** Commit time, microseconds since the Unix epoch. */
  commitTsMicros: bigint;
  schema: string;
  table: string;
  snapshot: boolean;
}

export interface ChangeEvent {
  op: Op;
  /** Primary key columns -> values. */
  key: Row;
  before: Row | null;
  after: Row | null;
  /** Columns whose value changed; null when PostgreSQL did not say (update without REPLICA IDENTITY FULL). */
  changed: string[] | null;
  /** TOASTed columns an update left untouched: absent from `after`, and NOT null. */
  unchanged: string[];
  source: ChangeSource;
}

/** The Kafka message key: the primary key as canonical JSON (column order of the table). */
export function encodeKey(key: Row): string {
  // The replacer costs a function call per value; keys without a bigint (most) go without it.
  for (const k in key) {
    if (typeof key[k] === 'bigint') return JSON.stringify(key, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  }
  return JSON.stringify(key);
}

export function eventId(source: ChangeSource): string {
  return `${source.lsn}:${source.seq}`;
}
