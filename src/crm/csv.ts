/**
 * The one CSV codec of the bulk paths: Salesforce Bulk API 2.0 and Zoho Bulk Write. Both read
 * RFC 4180 CSV (https://www.rfc-editor.org/rfc/rfc4180): a header row of field names, comma
 * delimiters, a field holding the delimiter, a quote or a line break quoted, quotes doubled.
 *
 * What the vendors document beyond that, and how it is met here:
 * - Line endings: Salesforce takes LF or CRLF, the one named in the job's `lineEnding` (default
 *   LF) (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm);
 *   Zoho names none and detects the delimiter from the header
 *   (https://www.zoho.com/crm/developer/docs/api/bulk-write/limitations.html); RFC 4180 says CRLF.
 *   So the line ending is the one option: `SALESFORCE_CSV` (LF, as its jobs are created) and
 *   `ZOHO_CSV` (CRLF). The parser reads either, and skips a byte-order mark.
 * - Whitespace: Salesforce keeps spaces around a value as part of it, but refuses a row with
 *   spaces outside a quoted value (same page). A value with leading or trailing whitespace is
 *   quoted whole, which keeps the spaces under any reading, for both vendors.
 * - Empty and null cells mean different things per vendor (Salesforce: empty keeps the field,
 *   `#N/A` clears it): that is the adapter's business when it makes the cell, not the codec's.
 */
export interface CsvDialect {
  lineEnding: '\n' | '\r\n';
}

/** Salesforce Bulk API 2.0 jobs created with `lineEnding: LF`. */
export const SALESFORCE_CSV: CsvDialect = { lineEnding: '\n' };
/** Salesforce Bulk API's cell that sets a field to null (an empty cell leaves the field as it is). */
export const SALESFORCE_CSV_NULL = '#N/A';
/** Zoho Bulk Write's uploaded file (RFC 4180 line endings). */
export const ZOHO_CSV: CsvDialect = { lineEnding: '\r\n' };

/** A value as a cell's text: null and undefined empty, objects as JSON. */
export function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** A cell as CSV: quoted when it holds a comma, quote or line break, or starts or ends in whitespace. */
export function csvField(v: unknown): string {
  const s = cellText(v);
  return /[",\r\n]/.test(s) || s !== s.trim() ? `"${s.replaceAll('"', '""')}"` : s;
}

/** Rows of cells -> CSV text, each row ended by the dialect's line ending. */
export function toCsv(rows: unknown[][], dialect: CsvDialect): string {
  return rows.map((r) => r.map(csvField).join(',') + dialect.lineEnding).join('');
}

/** CSV text -> rows of cells (quoted cells may hold commas, quotes and line breaks; LF or CRLF; a BOM skipped). */
export function parseCsvRows(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
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
  }
  if (cell !== '' || row.length > 0) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

/** CSV text with a header row -> the header and one object per row (header name -> cell, '' when short). */
export function parseCsv(text: string): { header: string[]; rows: Record<string, string>[] } {
  const [header = [], ...rest] = parseCsvRows(text);
  const rows = rest.map((cells) => Object.fromEntries(header.map((h, i) => [h, cells[i] ?? ''])));
  return { header, rows };
}
