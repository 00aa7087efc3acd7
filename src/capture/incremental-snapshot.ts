import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { openPg, type PgTarget } from './pg-connect.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import { type ChangeEvent, encodeKey } from '../events/change-event.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { buildSnapshotRow, type TxContext } from './change-builder.ts';
import type { SnapshotTask, SourceState } from './slot-admin.ts';
import { estimateRows, keyTexts, selectChunk, type TextRow } from './snapshot-reader.ts';
import type { SourceStateStore } from './source-state-store.ts';
import { quoteTable } from './sql-identifiers.ts';
import { describeTables, type TableInfo } from './table-catalog.ts';

/**
 * Watermark-based incremental snapshot, read while the stream keeps flowing: the DBLog algorithm
 * (https://arxiv.org/abs/2010.12597) as Debezium's incremental snapshots implement it
 * (https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-incremental-snapshots).
 *
 * Per chunk of one table (keyset order on the primary key, rows rendered by snapshot-reader.ts):
 *   1. emit a LOW watermark into the WAL: pg_logical_emit_message(true, 'pg2crm.wm', {slot, id, w: low});
 *   2. SELECT the chunk (it sees every transaction that committed before the LOW watermark's
 *      commit, and none that commits after the HIGH one; but see "commit order" below);
 *   3. emit a HIGH watermark;
 *   4. the stream reader, on reaching LOW, opens a window and collects the key of every change
 *      of that table until HIGH; at HIGH it drops those keys from the chunk and queues the rest
 *      as op='r' events at that point of the stream, through the same publisher queue as stream
 *      events (so the slot's LSN is confirmed only after they are acked, like any transaction).
 * A key changed inside the window is carried by its stream event, which is at least as new as
 * the row the SELECT saw; a key not changed inside the window has in the chunk exactly the value
 * the stream had reached at HIGH. So per key, nothing emitted after HIGH is older than what came
 * before it: no op='r' overtakes a newer change. The watermarks are transactional messages, so
 * they arrive in commit order with the changes; their ids carry a random run id, so watermarks
 * replayed from an earlier incarnation after a crash (not yet confirmed) are ignored.
 *
 * Commit order vs visibility: PostgreSQL writes a commit record before it makes the transaction
 * visible (ProcArrayEndTransaction), so a transaction whose commit precedes LOW in the WAL can,
 * for an instant, still be invisible to the SELECT that runs after LOW; its change is then in
 * the stream before the window and the chunk holds the older row. The SELECT therefore runs in
 * a REPEATABLE READ transaction that also reads its snapshot's in-progress list
 * (pg_snapshot_xip); the keys that such transactions changed (remembered from the stream since
 * the previous chunk) are dropped from the chunk too.
 *
 * Resume after a crash, including in the middle of the initial snapshot: progress (table + last
 * key of the last chunk whose events Kafka acked) is written to the source state after each chunk.
 * The exported snapshot of the initial snapshot died with its replication connection, so the rest
 * cannot be read "as of the consistent point" any more. Instead the remaining chunks are read with
 * this algorithm while streaming from the existing slot, which still starts at the consistent
 * point (nothing was confirmed during the snapshot): rows already sent reflect the consistent
 * point and every later change follows from the stream; rows not yet sent get every stream change
 * since the consistent point and then, at their chunk's HIGH watermark, their current row. Nothing
 * is lost or reordered per key; the chunk that was in flight at the crash is read again
 * (at-least-once), earlier chunks are not.
 *
 * On-demand re-snapshot (`pg2crm snapshot --table`) arrives as a logical message with prefix
 * 'pg2crm.signal' through the same stream, so it works from any process or container that can
 * reach the database, and a request sent while the connector is down is read when it resumes.
 * The request is queued in the durable state before its transaction can be confirmed.
 */
export const WATERMARK_PREFIX = 'pg2crm.wm';
export const SIGNAL_PREFIX = 'pg2crm.signal';

/** Id of the initial snapshot's tasks. */
export const INITIAL = 'initial';

