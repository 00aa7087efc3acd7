import pg from 'pg';
import { connectPg, type PgTarget, pgClientConfig } from './pg-connect.ts';
import { ConnectorError } from '../errors.ts';
import { componentLogger } from '../logger.ts';
import type { Lsn } from './lsn.ts';
import { parseLsn } from './lsn.ts';
import { quoteIdent, quoteTable } from './sql-identifiers.ts';

/**
 * Publication and replication slot management, plus the source's small durable state.
 *
 * The state (has the initial snapshot finished? which tables are still to snapshot, up to which
 * key?) is kept as the COMMENT of pg2crm's own publication rather than in a pg2crm table: it
 * lives and dies with the slot's companion object, needs no table (nor CREATE rights) in the ERP
 * database, is written transactionally, and any process holding the config (`pg2crm snapshot`
 * showing progress, another container) can read it. It is a few hundred bytes; one write per
 * snapshot chunk (thousands of rows) is negligible catalog traffic.
 */
export interface SnapshotTask {
  /** 'initial' for the initial snapshot, else the id of the `pg2crm snapshot` request. */
  id: string;
  /** `schema.table`. */
  table: string;
  /** Primary key (text output of each column) of the last row whose event Kafka acknowledged; null = from the start. */
  lastKey: (string | null)[] | null;
  /** Rows published so far for this task, and the planner's estimate of the table's rows. */
  rows: number;
  estimatedRows: number;
  /** Unix ms when the task began (0 = not yet), for the ETA `pg2crm snapshot` shows. */
  startedAt: number;
}

export interface SourceState {
  snapshotDone: boolean;
  snapshotLsn?: string;
  /** Snapshot work still to do, in order; the first task is the one in progress. */
  tasks?: SnapshotTask[];
  /** The last finished tasks (newest last), so `pg2crm snapshot` can tell that its request is done. */
  finished?: { id: string; table: string; rows: number; error?: string }[];
}

export async function preflight(client: pg.Client): Promise<void> {
  const res = await client.query<{ wal_level: string; can_replicate: boolean }>(
    `SELECT current_setting('wal_level') AS wal_level,
            (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS can_replicate`,
  );
  const row = res.rows[0];
  const problems: string[] = [];
  if (row?.wal_level !== 'logical') {
    problems.push(`wal_level is ${row?.wal_level}; set wal_level = logical in postgresql.conf and restart PostgreSQL`);
  }
  if (!row?.can_replicate) {
    problems.push('the connecting role lacks the REPLICATION attribute; run ALTER ROLE <user> REPLICATION');
  }
  if (problems.length) throw new ConnectorError('POSTGRES_NOT_READY', problems.join('\n'));
}

export type PublishOp = 'insert' | 'update' | 'delete' | 'truncate';
export const ALL_PUBLISH_OPS: readonly PublishOp[] = ['insert', 'update', 'delete', 'truncate'];

export interface PublicationSync {
  action: 'created' | 'altered' | 'unchanged';
  /** Set when the table list was changed: what the publication held before. */
  tablesBefore?: string[];
  /** Set when the publish option was changed: what it was before. */
  publishBefore?: PublishOp[];
}

const log = componentLogger('capture.publication');

/**
 * Creates the publication for exactly `tables` with `publish`
 * (https://www.postgresql.org/docs/15/sql-createpublication.html), or alters an existing one
 * that differs in either (ALTER PUBLICATION ... SET TABLE / SET (publish = ...)), saying so in
 * the log: a stale publication would silently drop or add changes. Membership is read from
 * pg_publication_rel (the tables named, not pg_publication_tables' partitions) and, on 15+,
 * pg_publication_namespace (FOR TABLES IN SCHEMA), which SET TABLE also replaces.
 */
export async function ensurePublication(
  client: pg.Client,
  publication: string,
  tables: string[],
  publish: readonly PublishOp[] = ALL_PUBLISH_OPS,
): Promise<PublicationSync> {
  const name = quoteIdent(publication);
  const list = tables.map(quoteTable).join(', ');
  const publishOption = `publish = '${publish.join(', ')}'`;
  const res = await client.query<{
    puballtables: boolean;
    pubinsert: boolean;
    pubupdate: boolean;
    pubdelete: boolean;
    pubtruncate: boolean;
    tables: string[] | null;
    v15: boolean;
  }>(
    `SELECT p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate,
            (SELECT array_agg(n.nspname || '.' || c.relname ORDER BY n.nspname, c.relname)
               FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE r.prpubid = p.oid) AS tables,
            current_setting('server_version_num')::int >= 150000 AS v15
       FROM pg_publication p WHERE p.pubname = $1`,
    [publication],
  );
  const row = res.rows[0];
  if (!row) {
    await publicationDdl(client, publication, `CREATE PUBLICATION ${name} FOR TABLE ${list} WITH (${publishOption})`);
    log.info({ publication, tables, publish }, 'publication created');
    return { action: 'created' };
  }
  if (row.puballtables) {
    throw new ConnectorError(
      'PUBLICATION_ALL_TABLES',
      `publication ${publication} is FOR ALL TABLES; pg2crm needs a publication of exactly postgres.tables: DROP PUBLICATION ${publication}, or set postgres.publication to a new name`,
    );
  }
  let schemas = 0;
  if (row.v15) {
    const ns = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid WHERE p.pubname = $1',
      [publication],
    );
    schemas = ns.rows[0]?.n ?? 0;
  }
  const sync: PublicationSync = { action: 'unchanged' };
  const have = row.tables ?? [];
  const want = [...tables].sort();
  if (schemas > 0 || have.length !== want.length || have.some((t, i) => t !== want[i])) {
    await publicationDdl(client, publication, `ALTER PUBLICATION ${name} SET TABLE ${list}`);
    log.warn(
      { publication, before: have, schemasBefore: schemas, after: tables },
      'publication tables differed from postgres.tables; altered to match',
    );
    Object.assign(sync, { action: 'altered', tablesBefore: have });
  }
  const current = ALL_PUBLISH_OPS.filter((op) => row[`pub${op}`]);
  if (current.length !== publish.length || current.some((op) => !publish.includes(op))) {
    await publicationDdl(client, publication, `ALTER PUBLICATION ${name} SET (${publishOption})`);
    log.warn(
      { publication, before: current, after: publish },
      'publication publish option differed from postgres.publish; altered to match',
    );
    Object.assign(sync, { action: 'altered', publishBefore: current });
  }
  return sync;
}

