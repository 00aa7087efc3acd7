import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runChecks } from '../../../src/cli/check-command.ts';
import { parseConfig } from '../../../src/config.ts';

/**
 * `pg2crm check` adds "check <setting>" to a failed connection, except when the failure already
 * names the setting to fix (TLS of postgres.ssl, kafka.ssl). Run against local stand-ins:
 * a closed port, a "PostgreSQL" that answers the SSLRequest with 'N' (no TLS), and a
 * "Kafka" plaintext listener that drops a TLS ClientHello.
 */
const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
let noTlsPg: Server;
let plaintextKafka: Server;
let closedPort = 0;
const sockets = new Set<Socket>();

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

beforeAll(async () => {
  // https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.12: 'N' = the server does not do SSL.
  noTlsPg = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('data', () => s.write('N'));
  });
  plaintextKafka = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.once('data', () => s.destroy());
  });
  const probe = createServer();
  closedPort = await listen(probe);
  await new Promise<void>((r) => probe.close(() => r()));
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all([noTlsPg, plaintextKafka].map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))));
});

function config(pgPort: number, kafkaPort: number, tls: boolean) {
  return parseConfig(
    {
      name: 'erp',
      postgres: {
        url: `postgresql://u:p@127.0.0.1:${pgPort}/db`,
        tables: ['erp.customers'],
        connectTimeoutMs: 2000,
        ...(tls ? { ssl: { mode: 'verify-full', rootCert: CA } } : {}),
      },
      kafka: {
        brokers: `127.0.0.1:${kafkaPort}`,
        topicPrefix: 'erp',
        schemaRegistry: { url: `http://127.0.0.1:${closedPort}` },
        ...(tls ? { ssl: { ca: CA } } : {}),
      },
      crm: {
        kind: 'zendesk-sell',
        baseUrl: `http://127.0.0.1:${closedPort}`,
        auth: { token: 'unit-token' },
        limits: { requests: 100, windowSeconds: 10 },
      },
      mappings: [
        { table: 'erp.customers', object: 'contacts', externalId: { column: 'id', field: 'erp_id' }, fields: { last_name: 'last_name' } },
      ],
    },
    {},
  );
}

describe('pg2crm check', () => {
  it('unreachable PostgreSQL and Kafka: the detail ends with the settings to check', async () => {
    const results = await runChecks(config(closedPort, closedPort, false));
    const byName = new Map(results.map((r) => [r.name, r]));
    expect(byName.get('PostgreSQL reachable')).toMatchObject({ ok: false });
    expect(byName.get('PostgreSQL reachable')!.detail).toMatch(/; check postgres\.url, that PostgreSQL runs and accepts this host$/);
    expect(byName.get('Kafka reachable')).toMatchObject({ ok: false });
    expect(byName.get('Kafka reachable')!.detail).toMatch(/; check kafka\.brokers and that the brokers run$/);
    expect(byName.get('schema registry reachable')).toMatchObject({ ok: false });
    expect(byName.get('schema registry reachable')!.detail).toMatch(/; check kafka\.schemaRegistry\.url$/);
  }, 30_000);

  it('TLS failures name postgres.ssl and kafka.ssl, without the generic hint', async () => {
    const results = await runChecks(config(await listen(noTlsPg), await listen(plaintextKafka), true));
    const byName = new Map(results.map((r) => [r.name, r]));
    const pg = byName.get('PostgreSQL reachable')!;
    expect(pg.ok).toBe(false);
    expect(pg.detail).toMatch(/the server has ssl=off: .*postgres\.ssl\.mode/);
    expect(pg.detail).not.toContain('check postgres.url');
    const kafka = byName.get('Kafka reachable')!;
    expect(kafka.ok).toBe(false);
    expect(kafka.detail).toMatch(/TLS to Kafka at 127\.0\.0\.1:\d+ failed: .*may not be a TLS listener/);
    expect(kafka.detail).not.toContain('check kafka.brokers and that the brokers run');
  }, 30_000);
});
