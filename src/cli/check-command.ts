import pg from 'pg';
import type { Config } from '../config.ts';
import { describeTables } from '../capture/table-catalog.ts';
import { preflight } from '../capture/slot-admin.ts';
import { createAdapter } from '../crm/create-adapter.ts';
import { errorMessage } from '../errors.ts';
import { createKafka } from '../kafka/client.ts';

/**
 * `pg2crm check`: every dependency the connector needs, as a checklist. Each failure says how
 * to fix it. Returns the number of failed checks.
 */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

async function attempt(name: string, fn: () => Promise<string>): Promise<CheckResult> {
  try {
    return { name, ok: true, detail: await fn() };
  } catch (err) {
    return { name, ok: false, detail: errorMessage(err) };
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms / 1000} s`)), ms);
    }),
  ]);
}

export async function runChecks(config: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const client = new pg.Client({ connectionString: config.postgres.url, connectionTimeoutMillis: 5000 });
  const pgUp = await attempt('PostgreSQL reachable', async () => {
    await client.connect();
    return 'connected';
  });
  if (!pgUp.ok) pgUp.detail += '; check postgres.url, that PostgreSQL runs and accepts this host';
  results.push(pgUp);
  if (pgUp.ok) {
    results.push(await attempt('PostgreSQL ready for logical replication', async () => {
      await preflight(client);
      return 'wal_level=logical, role may replicate';
    }));
    results.push(await attempt('captured tables', async () => {
      const tables = await describeTables(client, config.postgres.tables);
      return [...tables.values()].map((t) => `${t.schema}.${t.table} (key ${t.primaryKey.join(', ')})`).join('; ');
    }));
    await client.end().catch(() => undefined);
  }
  const kafka = createKafka(config.kafka, 'check', 0);
  const admin = kafka.admin();
  const kafkaUp = await attempt('Kafka reachable', async () => {
    await withTimeout(admin.connect(), 10_000, `Kafka at ${config.kafka.brokers.join(',')}`);
    const topics = await withTimeout(admin.listTopics(), 10_000, 'Kafka');
    return `${topics.length} topics`;
  });
  if (!kafkaUp.ok) kafkaUp.detail += '; check kafka.brokers and that the brokers run';
  results.push(kafkaUp);
  await admin.disconnect().catch(() => undefined);
  results.push(await attempt('schema registry reachable', async () => {
    const url = `${config.kafka.schemaRegistry.url.replace(/\/+$/, '')}/subjects`;
    const res = await withTimeout(fetch(url), 10_000, 'schema registry').catch((err: unknown) => {
      throw new Error(`${errorMessage(err)}; check kafka.schemaRegistry.url`);
    });
    if (!res.ok) throw new Error(`GET /subjects answered HTTP ${res.status}; check kafka.schemaRegistry.url (Confluent-compatible API)`);
    return 'answers the Confluent API';
  }));
  const adapter = createAdapter(config.crm);
  results.push(await attempt(`CRM credentials (${config.crm.kind})`, async () => {
    await withTimeout(adapter.ping(), 15_000, `CRM at ${config.crm.baseUrl}`);
    return 'token accepted';
  }));
  await adapter.close().catch(() => undefined);
  return results;
}

export function printChecks(results: CheckResult[], out: (line: string) => void): number {
  for (const r of results) out(`${r.ok ? 'PASS' : 'FAIL'}  ${r.name}: ${r.detail}`);
  const failed = results.filter((r) => !r.ok).length;
  out(failed ? `${failed} check(s) failed` : 'all checks passed');
  return failed;
}
