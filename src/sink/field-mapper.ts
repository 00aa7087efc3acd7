import type { MappingConfig } from '../config.ts';
import type { CrmWrite } from '../crm/crm-adapter.ts';
import { ConnectorError } from '../errors.ts';
import type { ChangeEvent, Row } from '../events/change-event.ts';
import { avroName } from '../events/row-codec.ts';

/**
 * Maps a change event to the CRM write its mapping asks for, or to null when the mapping says
 * to do nothing (a delete with `onDelete: ignore`). Columns an update left untouched (unchanged
 * TOAST values) are left out of the write: sending them would overwrite the CRM with null.
 */
export function toCrmValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Buffer.isBuffer(v)) return v.toString('base64');
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

export function mapEvent(event: ChangeEvent, mapping: MappingConfig): CrmWrite | null {
  const source = event.after ?? event.before ?? event.key;
  const idValue = column({ ...event.key, ...source }, mapping.externalId.column, mapping, 'externalId');
  if (idValue === null || idValue === undefined) {
    throw new ConnectorError('EXTERNAL_ID_NULL', `mapping for ${mapping.table}: externalId column ${mapping.externalId.column} is NULL; use a NOT NULL column`);
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
      if (ref === null) continue;
      write.lookups[field] = { object: lookup.object, externalIdField: lookup.externalIdField, externalId: String(toCrmValue(ref)) };
    }
  }
  return write;
}
