import pg from 'pg';
import { pgClient } from '../capture/pg-connect.ts';
import type { Config } from '../config.ts';
import { describeTables } from '../capture/table-catalog.ts';
import { preflight, slotInfo } from '../capture/slot-admin.ts';
import { createAdapter } from '../crm/create-adapter.ts';
import type { CrmTarget } from '../crm/crm-adapter.ts';
import { errorMessage } from '../errors.ts';
import { topicFor } from '../events/topic-router.ts';
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
  const client = pgClient(config.postgres);
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
    results.push(await attempt(`replication slot ${config.postgres.slot}`, () => checkSlot(client, config.postgres.slot)));
    results.push(await attempt(`publication ${config.postgres.publication}`, () => checkPublication(client, config.postgres.publication, config.postgres.tables)));
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
  if (kafkaUp.ok) {
    results.push(await attempt('Kafka topics', async () => {
      const existing = new Set(await admin.listTopics());
      const wanted = config.postgres.tables.map((t) => {
        const [schema, table] = t.split('.') as [string, string];
        return topicFor(config.kafka.topicPrefix, schema, table);
      });
      const missing = wanted.filter((t) => !existing.has(t));
      const present = wanted.filter((t) => existing.has(t));
      const parts = present.length ? [`${present.join(', ')} exist`] : [];
      if (missing.length) parts.push(`${missing.join(', ')} will be created with ${config.kafka.partitions} partitions`);
      return parts.join('; ');
    }));
  }
  await admin.disconnect().catch(() => undefined);
  results.push(await attempt('schema registry reachable', async () => {
    const url = `${config.kafka.schemaRegistry.url.replace(/\/+$/, '')}/subjects`;
    const res = await withTimeout(fetch(url), 10_000, 'schema registry').catch((err: unknown) => {
      throw new Error(`${errorMessage(err)}; check kafka.schemaRegistry.url`);
    });
    if (!res.ok) throw new Error(`GET /subjects answered HTTP ${res.status}; check kafka.schemaRegistry.url (Confluent-compatible API)`);
    return 'answers the Confluent API';
  }));
  const several = config.crm.credentials.length > 1;
  for (const [i, credential] of config.crm.credentials.entries()) {
    const adapter = createAdapter({ ...config.crm, auth: credential });
    const which = several ? ` crm.credentials[${i}] (quota group ${credential.quotaGroup})` : '';
    const accepted = await attempt(`CRM credentials (${config.crm.kind})${which}`, async () => {
      // An OAuth credential obtains its token here (the first request asks the token endpoint).
      await withTimeout(adapter.ping(), 15_000, `CRM at ${config.crm.baseUrl}`);
      const auth = adapter.describeAuth?.();
      return auth && auth !== 'static token' ? `${auth}; accepted` : 'token accepted';
    });
    results.push(accepted);
    if (accepted.ok && i === 0 && adapter.preflight) {
      const checks = await withTimeout(adapter.preflight(crmTargets(config)), 30_000, `CRM at ${config.crm.baseUrl}`).catch((err: unknown) => [
        { name: `CRM objects and fields (${config.crm.kind})`, ok: false, detail: errorMessage(err) },
      ]);
      results.push(...checks);
    }
    await adapter.close().catch(() => undefined);
  }
  return results;
}

export function printChecks(results: CheckResult[], out: (line: string) => void): number {
  for (const r of results) out(`${r.ok ? 'PASS' : 'FAIL'}  ${r.name}: ${r.detail}`);
  const failed = results.filter((r) => !r.ok).length;
  out(failed ? `${failed} check(s) failed` : 'all checks passed');
  return failed;
}

async function checkSlot(client: pg.Client, slot: string): Promise<string> {
  const info = await slotInfo(client, slot);
  if (info.exists) return info.active ? `exists, in use by pid ${info.activePid} (a running connector)` : 'exists; the connector resumes from it';
  const r = await client.query<{ used: number; max: number }>(
    "SELECT (SELECT count(*) FROM pg_replication_slots)::int AS used, current_setting('max_replication_slots')::int AS max",
  );
  const { used, max } = r.rows[0]!;
  if (used >= max) throw new Error(`all ${max} replication slots are taken; raise max_replication_slots or drop an unused slot`);
  return `will be created (${max - used} of ${max} slots free)`;
}

async function checkPublication(client: pg.Client, publication: string, tables: string[]): Promise<string> {
  const r = await client.query<{ t: string }>(
    "SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = $1",
    [publication],
  );
  const exists = (await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication])).rowCount === 1;
  if (!exists) return `will be created for ${tables.join(', ')}`;
  const have = new Set(r.rows.map((row) => row.t));
  const same = have.size === tables.length && tables.every((t) => have.has(t));
  return same ? 'publishes exactly the captured tables' : `will be set to ${tables.join(', ')} (now: ${[...have].join(', ') || 'none'})`;
}

/** Every object and external-id field the mappings write to or look up, once each. */
export function crmTargets(config: Pick<Config, 'mappings'>): CrmTarget[] {
  const out = new Map<string, CrmTarget>();
  for (const m of config.mappings) {
    out.set(`${m.object}\u0000${m.externalId.field}`, { object: m.object, externalIdField: m.externalId.field });
  }
  return [...out.values()];
}
