import { describe, expect, it } from 'vitest';
import { compareRecords, differingFields, sameCrmValue } from '../../../src/verify/compare.ts';
import { PgDate, PgDecimal, PgTimestamp } from '../../../src/events/pg-values.ts';
import { toCrmValue } from '../../../src/sink/field-mapper.ts';

describe('verify comparison', () => {
  it('takes values as CRMs give them back: strings for numbers, empty as null, instants in any zone form', () => {
    expect(sameCrmValue(1234.5, '1234.50')).toBe(true); // HubSpot answers properties as strings
    expect(sameCrmValue(1234.5, 1234.51)).toBe(false);
    expect(sameCrmValue(null, '')).toBe(true);
    expect(sameCrmValue(undefined, null)).toBe(true);
    expect(sameCrmValue('x', '')).toBe(false);
    expect(sameCrmValue('', 'x')).toBe(false);
    expect(sameCrmValue('2024-05-01T10:00:00.000000Z', '2024-05-01T10:00:00.000+0000')).toBe(true); // Salesforce datetime
    expect(sameCrmValue('2024-05-01T10:00:00Z', '2024-05-01T10:00:01Z')).toBe(false);
    expect(sameCrmValue('2024-05-01', '2024-05-02')).toBe(false);
    expect(sameCrmValue(true, 'true')).toBe(true);
    expect(sameCrmValue({ a: 1 }, { a: 1 })).toBe(true);
    expect(sameCrmValue('Smith', 'smith')).toBe(false); // a changed case is a change
    expect(sameCrmValue(7, '7.00')).toBe(true);
  });

  it('compares the values the sink writes (toCrmValue): decimals, big decimals, dates, timestamps', () => {
    const decimal = toCrmValue(PgDecimal.parse('1234.50'));
    expect(sameCrmValue(decimal, '1234.5')).toBe(true);
    const big = toCrmValue(PgDecimal.parse('12345678901234567.89'));
    expect(sameCrmValue(big, '12345678901234567.89')).toBe(true);
    const date = toCrmValue(PgDate.parse('2024-02-29'));
    expect(sameCrmValue(date, '2024-02-29')).toBe(true);
    const ts = toCrmValue(PgTimestamp.parse('2024-02-29 13:14:15.123456+00', true));
    expect(sameCrmValue(ts, '2024-02-29T13:14:15.123Z')).toBe(true);
  });

  it('names the differing fields in mapping order', () => {
    expect(differingFields({ a: 1, b: 'x', c: null }, { a: '1', b: 'y', c: 'z' })).toEqual(['b', 'c']);
  });

  it('finds missing, stale and extra by external id; no extras when only the expected ids were read', () => {
    const expected = new Map([
      ['1', { name: 'A' }],
      ['2', { name: 'B' }],
      ['3', { name: 'C' }],
    ]);
    const crm = new Map([
      ['1', { name: 'A' }],
      ['3', { name: 'changed' }],
      ['9', { name: 'Z' }],
    ]);
    expect(compareRecords(expected, crm, true)).toEqual({
      checked: 3,
      missing: ['2'],
      stale: [{ externalId: '3', fields: ['name'] }],
      extra: ['9'],
    });
    expect(compareRecords(expected, crm, false).extra).toBeUndefined();
  });

  it('compares as numbers only plain decimals, exactly: leading zeros, signs and big integers are text', () => {
    expect(sameCrmValue('02134', '2134')).toBe(false); // a ZIP code lost its zero
    expect(sameCrmValue('02134', 2134)).toBe(false);
    expect(sameCrmValue('+1555', '1555')).toBe(false); // a phone number lost its plus
    expect(sameCrmValue('9007199254740993', '9007199254740992')).toBe(false); // int8 beyond 2^53
    expect(sameCrmValue('12345678901234567.89', '12345678901234567.90')).toBe(false);
    expect(sameCrmValue('1234.50', 1234.5)).toBe(true); // HubSpot's string for a number
    expect(sameCrmValue(1234.5, '1234.50')).toBe(true);
    expect(sameCrmValue('-0.50', '-0.5')).toBe(true);
    expect(sameCrmValue('10', '10.0')).toBe(true);
    expect(sameCrmValue('10', '1')).toBe(false);
    expect(sameCrmValue('1e3', '1000')).toBe(false);
  });

  it('an id another mapping of the same object and external id field expects is not extra', () => {
    const expected = new Map([['eu-1', { name: 'A' }]]);
    const crm = new Map([
      ['eu-1', { name: 'A' }],
      ['us-1', { name: 'B' }],
      ['gone', { name: 'C' }],
    ]);
    expect(compareRecords(expected, crm, true, new Set(['us-1'])).extra).toEqual(['gone']);
  });
});
