import { createServer, type Server, type Socket } from 'node:net';
import kafkajs from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { ConnectorError } from '../../../src/errors.ts';
import { createKafka, kafkaSecurity, kafkaSecurityError } from '../../../src/kafka/client.ts';

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
    expect(kafkaSecurity(secure)).toEqual({
      ssl: { ca: 'CA PEM', rejectUnauthorized: true },
      sasl: { mechanism: 'scram-sha-512', username: 'svc', password: 'pw' },
    });
    expect(kafkaSecurity({ ssl: { rejectUnauthorized: true, cert: 'C', key: 'K' } })).toEqual({
      ssl: { rejectUnauthorized: true, cert: 'C', key: 'K' },
    });
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
      expect((mapped as Error).message).toMatch(
        /Kafka at b1:9093 refused scram-sha-512 as user svc: .*check kafka\.sasl \(mechanism, username, password or password_FILE\)/,
      );
      expect((mapped as Error).message).not.toContain('pw;');
    }
  });

  it('names kafka.ssl for a certificate the client does not trust', () => {
    const tls = new KafkaJSConnectionError('Connection error: self-signed certificate in certificate chain', {
      code: 'SELF_SIGNED_CERT_IN_CHAIN',
    } as never);
    const mapped = kafkaSecurityError(tls, secure) as ConnectorError;
    expect(mapped.code).toBe('KAFKA_TLS');
    expect(mapped.message).toMatch(/TLS to Kafka at b1:9093 failed: .*SELF_SIGNED_CERT_IN_CHAIN.*check kafka\.ssl: ca \(or ca_FILE\)/);
  });

  it('says the address may not be a TLS listener when the broker drops the handshake', () => {
    const dropped = new KafkaJSConnectionError(
      'Connection error: Client network socket disconnected before secure TLS connection was established',
      { code: 'ECONNRESET' } as never,
    );
    // The socket factory saw the TCP connect succeed and the socket fail before the handshake ended.
    const mapped = kafkaSecurityError(dropped, secure, { handshakeDropped: true }) as ConnectorError;
    expect(mapped.code).toBe('KAFKA_TLS');
    expect(mapped.message).toMatch(
      /may not be a TLS listener: check that kafka\.brokers names the brokers' TLS \(SSL or SASL_SSL\) listener, or remove kafka\.ssl/,
    );
  });

  it('leaves other failures as they are', () => {
    const refused = new KafkaJSConnectionError('Connection error: connect ECONNREFUSED', { code: 'ECONNREFUSED' } as never);
    expect(kafkaSecurityError(refused, secure)).toBe(refused);
  });
});

describe('createKafka with kafka.ssl against a plaintext listener (real sockets)', () => {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  });

  /** A TCP listener that reacts to the first bytes (the TLS ClientHello) with `onHello`. */
  async function listener(onHello: (s: Socket) => void): Promise<number> {
    const server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
      s.once('data', () => onHello(s));
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return (server.address() as { port: number }).port;
  }

  async function connectError(port: number): Promise<unknown> {
    const kafka = createKafka({ brokers: [`127.0.0.1:${port}`], clientId: 'unit', ssl: { rejectUnauthorized: true } }, 'tls', 0);
    kafka.logger().setLogLevel(kafkajs.logLevel.NOTHING);
    const admin = kafka.admin();
    return admin.connect().then(
      () => undefined,
      (e: unknown) => e,
    );
  }

  it('a listener that drops the ClientHello: KAFKA_TLS, "may not be a TLS listener"', async () => {
    const err = await connectError(await listener((s) => s.destroy()));
    expect(err).toBeInstanceOf(ConnectorError);
    expect(err).toMatchObject({ code: 'KAFKA_TLS', kind: 'auth' });
    expect((err as Error).message).toMatch(/\(ERR_SSL_HANDSHAKE_CLOSED\); the address may not be a TLS listener/);
  });

  it("a listener that answers in plaintext: KAFKA_TLS from OpenSSL's code", async () => {
    const err = await connectError(await listener((s) => s.write('HTTP/1.1 400 Bad Request\r\n\r\n')));
    expect(err).toMatchObject({ code: 'KAFKA_TLS' });
    expect((err as Error).message).toMatch(/\(ERR_SSL_WRONG_VERSION_NUMBER\); the address may not be a TLS listener/);
  });

  it('nothing listening: not a TLS failure', async () => {
    const port = await listener(() => undefined);
    await new Promise<void>((r) => servers.pop()!.close(() => r()));
    const err = await connectError(port);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(ConnectorError);
  });
});
