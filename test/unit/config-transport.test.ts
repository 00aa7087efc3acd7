import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorOf } from '../helpers/config-errors.ts';
import { parseConfig } from '../../src/config.ts';

/** Issue 12 §1: kafka.ssl / kafka.sasl, schemaRegistry auth and CA, postgres.ssl, crm.tls. */
const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n';

function config(patch: { postgres?: object; kafka?: object; schemaRegistry?: object; crm?: object } = {}): Record<string, unknown> {
  return {
    name: 'erp',
    postgres: { url: 'postgresql://u:p@h:5432/db', tables: ['erp.customers'], ...patch.postgres },
    kafka: {
      brokers: 'k1:9093',
      topicPrefix: 'erp',
      schemaRegistry: { url: 'https://registry.example.com', ...patch.schemaRegistry },
      ...patch.kafka,
    },
    crm: {
      kind: 'zendesk-sell',
      baseUrl: 'https://api.getbase.com',
      auth: { token: 't' },
      limits: { requests: 100, windowSeconds: 10 },
      ...patch.crm,
    },
    mappings: [
      { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { last_name: 'last_name' } },
    ],
  };
}

function secretFile(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'pg2crm-tls-')), 'secret');
  writeFileSync(file, `${text}\n`);
  return file;
}

describe('kafka.ssl and kafka.sasl', () => {
  it('takes ssl: {} as TLS with the system CAs and hostname verification on', () => {
    expect(parseConfig(config({ kafka: { ssl: {} } }), {}).kafka.ssl).toEqual({ rejectUnauthorized: true });
    expect(errorOf(config({ kafka: { ssl: true } }))).toMatch(
      /kafka\.ssl: write kafka\.ssl as an object: \{\} for TLS with the system CAs/,
    );
    expect(parseConfig(config({ kafka: { ssl: { ca: CA } } }), {}).kafka.ssl).toEqual({ ca: CA, rejectUnauthorized: true });
    expect(parseConfig(config(), {}).kafka.ssl).toBeUndefined();
  });

  it('reads the CA and the SASL password from _FILE', () => {
    const c = parseConfig(
      config({
        kafka: {
          ssl: { ca_FILE: secretFile(CA) },
          sasl: { mechanism: 'scram-sha-512', username: 'svc', password_FILE: secretFile('s3cret') },
        },
      }),
      {},
    );
    expect(c.kafka.ssl?.ca).toBe(CA.trim());
    expect(c.kafka.sasl).toEqual({ mechanism: 'scram-sha-512', username: 'svc', password: 's3cret' });
  });

  it('refuses a client certificate without its key, an unknown mechanism and a CA that is not PEM', () => {
    expect(errorOf(config({ kafka: { ssl: { cert: CA } } }))).toMatch(
      /kafka\.ssl\.key: mutual TLS needs both kafka\.ssl\.cert and kafka\.ssl\.key/,
    );
    expect(errorOf(config({ kafka: { sasl: { mechanism: 'gssapi', username: 'u', password: 'p' } } }))).toMatch(
      /kafka\.sasl\.mechanism: use plain, scram-sha-256 or scram-sha-512/,
    );
    expect(errorOf(config({ kafka: { ssl: { ca: '/etc/ssl/ca.pem' } } }))).toMatch(/kafka\.ssl\.ca: ca is PEM text .*ca_FILE/);
    expect(errorOf(config({ kafka: { sasl: { mechanism: 'plain', username: 'u' } } }))).toMatch(/kafka\.sasl\.password/);
  });

  it('refuses SASL PLAIN without TLS (the password would cross the network in clear); SCRAM without TLS is accepted', () => {
    expect(errorOf(config({ kafka: { sasl: { mechanism: 'plain', username: 'u', password: 'secret-pw' } } }))).toMatch(
      /kafka\.sasl\.mechanism: SASL PLAIN without kafka\.ssl .*set kafka\.ssl/,
    );
    expect(
      parseConfig(config({ kafka: { ssl: {}, sasl: { mechanism: 'plain', username: 'u', password: 'secret-pw' } } }), {}).kafka.sasl
        ?.mechanism,
    ).toBe('plain');
    expect(
      parseConfig(config({ kafka: { sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'secret-pw' } } }), {}).kafka.sasl
        ?.mechanism,
    ).toBe('scram-sha-512');
  });
});

