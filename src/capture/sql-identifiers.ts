/** SQL identifier quoting (https://www.postgresql.org/docs/15/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `schema.table` -> `"schema"."table"`. */
export function quoteTable(qualified: string): string {
  const [schema, table] = qualified.split('.') as [string, string];
  return `${quoteIdent(schema)}.${quoteIdent(table)}`;
}
