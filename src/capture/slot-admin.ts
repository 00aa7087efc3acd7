import pg from 'pg';
import { ConnectorError } from '../errors.ts';
import type { Lsn } from './lsn.ts';
import { parseLsn } from './lsn.ts';
import { quoteIdent, quoteTable } from './sql-identifiers.ts';

/**
 * Publication and replication slot management, plus the source's small durable state.
 *
 * The state (has the initial snapshot finished?) is kept as the COMMENT of pg2crm's own
 * publication: it lives and dies with the slot's companion object, needs no table in the ERP
 * database, and survives restarts of the connector.
 */
export interface SourceState {
  snapshotDone: boolean;
  snapshotLsn?: string;
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

/** Creates the publication for exactly `tables`, or brings an existing one to that list. */
export async function ensurePublication(client: pg.Client, publication: string, tables: string[]): Promise<void> {
  const list = tables.map(quoteTable).join(', ');
  const exists = await client.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [publication]);
  if (exists.rowCount === 0) {
    await client.query(`CREATE PUBLICATION ${quoteIdent(publication)} FOR TABLE ${list}`);
  } else {
    await client.query(`ALTER PUBLICATION ${quoteIdent(publication)} SET TABLE ${list}`);
  }
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
}

export async function slotInfo(client: pg.Client, slot: string): Promise<SlotInfo> {
  const res = await client.query<{ active: boolean; active_pid: number | null; confirmed_flush_lsn: string | null; plugin: string }>(
    'SELECT active, active_pid, confirmed_flush_lsn, plugin FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  const row = res.rows[0];
  if (!row) return { exists: false, active: false, activePid: null, confirmedFlush: null };
  if (row.plugin !== 'pgoutput') {
    throw new ConnectorError('SLOT_WRONG_PLUGIN', `replication slot ${slot} uses plugin ${row.plugin}; drop it or set postgres.slot to another name`);
  }
  return {
    exists: true,
    active: row.active,
    activePid: row.active_pid,
    confirmedFlush: row.confirmed_flush_lsn ? parseLsn(row.confirmed_flush_lsn) : null,
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

export async function createSlotWithSnapshot(url: string, slot: string): Promise<CreatedSlot> {
  const replication = new pg.Client({ connectionString: url, replication: 'database' } as pg.ClientConfig);
  await replication.connect();
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
