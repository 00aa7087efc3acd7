/** Topic per table: `<topicPrefix>.<schema>.<table>`, as the contract says. */
export function topicFor(prefix: string, schema: string, table: string): string {
  return `${prefix}.${schema}.${table}`;
}

/** `schema.table` as written in the config. */
export function qualifiedName(schema: string, table: string): string {
  return `${schema}.${table}`;
}
