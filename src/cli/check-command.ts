import { logLevel } from 'kafkajs';
import type pg from 'pg';
import { pgClient, pgTlsError } from '../capture/pg-connect.ts';
import type { Config } from '../config.ts';
import { describeTables, type TableInfo } from '../capture/table-catalog.ts';
import { preflight, slotInfo } from '../capture/slot-admin.ts';
import { createAdapter } from '../crm/create-adapter.ts';
import type { CrmTarget } from '../crm/crm-adapter.ts';
import { errorKind, errorMessage } from '../errors.ts';
import { topicFor } from '../events/topic-router.ts';
import { registryAuthError, registryFetch, registryTlsError } from '../events/registry-client.ts';
import { createKafka } from '../kafka/client.ts';
import { boundedDisconnect } from './kafka-probe.ts';

/**
 * `pg2crm check`: every dependency the connector needs, as a checklist. Each failure says how
 * to fix it. Returns the number of failed checks.
 */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

/**
 * Runs one check. `fix` is added to a failure's detail unless the error already names the
 * setting to fix: TLS and SASL failures (kind `auth`: POSTGRES_TLS, KAFKA_TLS, KAFKA_AUTH) do.
 */
async function attempt(name: string, fn: () => Promise<string>, fix?: string): Promise<CheckResult> {
  try {
    return { name, ok: true, detail: await fn() };
  } catch (err) {
    const detail = errorMessage(err);
    return { name, ok: false, detail: fix !== undefined && errorKind(err) !== 'auth' ? `${detail}; ${fix}` : detail };
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
  return [...(await checkPostgres(config)), ...(await checkKafka(config)), await checkRegistry(config), ...(await checkCrm(config))];
}

async function checkPostgres(config: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const client = pgClient(config.postgres);
  const pgUp = await attempt(
    'PostgreSQL reachable',
    async () => {
      // A TLS failure names postgres.ssl and its fix instead of postgres.url.
      await client.connect().catch((err: unknown) => Promise.reject(pgTlsError(err, config.postgres) ?? err));
      return 'connected';
    },
    'check postgres.url, that PostgreSQL runs and accepts this host',
  );
  results.push(pgUp);
  if (!pgUp.ok) return results;
  results.push(
    await attempt('PostgreSQL ready for logical replication', async () => {
      await preflight(client);
      return 'wal_level=logical, role may replicate';
    }),
  );
  let tables: Map<string, TableInfo> | undefined;
  results.push(
    await attempt('captured tables', async () => {
      tables = await describeTables(client, config.postgres.tables);
      return [...tables.values()].map((t) => `${t.schema}.${t.table} (key ${t.primaryKey.join(', ')})`).join('; ');
    }),
  );
  // A mapping naming a column the table lacks would write nothing to that CRM field (or no
  // external id at all) without any error: name each one here.
  if (tables) results.push(await attempt('mapped columns', async () => checkMappedColumns(config.mappings, tables!)));
  results.push(await attempt(`replication slot ${config.postgres.slot}`, () => checkSlot(client, config.postgres.slot)));
  results.push(
    await attempt(`publication ${config.postgres.publication}`, () =>
      checkPublication(client, config.postgres.publication, config.postgres.tables),
    ),
  );
  results.push(
    await attempt('role may create and keep the publication', () =>
      checkPublicationRights(client, config.postgres.publication, config.postgres.tables),
    ),
  );
  await client.end().catch(() => undefined);
  return results;
}

async function checkKafka(config: Config): Promise<CheckResult[]> {
  const kafka = createKafka(config.kafka, 'check', 0);
  // Kafka's failures are reported as FAIL lines below; kafkajs's own log lines would interleave
  // with the checklist (and its error-level retry lines read as failures of their own).
  kafka.logger().setLogLevel(logLevel.NOTHING);
  const admin = kafka.admin();
  const kafkaUp = await attempt(
    'Kafka reachable',
    async () => {
      // One 10 s deadline for the whole check, as the README states.
      const topics = await withTimeout(
        admin.connect().then(() => admin.listTopics()),
        10_000,
        `Kafka at ${config.kafka.brokers.join(',')}`,
      );
      return `${topics.length} topics`;
    },
    // A TLS or SASL failure already names kafka.ssl / kafka.sasl (createKafka maps it).
    'check kafka.brokers and that the brokers run',
  );
  const results = [kafkaUp];
  if (kafkaUp.ok) {
    results.push(
      await attempt('Kafka topics', async () => {
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
      }),
    );
  }
  await boundedDisconnect(admin);
  return results;
}

function checkRegistry(config: Config): Promise<CheckResult> {
  return attempt('schema registry reachable', async () => {
    // With kafka.schemaRegistry's basic auth and CA (the URL itself carries no credentials).
    const res = await withTimeout(registryFetch(config.kafka.schemaRegistry, '/subjects'), 10_000, 'schema registry').catch(
      (err: unknown) => {
        throw registryTlsError(err) ?? new Error(`${errorMessage(err)}; check kafka.schemaRegistry.url`);
      },
    );
    if (res.status === 401 || res.status === 403) throw registryAuthError(res.status, config.kafka.schemaRegistry);
    if (!res.ok) throw new Error(`GET /subjects answered HTTP ${res.status}; check kafka.schemaRegistry.url (Confluent-compatible API)`);
    return 'answers the Confluent API';
  });
}

async function checkCrm(config: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
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
      const checks = await withTimeout(adapter.preflight(crmTargets(config)), 30_000, `CRM at ${config.crm.baseUrl}`).catch(
        (err: unknown) => [{ name: `CRM objects and fields (${config.crm.kind})`, ok: false, detail: errorMessage(err) }],
      );
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
  if (info.exists)
    return info.active ? `exists, in use by pid ${info.activePid} (a running connector)` : 'exists; the connector resumes from it';
  const r = await client.query<{ used: number; max: number }>(
    "SELECT (SELECT count(*) FROM pg_replication_slots)::int AS used, current_setting('max_replication_slots')::int AS max",
  );
  const { used, max } = r.rows[0]!;
  if (used >= max) throw new Error(`all ${max} replication slots are taken; raise max_replication_slots or drop an unused slot`);
  return `will be created (${max - used} of ${max} slots free)`;
}

async function checkPublication(client: pg.Client, publication: string, tables: string[]): Promise<string> {
  const r = await client.query<{ t: string }>("SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = $1", [
    publication,
  ]);
  const exists = (await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication])).rowCount === 1;
  if (!exists) return `will be created for ${tables.join(', ')}`;
  const have = new Set(r.rows.map((row) => row.t));
  const same = have.size === tables.length && tables.every((t) => have.has(t));
  return same ? 'publishes exactly the captured tables' : `will be set to ${tables.join(', ')} (now: ${[...have].join(', ') || 'none'})`;
}

