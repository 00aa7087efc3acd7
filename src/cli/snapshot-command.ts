import { randomUUID } from 'node:crypto';
import { openPg } from '../capture/pg-connect.ts';
import { SIGNAL_PREFIX, type SnapshotSignal } from '../capture/incremental-snapshot.ts';
import { readState, slotInfo } from '../capture/slot-admin.ts';
import type { Config } from '../config.ts';
import { ConnectorError } from '../errors.ts';

/**
 * `pg2crm snapshot --table`: asks the running connector for an incremental re-snapshot of one
 * table and shows its progress until it is done. The request is a transactional logical message
 * (prefix 'pg2crm.signal') that the connector reads from its own replication stream, so it
 * reaches the connector wherever it runs, and waits in the slot's WAL if the connector is down.
 * Progress is read from the source state (the publication's COMMENT, see slot-admin.ts).
 */
export interface SnapshotRequestResult {
  id: string;
  table: string;
  rows: number;
}

export async function requestSnapshot(
  config: Config,
  tableArg: string,
  print: (line: string) => void,
  options: { pollMs?: number; timeoutSeconds?: number } = {},
): Promise<SnapshotRequestResult> {
  const pollMs = options.pollMs ?? 1000;
  const deadline = options.timeoutSeconds ? Date.now() + options.timeoutSeconds * 1000 : Infinity;
  const table = tableArg.includes('.') ? tableArg : `public.${tableArg}`;
  const { slot, publication, tables } = config.postgres;
  if (!tables.includes(table)) {
    throw new ConnectorError(
      'CONFIG_TABLE',
      `--table ${tableArg}: not captured by this connector; use one of postgres.tables: ${tables.join(', ')}`,
    );
  }
  const client = await openPg(config.postgres);
  try {
    if (!(await slotInfo(client, slot)).exists) {
      throw new ConnectorError(
        'SLOT_MISSING',
        `replication slot ${slot} does not exist; start the connector (pg2crm run) first: its initial snapshot covers every table`,
      );
    }
    const id = randomUUID();
    const signal: SnapshotSignal = { slot, type: 'snapshot', table, id };
    await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [SIGNAL_PREFIX, JSON.stringify(signal)]);
    print(`requested an incremental snapshot of ${table} (request ${id})`);
    let last = '';
    const say = (line: string): void => {
      if (line !== last) print(line);
      last = line;
    };
    for (;;) {
      const state = await readState(client, publication);
      const finished = state.finished?.find((f) => f.id === id);
      if (finished) {
        if (finished.error) throw new ConnectorError('SNAPSHOT_FAILED', `snapshot of ${table} was not done: ${finished.error}`);
        print(`snapshot of ${table} finished: ${finished.rows} rows`);
        return { id, table, rows: finished.rows };
      }
      const tasks = state.tasks ?? [];
      const at = tasks.findIndex((t) => t.id === id);
      const task = tasks[at];
      if (!task) {
        const active = (await slotInfo(client, slot)).active;
        say(
          active
            ? 'waiting for the connector to read the request'
            : `waiting for the connector: slot ${slot} is not streaming (is pg2crm run up?)`,
        );
      } else if (!task.startedAt) {
        say(`queued behind ${at} other snapshot task(s)`);
      } else {
        const elapsed = Math.max((Date.now() - task.startedAt) / 1000, 0.001);
        const total = Math.max(task.estimatedRows, task.rows);
        const rate = task.rows / elapsed;
        const eta = rate > 0 ? `${Math.round((total - task.rows) / rate)} s` : 'unknown';
        const pct = total > 0 ? Math.floor((task.rows / total) * 100) : 0;
        say(`snapshot ${table}: ${task.rows}/${total} rows (${pct}%), ${Math.round(rate)} rows/s, ETA ${eta}`);
      }
      if (Date.now() >= deadline) {
        // The request is in the WAL: it runs whenever a connector reads the slot, waited for or not.
        throw new ConnectorError(
          'SNAPSHOT_WAIT_TIMEOUT',
          `stopped waiting after --timeout ${options.timeoutSeconds} s; the request ${id} for ${table} stays queued and runs when the connector reads slot ${slot} (pg2crm run with the source role); its progress shows in pg2crm status`,
        );
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
