import { createConnection, createServer, type Server } from 'node:net';
import { describe, expect, it } from 'vitest';
import { useHarness } from '../helpers/connector-harness.ts';
import { freePort, readAllEvents, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * The source keeps publishing once a schema registry that was down comes back. Found by the
 * CI-sized chaos run (a source restarted while the registry restarted): each retry of a send
 * awaited the same rejected encoding, so the source failed "registry refused the schema …
 * ECONNREFUSED" for minutes after the registry was back, until it ran out of attempts and exited.
 */
const h = useHarness();
const env = h.env;

/** A TCP forwarder to the stack's registry on a fixed port, which can be taken away and brought back. */
class RegistryDoor {
  private server: Server | undefined;
  readonly port: number;
  private readonly target: URL;
  constructor(port: number, target: string) {
    this.port = port;
    this.target = new URL(target);
  }
  url(): string {
    return `http://127.0.0.1:${this.port}${this.target.pathname}`;
  }
  async open(): Promise<void> {
    const server = createServer((client) => {
      const upstream = createConnection({ host: this.target.hostname, port: Number(this.target.port) });
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.server = server;
  }
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('schema registry outage', () => {
  it('a source that met a registry that was down publishes within seconds of it coming back', async () => {
    const door = new RegistryDoor(await freePort(), env.SCHEMA_REGISTRY_URL);
    h.onCleanup(() => door.close());
    const schema = uniqueName('regout');
    const conn = await h.connector(schema, 'http://127.0.0.1:9', { snapshot: 'never' });
    conn.editConfig((cfg) => {
      cfg.kafka.schemaRegistry.url = door.url(); // nothing listens there yet: the registry is "down"
    });
    h.printOnFailure({ chars: 4000 });
    const proc = await conn.running('--role', 'source');
    await withPg(env.PG_URL, (c) => c.query(`INSERT INTO ${schema}.customers (first_name, last_name) VALUES ('Reg', 'Outage')`));
    // The send fails while the registry is away (a few attempts, backing off).
    await waitFor('a failed send', async () => proc.output.includes('Kafka send failed; retrying'), 30_000);
    await new Promise((r) => setTimeout(r, 4_000));
    await door.open();
    const opened = Date.now();
    const topic = conn.topic();
    await waitFor('the row in Kafka', async () => (await readAllEvents(env, topic).catch(() => [])).length === 1, 25_000, 1_000);
    // The next attempt after the registry is back succeeds (backoff ≤ 8 s at that point), not the 10th.
    expect((Date.now() - opened) / 1000).toBeLessThan(20);
    expect(proc.output).not.toContain('source failed');
  });
});