/** Tasks kept in `finished` for `pg2crm snapshot` to find. */
const FINISHED_KEPT = 20;

export interface SnapshotSignal {
  slot: string;
  type: 'snapshot';
  table: string;
  id: string;
}

/** Transactions remembered for the commit-order check; a chunk's window is a few hundred ms. */
const RECENT_KEPT = 10_000;

interface Window {
  id: string;
  table: TableInfo;
  /** xids (low 32 bits) in progress for the chunk's SELECT. */
  inProgress: number[];
  /** LOW watermark seen in the stream: changes from here on are collected. */
  open: boolean;
  changed: Set<string>;
  rows: TextRow[] | undefined;
  emitted: number;
  acked: () => void;
}

/** Snapshot rows to publish at a HIGH watermark; `onAcked` once Kafka has them all. */
export interface WindowOutput {
  events: ChangeEvent[];
  table: TableInfo;
  onAcked: () => void;
}

export class IncrementalSnapshot {
  private readonly log = componentLogger('capture.incremental-snapshot');
  private readonly url: PgTarget;
  private readonly slot: string;
  private readonly chunkRows: number;
  private readonly configured: Set<string>;
  private readonly store: SourceStateStore;
  private readonly runId = randomUUID().slice(0, 8);
  private chunkSeq = 0;
  private window: Window | undefined;
  /** Table of the task in progress: its changes are tracked per transaction for the commit-order check. */
  private activeTable: TableInfo | undefined;
  /** xid -> keys of `activeTable` changed by that transaction, since the previous chunk (bounded). */
  private readonly recent = new Map<number, Set<string>>();
  private client: pg.Client | undefined;
  private wakeUp: (() => void) | undefined;
  private stopped = false;
  private stopSignal!: () => void;
  private readonly stopping = new Promise<void>((resolve) => (this.stopSignal = resolve));
  private running: Promise<void> | undefined;

  constructor(opts: { url: PgTarget; slot: string; chunkRows: number; tables: string[]; store: SourceStateStore }) {
    this.url = opts.url;
    this.slot = opts.slot;
    this.chunkRows = opts.chunkRows;
    this.configured = new Set(opts.tables);
    this.store = opts.store;
  }

