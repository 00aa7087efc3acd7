import { ConnectorError, errorMessage } from '../errors.ts';
import { PgDate, PgDecimal, PgTime, PgTimestamp } from './pg-values.ts';

/**
 * PostgreSQL column types -> Avro types, and PostgreSQL's text output -> typed values.
 * Text is the one input format: pgoutput sends it, and the snapshot selects each column's
 * output-function text, so a value is converted the same way whichever path it took.
 *
 * Every conversion is exact (events/pg-values.ts): int8 is a bigint, numeric keeps every digit,
 * timestamps keep microseconds and infinity. Avro logical types are used where Avro has one
 * (https://avro.apache.org/docs/1.11.1/specification/#logical-types); the rest travels as
 * PostgreSQL's exact text, marked with a `pg2crm.type` attribute:
 *
 * | PostgreSQL                   | Avro (besides null)                        | value                   |
 * |------------------------------|--------------------------------------------|-------------------------|
 * | bool                         | boolean                                    | boolean                 |
 * | int2, int4                   | int                                        | number                  |
 * | int8, oid                    | long                                       | bigint                  |
 * | float4, float8               | float, double                              | number (NaN, ±Infinity, -0) |
 * | numeric(p, s), 0 <= s <= p   | bytes decimal(p, s) / special string       | PgDecimal / 'NaN'       |
 * | numeric (no typmod)          | string (pg2crm.type numeric)               | PgDecimal / 'NaN', '±Infinity' |
 * | uuid                         | string uuid                                | string                  |
 * | date                         | int date / special string                  | PgDate                  |
 * | timestamp                    | long local-timestamp-micros / special string | PgTimestamp (zoned false) |
 * | timestamptz                  | long timestamp-micros / special string     | PgTimestamp (zoned true) |
 * | time                         | long time-micros                           | PgTime                  |
 * | bytea                        | bytes                                      | Buffer                  |
 * | json, jsonb, interval, arrays, enums, everything else | string (exact text) | string             |
 *
 * numeric without a declared precision and scale has a scale per value (and NaN, ±Infinity),
 * which Avro's decimal, fixed to one scale, cannot hold without rounding: it stays exact text.
 * Values a logical type cannot hold travel in a second branch, a string marked
 * `pg2crm.special`, as PostgreSQL's text: NaN of a numeric(p, s), 'infinity' / '-infinity'
 * dates and timestamps, and timestamps after 292277 AD (PostgreSQL goes to 294276 AD, int64
 * microseconds since 1970 do not). No sentinel numbers: a consumer that ignores the branch
 * fails loudly instead of reading a wrong date. Domains follow their base type
 * (capture/type-resolver.ts fills `baseTypeOid`).
 *
 * Type OIDs are fixed for built-in types (src/include/catalog/pg_type.dat); user types
 * (enums, domains, composites) have per-database OIDs.
 */
export interface ColumnShape {
  name: string;
  typeOid: number;
  /** atttypmod: -1 when the column's type has no modifier (numeric(p, s) has one). */
  typeMod?: number;
  /** SQL type as format_type() prints it (known for catalog reads, not for pgoutput). */
  typeName?: string;
  /** For a domain: the base type and modifier its values have. */
  baseTypeOid?: number;
  baseTypeMod?: number;
}

type AvroType = string | Record<string, unknown>;

export interface TypeRule {
  /** The non-null branches of the field's union. */
  avro: AvroType[];
  fromText: (text: string) => unknown;
}

const asString: TypeRule = { avro: ['string'], fromText: (t) => t };

function textOf(pgType: string): TypeRule {
  return { avro: [{ type: 'string', 'pg2crm.type': pgType }], fromText: (t) => t };
}

/** bytea in its default `hex` output format: `\x0a1b…`. */
function bytea(t: string): Buffer {
  if (!t.startsWith('\\x')) {
    throw new ConnectorError('UNSUPPORTED_BYTEA_FORMAT', 'bytea arrived in escape format; set bytea_output = hex on the server');
  }
  return Buffer.from(t.slice(2), 'hex');
}

/** numeric's special values; everything else numeric prints is a finite decimal. */
const NUMERIC_SPECIAL = new Set(['NaN', 'Infinity', '-Infinity']);

/** The branch for the values `type`'s logical type cannot hold (see the table above). */
function special(kind: string): Record<string, unknown> {
  return { type: 'string', 'pg2crm.special': kind };
}

