/**
 * The CSV dialect of Salesforce Bulk API 2.0 jobs created with the defaults
 * (`columnDelimiter: COMMA`, `lineEnding: LF`): RFC 4180 quoting, a header row of field names.
 * https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm
 * Bulk API semantics of a cell: empty = leave the field as it is, `#N/A` = set it to null.
 */
export const CSV_NULL = '#N/A';

function quote(cell: string): string {
  return /[",\r\n]/.test(cell) || cell !== cell.trim() ? `"${cell.replaceAll('"', '""')}"` : cell;
}

/** Rows of cells -> CSV text, LF line endings. */
export function toCsv(header: string[], rows: string[][]): string {
  return [header, ...rows].map((row) => row.map(quote).join(',')).join('\n') + '\n';
}

/** CSV text -> rows of cells (quoted cells may hold commas, quotes and line breaks). */
export function parseCsvRows(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 2;
        continue;
      }
      if (c === '"') quoted = false;
      else cell += c;
      i++;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += c;
    i++;
  }
  if (cell !== '' || row.length > 0) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

/** CSV text with a header row -> the header and one object per row (header name -> cell). */
export function parseCsv(text: string): { header: string[]; rows: Record<string, string>[] } {
  const [header = [], ...rest] = parseCsvRows(text);
  const rows = rest.map((cells) => Object.fromEntries(header.map((h, i) => [h, cells[i] ?? ''])));
  return { header, rows };
}
