import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { connectError, pgClientConfig, pgSslOptions } from '../../../src/capture/pg-connect.ts';

/** postgres.ssl (libpq's sslmode) as node-postgres' ssl, on query and replication connections. */
describe('pgSslOptions', () => {
  it('leaves PGSSLMODE working when postgres.ssl is not set', () => {
    const saved = process.env.PGSSLMODE;
    process.env.PGSSLMODE = 'verify-full';
    try {
      // A Client resolves its settings (environment included) when it is made, before any connection.
      const client = new pg.Client(pgClientConfig({ url: 'postgresql://u@db.example:5432/d' })) as unknown as { ssl: unknown };
      expect(client.ssl).toBeTruthy();
    } finally {
      if (saved === undefined) delete process.env.PGSSLMODE;
      else process.env.PGSSLMODE = saved;
    }
  });

  it('maps each sslmode', () => {
    // No postgres.ssl: node-postgres decides, honouring PGSSLMODE (before postgres.ssl existed, that was the way to ask for TLS).
    expect(pgSslOptions(undefined)).toBeUndefined();
    expect(pgSslOptions({ mode: 'disable' })).toBe(false);
    expect(pgSslOptions({ mode: 'require' })).toEqual({ rejectUnauthorized: false });
    const verifyCa = pgSslOptions({ mode: 'verify-ca', rootCert: 'CA' }) as {
      ca: string;
      rejectUnauthorized: boolean;
      checkServerIdentity: () => unknown;
    };
    expect(verifyCa).toMatchObject({ ca: 'CA', rejectUnauthorized: true });
    // verify-ca checks the chain only: any host name passes.
    expect(verifyCa.checkServerIdentity()).toBeUndefined();
    const full = pgSslOptions({ mode: 'verify-full', rootCert: 'CA', cert: 'C', key: 'K' });
    expect(full).toEqual({ ca: 'CA', rejectUnauthorized: true, cert: 'C', key: 'K' });
  });

  it('applies to replication connections too', () => {
    const target = { url: 'postgresql://u@h/db', ssl: { mode: 'verify-full' as const, rootCert: 'CA' } };
    expect(pgClientConfig(target, 'replication').ssl).toEqual({ ca: 'CA', rejectUnauthorized: true });
    expect(pgClientConfig(target, 'query').ssl).toEqual({ ca: 'CA', rejectUnauthorized: true });
  });

  it('names postgres.ssl when the server certificate is refused or the server has no TLS', () => {
    const target = { url: 'postgresql://u:secret@h/db', ssl: { mode: 'verify-full' as const, rootCert: 'CA' } };
    const cert = Object.assign(new Error('unable to verify the first certificate'), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
    const e = connectError(cert, target);
    expect(e.code).toBe('POSTGRES_TLS');
    expect(e.retriable).toBe(false);
    expect(e.message).toMatch(/TLS certificate was refused .*check postgres\.ssl: rootCert \(or rootCert_FILE\)/);
    expect(e.message).not.toContain('secret');
    expect(connectError(new Error('The server does not support SSL connections'), target).message).toMatch(/ssl=off.*postgres\.ssl\.mode/);
  });

  it('reads the SQLSTATE of a pg_hba.conf refusal without TLS (28000), not its wording', () => {
    const plain = { url: 'postgresql://u:secret@h/db' };
    const refusal = (message: string) => Object.assign(new Error(message), { code: '28000', severity: 'FATAL' });
    for (const text of [
      'no pg_hba.conf entry for host "10.0.0.7", user "u", database "db", no encryption',
      'pg_hba.conf rejects connection for host "10.0.0.7", user "u", database "db", no encryption',
    ]) {
      const e = connectError(refusal(text), plain);
      expect(e.code).toBe('POSTGRES_TLS');
      expect(e.message).toContain(text);
      expect(e.message).toMatch(/the server accepts only TLS connections: set postgres\.ssl/);
    }
    // A wrong password (28P01) is not about TLS.
    const password = Object.assign(new Error('password authentication failed for user "u"'), { code: '28P01' });
    expect(connectError(password, plain)).toMatchObject({ code: 'POSTGRES_CONNECT', retriable: true });
    // With TLS asked for, a refusal is not "set postgres.ssl".
    expect(
      connectError(refusal('no pg_hba.conf entry for host "10.0.0.7", user "u", database "db", SSL encryption'), {
        ...plain,
        ssl: { mode: 'require' as const },
      }).code,
    ).toBe('POSTGRES_CONNECT');
  });

  it('a TLS handshake failure (OpenSSL) is POSTGRES_TLS; a refused or timed-out TCP connect is POSTGRES_CONNECT', () => {
    const target = { url: 'postgresql://u@h/db', ssl: { mode: 'verify-full' as const, rootCert: 'CA' }, connectTimeoutMs: 1234 };
    const handshake = Object.assign(new Error('error:0A00010B:SSL routines::wrong version number'), {
      code: 'ERR_SSL_WRONG_VERSION_NUMBER',
      library: 'SSL routines',
    });
    expect(connectError(handshake, target).code).toBe('POSTGRES_TLS');
    const altname = Object.assign(new Error("Hostname/IP does not match certificate's altnames"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(connectError(altname, target).message).toMatch(
      /TLS certificate was refused .*the host in postgres\.url must be a name the certificate carries/,
    );
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:5432'), { code: 'ECONNREFUSED' });
    expect(connectError(refused, target)).toMatchObject({ code: 'POSTGRES_CONNECT', retriable: true });
    expect(connectError(refused, target).message).toMatch(/check postgres\.url and that PostgreSQL runs/);
    const timedOut = Object.assign(new Error('connect ETIMEDOUT 10.0.0.7:5432'), { code: 'ETIMEDOUT' });
    expect(connectError(timedOut, target).message).toContain('no answer within postgres.connectTimeoutMs (1234 ms)');
  });
});
