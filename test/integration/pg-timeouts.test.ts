import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPg } from '../../src/capture/pg-connect.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import { useHarness } from '../helpers/connector-harness.ts';
import { uniqueName } from '../helpers/fixtures.ts';

/**
 * A PostgreSQL that accepts TCP connections and never answers (a hung server, a half-dead
 * proxy, a black-holing load balancer) must not hang `pg2crm run`: it fails within a bounded
 * time, exit 1, with a message naming postgres.url and what to do.
 */
const h = useHarness();
const env = h.env;

describe('PostgreSQL that accepts TCP but never answers', () => {
  let silent: Server;
  const sockets = new Set<Socket>();
  let url: string;
  let sim: CrmSimulator;

  beforeAll(async () => {
    // Accepts, reads and ignores everything: the startup message never gets an answer.
    silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('data', () => undefined);
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    url = `postgresql://pg2crm:secret@127.0.0.1:${(silent.address() as { port: number }).port}/erp`;
    sim = await h.simulator(startZendeskSellSimulator, { tokens: ['sim-token'] });
  });

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('`run` exits 1 within the bound, naming postgres.url and the fix', async () => {
    const schema = uniqueName('hungpg');
    const conn = await h.connector(schema, sim.url, { snapshot: 'never', erp: false }, { ...env, PG_URL: url });
    const proc = conn.run();
    const started = Date.now();
    const killer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
    const code = await proc.exited;
    clearTimeout(killer);
    const elapsed = Date.now() - started;
    console.log(`run against a silent PostgreSQL exited ${code} after ${elapsed} ms`);
    expect(code).toBe(1);
    expect(elapsed).toBeLessThan(30_000);
    expect(proc.output).toContain('postgres.url');
    expect(proc.output).toContain('postgres.connectTimeoutMs');
  }, 90_000);

  it('the connect timeout comes from postgres.connectTimeoutMs', async () => {
    const schema = uniqueName('hungpg');
    const conn = await h.connector(schema, sim.url, { snapshot: 'never', erp: false }, { ...env, PG_URL: url });
    conn.editConfig((config) => {
      config.postgres.connectTimeoutMs = 2000;
    });
    const proc = conn.run('--role', 'source');
    const started = Date.now();
    const killer = setTimeout(() => proc.kill('SIGKILL'), 60_000);
    const code = await proc.exited;
    clearTimeout(killer);
    const elapsed = Date.now() - started;
    console.log(`run --role source with connectTimeoutMs 2000 exited ${code} after ${elapsed} ms`);
    expect(code).toBe(1);
    expect(elapsed).toBeLessThan(10_000);
    expect(proc.output).toMatch(/2000 ms/);
  }, 90_000);

  it('a statement running past postgres.queryTimeoutMs is cancelled by the server; the connection stays usable', async () => {
    const client = await openPg({ url: env.PG_URL, queryTimeoutMs: 500 });
    try {
      const started = Date.now();
      await expect(client.query('SELECT pg_sleep(5)')).rejects.toThrow(/statement timeout/);
      expect(Date.now() - started).toBeLessThan(2000);
      expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
    } finally {
      await client.end();
    }
  });
});
