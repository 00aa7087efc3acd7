import type { Client } from 'pg';
import { quoteTable } from '../capture/sql-identifiers.ts';
import { ConnectorError } from '../errors.ts';

/**
 * What `pg2crm plan` reads of the mapped tables in PostgreSQL: their size and how fast they
 * change, each with where the figure came from.
 */
export interface TableFigures {
  table: string;
  rows: number;
  /** `pg_class.reltuples` (the planner's estimate as of the last ANALYZE) or `count(*)` (exact). */
  rowsSource: 'pg_class.reltuples' | 'count(*)';
  /** Inserts + updates + deletes per second over the sample. */
  changesPerSecond: number;
  changesSource: string;
}

interface Counters {
  table: string;
  reltuples: number;
  changes: number;
}

/** The tables' reltuples and change counters (n_tup_ins + n_tup_upd + n_tup_del); names a missing table. */
async function readCounters(client: Client, tables: string[]): Promise<Map<string, Counters>> {
  const res = await client.query<{ table: string; reltuples: number; changes: string | null }>(
    `SELECT n.nspname || '.' || c.relname AS table, c.reltuples::float8 AS reltuples,
            (s.n_tup_ins + s.n_tup_upd + s.n_tup_del)::text AS changes
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
      WHERE c.relkind IN ('r', 'p') AND (n.nspname || '.' || c.relname) = ANY ($1)`,
    [tables],
  );
  const found = new Map(res.rows.map((r) => [r.table, { table: r.table, reltuples: r.reltuples, changes: Number(r.changes ?? 0) }]));
  const missing = tables.filter((t) => !found.has(t));
  if (missing.length) {
    throw new ConnectorError(
      'PLAN_TABLE_MISSING',
      missing
        .map((t) => `table ${t} does not exist in PostgreSQL at postgres.url; create it, or remove it from postgres.tables and mappings`)
        .join('\n'),
    );
  }
  return found;
}

/** Rows of a table: reltuples when ANALYZE has run on a non-empty table, else an exact count. */
async function rowsOf(client: Client, c: Counters): Promise<Pick<TableFigures, 'rows' | 'rowsSource'>> {
  // -1: never analyzed (PostgreSQL 14+); 0: analyzed while empty, or a small table never
  // vacuumed. Both say nothing of the rows now, and such tables are usually small to count.
  if (c.reltuples >= 1) return { rows: Math.round(c.reltuples), rowsSource: 'pg_class.reltuples' };
  const res = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${quoteTable(c.table)}`);
  return { rows: Number(res.rows[0]!.n), rowsSource: 'count(*)' };
}

/**
 * Sizes and change rates of `tables`: the change counters of pg_stat_user_tables sampled twice,
 * `sampleSeconds` apart (`sleep` waits; injectable for tests).
 */
export async function readTableFigures(
  client: Client,
  tables: string[],
  sampleSeconds: number,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
): Promise<TableFigures[]> {
  const before = await readCounters(client, tables);
  const started = performance.now();
  await sleep(sampleSeconds * 1000);
  // Statistics are flushed by each backend at most once a second; clear this session's snapshot.
  await client.query('SELECT pg_stat_clear_snapshot()');
  const after = await readCounters(client, tables);
  const seconds = (performance.now() - started) / 1000;
  const out: TableFigures[] = [];
  for (const t of tables) {
    const a = after.get(t)!;
    const b = before.get(t)!;
    out.push({
      table: t,
      ...(await rowsOf(client, a)),
      changesPerSecond: Math.max(0, a.changes - b.changes) / seconds,
      changesSource: `pg_stat_user_tables n_tup_ins+n_tup_upd+n_tup_del over ${seconds.toFixed(1)} s`,
    });
  }
  return out;
}
