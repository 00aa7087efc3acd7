import { describe, expect, it } from 'vitest';
import { bigintToTwos, avroType, shortestFloat32, twosToBigint } from '../../../src/events/avro-types.ts';
import { PgDate, PgDecimal, PgTime, PgTimestamp } from '../../../src/events/pg-values.ts';
import { type ColumnShape, convertValue, rowSchema } from '../../../src/events/row-codec.ts';

/** numeric(p, s)'s atttypmod, as PostgreSQL computes it. */
const numericMod = (p: number, s: number) => ((p << 16) | (s & 0x7ff)) + 4;

function fieldType(column: ColumnShape): unknown {
  const schema = rowSchema('Row', [column]) as { fields: { type: unknown }[] };
  return schema.fields[0]?.type;
}

/** Text -> value -> Avro bytes -> value -> text: what a consumer of the topic gets back. */
function roundTrip(column: ColumnShape, text: string): unknown {
  const type = avroType(rowSchema('Row', [column]));
  const decoded = type.fromBuffer(type.toBuffer({ [column.name]: convertValue(column, text) })) as Record<string, unknown>;
  return decoded[column.name];
}

const col = (typeOid: number, typeMod = -1): ColumnShape => ({ name: 'c', typeOid, typeMod });

describe('Avro schema of a table', () => {
  it('maps each type to its Avro type, with logical types where Avro has them', () => {
    expect(fieldType(col(16))).toEqual(['null', 'boolean']);
    expect(fieldType(col(21))).toEqual(['null', 'int']);
    expect(fieldType(col(23))).toEqual(['null', 'int']);
    expect(fieldType(col(20))).toEqual(['null', 'long']);
    expect(fieldType(col(700))).toEqual(['null', 'float']);
    expect(fieldType(col(701))).toEqual(['null', 'double']);
    expect(fieldType(col(17))).toEqual(['null', 'bytes']);
    expect(fieldType(col(2950))).toEqual(['null', { type: 'string', logicalType: 'uuid' }]);
    expect(fieldType(col(1082))).toEqual(['null', { type: 'int', logicalType: 'date' }, { type: 'string', 'pg2crm.special': 'date' }]);
    expect(fieldType(col(1114))).toEqual([
      'null',
      { type: 'long', logicalType: 'local-timestamp-micros' },
      { type: 'string', 'pg2crm.special': 'timestamp' },
    ]);
    expect(fieldType(col(1184))).toEqual([
      'null',
      { type: 'long', logicalType: 'timestamp-micros' },
      { type: 'string', 'pg2crm.special': 'timestamptz' },
    ]);
    expect(fieldType(col(1083))).toEqual(['null', { type: 'long', logicalType: 'time-micros' }]);
    expect(fieldType(col(3802))).toEqual(['null', { type: 'string', 'pg2crm.type': 'jsonb' }]);
    expect(fieldType(col(1186))).toEqual(['null', { type: 'string', 'pg2crm.type': 'interval' }]);
    expect(fieldType(col(25))).toEqual(['null', 'string']);
    expect(fieldType(col(1007))).toEqual(['null', 'string']); // int4[]
    expect(fieldType(col(16_500))).toEqual(['null', 'string']); // an enum
  });

  it('numeric(p, s) is decimal(p, s); without typmod, or with a scale Avro forbids, exact text', () => {
    expect(fieldType(col(1700, numericMod(38, 10)))).toEqual([
      'null',
      { type: 'bytes', logicalType: 'decimal', precision: 38, scale: 10 },
      { type: 'string', 'pg2crm.special': 'numeric' },
    ]);
    expect(fieldType(col(1700, numericMod(5, 0)))).toMatchObject(['null', { precision: 5, scale: 0 }, {}]);
    expect(fieldType(col(1700))).toEqual(['null', { type: 'string', 'pg2crm.type': 'numeric' }]);
    expect(fieldType(col(1700, numericMod(3, -2)))).toEqual(['null', { type: 'string', 'pg2crm.type': 'numeric' }]);
    expect(fieldType(col(1700, numericMod(2, 5)))).toEqual(['null', { type: 'string', 'pg2crm.type': 'numeric' }]);
  });

  it('a domain column follows its base type and modifier', () => {
    const domain: ColumnShape = { name: 'c', typeOid: 16_401, typeMod: -1, baseTypeOid: 1700, baseTypeMod: numericMod(12, 2) };
    expect(fieldType(domain)).toMatchObject(['null', { logicalType: 'decimal', precision: 12, scale: 2 }, {}]);
    expect(String(roundTrip(domain, '1234.50'))).toBe('1234.50');
    expect(fieldType({ name: 'c', typeOid: 16_402, baseTypeOid: 23, baseTypeMod: -1 })).toEqual(['null', 'int']);
  });
});

