import avro from 'avsc';
import { PgDate, PgDecimal, PgTime, PgTimestamp } from './pg-values.ts';

/**
 * avsc types that read and write the exact values of events/pg-values.ts for the Avro schemas
 * row-codec.ts derives (https://avro.apache.org/docs/1.11.1/specification/#logical-types).
 * Built through avsc's `typeHook`, so decoding any pg2crm schema fetched from the registry
 * gives the same values the source encoded.
 */

/** long as bigint: a JS number loses precision past 2^53. */
export const BigIntLong = avro.types.LongType.__with({
  fromBuffer: (buf: Buffer) => buf.readBigInt64LE(),
  toBuffer: (n: bigint) => {
    const buf = Buffer.alloc(8);
    buf.writeBigInt64LE(BigInt(n));
    return buf;
  },
  fromJSON: (v: unknown) => BigInt(v as string),
  toJSON: (n: bigint) => Number(n),
  isValid: (n: unknown) => typeof n === 'bigint',
  compare: (a: bigint, b: bigint) => (a === b ? 0 : a < b ? -1 : 1),
});

/**
 * Marks the schema a logical type builds its underlying type from, so the hook lets avsc build
 * the plain type (or the bigint long) instead of recursing into the logical type again.
 */
const UNDERLYING = 'pg2crm.underlying';

type Attrs = Record<string, unknown>;

abstract class PgLogicalType extends avro.types.LogicalType {
  constructor(schema: Attrs, opts: unknown) {
    super({ ...schema, [UNDERLYING]: true } as unknown as avro.Schema, opts);
  }
  // Schema resolution (reader != writer) is never used: pg2crm decodes with the writer's schema.
  protected override _resolve(): undefined {
    return undefined;
  }
}

/** The shortest decimal that is the same float32, as PostgreSQL's float4out prints it (Ryu). */
export function shortestFloat32(f: number): number {
  if (!Number.isFinite(f) || f === 0) return f; // NaN, ±Infinity, ±0 as they are
  for (let digits = 1; digits <= 9; digits++) {
    const n = Number(f.toPrecision(digits));
    if (Math.fround(n) === f) return n;
  }
  return f;
}

/** float4: written as float32; read back as the double of its shortest decimal (0.1, not 0.10000000149011612). */
class Float32Type extends PgLogicalType {
  protected override _fromValue(f: number): number {
    return shortestFloat32(f);
  }
  protected override _toValue(v: unknown): number | undefined {
    return typeof v === 'number' ? v : undefined;
  }
}

/** date: days since 1970-01-01; ±infinity goes to the string branch (see row-codec.ts). */
class DateType extends PgLogicalType {
  protected override _fromValue(days: number): PgDate {
    return new PgDate(days);
  }
  protected override _toValue(v: unknown): number | undefined {
    return v instanceof PgDate && Number.isFinite(v.days) ? v.days : undefined;
  }
}

const LONG_MIN = -(2n ** 63n);
const LONG_MAX = 2n ** 63n - 1n;

/** timestamp-micros (timestamptz) and local-timestamp-micros (timestamp); ±infinity and values past int64 go to the string branch. */
class TimestampType extends PgLogicalType {
  private readonly zoned: boolean;
  constructor(schema: Attrs, opts: unknown) {
    super(schema, opts);
    this.zoned = schema.logicalType === 'timestamp-micros';
  }
  protected override _fromValue(micros: bigint): PgTimestamp {
    return new PgTimestamp(micros, this.zoned);
  }
  protected override _toValue(v: unknown): bigint | undefined {
    return v instanceof PgTimestamp && v.zoned === this.zoned && v.micros >= LONG_MIN && v.micros <= LONG_MAX ? v.micros : undefined;
  }
}

class TimeType extends PgLogicalType {
  protected override _fromValue(micros: bigint): PgTime {
    return new PgTime(micros);
  }
  protected override _toValue(v: unknown): bigint | undefined {
    return v instanceof PgTime ? v.micros : undefined;
  }
}

/** Two's-complement big-endian, shortest form: Avro's decimal encoding of the unscaled value. */
export function bigintToTwos(n: bigint): Buffer {
  const bytes: number[] = [];
  let v = n;
  for (;;) {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
    const top = bytes[0]! & 0x80;
    if ((v === 0n && top === 0) || (v === -1n && top !== 0)) break;
  }
  return Buffer.from(bytes);
}

