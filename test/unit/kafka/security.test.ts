import kafkajs from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ConnectorError } from '../../../src/errors.ts';
import { kafkaSecurity, kafkaSecurityError } from '../../../src/kafka/client.ts';

const { KafkaJSConnectionError, KafkaJSNonRetriableError, KafkaJSSASLAuthenticationError } = kafkajs;

/** kafka.ssl / kafka.sasl as kafkajs options, and their failures as errors naming the setting. */
const secure = {
  brokers: ['b1:9093'],
  clientId: 'pg2crm-test',
  ssl: { ca: 'CA PEM', rejectUnauthorized: true },
  sasl: { mechanism: 'scram-sha-512' as const, username: 'svc', password: 'pw' },
};

describe('kafkaSecurity', () => {
  it('passes ssl and sasl to kafkajs; plaintext without them', () => {
    expect(kafkaSecurity(secure)).toEqual({ ssl: { ca: 'CA PEM', rejectUnauthorized: true }, sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'pw' } });
    expect(kafkaSecurity({ ssl: { rejectUnauthorized: true, cert: 'C', key: 'K' } })).toEqual({ ssl: { rejectUnauthorized: true, cert: 'C', key: 'K' } });
    expect(kafkaSecurity({})).toEqual({});
  });
});

describe('kafkaSecurityError', () => {
  it('names kafka.sasl for a refused login, also when kafkajs wrapped it', () => {
    // kafkajs's typings miss the constructors' arguments (src/errors.js takes (message|error, { cause })).
    const Sasl = KafkaJSSASLAuthenticationError as unknown as new (m: string) => Error;
    const NonRetriable = KafkaJSNonRetriableError as unknown as new (e: Error, o: { cause: Error }) => Error;
    const sasl = new Sasl('SASL SCRAM SHA512 authentication failed: invalid credentials');
    for (const err of [sasl, new NonRetriable(sasl, { cause: sasl })]) {
      const mapped = kafkaSecurityError(err, secure);
      expect(mapped).toBeInstanceOf(ConnectorError);
      expect((mapped as ConnectorError).code).toBe('KAFKA_AUTH');
      expect((mapped as ConnectorError).retriable).toBe(false);
      expect((mapped as Error).message).toMatch(/Kafka at b1:9093 refused scram-sha-512 as user svc: .*check kafka\.sasl \(mechanism, username, password or password_FILE\)/);
      expect((mapped as Error).message).not.toContain('pw;');
    }
  });

  it('names kafka.ssl for a certificate the client does not trust', () => {
    const tls = new KafkaJSConnectionError('Connection error: self-signed certificate in certificate chain', { code: 'SELF_SIGNED_CERT_IN_CHAIN' } as never);
    const mapped = kafkaSecurityError(tls, secure) as ConnectorError;
    expect(mapped.code).toBe('KAFKA_TLS');
    expect(mapped.message).toMatch(/TLS to Kafka at b1:9093 failed: .*SELF_SIGNED_CERT_IN_CHAIN.*check kafka\.ssl: ca \(or ca_FILE\)/);
  });

  it('says the address may not be a TLS listener when the broker drops the handshake', () => {
    const dropped = new KafkaJSConnectionError('Connection error: Client network socket disconnected before secure TLS connection was established', { code: 'ECONNRESET' } as never);
    const mapped = kafkaSecurityError(dropped, secure) as ConnectorError;
    expect(mapped.code).toBe('KAFKA_TLS');
    expect(mapped.message).toMatch(/may not be a TLS listener: check that kafka\.brokers names the brokers' TLS \(SSL or SASL_SSL\) listener, or remove kafka\.ssl/);
  });

  it('leaves other failures as they are', () => {
    const refused = new KafkaJSConnectionError('Connection error: connect ECONNREFUSED', { code: 'ECONNREFUSED' } as never);
    expect(kafkaSecurityError(refused, secure)).toBe(refused);
  });
});
