import { createConnection, createServer, type Server } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, inject, it, onTestFailed } from 'vitest';
import { CliProcess, createErpSchema, dropCapture, freePort, readAllEvents, type TestConnector, uniqueName, waitFor, waitSlotActive, withPg, writeConnectorConfig } from '../helpers/fixtures.ts';

/**
 * The source keeps publishing once a schema registry that was down comes back. Found by the
 * CI-sized chaos run (a source restarted while the registry restarted): each retry of a send
 * awaited the same rejected encoding, so the source failed "registry refused the schema …
 * ECONNREFUSED" for minutes after the registry was back, until it ran out of attempts and exited.
 */
const env = inject('stack');

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
  let conn: TestConnector | undefined;
  let proc: CliProcess | undefined;
  let door: RegistryDoor | undefined;

  afterAll(async () => {
    await proc?.stop();
    await door?.close();
    if (conn) await dropCapture(env.PG_URL, conn.slot, conn.publication);
  });

  it('a source that met a registry that was down publishes within seconds of it coming back', async () => {
    door = new RegistryDoor(await freePort(), env.SCHEMA_REGISTRY_URL);
    const schema = uniqueName('regout');
    await createErpSchema(env.PG_URL, schema);
    conn = writeConnectorConfig(env, schema, 'http://127.0.0.1:9', { snapshot: 'never' });
    const cfg = JSON.parse(readFileSync(conn.configFile, 'utf8')) as { kafka: { schemaRegistry: { url: string } } };
    cfg.kafka.schemaRegistry.url = door.url(); // nothing listens there yet: the registry is "down"
    writeFileSync(conn.configFile, JSON.stringify(cfg));
    proc = new CliProcess(['run', '--config', conn.configFile, '--role', 'source']);
    onTestFailed(() => console.log(proc?.output.slice(-4000)));
    await waitSlotActive(env.PG_URL, conn.slot);
    await withPg(env.PG_URL, (c) => c.query(`INSERT INTO ${schema}.customers (first_name, last_name) VALUES ('Reg', 'Outage')`));
    // The send fails while the registry is away (a few attempts, backing off).
    await waitFor('a failed send', async () => proc!.output.includes('Kafka send failed; retrying'), 30_000);
    await new Promise((r) => setTimeout(r, 4_000));
    await door.open();
    const opened = Date.now();
    const topic = `${conn.topicPrefix}.${schema}.customers`;
    await waitFor('the row in Kafka', async () => (await readAllEvents(env, topic).catch(() => [])).length === 1, 25_000, 1_000);
    // The next attempt after the registry is back succeeds (backoff ≤ 8 s at that point), not the 10th.
    expect((Date.now() - opened) / 1000).toBeLessThan(20);
    expect(proc.output).not.toContain('source failed');
  });
});