/**
 * Every PostgreSQL column the mappings read (external id, fields, lookups) must exist in the
 * mapping's table: a misspelt one would silently send no value.
 */
export function checkMappedColumns(mappings: Config['mappings'], tables: Map<string, TableInfo>): string {
  const problems: string[] = [];
  let count = 0;
  mappings.forEach((m, i) => {
    const info = tables.get(m.table);
    if (!info) return; // reported by "captured tables"
    const have = new Set(info.columns.map((c) => c.name));
    const used: [string, string][] = [
      [m.externalId.column, `mappings[${i}].externalId.column`],
      ...Object.entries(m.fields).map(([field, column]): [string, string] => [column, `mappings[${i}].fields.${field}`]),
      ...Object.entries(m.lookups).map(([field, l]): [string, string] => [l.column, `mappings[${i}].lookups.${field}.column`]),
    ];
    for (const [column, where] of used) {
      count++;
      if (!have.has(column)) {
        problems.push(
          `${where}: column ${column} does not exist in ${m.table} (columns: ${[...have].join(', ')}); correct the column name in the mapping or add the column to the table`,
        );
      }
    }
  });
  if (problems.length) throw new Error(problems.join('; '));
  return `all ${count} mapped columns exist`;
}

/**
 * CREATE PUBLICATION ... FOR TABLE needs CREATE on the database and ownership of every table
 * (https://www.postgresql.org/docs/15/sql-createpublication.html); the connector also keeps its
 * state in the publication's COMMENT and may ALTER it, which needs ownership of the publication.
 * A superuser may do all of it. The snapshot reads the tables (SELECT).
 */