describe('kafka.schemaRegistry', () => {
  it('refuses credentials inside the URL, says what to set instead, and does not repeat the password', () => {
    const message = errorOf(config({ schemaRegistry: { url: 'https://key:hunter2@registry.example.com' } }));
    expect(message).toMatch(
      /kafka\.schemaRegistry\.url: remove the user name and password from the URL .* set kafka\.schemaRegistry\.username and kafka\.schemaRegistry\.password \(or password_FILE\)/,
    );
    expect(message).not.toContain('hunter2');
  });

  it('takes username, password_FILE and ca_FILE; one of username/password alone is refused', () => {
    const c = parseConfig(
      config({ schemaRegistry: { username: 'key', password_FILE: secretFile('hunter2'), ca_FILE: secretFile(CA) } }),
      {},
    );
    expect(c.kafka.schemaRegistry).toMatchObject({
      url: 'https://registry.example.com',
      username: 'key',
      password: 'hunter2',
      ca: CA.trim(),
    });
    expect(errorOf(config({ schemaRegistry: { username: 'key' } }))).toMatch(/kafka\.schemaRegistry\.password: basic auth needs both/);
  });

  it('refuses basic auth over http:// except on loopback', () => {
    const auth = { username: 'key', password: 'hunter2-pw' };
    expect(errorOf(config({ schemaRegistry: { url: 'http://registry.example.com', ...auth } }))).toMatch(
      /kafka\.schemaRegistry\.url: basic auth over http:\/\/ .*https:\/\//,
    );
    expect(parseConfig(config({ schemaRegistry: { url: 'http://127.0.0.1:8081', ...auth } }), {}).kafka.schemaRegistry.username).toBe(
      'key',
    );
  });
});

describe('postgres.ssl', () => {
  it('takes an sslmode and a root certificate from a file', () => {
    const c = parseConfig(config({ postgres: { ssl: { mode: 'verify-full', rootCert_FILE: secretFile(CA) } } }), {});
    expect(c.postgres.ssl).toEqual({ mode: 'verify-full', rootCert: CA.trim() });
  });

  it('refuses sslmode in the URL, an unknown mode and a root certificate a mode would ignore', () => {
    expect(errorOf(config({ postgres: { url: 'postgresql://u:p@h/db?sslmode=require' } }))).toMatch(
      /postgres\.url: set TLS in postgres\.ssl/,
    );
    expect(errorOf(config({ postgres: { ssl: { mode: 'prefer' } } }))).toMatch(
      /postgres\.ssl\.mode: use disable, require, verify-ca or verify-full/,
    );
    expect(errorOf(config({ postgres: { ssl: { mode: 'require', rootCert: CA } } }))).toMatch(
      /postgres\.ssl\.rootCert: sslmode require does not check the certificate/,
    );
  });
});

describe('crm.tls', () => {
  it('takes a CA bundle and a client certificate from files', () => {
    const c = parseConfig(config({ crm: { tls: { ca_FILE: secretFile(CA), cert_FILE: secretFile(CA), key_FILE: secretFile(KEY) } } }), {});
    expect(c.crm.tls).toEqual({ ca: CA.trim(), cert: CA.trim(), key: KEY.trim() });
    expect(errorOf(config({ crm: { tls: { key: KEY } } }))).toMatch(
      /crm\.tls\.cert: mutual TLS needs both crm\.tls\.cert and crm\.tls\.key/,
    );
  });
});
