import type { Client } from 'pg';
import { ConnectorError } from '../errors.ts';
import type { ColumnShape } from '../events/row-codec.ts';
import { resolveDomains } from './type-resolver.ts';

/** What pg2crm needs to know of a captured table, read from pg_catalog. */
export interface TableInfo {
  schema: string;
  table: string;
  columns: ColumnShape[];
  /** Primary key columns in key order: the Kafka message key. */
  primaryKey: string[];
  /** d = default (primary key), n = nothing, f = full, i = index. */
  replicaIdentity: string;
}

/**
 * Reads columns, primary key and replica identity of each table, and fails with a message
 * saying how to fix a table pg2crm cannot capture (missing, or no key to identify rows by).
 */
export async function describeTables(client: Client, tables: string[]): Promise<Map<string, TableInfo>> {
  const res = await client.query<{
    schema: string;
    table: string;
    relreplident: string;
    columns: { name: string; typeOid: number; typeMod: number; typeName: string }[] | null;
    pk: string[] | null;
  }>(
    `SELECT n.nspname AS schema, c.relname AS table, c.relreplident,
            (SELECT json_agg(json_build_object('name', a.attname, 'typeOid', a.atttypid::int8, 'typeMod', a.atttypmod, 'typeName', format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
               FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
            (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
               FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
              WHERE i.indrelid = c.oid AND i.indisprimary) AS pk
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND (n.nspname || '.' || c.relname) = ANY ($1)`,
    [tables],
  );
  const found = new Map<string, TableInfo>();
  for (const row of res.rows) {
    found.set(`${row.schema}.${row.table}`, {
      schema: row.schema,
      table: row.table,
      columns: row.columns ?? [],
      primaryKey: row.pk ?? [],
      replicaIdentity: row.relreplident,
    });
  }
  await resolveDomains(
    client,
    [...found.values()].flatMap((t) => t.columns),
  );
  const problems: string[] = [];
  for (const t of tables) {
    const info = found.get(t);
    if (!info) problems.push(`table ${t} does not exist; create it or remove it from postgres.tables`);
    else if (info.primaryKey.length === 0) {
      problems.push(`table ${t} has no primary key; add one (ALTER TABLE ${t} ADD PRIMARY KEY (...)) so changes can be keyed per record`);
    }
  }
  if (problems.length) throw new ConnectorError('TABLE_NOT_CAPTURABLE', problems.join('\n'));
  return found;
}
