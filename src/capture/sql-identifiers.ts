/** SQL identifier quoting (https://www.postgresql.org/docs/15/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `schema.table` -> `"schema"."table"`. */
export function quoteTable(qualified: string): string {
  const [schema, table] = qualified.split('.') as [string, string];
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}

/**
 * Select-list rendering each column with its type's output function, exactly as pgoutput sends
 * values (format('%s') does; `::text` does not: bool::text is 'true', inet::text adds the
 * netmask). NULL stays NULL.
 */
export function selectAsText(columns: { name: string }[]): string {
  return columns.map((c) => `CASE WHEN ${quoteIdent(c.name)} IS NULL THEN NULL ELSE format('%s', ${quoteIdent(c.name)}) END`).join(', ');
}
