import pg from 'pg';
import type { ChangeEvent } from '../events/change-event.ts';
import { buildSnapshotRow, type TxContext } from './change-builder.ts';
import { quoteIdent, selectAsText } from './sql-identifiers.ts';
import type { TableInfo } from './table-catalog.ts';

/**
 * Reads the tables as of the slot's exported snapshot, so that snapshot rows plus the stream
 * that starts at the slot's consistent point hold every change exactly once.
 * https://www.postgresql.org/docs/15/sql-set-transaction.html (SET TRANSACTION SNAPSHOT)
 *
 * Keyset paging on the primary key keeps memory at one chunk whatever the table's size.
 */
export interface SnapshotProgress {
  table: TableInfo;
  rows: number;
  /** Rows of all tables as estimated by the planner statistics (pg_class.reltuples). */
  estimatedTotal: number;
  done: number;
}

export async function readSnapshot(
  url: string,
  snapshotName: string,
  consistentPoint: string,
  tables: TableInfo[],
  chunkRows: number,
  onChunk: (events: ChangeEvent[], progress: SnapshotProgress) => Promise<void>,
): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let total = 0;
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await client.query(`SET TRANSACTION SNAPSHOT '${snapshotName.replace(/'/g, "''")}'`);
    const tx: TxContext = { lsn: consistentPoint, xid: 0, commitTsMicros: BigInt(Date.now()) * 1000n, seq: 0 };
    const estimate = await client.query<{ n: string }>(
      `SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint::text AS n FROM pg_class WHERE oid = ANY ($1::regclass[])`,
      [tables.map((t) => `${quoteIdent(t.schema)}.${quoteIdent(t.table)}`)],
    );
    const estimatedTotal = Number(estimate.rows[0]?.n ?? 0);
    for (const table of tables) {
      const from = `${quoteIdent(table.schema)}.${quoteIdent(table.table)}`;
      const select = selectAsText(table.columns);
      const pk = table.primaryKey.map(quoteIdent);
      const pkTypes = table.primaryKey.map((k) => table.columns.find((c) => c.name === k)?.typeName ?? 'text');
      const pkIndexes = table.primaryKey.map((k) => table.columns.findIndex((c) => c.name === k));
      let last: (string | null)[] | null = null;
      for (;;) {
        const where = last ? `WHERE (${pk.join(', ')}) > (${pkTypes.map((t, i) => `$${i + 1}::${t}`).join(', ')})` : '';
        const res: pg.QueryArrayResult<(string | null)[]> = await client.query({
          text: `SELECT ${select} FROM ${from} ${where} ORDER BY ${pk.join(', ')} LIMIT ${chunkRows}`,
          values: last ?? [],
          rowMode: 'array',
        });
        if (res.rows.length === 0) break;
        const events = res.rows.map((texts) => buildSnapshotRow(table, texts, tx));
        total += events.length;
        await onChunk(events, { table, rows: events.length, estimatedTotal: Math.max(estimatedTotal, total), done: total });
        const lastRow = res.rows[res.rows.length - 1]!;
        last = pkIndexes.map((i) => lastRow[i] ?? null);
        if (res.rows.length < chunkRows) break;
      }
    }
    await client.query('COMMIT');
  } finally {
    await client.end();
  }
  return total;
}
