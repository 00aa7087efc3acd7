import type pg from 'pg';
import { openPg } from '../capture/pg-connect.ts';
import { dropPublication, slotInfo } from '../capture/slot-admin.ts';
import type { Config } from '../config.ts';
import { errorMessage } from '../errors.ts';

/**
 * `pg2crm slot drop`: decommissions the source side in PostgreSQL. A replication slot nobody
 * reads keeps every WAL segment from its restart LSN on, until the disk fills
 * (https://www.postgresql.org/docs/15/logicaldecoding-explanation.html#LOGICALDECODING-REPLICATION-SLOTS),
 * so a retired connector must drop it. The publication goes too, and with it the source state
 * kept in its comment: a connector started again later begins afresh (new slot, new snapshot).
 *
 * Exit codes: 0 dropped (or nothing to drop), 1 refused (slot in use) or failed, 2 confirmation
 * (--yes) missing: the plan is printed and nothing is dropped.
 */
export const DROP_OK = 0;
export const DROP_REFUSED = 1;
export const DROP_NEEDS_YES = 2;

interface Plan {
  slot: { exists: boolean; active: boolean; activePid: number | null; confirmedLsn: string | null; walBytes: string | null };
  publication: { exists: boolean; tables: string[] };
}

async function plan(client: pg.Client, config: Config): Promise<Plan> {
  const { slot, publication } = config.postgres;
  const info = await slotInfo(client, slot);
  const wal = await client.query<{ confirmed: string | null; bytes: string | null }>(
    `SELECT confirmed_flush_lsn::text AS confirmed, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS bytes
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const pub = await client.query<{ tables: string[] | null }>(
    `SELECT (SELECT array_agg(schemaname || '.' || tablename ORDER BY schemaname, tablename) FROM pg_publication_tables t WHERE t.pubname = p.pubname) AS tables
       FROM pg_publication p WHERE p.pubname = $1`,
    [publication],
  );
  return {
    slot: {
      exists: info.exists,
      active: info.active,
      activePid: info.activePid,
      confirmedLsn: wal.rows[0]?.confirmed ?? null,
      walBytes: wal.rows[0]?.bytes ?? null,
    },
    publication: { exists: pub.rowCount === 1, tables: pub.rows[0]?.tables ?? [] },
  };
}

function mib(bytes: string | null): string {
  return bytes === null ? 'unknown' : `${(Number(bytes) / 1024 / 1024).toFixed(1)} MiB`;
}

export async function dropSlotCommand(config: Config, yes: boolean, out: (line: string) => void): Promise<number> {
  const { slot, publication } = config.postgres;
  const client = await openPg(config.postgres);
  try {
    const p = await plan(client, config);
    if (!p.slot.exists && !p.publication.exists) {
      out(`nothing to drop: no replication slot ${slot} and no publication ${publication}`);
      return DROP_OK;
    }
    if (p.slot.active) {
      out(
        `refusing to drop replication slot ${slot}: a connector is streaming from it (pid ${p.slot.activePid}). ` +
          `Stop that connector first (SIGTERM to \`pg2crm run\`, \`docker compose stop\`, or scale its deployment to 0), then run this again.`,
      );
      return DROP_REFUSED;
    }
    if (p.slot.exists)
      out(`will drop replication slot ${slot} (confirmed LSN ${p.slot.confirmedLsn ?? 'none'}, holding ${mib(p.slot.walBytes)} of WAL)`);
    else out(`no replication slot ${slot}`);
    if (p.publication.exists) out(`will drop publication ${publication} (tables: ${p.publication.tables.join(', ') || 'none'})`);
    else out(`no publication ${publication}`);
    if (!yes) {
      out(
        'nothing dropped: add --yes to drop them. A connector started again afterwards creates a new slot and snapshots its tables anew.',
      );
      return DROP_NEEDS_YES;
    }
    if (p.slot.exists) {
      try {
        await client.query('SELECT pg_drop_replication_slot($1)', [slot]);
      } catch (err) {
        // A connector may have attached between the check and the drop: PostgreSQL refuses then.
        out(`cannot drop replication slot ${slot}: ${errorMessage(err)}; stop the connector using it and run this again`);
        return DROP_REFUSED;
      }
      out(`dropped replication slot ${slot}`);
    }
    if (await dropPublication(client, publication)) out(`dropped publication ${publication}`);
    out(
      `Kafka topics ${config.kafka.topicPrefix}.* and consumer group ${config.kafka.groupId} are kept; delete them with Kafka's tools when no longer needed.`,
    );
    return DROP_OK;
  } finally {
    await client.end();
  }
}
