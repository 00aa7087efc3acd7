/**
 * `pg2crm verify`'s comparison: what PostgreSQL's rows map to (the sink's own mapping,
 * field-mapper.ts mapEvent/toCrmValue, so dates, decimals and int8 are the values the sink
 * writes) against what the CRM holds. Pure: no I/O.
 *
 * Values compare as the CRM gives them back, which is not always the JSON type sent: HubSpot
 * answers every property as a string, Salesforce a number field as a number however it was
 * sent, and an empty field is absent, null or "" depending on the CRM. So:
 * - null, undefined and "" are the same (an empty field);
 * - two values that are both plain decimals compare as numbers, exactly ("1234.50" = 1234.5):
 *   their decimal text with trailing fractional zeros dropped. Only `-?(0|[1-9]\d*)(\.\d+)?`
 *   counts: a leading zero, a plus sign or an exponent make it text, so "02134" (a ZIP code) is not
 *   2134, "+1555" not "1555", and int8 or numeric beyond 2^53 compare digit by digit;
 * - two date-times that both parse compare as instants ("…T10:00:00Z" = "…T10:00:00.000+0000");
 * - anything else compares by its JSON text (objects, arrays) or its string.
 */
export type Fields = Record<string, unknown>;

/** A plain decimal: no sign but minus, no leading zero, no exponent. */
const DECIMAL = /^-?(0|[1-9]\d*)(\.\d+)?$/;
/** ISO 8601 date-time with a zone (a date alone compares as text: "2024-01-02" is not an instant). */
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

function empty(v: unknown): boolean {
  return v === null || v === undefined || v === '';
}

function text(v: unknown): string {
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** The canonical decimal text of a plain decimal (a JS number's own text, or a string), else undefined. */
function asDecimal(v: unknown): string | undefined {
  let t: string;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return undefined;
    t = Number.isInteger(v) && Math.abs(v) >= 1e21 ? BigInt(v).toString() : String(v);
  } else if (typeof v === 'bigint') t = v.toString();
  else if (typeof v === 'string') t = v;
  else return undefined;
  if (!DECIMAL.test(t)) return undefined;
  if (t.includes('.')) t = t.replace(/0+$/, '').replace(/\.$/, '');
  return t === '-0' ? '0' : t;
}

function asInstant(v: unknown): number | undefined {
  if (typeof v !== 'string' || !DATE_TIME.test(v)) return undefined;
  // Microseconds beyond JavaScript's milliseconds: "….123456Z" and "….123Z" are the same instant to a CRM that keeps ms.
  const t = Date.parse(v.replace(/(\.\d{3})\d+/, '$1').replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
  return Number.isFinite(t) ? t : undefined;
}

/** Whether the CRM's `actual` is the value the mapping asks for (`expected`). */
export function sameCrmValue(expected: unknown, actual: unknown): boolean {
  if (empty(expected) || empty(actual)) return empty(expected) && empty(actual);
  if (typeof expected === 'number' && typeof actual === 'number') return expected === actual;
  const a = asDecimal(expected);
  const b = asDecimal(actual);
  if (a !== undefined && b !== undefined) return a === b;
  const x = asInstant(expected);
  const y = asInstant(actual);
  if (x !== undefined && y !== undefined) return x === y;
  return text(expected) === text(actual);
}

/** The mapped fields whose CRM value differs, in the mapping's order. */
export function differingFields(expected: Fields, actual: Fields): string[] {
  return Object.keys(expected).filter((f) => !sameCrmValue(expected[f], actual[f]));
}

export interface StaleRecord {
  externalId: string;
  fields: string[];
}

/** What one comparison found, by external id. */
export interface Drift {
  checked: number;
  missing: string[];
  stale: StaleRecord[];
  /** In the CRM, no row in PostgreSQL; undefined when extras were not looked for (a sample). */
  extra: string[] | undefined;
}

/**
 * Compares the expected records (external id -> mapped fields, from PostgreSQL) with the CRM's.
 * `crmHoldsAll`: `crm` lists every record of the object that carries an external id (a full
 * check), so its ids without a row are extra; otherwise (`crm` read by the expected ids) extras
 * are not looked for. `others`: the ids other mappings of the same object and external id field
 * expect (verify.ts sharingTarget): their records are theirs, never extra here.
 */
export function compareRecords(
  expected: Map<string, Fields>,
  crm: Map<string, Fields>,
  crmHoldsAll: boolean,
  others: ReadonlySet<string> = new Set(),
): Drift {
  const missing: string[] = [];
  const stale: StaleRecord[] = [];
  for (const [id, fields] of expected) {
    const actual = crm.get(id);
    if (actual === undefined) missing.push(id);
    else {
      const diff = differingFields(fields, actual);
      if (diff.length) stale.push({ externalId: id, fields: diff });
    }
  }
  const extra = crmHoldsAll ? [...crm.keys()].filter((id) => !expected.has(id) && !others.has(id)) : undefined;
  return { checked: expected.size, missing, stale, extra };
}
