import type { KafkaMessage } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { type DeadLetter, deadLetterOf, encodeDeadLetter, MAX_ERROR_CHARS } from '../../../src/sink/dead-letter.ts';
import { clearSecrets, registerSecrets } from '../../../src/secrets.ts';

const message = (valueBytes: number): KafkaMessage => ({
  key: Buffer.from('{"id":"7"}'),
  value: Buffer.alloc(valueBytes, 1),
  offset: '42',
  timestamp: '0',
  attributes: 0,
  headers: {},
});

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

  it('scrubs the credentials in use and echoed Authorization headers from the CRM error text', () => {
    registerSecrets(['crm-token-5f1e2d3c', 'client-secret-77aa']);
    try {
      const echoed = `email is invalid in request: POST /v2/contacts/upsert HTTP/1.1\nauthorization: Bearer crm-token-5f1e2d3c\n\n{"data":{"email":"eve@echo"}} client_secret=client-secret-77aa; retry with Bearer eyJ0eXAi.fetched.token`;
      const l = deadLetterOf('t', 0, message(10), {
        object: 'contacts',
        externalId: '7',
        error: { code: 'HTTP_422_invalid', message: echoed },
        attempts: 1,
      });
      expect(l.error.message).not.toContain('crm-token-5f1e2d3c');
      expect(l.error.message).not.toContain('client-secret-77aa');
      expect(l.error.message).not.toContain('eyJ0eXAi.fetched.token');
      expect(l.error.message).toContain('authorization: Bearer ***');
      expect(l.error.message).toContain('{"data":{"email":"eve@echo"}}');
    } finally {
      clearSecrets();
    }
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
    expect(sent).toMatchObject({
      topic: 't.erp.customers',
      partition: 2,
      offset: '42',
      key: '{"id":"7"}',
      value: null,
      valueOmittedBytes: 8_000,
      error: { code: 'INVALID', field: 'email' },
    });
  });

  it('cuts the error text further when even the value-less letter is too large', () => {
    const bytes = encodeDeadLetter(letter(8_000, 900), 700);
    expect(bytes.length).toBeLessThanOrEqual(700);
    expect(JSON.parse(bytes.toString())).toMatchObject({ offset: '42', key: '{"id":"7"}', value: null });
  });
});