describe('values round-trip exactly through Avro', () => {
  it.each([
    ['12345678901234567890.0123456789', 38, 10],
    ['-0.0000000001', 38, 10],
    ['0.0000000000', 38, 10],
    ['-99999999999999999999999999.9999999999', 38, 10],
    ['127', 3, 0],
    ['-128', 3, 0],
    ['NaN', 10, 2],
  ])('numeric(%s) as decimal(%i, %i)', (text, p, s) => {
    const v = roundTrip(col(1700, numericMod(p, s)), text);
    expect(String(v)).toBe(text);
    if (text !== 'NaN') expect(v).toBeInstanceOf(PgDecimal);
  });

  it.each(['3.14159265358979323846264338327950288', '1', '-0.5000', 'NaN', 'Infinity', '-Infinity'])(
    'numeric %s without typmod',
    (text) => {
      expect(String(roundTrip(col(1700), text))).toBe(text);
    },
  );

  it('a numeric(p, s) value with fewer decimals is scaled, never rounded', () => {
    expect(String(roundTrip(col(1700, numericMod(10, 4)), '1.5'))).toBe('1.5000');
    expect(() => new PgDecimal(12345n, 3).withScale(2)).toThrow(/more than 2 decimal places/);
  });

  it.each([
    '2024-02-29',
    '1970-01-01',
    '1969-12-31',
    '0001-01-01',
    '0044-03-15 BC',
    '4714-11-24 BC',
    '5874897-12-31',
    'infinity',
    '-infinity',
  ])('date %s', (text) => {
    const v = roundTrip(col(1082), text);
    expect(v).toBeInstanceOf(PgDate);
    expect(String(v)).toBe(text);
  });

  it.each([
    '2024-02-29 23:59:59.123456',
    '2000-01-01 00:00:00',
    '1969-12-31 23:59:59.999999',
    '0044-03-15 12:00:00.5 BC',
    '4714-11-24 00:00:00 BC',
    '294276-12-31 23:59:59.999999',
    '275760-09-13 00:00:00.000001',
    'infinity',
    '-infinity',
  ])('timestamp %s', (text) => {
    const v = roundTrip(col(1114), text);
    expect(v).toBeInstanceOf(PgTimestamp);
    expect(String(v)).toBe(text);
  });

  it('timestamptz applies the session offset exactly and prints UTC', () => {
    expect(String(roundTrip(col(1184), '2024-02-29 23:59:59.654321+02'))).toBe('2024-02-29 21:59:59.654321+00');
    expect(String(roundTrip(col(1184), '2024-01-01 00:00:00+05:30'))).toBe('2023-12-31 18:30:00+00');
    // Local mean time before 1900 has offsets in seconds (Europe/Amsterdam: +00:19:32).
    expect(String(roundTrip(col(1184), '1800-01-01 00:00:00+00:19:32'))).toBe('1799-12-31 23:40:28+00');
    expect(String(roundTrip(col(1184), '294276-12-31 23:59:59.999999+00'))).toBe('294276-12-31 23:59:59.999999+00');
    expect(String(roundTrip(col(1184), 'infinity'))).toBe('infinity');
    const v = roundTrip(col(1184), '2024-02-29 23:59:59.654321-01') as PgTimestamp;
    expect(v.micros).toBe(1_709_254_799_654_321n); // 2024-03-01T00:59:59.654321Z
    expect(v.zoned).toBe(true);
  });

  it.each(['00:00:00', '13:37:00.000001', '23:59:59.999999', '24:00:00'])('time %s', (text) => {
    const v = roundTrip(col(1083), text);
    expect(v).toBeInstanceOf(PgTime);
    expect(String(v)).toBe(text);
  });

  it('floats keep NaN, ±Infinity and -0; float4 reads back as its shortest decimal', () => {
    expect(roundTrip(col(701), '0.1')).toBe(0.1);
    expect(roundTrip(col(701), '1.7976931348623157e+308')).toBe(Number.MAX_VALUE);
    expect(roundTrip(col(701), 'NaN')).toBeNaN();
    expect(roundTrip(col(701), '-Infinity')).toBe(-Infinity);
    expect(Object.is(roundTrip(col(701), '-0'), -0)).toBe(true);
    expect(roundTrip(col(700), '0.1')).toBe(0.1);
    expect(roundTrip(col(700), '3.4028235e+38')).toBe(3.4028235e38);
    expect(roundTrip(col(700), '1e-45')).toBe(1e-45);
    expect(roundTrip(col(700), 'Infinity')).toBe(Infinity);
    expect(shortestFloat32(Math.fround(16777217))).toBe(16777216);
  });

  it('int8, bool, bytea, uuid, text and NULL', () => {
    expect(roundTrip(col(20), '-9223372036854775808')).toBe(-9223372036854775808n);
    expect(roundTrip(col(16), 'f')).toBe(false);
    expect(roundTrip(col(17), '\\x00ff10')).toEqual(Buffer.from([0, 255, 16]));
    expect(roundTrip(col(2950), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')).toBe('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
    expect(roundTrip(col(1186), '1 year 2 mons 3 days 04:05:06.789')).toBe('1 year 2 mons 3 days 04:05:06.789');
    const type = avroType(rowSchema('Row', [col(1082), { ...col(1700, numericMod(5, 2)), name: 'n' }]));
    expect(type.fromBuffer(type.toBuffer({ c: null, n: null }))).toEqual({ c: null, n: null });
  });

  it('a value that is not DateStyle ISO fails with the fix', () => {
    expect(() => convertValue(col(1082), '02/29/2024')).toThrow(/DateStyle = ISO/);
  });

  it("decimal bytes are Avro's two's-complement big-endian form", () => {
    expect(bigintToTwos(0n)).toEqual(Buffer.from([0]));
    expect(bigintToTwos(127n)).toEqual(Buffer.from([0x7f]));
    expect(bigintToTwos(128n)).toEqual(Buffer.from([0x00, 0x80]));
    expect(bigintToTwos(-1n)).toEqual(Buffer.from([0xff]));
    expect(bigintToTwos(-128n)).toEqual(Buffer.from([0x80]));
    expect(bigintToTwos(-129n)).toEqual(Buffer.from([0xff, 0x7f]));
    for (const n of [0n, 1n, -1n, 255n, -256n, 10n ** 38n - 1n, -(10n ** 38n) + 1n]) expect(twosToBigint(bigintToTwos(n))).toBe(n);
  });
});
