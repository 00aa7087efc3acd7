import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPg, PG_DEFAULTS, pgClient, pgClientConfig, SESSION_OPTIONS } from '../../../src/capture/pg-connect.ts';
import { ConnectorError } from '../../../src/errors.ts';

/** Internals of node-postgres the settings end up in (what actually bounds the connection). */
interface PgInternals {
  _connectionTimeoutMillis: number;
  connectionParameters: { statement_timeout: number | false; query_timeout: number | false };
  connection: { _keepAlive: boolean; _keepAliveInitialDelayMillis: number };
}

describe('pg connections', () => {
  it('query connections get a connect timeout, keepalive and a statement + client query timeout', () => {
    const config = pgClientConfig({ url: 'postgresql://u:p@db:5432/erp', connectTimeoutMs: 7000, queryTimeoutMs: 30_000 });
    expect(config).toMatchObject({
      connectionString: 'postgresql://u:p@db:5432/erp',
      connectionTimeoutMillis: 7000,
      keepAlive: true,
      keepAliveInitialDelayMillis: PG_DEFAULTS.keepAliveInitialDelayMs,
      statement_timeout: 30_000,
    });
    // The client stops waiting only after the server had its chance to cancel the statement.
    expect(config.query_timeout).toBeGreaterThan(30_000);

    const client = pgClient({
      url: 'postgresql://u:p@db:5432/erp',
      connectTimeoutMs: 7000,
      queryTimeoutMs: 30_000,
    }) as unknown as PgInternals;
    expect(client._connectionTimeoutMillis).toBe(7000);
    expect(client.connectionParameters.statement_timeout).toBe(30_000);
    expect(client.connectionParameters.query_timeout).toBe(config.query_timeout);
    expect(client.connection._keepAlive).toBe(true);
  });

  it('a bare URL takes the defaults', () => {
    expect(pgClientConfig('postgresql://db/erp')).toMatchObject({
      connectionTimeoutMillis: PG_DEFAULTS.connectTimeoutMs,
      keepAlive: true,
      statement_timeout: PG_DEFAULTS.queryTimeoutMs,
    });
  });

  it('replication connections get the connect timeout and keepalive, but no query timeout (the stream is long-lived)', () => {
    const config = pgClientConfig({ url: 'postgresql://db/erp', connectTimeoutMs: 7000, queryTimeoutMs: 30_000 }, 'replication');
    expect(config).toMatchObject({ connectionTimeoutMillis: 7000, keepAlive: true });
    expect(config.statement_timeout).toBeUndefined();
    expect(config.query_timeout).toBeUndefined();
  });

  it("pins the output styles after the URL's own options, which node-postgres would otherwise let override them", () => {
    const config = pgClientConfig('postgresql://u@db/erp?options=-c%20search_path%3Derp&application_name=x', 'replication');
    expect(config.connectionString).toBe('postgresql://u@db/erp?application_name=x');
    expect(config.options).toBe(`-c search_path=erp ${SESSION_OPTIONS}`);
    expect(SESSION_OPTIONS).toContain('-c DateStyle=ISO');
    const client = pgClient('postgresql://u@db/erp?options=-c%20search_path%3Derp') as unknown as {
      connectionParameters: { options: string };
    };
    expect(client.connectionParameters.options).toBe(`-c search_path=erp ${SESSION_OPTIONS}`);
    expect(pgClientConfig('postgresql://db/erp').options).toBe(SESSION_OPTIONS);
  });

  it('queryTimeoutMs 0 turns the query timeout off', () => {
    const config = pgClientConfig({ url: 'postgresql://db/erp', queryTimeoutMs: 0 });
    expect(config.statement_timeout).toBeUndefined();
    expect(config.query_timeout).toBeUndefined();
  });

  describe('against a server that accepts TCP and never answers', () => {
    let server: Server;
    let port = 0;
    const sockets = new Set<Socket>();
    beforeAll(async () => {
      server = createServer((s) => {
        sockets.add(s);
        s.on('data', () => undefined);
        s.on('error', () => undefined);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });
    afterAll(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('openPg fails within connectTimeoutMs, naming postgres.url (password hidden) and the fix', async () => {
      const started = Date.now();
      const err = await openPg({ url: `postgresql://u:secret@127.0.0.1:${port}/erp`, connectTimeoutMs: 500 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const elapsed = Date.now() - started;
      expect(err).toBeInstanceOf(ConnectorError);
      expect(err).toMatchObject({ code: 'POSTGRES_CONNECT', retriable: true });
      const message = (err as Error).message;
      expect(message).toContain(`postgres.url (postgresql://u:***@127.0.0.1:${port}/erp)`);
      expect(message).toContain('postgres.connectTimeoutMs (500 ms)');
      expect(message).not.toContain('secret');
      expect(elapsed).toBeGreaterThanOrEqual(450);
      expect(elapsed).toBeLessThan(2000);
    });
  });
});
