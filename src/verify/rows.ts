import type pg from 'pg';
import { buildSnapshotRow } from '../capture/change-builder.ts';
import { quoteIdent, selectAsText } from '../capture/sql-identifiers.ts';
import type { TableInfo } from '../capture/table-catalog.ts';
import type { MappingConfig } from '../config.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import type { Row } from '../events/change-event.ts';
import { avroName } from '../events/row-codec.ts';
import { mapEvent } from '../sink/field-mapper.ts';
import type { ExpectedRecord, MappingCheck } from './verify.ts';

/**
 * PostgreSQL's rows as verify compares them: read as text (selectAsText) and mapped in
 * JavaScript by the sink's own mapping (mapEvent), so an external id is exactly the one the sink
 * writes (`String(toCrmValue(v))`), never PostgreSQL's text of the column: for numeric with a
 * scale, timestamps or bytea the two differ.
 */
export interface MappedRows {
  expected: Map<string, ExpectedRecord>;
  /** Rows that map to no CRM record (their external id column is NULL): key and why. */
  unmappable: MappingCheck['unmappable'];
}

/** Rows in selectAsText's column order, mapped as the sink maps them. */
export function mapRows(table: TableInfo, mapping: MappingConfig, rows: (string | null)[][]): MappedRows {
  const tx = { lsn: '0/0', xid: 0, commitTsMicros: 0n, seq: 0 };
  const expected = new Map<string, ExpectedRecord>();
  const unmappable: MappedRows['unmappable'] = [];
  for (const texts of rows) {
    const event = buildSnapshotRow(table, texts, tx);
    try {
      const write = mapEvent(event, mapping);
      if (write) expected.set(write.externalId, { key: event.key, fields: write.fields });
    } catch (err) {
      if (!(err instanceof ConnectorError) || err.kind !== 'data') throw err;
      unmappable.push({ key: event.key, reason: errorMessage(err) });
    }
  }
  return { expected, unmappable };
}

/** Primary keys per query when rows are re-read by key: one array parameter per key column. */
const KEYS_PER_QUERY = 1_000;

/**
 * The current rows of these primary keys (as event keys hold them), mapped. A key whose row is
 * gone is absent. Keys are sent as text and cast to the column's type, as CurrentRowPublisher
 * reads a row.
 */
export async function rowsByKey(db: pg.Client, table: TableInfo, mapping: MappingConfig, keys: Row[]): Promise<MappedRows> {
  const out: MappedRows = { expected: new Map(), unmappable: [] };
  const typeOf = (k: string) => table.columns.find((c) => c.name === k)?.typeName ?? 'text';
  const pk = table.primaryKey;
  const text =
    `SELECT ${selectAsText(table.columns)} FROM ${quoteIdent(table.schema)}.${quoteIdent(table.table)}` +
    ` WHERE (${pk.map(quoteIdent).join(', ')}) IN (SELECT ${pk.map((k, i) => `u.k${i}::${typeOf(k)}`).join(', ')}` +
    ` FROM unnest(${pk.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${pk.map((_, i) => `k${i}`).join(', ')}))`;
  for (let i = 0; i < keys.length; i += KEYS_PER_QUERY) {
    const chunk = keys.slice(i, i + KEYS_PER_QUERY);
    const res = await db.query<(string | null)[]>({
      text,
      values: pk.map((k) => chunk.map((key) => String(key[avroName(k)]))),
      rowMode: 'array',
    });
    const mapped = mapRows(table, mapping, res.rows);
    for (const [id, r] of mapped.expected) out.expected.set(id, r);
    out.unmappable.push(...mapped.unmappable);
  }
  return out;
}
