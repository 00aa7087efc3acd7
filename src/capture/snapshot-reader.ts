import type pg from 'pg';
import { openPg, type PgTarget } from './pg-connect.ts';
import type { ChangeEvent } from '../events/change-event.ts';
import { buildSnapshotRow, type TxContext } from './change-builder.ts';
import { quoteIdent, selectAsText } from './sql-identifiers.ts';
import type { TableInfo } from './table-catalog.ts';

/**
 * Reads the tables as of the slot's exported snapshot, so that snapshot rows plus the stream
 * that starts at the slot's consistent point hold every change exactly once.
 * https://www.postgresql.org/docs/15/sql-set-transaction.html (SET TRANSACTION SNAPSHOT)
 *
 * Keyset paging on the primary key keeps memory at one chunk whatever the table's size. The
 * same chunk query serves the watermark-based incremental snapshot (incremental-snapshot.ts), so
 * both render rows identically.
 */
export interface SnapshotProgress {
  table: TableInfo;
  rows: number;
  /** Rows of all tables as estimated by the planner statistics (pg_class.reltuples). */
  estimatedTotal: number;
  done: number;
  /** Primary key (text form) of the chunk's last row: where a resumed snapshot continues. */
  lastKey: (string | null)[];
}

/** Text rows in table column order. */
export type TextRow = (string | null)[];

/**
 * One keyset page: rows with primary key > `after` (all rows when null), in key order. Key values
 * travel as the text output of their type and are cast back with the column's own type.
 */
export async function selectChunk(client: pg.Client, table: TableInfo, after: (string | null)[] | null, limit: number): Promise<TextRow[]> {
  const from = `${quoteIdent(table.schema)}.${quoteIdent(table.table)}`;
  const pk = table.primaryKey.map(quoteIdent);
  const pkTypes = table.primaryKey.map((k) => table.columns.find((c) => c.name === k)?.typeName ?? 'text');
  const where = after ? `WHERE (${pk.join(', ')}) > (${pkTypes.map((t, i) => `$${i + 1}::${t}`).join(', ')})` : '';
  const res: pg.QueryArrayResult<TextRow> = await client.query({
    text: `SELECT ${selectAsText(table.columns)} FROM ${from} ${where} ORDER BY ${pk.join(', ')} LIMIT ${limit}`,
    values: after ?? [],
    rowMode: 'array',
  });
  return res.rows;
}

/** The primary key of a text row, as stored in the snapshot progress. */
export function keyTexts(table: TableInfo, row: TextRow): (string | null)[] {
  return table.primaryKey.map((k) => row[table.columns.findIndex((c) => c.name === k)] ?? null);
}

/** Planner estimate of the rows of `tables` (pg_class.reltuples; 0 when never analysed). */
export async function estimateRows(client: pg.Client, tables: TableInfo[]): Promise<number> {
  const estimate = await client.query<{ n: string }>(
    `SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint::text AS n FROM pg_class WHERE oid = ANY ($1::regclass[])`,
    [tables.map((t) => `${quoteIdent(t.schema)}.${quoteIdent(t.table)}`)],
  );
  return Number(estimate.rows[0]?.n ?? 0);
}

export async function readSnapshot(
  url: PgTarget,
  snapshotName: string,
  consistentPoint: string,
  tables: TableInfo[],
  chunkRows: number,
  onChunk: (events: ChangeEvent[], progress: SnapshotProgress) => Promise<void>,
): Promise<number> {
  const client = await openPg(url);
  let total = 0;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await client.query(`SET TRANSACTION SNAPSHOT '${snapshotName.replace(/'/g, "''")}'`);
    const tx: TxContext = { lsn: consistentPoint, xid: 0, commitTsMicros: BigInt(Date.now()) * 1000n, seq: 0 };
    const estimatedTotal = await estimateRows(client, tables);
    for (const table of tables) {
      let last: (string | null)[] | null = null;
      for (;;) {
        const rows = await selectChunk(client, table, last, chunkRows);
        if (rows.length === 0) break;
        const events = rows.map((texts) => buildSnapshotRow(table, texts, tx));
        total += events.length;
        last = keyTexts(table, rows[rows.length - 1]!);
        await onChunk(events, { table, rows: events.length, estimatedTotal: Math.max(estimatedTotal, total), done: total, lastKey: last });
        if (rows.length < chunkRows) break;
      }
    }
    await client.query('COMMIT');
  } finally {
    await client.end();
  }
  return total;
}
