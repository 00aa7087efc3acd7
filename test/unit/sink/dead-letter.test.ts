import type { KafkaMessage } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { type DeadLetter, deadLetterOf, encodeDeadLetter, MAX_ERROR_CHARS } from '../../../src/sink/dead-letter.ts';

const message = (valueBytes: number): KafkaMessage => ({ key: Buffer.from('{"id":"7"}'), value: Buffer.alloc(valueBytes, 1), offset: '42', timestamp: '0', attributes: 0, headers: {} });

function letter(valueBytes: number, errorChars: number): DeadLetter {
  return deadLetterOf('t.erp.customers', 2, message(valueBytes), {
    object: 'contacts',
    externalId: '7',
    error: { code: 'INVALID', message: 'e'.repeat(errorChars), field: 'email' },
    attempts: 1,
  });
}

describe('dead letters', () => {
  it('caps the CRM error text (CRMs echo whole requests into errors)', () => {
    const l = letter(10, 50_000);
    expect(l.error.message.length).toBeLessThan(MAX_ERROR_CHARS + 40);
    expect(l.error.message).toContain('50000 characters, cut');
    expect(letter(10, 20).error.message).toBe('e'.repeat(20));
  });

  it('a letter that fits goes whole', () => {
    const l = letter(100, 10);
    expect(JSON.parse(encodeDeadLetter(l, 10_000).toString())).toEqual(l);
  });

  it('a letter too large for the topic keeps its position and key but not the value', () => {
    const l = letter(8_000, 10);
    const bytes = encodeDeadLetter(l, 4_000);
    expect(bytes.length).toBeLessThanOrEqual(4_000);
    const sent = JSON.parse(bytes.toString()) as DeadLetter;
    expect(sent).toMatchObject({ topic: 't.erp.customers', partition: 2, offset: '42', key: '{"id":"7"}', value: null, valueOmittedBytes: 8_000, error: { code: 'INVALID', field: 'email' } });
  });

  it('cuts the error text further when even the value-less letter is too large', () => {
    const bytes = encodeDeadLetter(letter(8_000, 900), 700);
    expect(bytes.length).toBeLessThanOrEqual(700);
    expect(JSON.parse(bytes.toString())).toMatchObject({ offset: '42', key: '{"id":"7"}', value: null });
  });
});
