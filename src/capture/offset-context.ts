import { ConnectorError } from '../errors.ts';
import type { TxContext } from './change-builder.ts';
import { formatLsn, type Lsn } from './lsn.ts';

/**
 * The source's position in the WAL, as Debezium's PostgreSQL OffsetContext keeps it: the LSN
 * confirmed to PostgreSQL, the transactions committed in the stream whose events Kafka has not
 * acknowledged yet, and the transaction being received.
 *
 * No-loss rule: the slot's confirmed LSN only moves to the end LSN of a transaction whose every
 * event, and every event of every transaction before it, Kafka has acknowledged (acks=all).
 * PostgreSQL then never sends those transactions again, so confirming one that is still in
 * flight (or whose send failed) would lose it for good; confirming too little only means a
 * restart sends some events again, which the sink's idempotent writes absorb.
 *
 * What is *received* is never confirmed: not a commit still waiting for Kafka, not the WAL end a
 * primary keepalive carries (pg-logical-replication's own acknowledgement, which would do that,
 * is off).
 */
export class OffsetContext {
  private confirmedLsn: Lsn;
  /**
   * Committed in the stream, not yet acknowledged by Kafka: in commit (= end LSN) order, from
   * `head` on. A head index, not shift(): with tens of thousands of single-row transactions in
   * flight, shifting the array once per transaction cost a fifth of the source's CPU.
   */
  private pending: PendingTransaction[] = [];
  private head = 0;
  private tx: TxContext | undefined;

  /** `start`: the slot's confirmed_flush_lsn when resuming it, its consistent point when it was just created. */
  constructor(start: Lsn = 0n) {
    this.confirmedLsn = start;
  }

  /** The end LSN of the last transaction fully acknowledged by Kafka (or the starting position). */
  get confirmed(): Lsn {
    return this.confirmedLsn;
  }

  /** Transactions committed in the stream whose events Kafka has not acknowledged yet. */
  get pendingCount(): number {
    return this.pending.length - this.head;
  }

  /** Where the slot starts (resumed or created); only at start, before anything is streamed. */
  startAt(lsn: Lsn): void {
    this.confirmedLsn = lsn;
    this.pending = [];
    this.head = 0;
    this.tx = undefined;
  }

  /** A Begin message: the changes that follow belong to this transaction. */
  begin(finalLsn: Lsn, xid: number, commitTimeMicros: bigint): void {
    this.tx = { lsn: formatLsn(finalLsn), xid, commitTsMicros: commitTimeMicros, seq: 0 };
  }

  /** The transaction being received; a change outside one breaks the protocol. */
  currentTx(): TxContext {
    if (!this.tx) throw new ConnectorError('PGOUTPUT_ORDER', 'row change outside a transaction in the pgoutput stream');
    return this.tx;
  }

  /**
   * A Commit message: its transaction becomes pending. Its events (none for an empty one) are
   * queued before it; `acknowledge` it once Kafka acknowledged them and everything queued before.
   */
  commit(endLsn: Lsn): PendingTransaction {
    this.tx = undefined;
    // Kept in stream order: pgoutput (protocol version 1) sends whole transactions in commit
    // order, so the first pending one is the lowest that Kafka has not acknowledged.
    const tx: PendingTransaction = { endLsn, acknowledged: false };
    this.pending.push(tx);
    return tx;
  }

  /**
   * Kafka acknowledged every event of `tx`. The confirmed LSN moves to the end of the last
   * transaction before which nothing is unacknowledged: an acknowledgement out of order waits
   * for the ones before it. Returns true when the confirmed LSN moved.
   */
  acknowledge(tx: PendingTransaction): boolean {
    tx.acknowledged = true;
    let moved = false;
    while (this.pending[this.head]?.acknowledged) {
      const done = this.pending[this.head++]!;
      // Never backwards (a transaction ending at or before where the slot started).
      if (done.endLsn > this.confirmedLsn) {
        this.confirmedLsn = done.endLsn;
        moved = true;
      }
    }
    if (this.head === this.pending.length) {
      this.pending = [];
      this.head = 0;
    } else if (this.head >= 4096 && this.head * 2 >= this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    return moved;
  }

  /**
   * The LSN to give pg-logical-replication's acknowledge() for a standby status update (the
   * answer to a keepalive too), or undefined while nothing is confirmed. acknowledge(lsn) reports
   * lsn + 1, so it is given confirmed - 1: reporting end + 1 could skip a transaction whose
   * commit record starts exactly at `end` (the server skips commits that start before the
   * confirmed position).
   * https://www.postgresql.org/docs/15/protocol-replication.html#PROTOCOL-REPLICATION-STANDBY-STATUS-UPDATE
   */
  statusUpdateLsn(): string | undefined {
    return this.confirmedLsn === 0n ? undefined : formatLsn(this.confirmedLsn - 1n);
  }
}

/** A transaction committed in the stream, confirmable once Kafka acknowledged its events. */
export interface PendingTransaction {
  readonly endLsn: Lsn;
  acknowledged: boolean;
}