function numericValue(t: string): unknown {
  return NUMERIC_SPECIAL.has(t) ? t : PgDecimal.parse(t);
}

/**
 * numeric's typmod is ((precision << 16) | (scale & 0x7ff)) + VARHDRSZ, the scale an 11-bit
 * signed field since PostgreSQL 15 (src/backend/utils/adt/numeric.c, make_numeric_typmod).
 */
function numericRule(typeMod: number): TypeRule {
  if (typeMod < 4) return { avro: [{ type: 'string', 'pg2crm.type': 'numeric' }], fromText: numericValue };
  const precision = ((typeMod - 4) >> 16) & 0xffff;
  const scale = (((typeMod - 4) & 0x7ff) ^ 1024) - 1024;
  // Avro's decimal needs 0 <= scale <= precision; PostgreSQL 15 also allows negative scales
  // and scales above the precision (numeric(2, 5)): those keep the exact text.
  if (scale < 0 || scale > precision) return { avro: [{ type: 'string', 'pg2crm.type': 'numeric' }], fromText: numericValue };
  return {
    avro: [{ type: 'bytes', logicalType: 'decimal', precision, scale }, special('numeric')],
    fromText: (t) => (NUMERIC_SPECIAL.has(t) ? t : PgDecimal.parse(t).withScale(scale)),
  };
}

const RULES: Record<number, TypeRule> = {
  16: { avro: ['boolean'], fromText: (t) => t === 't' },
  17: { avro: ['bytes'], fromText: bytea },
  20: { avro: ['long'], fromText: (t) => BigInt(t) },
  21: { avro: ['int'], fromText: (t) => Number.parseInt(t, 10) },
  23: { avro: ['int'], fromText: (t) => Number.parseInt(t, 10) },
  26: { avro: ['long'], fromText: (t) => BigInt(t) },
  // PostgreSQL 12+ prints floats in the shortest text that reads back to the same binary value
  // (extra_float_digits >= 1, the default), and Number() reads NaN, Infinity, -Infinity, -0.
  700: { avro: ['float'], fromText: (t) => Number(t) },
  701: { avro: ['double'], fromText: (t) => Number(t) },
  2950: { avro: [{ type: 'string', logicalType: 'uuid' }], fromText: (t) => t },
  1082: { avro: [{ type: 'int', logicalType: 'date' }, special('date')], fromText: (t) => PgDate.parse(t) },
  1114: {
    avro: [{ type: 'long', logicalType: 'local-timestamp-micros' }, special('timestamp')],
    fromText: (t) => PgTimestamp.parse(t, false),
  },
  1184: { avro: [{ type: 'long', logicalType: 'timestamp-micros' }, special('timestamptz')], fromText: (t) => PgTimestamp.parse(t, true) },
  1083: { avro: [{ type: 'long', logicalType: 'time-micros' }], fromText: (t) => PgTime.parse(t) },
  114: textOf('json'),
  3802: textOf('jsonb'),
  1186: textOf('interval'),
};

export function typeRule(column: ColumnShape): TypeRule {
  const domain = column.baseTypeOid !== undefined;
  const oid = domain ? column.baseTypeOid! : column.typeOid;
  if (oid === 1700) return numericRule((domain ? column.baseTypeMod : column.typeMod) ?? -1);
  return RULES[oid] ?? asString;
}

/** Avro names allow [A-Za-z_][A-Za-z0-9_]*; PostgreSQL identifiers allow more. */
export function avroName(name: string): string {
  const s = name.replace(/[^A-Za-z0-9_]/g, '_');
  return /^[A-Za-z_]/.test(s) ? s : `_${s}`;
}

/** The Avro record of one row: every column nullable (null also stands for "not sent"). */
export function rowSchema(name: string, columns: ColumnShape[]): Record<string, unknown> {
  return {
    type: 'record',
    name: avroName(name),
    fields: columns.map((c) => ({
      name: avroName(c.name),
      type: ['null', ...typeRule(c).avro],
      default: null,
      'pg2crm.column': c.name,
      'pg2crm.typeOid': c.typeOid,
    })),
  };
}

export function convertValue(column: ColumnShape, text: string, rule: TypeRule = typeRule(column)): unknown {
  try {
    return rule.fromText(text);
  } catch (err) {
    throw new ConnectorError(
      'VALUE_CONVERSION',
      `cannot convert a value of column ${column.name} (type oid ${column.typeOid}): ${errorMessage(err)}; report this with the column's type`,
      { cause: err },
    );
  }
}