  /** Starts working through the queued tasks; `onFatal` gets any error that stops it. */
  start(onFatal: (err: Error) => void): void {
    this.running = this.loop().catch((err: unknown) => {
      if (!this.stopped) onFatal(err as Error);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopSignal();
    this.wakeUp?.();
    await this.running;
    await this.client?.end().catch(() => undefined);
  }

  /** A row change read from the stream: inside an open window of its table, its key leaves the chunk. */
  onChange(event: ChangeEvent): void {
    const t = this.activeTable;
    if (!t || t.schema !== event.source.schema || t.table !== event.source.table) return;
    const key = encodeKey(event.key);
    const w = this.window;
    if (w?.open && w.table === t) {
      w.changed.add(key);
      return;
    }
    let keys = this.recent.get(event.source.xid);
    if (!keys) {
      if (this.recent.size >= RECENT_KEPT) this.recent.delete(this.recent.keys().next().value!);
      this.recent.set(event.source.xid, (keys = new Set()));
    }
    keys.add(key);
  }

  /**
   * A transactional logical message read from the stream (inside transaction `tx`). Returns the
   * chunk's rows to publish when it is this run's HIGH watermark.
   */
  async onMessage(prefix: string, content: Buffer, tx: TxContext): Promise<WindowOutput | undefined> {
    if (prefix === WATERMARK_PREFIX) return this.onWatermark(content, tx);
    if (prefix === SIGNAL_PREFIX) await this.onSignal(content);
    return undefined;
  }

  private onWatermark(content: Buffer, tx: TxContext): WindowOutput | undefined {
    const mark = parseJson<{ slot?: string; id?: string; w?: string }>(content);
    const w = this.window;
    if (!w || mark?.slot !== this.slot || mark.id !== w.id) return undefined; // another connector's, or an earlier run's
    if (mark.w === 'low') {
      w.open = true;
      return undefined;
    }
    if (mark.w !== 'high' || !w.rows) return undefined;
    this.window = undefined;
    for (const xid of w.inProgress) for (const key of this.recent.get(xid) ?? []) w.changed.add(key);
    this.recent.clear();
    const events: ChangeEvent[] = [];
    for (const texts of w.rows) {
      const event = buildSnapshotRow(w.table, texts, tx);
      if (!w.changed.has(encodeKey(event.key))) events.push(event);
    }
    w.emitted = events.length;
    return { events, table: w.table, onAcked: w.acked };
  }

  private async onSignal(content: Buffer): Promise<void> {
    const signal = parseJson<Partial<SnapshotSignal>>(content);
    if (signal?.slot !== this.slot) return;
    if (signal.type !== 'snapshot' || typeof signal.table !== 'string' || typeof signal.id !== 'string') {
      this.log.warn({ signal: content.toString('utf8').slice(0, 200) }, 'ignoring malformed signal');
      return;
    }
    const { table, id } = signal;
    if (this.store.get().tasks?.some((t) => t.id === id) || this.store.get().finished?.some((f) => f.id === id)) return; // replayed after a crash
    if (!this.configured.has(table)) {
      this.log.warn({ table, id }, 'snapshot requested for a table not in postgres.tables; ignored');
      await this.store.update((s) =>
        finish(s, { id, table, rows: 0, error: `table ${table} is not in postgres.tables of this connector` }),
      );
      return;
    }
    this.log.info({ table, id }, 'incremental snapshot requested');
    await this.store.update((s) => {
      s.tasks = [...(s.tasks ?? []), newTask(id, table)];
    });
    this.wakeUp?.();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const task = this.store.get().tasks?.[0];
      if (!task) {
        await new Promise<void>((resolve) => (this.wakeUp = resolve));
        this.wakeUp = undefined;
        continue;
      }
      await this.runTask(task);
    }
  }

  private async connection(): Promise<pg.Client> {
    if (!this.client) {
      const client = await openPg(this.url);
      client.on('error', () => {
        if (this.client === client) this.client = undefined;
      });
      this.client = client;
    }
    return this.client;
  }

  private async runTask(task: SnapshotTask): Promise<void> {
    const client = await this.connection();
    let table: TableInfo;
    try {
      if (!this.configured.has(task.table)) throw new Error(`table ${task.table} is no longer in postgres.tables`);
      // Read afresh: the table may have been altered since the connector started.
      table = (await describeTables(client, [task.table])).get(task.table)!;
    } catch (err) {
      // A table dropped or left without a primary key cannot be snapshotted; anything else (lost connection) stops the source.
      if (err instanceof ConnectorError && err.code !== 'TABLE_NOT_CAPTURABLE') throw err;
      if (!(err instanceof ConnectorError) && this.configured.has(task.table)) throw err;
      this.log.warn({ table: task.table, id: task.id, err }, 'incremental snapshot task dropped');
      await this.store.update((s) => {
        s.tasks?.shift();
        finish(s, { id: task.id, table: task.table, rows: task.rows, error: errorMessage(err) });
      });
      return;
    }
    if (!task.startedAt) {
      let estimated = await estimateRows(client, [table]);
      if (estimated === 0)
        estimated = Number(
          (await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${quoteTable(task.table)}`)).rows[0]?.n ?? 0,
        );
      await this.store.update(() => {
        task.startedAt = Date.now();
        task.estimatedRows = estimated;
      });
    }
    this.log.info({ table: task.table, id: task.id, fromKey: task.lastKey, rows: task.rows }, 'incremental snapshot of table started');
    const started = Date.now();
    const rowsBefore = task.rows;
    this.activeTable = table;
    this.recent.clear();
    try {
      await this.readChunks(client, task, table, started, rowsBefore);
    } finally {
      this.activeTable = undefined;
    }
    if (this.stopped) return;
    await this.store.update((s) => {
      s.tasks?.shift();
      finish(s, { id: task.id, table: task.table, rows: task.rows });
      if (task.id === INITIAL && !s.tasks?.some((t) => t.id === INITIAL)) s.snapshotDone = true;
    });
    this.log.info({ table: task.table, id: task.id, rows: task.rows }, 'incremental snapshot of table finished');
    if (task.id === INITIAL && this.store.get().snapshotDone) this.log.info('initial snapshot finished');
  }

  private async readChunks(client: pg.Client, task: SnapshotTask, table: TableInfo, started: number, rowsBefore: number): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      const id = `${this.runId}.${this.chunkSeq++}`;
      let acked!: () => void;
      const ackedPromise = new Promise<void>((resolve) => (acked = resolve));
      const w: Window = { id, table, inProgress: [], open: false, changed: new Set(), rows: undefined, emitted: 0, acked };
      this.window = w;
      await this.emitWatermark(client, id, 'low');
      const fromKey = task.lastKey;
      const { rows, inProgress } = await this.selectWithSnapshot(client, table, fromKey);
      w.inProgress = inProgress;
      w.rows = rows;
      await this.emitWatermark(client, id, 'high');
      await Promise.race([ackedPromise, this.stopping]);
      if (this.stopped) return;
      metrics.snapshotRows.inc({ table: task.table, kind: 'incremental' }, rows.length);
      await this.store.update(() => {
        if (rows.length > 0) task.lastKey = keyTexts(table, rows[rows.length - 1]!);
        task.rows += rows.length;
      });
      const elapsed = (Date.now() - started) / 1000;
      const rate = (task.rows - rowsBefore) / Math.max(elapsed, 0.001);
      this.log.info(
        {
          table: task.table,
          id: task.id,
          fromKey,
          toKey: task.lastKey,
          rows: rows.length,
          emitted: w.emitted,
          dropped: rows.length - w.emitted,
          done: task.rows,
          estimatedTotal: Math.max(task.estimatedRows, task.rows),
          etaSeconds: Math.round(Math.max(task.estimatedRows - task.rows, 0) / Math.max(rate, 1)),
        },
        'incremental snapshot chunk',
      );
      if (rows.length < this.chunkRows) return;
    }
  }

  /** The chunk's rows, and the transactions its snapshot saw as in progress. */
  private async selectWithSnapshot(
    client: pg.Client,
    table: TableInfo,
    fromKey: (string | null)[] | null,
  ): Promise<{ rows: TextRow[]; inProgress: number[] }> {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      // The first statement fixes the snapshot; the SELECT below reads with the same one.
      const xip = await client.query<{ xid: string }>('SELECT pg_snapshot_xip(pg_current_snapshot())::text AS xid');
      const rows = await selectChunk(client, table, fromKey, this.chunkRows);
      await client.query('COMMIT');
      // xid8 carries the epoch; pgoutput's Begin message has the 32-bit xid.
      return { rows, inProgress: xip.rows.map((r) => Number(BigInt(r.xid) & 0xffffffffn)) };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  private async emitWatermark(client: pg.Client, id: string, w: 'low' | 'high'): Promise<void> {
    try {
      await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [WATERMARK_PREFIX, JSON.stringify({ slot: this.slot, id, w })]);
    } catch (err) {
      throw new ConnectorError(
        'SNAPSHOT_WATERMARK',
        `cannot write the ${w} watermark of an incremental snapshot chunk: ${errorMessage(err)}`,
        {
          retriable: true,
          cause: err,
        },
      );
    }
  }
}

export function newTask(id: string, table: string): SnapshotTask {
  return { id, table, lastKey: null, rows: 0, estimatedRows: 0, startedAt: 0 };
}

function finish(state: SourceState, entry: { id: string; table: string; rows: number; error?: string }): void {
  state.finished = [...(state.finished ?? []), entry].slice(-FINISHED_KEPT);
}

function parseJson<T>(content: Buffer): T | undefined {
  try {
    return JSON.parse(content.toString('utf8')) as T;
  } catch {
    return undefined;
  }
}