export function twosToBigint(buf: Buffer): bigint {
  let v = 0n;
  for (const b of buf) v = (v << 8n) | BigInt(b);
  if (buf.length > 0 && (buf[0]! & 0x80) !== 0) v -= 1n << BigInt(8 * buf.length);
  return v;
}

/** bytes decimal(precision, scale). */
class DecimalType extends PgLogicalType {
  private readonly scale: number;
  constructor(schema: Attrs, opts: unknown) {
    super(schema, opts);
    this.scale = Number(schema.scale ?? 0);
  }
  protected override _fromValue(buf: Buffer): PgDecimal {
    return new PgDecimal(twosToBigint(buf), this.scale);
  }
  protected override _toValue(v: unknown): Buffer | undefined {
    return v instanceof PgDecimal ? bigintToTwos(v.withScale(this.scale).unscaled) : undefined;
  }
}

/** numeric without typmod: exact text on the wire, PgDecimal (or 'NaN', '±Infinity') in memory. */
class NumericTextType extends PgLogicalType {
  protected override _fromValue(text: string): unknown {
    return NUMERIC_SPECIAL.has(text) ? text : PgDecimal.parse(text);
  }
  protected override _toValue(v: unknown): string | undefined {
    return v instanceof PgDecimal ? v.toString() : typeof v === 'string' && NUMERIC_SPECIAL.has(v) ? v : undefined;
  }
}

const NUMERIC_SPECIAL = new Set(['NaN', 'Infinity', '-Infinity']);

/**
 * The string branch beside a logical type, for the values that type cannot hold, as
 * PostgreSQL's text: numeric NaN, ±infinity dates and timestamps, timestamps past int64.
 * Its `_toValue` takes only those, so a value always has exactly one branch.
 */
class SpecialTextType extends PgLogicalType {
  private readonly kind: string;
  constructor(schema: Attrs, opts: unknown) {
    super(schema, opts);
    this.kind = String(schema['pg2crm.special']);
  }
  protected override _fromValue(text: string): unknown {
    switch (this.kind) {
      case 'date':
        return PgDate.parse(text);
      case 'timestamp':
      case 'timestamptz':
        return PgTimestamp.parse(text, this.kind === 'timestamptz');
      default:
        return text;
    }
  }
  protected override _toValue(v: unknown): string | undefined {
    switch (this.kind) {
      case 'date':
        return v instanceof PgDate && !Number.isFinite(v.days) ? v.toString() : undefined;
      case 'timestamp':
      case 'timestamptz':
        return v instanceof PgTimestamp && v.zoned === (this.kind === 'timestamptz') && (v.micros < LONG_MIN || v.micros > LONG_MAX)
          ? v.toString()
          : undefined;
      default:
        return typeof v === 'string' && NUMERIC_SPECIAL.has(v) ? v : undefined;
    }
  }
}

function typeHook(schema: avro.Schema, opts: avro.ForSchemaOptions): avro.Type | undefined {
  if (schema === 'float') return new Float32Type({ type: 'float' }, opts);
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return undefined;
  const s = schema as unknown as Attrs;
  if (s[UNDERLYING]) return s.type === 'long' ? BigIntLong : undefined;
  switch (s.type) {
    case 'float':
      return new Float32Type(s, opts);
    case 'int':
      return s.logicalType === 'date' ? new DateType(s, opts) : undefined;
    case 'long':
      if (s.logicalType === 'timestamp-micros' || s.logicalType === 'local-timestamp-micros') return new TimestampType(s, opts);
      if (s.logicalType === 'time-micros') return new TimeType(s, opts);
      return BigIntLong;
    case 'bytes':
      return s.logicalType === 'decimal' ? new DecimalType(s, opts) : undefined;
    case 'string':
      if (s['pg2crm.special'] !== undefined) return new SpecialTextType(s, opts);
      return s['pg2crm.type'] === 'numeric' ? new NumericTextType(s, opts) : undefined;
    default:
      return undefined;
  }
}

/** The avsc type of a pg2crm schema (as built by envelopeSchema, or fetched from the registry). */
export function avroType(schema: unknown): avro.Type {
  return avro.Type.forSchema(schema as avro.Schema, { registry: { long: BigIntLong }, typeHook });
}
