import type { MappingConfig } from '../config.ts';
import type { CrmWrite } from '../crm/crm-adapter.ts';
import { ConnectorError } from '../errors.ts';
import type { ChangeEvent, Row } from '../events/change-event.ts';
import { PgDate, PgDecimal, PgTime, PgTimestamp } from '../events/pg-values.ts';
import { avroName } from '../events/row-codec.ts';

/**
 * Maps a change event to the CRM write its mapping asks for, or to null when the mapping says
 * to do nothing (a delete with `onDelete: ignore`). Columns an update left untouched (unchanged
 * TOAST values) are left out of the write: sending them would overwrite the CRM with null.
 */

/**
 * A column value as CRM APIs take it in JSON:
 * - int8: a number when within ±2^53 (exact in every JSON parser), else its decimal string;
 * - numeric: a number when it has at most 15 significant digits (DBL_DIG: every such decimal
 *   survives the CRM's parse into a double and back), else the exact decimal string, e.g.
 *   1234.56 -> 1234.56 but 12345678901234567.89 -> "12345678901234567.89"; NaN stays "NaN";
 * - date: "YYYY-MM-DD"; timestamp: "YYYY-MM-DDTHH:MM:SS.ffffff", timestamptz the same in UTC
 *   with "Z"; time: "HH:MM:SS.ffffff" (ISO 8601, microseconds kept; years outside 0000-9999 in
 *   the expanded ±YYYYYY form);
 * - ±infinity dates and timestamps: null, as a CRM date field has no infinity and an empty
 *   field is the nearest meaning of "no end"; float NaN and ±Infinity: null (JSON has none);
 * - bytea: base64; everything else (text, uuid, json, enums, arrays, intervals) as it is.
 */
export function toCrmValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (v instanceof PgDecimal) {
    const n = Number(v.toString());
    return v.significantDigits() <= 15 && Number.isFinite(n) && (n !== 0 || v.unscaled === 0n) ? n : v.toString();
  }
  if (v instanceof PgDate || v instanceof PgTimestamp || v instanceof PgTime) return v.toIso();
  return v;
}

function column(row: Row, name: string, mapping: MappingConfig, what: string): unknown {
  const key = avroName(name);
  if (!(key in row)) {
    throw new ConnectorError(
      'MAPPING_COLUMN_MISSING',
      `mapping for ${mapping.table}: ${what} column ${name} is not in the table's change events; fix mappings[].${what} or the table`,
    );
  }
  return row[key];
}

/**
 * False for an update that, by PostgreSQL's own account (REPLICA IDENTITY FULL lists the changed
 * columns), changed none of the columns the mapping reads: there is nothing to send. Without
 * FULL the changed columns are unknown and every update counts.
 */
export function touchesMapping(event: ChangeEvent, mapping: MappingConfig): boolean {
  if (event.op !== 'u' || event.changed === null) return true;
  const changed = new Set(event.changed);
  const read = [mapping.externalId.column, ...Object.values(mapping.fields), ...Object.values(mapping.lookups).map((l) => l.column)];
  return read.some((c) => changed.has(avroName(c)));
}

/**
 * The lookup column's value in the old row, as an external id: only an update whose event
 * carries the old row (REPLICA IDENTITY FULL) knows it. A null old value means there was no link.
 */
function previousRef(event: ChangeEvent, col: string): string | undefined {
  if (event.op !== 'u' || !event.before) return undefined;
  const old = event.before[avroName(col)];
  return old === null || old === undefined ? undefined : String(toCrmValue(old));
}

/**
 * A delete's lookup targets, from its old row (only with REPLICA IDENTITY FULL does it carry the
 * lookup columns): the links the deleted record had, which a re-insert folded over the delete
 * must remove in a many-to-many CRM (see compactor.ts).
 */
export function heldLookups(event: ChangeEvent, mapping: MappingConfig): Record<string, string> | undefined {
  if (event.op !== 'd' || !event.before) return undefined;
  const held: Record<string, string> = {};
  for (const [field, lookup] of Object.entries(mapping.lookups)) {
    const old = event.before[avroName(lookup.column)];
    if (old !== null && old !== undefined) held[field] = String(toCrmValue(old));
  }
  return Object.keys(held).length ? held : undefined;
}

export function mapEvent(event: ChangeEvent, mapping: MappingConfig): CrmWrite | null {
  const source = event.after ?? event.before ?? event.key;
  const idValue = column({ ...event.key, ...source }, mapping.externalId.column, mapping, 'externalId');
  if (idValue === null || idValue === undefined) {
    throw new ConnectorError(
      'EXTERNAL_ID_NULL',
      `mapping for ${mapping.table}: externalId column ${mapping.externalId.column} is NULL; use a NOT NULL column`,
    );
  }
  const base = {
    object: mapping.object,
    externalIdField: mapping.externalId.field,
    externalId: String(toCrmValue(idValue)),
  };
  if (event.op === 'd') {
    if (mapping.onDelete === 'ignore') return null;
    if (mapping.onDelete === 'delete') return { ...base, op: 'delete', fields: {} };
    return { ...base, op: 'upsert', fields: { ...mapping.onDelete.set } };
  }
  const after = event.after ?? {};
  const untouched = new Set(event.unchanged);
  const fields: Record<string, unknown> = {};
  for (const [field, col] of Object.entries(mapping.fields)) {
    if (untouched.has(avroName(col))) continue;
    fields[field] = toCrmValue(column(after, col, mapping, 'fields'));
  }
  const write: CrmWrite = { ...base, op: 'upsert', fields };
  const lookups = Object.entries(mapping.lookups);
  if (lookups.length) {
    write.lookups = {};
    for (const [field, lookup] of lookups) {
      const ref = column(after, lookup.column, mapping, 'lookups');
      // A NULL column clears the lookup: the CRM must equal the row, whatever it pointed to before.
      const externalId = ref === null ? null : String(toCrmValue(ref));
      write.lookups[field] = { object: lookup.object, externalIdField: lookup.externalIdField, externalId };
      const previous = previousRef(event, lookup.column);
      if (previous !== undefined && previous !== externalId) write.lookups[field].previousExternalId = previous;
    }
  }
  return write;
}