/** PostgreSQL's SQLSTATE for "insufficient_privilege" (https://www.postgresql.org/docs/15/errcodes-appendix.html). */
const INSUFFICIENT_PRIVILEGE = '42501';

/**
 * CREATE/ALTER PUBLICATION, with a refusal for lack of rights turned into the fix: only a
 * table's owner (or a superuser) may publish it, and only the publication's owner may alter it.
 */
async function publicationDdl(client: pg.ClientBase, publication: string, sql: string): Promise<void> {
  try {
    await client.query(sql);
  } catch (err) {
    if ((err as { code?: unknown }).code !== INSUFFICIENT_PRIVILEGE) throw err;
    throw new ConnectorError(
      'POSTGRES_PRIVILEGE',
      `postgres: the role of postgres.url may not create or alter publication ${publication} (${(err as Error).message}); it must own the tables of postgres.tables and the publication (or be a superuser): run pg2crm check, which names each grant or ALTER ... OWNER TO that is missing`,
      { cause: err },
    );
  }
}

/** Drops pg2crm's publication (and with it the source state kept in its comment); false if there was none. */
export async function dropPublication(client: pg.Client, publication: string): Promise<boolean> {
  const res = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication]);
  if (res.rowCount === 0) return false;
  await client.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(publication)}`);
  return true;
}

export async function readState(client: pg.Client, publication: string): Promise<SourceState> {
  const res = await client.query<{ comment: string | null }>(
    `SELECT obj_description(oid, 'pg_publication') AS comment FROM pg_publication WHERE pubname = $1`,
    [publication],
  );
  const comment = res.rows[0]?.comment;
  if (!comment) return { snapshotDone: false };
  try {
    return JSON.parse(comment) as SourceState;
  } catch {
    return { snapshotDone: false };
  }
}

export async function writeState(client: pg.Client, publication: string, state: SourceState): Promise<void> {
  const text = JSON.stringify(state).replace(/'/g, "''");
  await client.query(`COMMENT ON PUBLICATION ${quoteIdent(publication)} IS '${text}'`);
}

export interface SlotInfo {
  exists: boolean;
  active: boolean;
  activePid: number | null;
  confirmedFlush: Lsn | null;
  /** pg_replication_slots.wal_status: 'lost' means WAL the slot needed was removed (max_slot_wal_keep_size). */
  walStatus: string | null;
}

export async function slotInfo(client: pg.Client, slot: string): Promise<SlotInfo> {
  const res = await client.query<{
    active: boolean;
    active_pid: number | null;
    confirmed_flush_lsn: string | null;
    plugin: string;
    wal_status: string | null;
  }>('SELECT active, active_pid, confirmed_flush_lsn, plugin, wal_status FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  const row = res.rows[0];
  if (!row) return { exists: false, active: false, activePid: null, confirmedFlush: null, walStatus: null };
  if (row.plugin !== 'pgoutput') {
    throw new ConnectorError(
      'SLOT_WRONG_PLUGIN',
      `replication slot ${slot} uses plugin ${row.plugin}; drop it or set postgres.slot to another name`,
    );
  }
  return {
    exists: true,
    active: row.active,
    activePid: row.active_pid,
    confirmedFlush: row.confirmed_flush_lsn ? parseLsn(row.confirmed_flush_lsn) : null,
    walStatus: row.wal_status,
  };
}

export async function dropSlot(client: pg.Client, slot: string): Promise<void> {
  await client.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
}

/**
 * A slot created on a replication connection with EXPORT_SNAPSHOT. The snapshot stays usable
 * only while this connection stays open and idle, so `close()` after the snapshot is read.
 * https://www.postgresql.org/docs/15/protocol-replication.html#PROTOCOL-REPLICATION-CREATE-REPLICATION-SLOT
 */
export interface CreatedSlot {
  consistentPoint: string;
  snapshotName: string;
  close(): Promise<void>;
}

export async function createSlotWithSnapshot(url: PgTarget, slot: string): Promise<CreatedSlot> {
  // No query timeout: CREATE_REPLICATION_SLOT waits for every running transaction to end.
  const replication = await connectPg(
    new pg.Client({ ...pgClientConfig(url, 'replication'), replication: 'database' } as pg.ClientConfig),
    url,
  );
  try {
    const res = await replication.query<{ consistent_point: string; snapshot_name: string }>(
      `CREATE_REPLICATION_SLOT ${quoteIdent(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
    );
    const row = res.rows[0]!;
    return { consistentPoint: row.consistent_point, snapshotName: row.snapshot_name, close: () => replication.end() };
  } catch (err) {
    await replication.end().catch(() => undefined);
    throw new ConnectorError('SLOT_CREATE', `cannot create replication slot ${slot}: ${(err as Error).message}`, { cause: err });
  }
}