async function checkPublicationRights(client: pg.Client, publication: string, tables: string[]): Promise<string> {
  const who = await client.query<{
    user: string;
    superuser: boolean;
    create_db: boolean;
    pub_owner: string | null;
    owns_pub: boolean | null;
  }>(
    `SELECT current_user AS user,
            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
            has_database_privilege(current_database(), 'CREATE') AS create_db,
            (SELECT pubowner::regrole::text FROM pg_publication WHERE pubname = $1) AS pub_owner,
            (SELECT pg_has_role(current_user, pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1) AS owns_pub`,
    [publication],
  );
  const { user, superuser, create_db: createDb, pub_owner: pubOwner, owns_pub: ownsPub } = who.rows[0]!;
  if (superuser) return `${user} is a superuser`;
  const rel = await client.query<{ t: string; owner: string; owns: boolean; can_select: boolean }>(
    `SELECT n.nspname || '.' || c.relname AS t, c.relowner::regrole::text AS owner,
            pg_has_role(current_user, c.relowner, 'USAGE') AS owns,
            has_table_privilege(c.oid, 'SELECT') AS can_select
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE (n.nspname || '.' || c.relname) = ANY ($1) AND c.relkind IN ('r', 'p')`,
    [tables],
  );
  const problems: string[] = [];
  const exists = pubOwner !== null;
  if (!exists && !createDb) {
    problems.push(
      `role ${user} lacks CREATE on the database, which CREATE PUBLICATION needs; run GRANT CREATE ON DATABASE <database> TO ${user}, or create the publication as the tables' owner: CREATE PUBLICATION ${publication} FOR TABLE ${tables.join(', ')}; ALTER PUBLICATION ${publication} OWNER TO ${user}`,
    );
  }
  if (exists && !ownsPub) {
    problems.push(
      `publication ${publication} is owned by ${pubOwner}, and role ${user} cannot alter it or keep the connector's state in it; run ALTER PUBLICATION ${publication} OWNER TO ${user} as ${pubOwner} or a superuser`,
    );
  }
  // An existing publication gains tables by ALTER PUBLICATION ... SET TABLE, which needs
  // ownership of each table it adds; one it already publishes needs nothing more.
  const published = new Set(
    exists
      ? (
          await client.query<{ t: string }>("SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = $1", [
            publication,
          ])
        ).rows.map((r) => r.t)
      : [],
  );
  const notOwned = rel.rows.filter((r) => !r.owns && !published.has(r.t));
  if (notOwned.length) {
    problems.push(
      `role ${user} does not own ${notOwned.map((r) => `${r.t} (owner ${r.owner})`).join(', ')}, and only a table's owner may add it to a publication; run ALTER TABLE <table> OWNER TO ${user}, GRANT <owner> TO ${user}, or connect as the owner (postgres.url)`,
    );
  }
  const noSelect = rel.rows.filter((r) => !r.can_select);
  if (noSelect.length)
    problems.push(
      `role ${user} may not read ${noSelect.map((r) => r.t).join(', ')} (the snapshot needs it); run GRANT SELECT ON <table> TO ${user}`,
    );
  if (problems.length) throw new Error(problems.join('; '));
  return exists
    ? `${user} owns publication ${publication}`
    : `${user} may create the publication (owns the tables, CREATE on the database)`;
}

/** Every object and external-id field the mappings write to or look up, once each. */
export function crmTargets(config: Pick<Config, 'mappings'>): CrmTarget[] {
  const out = new Map<string, CrmTarget>();
  for (const m of config.mappings) {
    out.set(`${m.object}\u0000${m.externalId.field}`, { object: m.object, externalIdField: m.externalId.field });
  }
  return [...out.values()];
}
