import { describe, expect, it } from 'vitest';
import { PgDate, PgDecimal, PgTime, PgTimestamp } from '../../../src/events/pg-values.ts';
import { convertValue } from '../../../src/events/row-codec.ts';
import { toCrmValue } from '../../../src/sink/field-mapper.ts';

/** The JSON a CRM receives for a column value (field-mapper.toCrmValue documents the rules). */
const crm = (typeOid: number, text: string, typeMod = -1) => toCrmValue(convertValue({ name: 'c', typeOid, typeMod }, text));

describe('toCrmValue', () => {
  it('dates as YYYY-MM-DD, timestamps as ISO 8601 with microseconds, timestamptz in UTC', () => {
    expect(crm(1082, '2024-02-29')).toBe('2024-02-29');
    expect(crm(1114, '2024-02-29 23:59:59.12')).toBe('2024-02-29T23:59:59.120000');
    expect(crm(1184, '2024-02-29 23:59:59.654321+02')).toBe('2024-02-29T21:59:59.654321Z');
    expect(crm(1083, '13:37:00')).toBe('13:37:00.000000');
    // Outside 0000-9999: ISO 8601's expanded years (astronomical: 44 BC is -000043).
    expect(crm(1082, '0044-03-15 BC')).toBe('-000043-03-15');
    expect(crm(1114, '294276-12-31 23:59:59.999999')).toBe('+294276-12-31T23:59:59.999999');
  });

  it('infinity dates and timestamps become null (no end), as do float NaN and Infinity', () => {
    expect(crm(1082, 'infinity')).toBeNull();
    expect(crm(1184, '-infinity')).toBeNull();
    expect(crm(701, 'NaN')).toBeNull();
    expect(crm(700, '-Infinity')).toBeNull();
  });

  it('decimals: numbers up to 15 significant digits, exact strings beyond', () => {
    const mod = ((38 << 16) | 10) + 4;
    expect(crm(1700, '1234.56')).toBe(1234.56);
    expect(crm(1700, '1234.5600000000', mod)).toBe(1234.56);
    expect(crm(1700, '999999999999999')).toBe(999999999999999);
    expect(crm(1700, '9999999999999999')).toBe('9999999999999999');
    expect(crm(1700, '12345678901234567890.0123456789', mod)).toBe('12345678901234567890.0123456789');
    expect(crm(1700, '0.1000000000', mod)).toBe(0.1);
    expect(crm(1700, '-0.000000000000000000001')).toBe(-1e-21);
    expect(crm(1700, 'NaN')).toBe('NaN');
    expect(toCrmValue(new PgDecimal(10n ** 400n, 0))).toBe(`1${'0'.repeat(400)}`);
  });

  it('int8 as a number while exact, bytea as base64, the rest unchanged', () => {
    expect(crm(20, '9007199254740991')).toBe(9007199254740991);
    expect(crm(20, '9007199254740993')).toBe('9007199254740993');
    expect(crm(17, '\\x00ff')).toBe('AP8=');
    expect(crm(3802, '{"a": 1}')).toBe('{"a": 1}');
    expect(crm(1186, '1 day')).toBe('1 day');
  });

  it('value classes print text PostgreSQL reads back (Kafka keys, dlq replay)', () => {
    expect(JSON.stringify({ d: new PgDate(0), t: new PgTimestamp(0n, true), m: new PgTime(1n), n: new PgDecimal(-5n, 3) })).toBe(
      '{"d":"1970-01-01","t":"1970-01-01 00:00:00+00","m":"00:00:00.000001","n":"-0.005"}',
    );
  });
});
