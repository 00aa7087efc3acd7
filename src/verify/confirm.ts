import type pg from 'pg';
import { quoteIdent, selectAsText } from '../capture/sql-identifiers.ts';
import { compareRecords } from './compare.ts';
import { mapRows, rowsByKey } from './rows.ts';
import type { ExpectedRecord, MappingCheck } from './verify.ts';

/**
 * The second look at what a first comparison found. Verify runs beside the connector: a row
 * changed or inserted just before PostgreSQL was read is on its way to the CRM, and a record
 * written just before the CRM was listed may have no row in the rows read earlier. Such drift
 * is gone a moment later. So after `settleMs` the candidates alone are read again, both sides
 * (their current rows; their records by external id), and only what still differs is drift.
 * A candidate changed again during the second look may still show; a later verify tells.
 *
 * Missing and stale candidates have a row: it is read again by its primary key and mapped in
 * JavaScript (rows.ts), so its external id is the sink's, whatever the column's type. Extra
 * candidates have no row to key by: a row inserted meanwhile is looked for by the external id
 * column's text and kept only if its mapped external id is the candidate (a `--delete-extras`
 * repair reads the row by key once more before it publishes a delete).
 */
export interface ConfirmReads {
  read(ids: string[]): Promise<Map<string, Record<string, unknown>>>;
}

/**
 * At most this many candidates are looked at again; beyond it the first look stands: that much
 * drift is not changes in flight, and a second look would spend the read budget again on it.
 */
export const MAX_CONFIRM = 50_000;

/** Rows whose external id column's text is one of `ids`, mapped; only those whose mapped id is one of `ids`. */
async function rowsWithIds(db: pg.Client, check: MappingCheck, ids: string[]): Promise<Map<string, ExpectedRecord>> {
  const { table, mapping } = check;
  const res = await db.query<(string | null)[]>({
    text: `SELECT ${selectAsText(table.columns)} FROM ${quoteIdent(table.schema)}.${quoteIdent(table.table)} WHERE format('%s', ${quoteIdent(mapping.externalId.column)}) = ANY ($1)`,
    values: [ids],
    rowMode: 'array',
  });
  const wanted = new Set(ids);
  return new Map([...mapRows(table, mapping, res.rows).expected].filter(([id]) => wanted.has(id)));
}

/** The check with only the drift that is still there after `settleMs`. */
export async function confirmDrift(db: pg.Client, check: MappingCheck, crm: ConfirmReads, settleMs: number): Promise<MappingCheck> {
  const { drift } = check;
  const candidates = [...new Set([...drift.missing, ...drift.stale.map((s) => s.externalId)])];
  const extras = drift.extra ?? [];
  if (candidates.length === 0 && extras.length === 0) return check;
  if (candidates.length + extras.length > MAX_CONFIRM) return check;
  if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
  const keys = candidates.map((id) => check.expected.get(id)?.key).filter((k) => k !== undefined);
  const rows = (await rowsByKey(db, check.table, check.mapping, keys)).expected;
  const newRows = extras.length > 0 ? await rowsWithIds(db, check, extras) : new Map<string, ExpectedRecord>();
  const records = await crm.read([...new Set([...candidates, ...rows.keys(), ...extras])]);
  const again = compareRecords(new Map([...rows].map(([id, r]) => [id, r.fields])), records, false);
  const expected = new Map(check.expected);
  for (const [id, r] of [...rows, ...newRows]) expected.set(id, r);
  const extra = drift.extra === undefined ? undefined : drift.extra.filter((id) => records.has(id) && !rows.has(id) && !newRows.has(id));
  return {
    ...check,
    expected,
    drift: { checked: drift.checked, missing: again.missing, stale: again.stale, extra },
  };
}
