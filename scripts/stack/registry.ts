import { join } from 'node:path';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { apicurioHome, apicurioRunner } from './artifacts.ts';
import { spawnDetached, waitUntil } from './processes.ts';

/** Apicurio Registry (in-memory storage), serving the Confluent-compatible API at /apis/ccompat/v7. */
export function registryUrl(port: number): string {
  return `http://127.0.0.1:${port}/apis/ccompat/v7`;
}

/**
 * `dataDir`: keep the schemas in an H2 database file there (Apicurio's default is an in-memory
 * H2, which a restart empties: schema ids in existing Kafka messages would then point nowhere).
 */
export async function startRegistry(dir: string, port: number, opts: { dataDir?: string } = {}): Promise<number> {
  const home = await apicurioHome();
  const storage = opts.dataDir ? [`-Dapicurio.datasource.url=jdbc:h2:file:${join(opts.dataDir, 'registry-db')}`] : [];
  return spawnDetached(
    'java',
    [
      '-Xms128m',
      '-Xmx512m',
      '-XX:TieredStopAtLevel=1',
      `-Dquarkus.http.port=${port}`,
      '-Dquarkus.http.host=127.0.0.1',
      '-Dquarkus.log.level=WARN',
      ...storage,
      '-jar',
      apicurioRunner(home),
    ],
    { cwd: dir, log: join(dir, 'registry.log') },
  );
}

/** Ready = an Avro schema registers and a value encodes and decodes through it. */
export async function registryReady(url: string): Promise<void> {
  await waitUntil('schema registry', async () => (await fetch(`${url}/subjects`)).ok, 120_000, 'registry.log in the stack directory');
  const registry = new SchemaRegistry({ host: url });
  const schema = JSON.stringify({ type: 'record', name: 'StackCheck', fields: [{ name: 'ok', type: 'boolean' }] });
  const { id } = await registry.register({ type: SchemaType.AVRO, schema }, { subject: '__pg2crm_stack_check-value' });
  const decoded = (await registry.decode(await registry.encode(id, { ok: true }))) as { ok: boolean };
  if (decoded.ok !== true) throw new Error('schema registry round trip returned a different value');
}
