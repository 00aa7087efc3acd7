import { ConnectorError } from '../errors.ts';

/**
 * PostgreSQL column types -> Avro types, and PostgreSQL's text output -> typed values.
 * Text is the one input format: pgoutput sends it, and the snapshot selects each column's
 * output-function text, so a value is converted the same way whichever path it took. Conversions are exact:
 * int8 stays a bigint, numeric stays its decimal text, timestamps keep microseconds.
 *
 * Type OIDs are fixed for built-in types (src/include/catalog/pg_type.dat); user types
 * (enums, domains, composites) have per-database OIDs and travel as their text form.
 */
export interface ColumnShape {
  name: string;
  typeOid: number;
  /** SQL type as format_type() prints it (known for catalog reads, not for pgoutput). */
  typeName?: string;
}

type AvroType = string | Record<string, unknown>;

interface TypeRule {
  avro: AvroType;
  fromText: (text: string) => unknown;
}

const asString: TypeRule = { avro: 'string', fromText: (t) => t };

function float(t: string): number {
  // PostgreSQL prints the special values as NaN, Infinity, -Infinity, which Number() accepts.
  return Number(t);
}

/** bytea in its default `hex` output format: `\x0a1b…`. */
function bytea(t: string): Buffer {
  if (!t.startsWith('\\x')) {
    throw new ConnectorError('UNSUPPORTED_BYTEA_FORMAT', 'bytea arrived in escape format; set bytea_output = hex on the server');
  }
  return Buffer.from(t.slice(2), 'hex');
}

const RULES: Record<number, TypeRule> = {
  16: { avro: 'boolean', fromText: (t) => t === 't' },
  17: { avro: 'bytes', fromText: bytea },
  20: { avro: 'long', fromText: (t) => BigInt(t) },
  21: { avro: 'int', fromText: (t) => Number.parseInt(t, 10) },
  23: { avro: 'int', fromText: (t) => Number.parseInt(t, 10) },
  26: { avro: 'long', fromText: (t) => BigInt(t) },
  700: { avro: 'float', fromText: float },
  701: { avro: 'double', fromText: float },
  2950: { avro: { type: 'string', logicalType: 'uuid' }, fromText: (t) => t },
  // numeric: arbitrary precision and per-value scale, which Avro's fixed-scale decimal cannot
  // hold without rounding; the exact decimal text is kept and marked for consumers.
  1700: { avro: { type: 'string', 'pg2crm.type': 'numeric' }, fromText: (t) => t },
  114: { avro: { type: 'string', 'pg2crm.type': 'json' }, fromText: (t) => t },
  3802: { avro: { type: 'string', 'pg2crm.type': 'jsonb' }, fromText: (t) => t },
};

export function typeRule(typeOid: number): TypeRule {
  return RULES[typeOid] ?? asString;
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
      type: ['null', typeRule(c.typeOid).avro],
      default: null,
      'pg2crm.column': c.name,
      'pg2crm.typeOid': c.typeOid,
    })),
  };
}

export function convertValue(column: ColumnShape, text: string): unknown {
  try {
    return typeRule(column.typeOid).fromText(text);
  } catch (err) {
    throw new ConnectorError(
      'VALUE_CONVERSION',
      `cannot convert column ${column.name} (type oid ${column.typeOid}) value; report this with the column's type`,
      { cause: err },
    );
  }
}
