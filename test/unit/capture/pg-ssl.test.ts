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
    const verifyCa = pgSslOptions({ mode: 'verify-ca', rootCert: 'CA' }) as { ca: string; rejectUnauthorized: boolean; checkServerIdentity: () => unknown };
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
});
