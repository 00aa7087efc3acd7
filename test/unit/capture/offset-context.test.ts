import { describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../../../src/capture/lsn.ts';
import { OffsetContext } from '../../../src/capture/offset-context.ts';
import { ConnectorError } from '../../../src/errors.ts';

/**
 * The source's position (offset-context.ts): an LSN is confirmed to PostgreSQL only when Kafka
 * acknowledged every change up to it; what was only received is never confirmed.
 */
const START = parseLsn('0/1000');

/** Begin + Commit of one transaction, as the stream delivers them. */
function received(ctx: OffsetContext, endLsn: bigint, xid = 1) {
  ctx.begin(endLsn - 8n, xid, 0n);
  return ctx.commit(endLsn);
}

describe('OffsetContext', () => {
  it('confirms only up to the lowest transaction Kafka has not acknowledged', () => {
    const ctx = new OffsetContext(START);
    const a = received(ctx, 0x2000n);
    const b = received(ctx, 0x3000n);
    const c = received(ctx, 0x4000n);
    expect(ctx.pendingCount).toBe(3);

    expect(ctx.acknowledge(b)).toBe(false);
    expect(ctx.confirmed).toBe(START);

    expect(ctx.acknowledge(a)).toBe(true);
    // a and b are both acknowledged; c is not.
    expect(ctx.confirmed).toBe(0x3000n);
    expect(ctx.pendingCount).toBe(1);

    expect(ctx.acknowledge(c)).toBe(true);
    expect(ctx.confirmed).toBe(0x4000n);
    expect(ctx.pendingCount).toBe(0);
  });

  it('acknowledgements in reverse order confirm nothing until the first one arrives, then everything', () => {
    const ctx = new OffsetContext(START);
    const txs = [0x2000n, 0x3000n, 0x4000n, 0x5000n].map((lsn, i) => received(ctx, lsn, i + 1));
    for (const tx of [...txs].reverse().slice(0, 3)) {
      expect(ctx.acknowledge(tx)).toBe(false);
      expect(ctx.confirmed).toBe(START);
    }
    expect(ctx.acknowledge(txs[0]!)).toBe(true);
    expect(ctx.confirmed).toBe(0x5000n);
  });

  it('an empty transaction (Begin + Commit, no change) is confirmable, but not past an unacknowledged one', () => {
    const ctx = new OffsetContext(START);
    const withChanges = received(ctx, 0x2000n);
    const empty = received(ctx, 0x2100n);
    expect(ctx.acknowledge(empty)).toBe(false);
    expect(ctx.confirmed).toBe(START);
    expect(ctx.acknowledge(withChanges)).toBe(true);
    expect(ctx.confirmed).toBe(0x2100n);

    // Alone, it is confirmed as soon as it is acknowledged.
    const alone = received(ctx, 0x2200n);
    expect(ctx.acknowledge(alone)).toBe(true);
    expect(ctx.confirmed).toBe(0x2200n);
  });

  it('the answer to a keepalive is the confirmed position, never a received one', () => {
    const ctx = new OffsetContext();
    // Nothing confirmed yet (a new context): no status update at all.
    expect(ctx.statusUpdateLsn()).toBeUndefined();
    ctx.startAt(parseLsn('1/00000000'));
    // pg-logical-replication reports the given LSN + 1: it is given the confirmed LSN - 1.
    expect(ctx.statusUpdateLsn()).toBe('0/FFFFFFFF');

    const tx = received(ctx, parseLsn('1/00000500'));
    // Received (and maybe sent), not acknowledged: the keepalive answer does not move.
    expect(ctx.statusUpdateLsn()).toBe('0/FFFFFFFF');
    ctx.acknowledge(tx);
    expect(ctx.statusUpdateLsn()).toBe(formatLsn(parseLsn('1/00000500') - 1n));
  });

  it('never moves backwards, and a second acknowledgement of the same transaction changes nothing', () => {
    const ctx = new OffsetContext(START);
    const old = received(ctx, 0x0800n);
    expect(ctx.acknowledge(old)).toBe(false);
    expect(ctx.confirmed).toBe(START);

    const tx = received(ctx, 0x2000n);
    const later = received(ctx, 0x3000n);
    expect(ctx.acknowledge(tx)).toBe(true);
    expect(ctx.acknowledge(tx)).toBe(false);
    expect(ctx.confirmed).toBe(0x2000n);
    expect(ctx.pendingCount).toBe(1);
    expect(ctx.acknowledge(later)).toBe(true);
  });

  it('keeps the transaction being received: its begin LSN and xid, a sequence per change, and none outside Begin..Commit', () => {
    const ctx = new OffsetContext(START);
    expect(() => ctx.currentTx()).toThrow(ConnectorError);
    expect(() => ctx.currentTx()).toThrow(expect.objectContaining({ code: 'PGOUTPUT_ORDER', kind: 'protocol' }));

    ctx.begin(parseLsn('0/2A0'), 42, 1_700_000_000_000_000n);
    const tx = ctx.currentTx();
    expect(tx).toEqual({ lsn: '0/000002A0', xid: 42, commitTsMicros: 1_700_000_000_000_000n, seq: 0 });
    tx.seq++;
    expect(ctx.currentTx().seq).toBe(1);

    ctx.commit(0x2000n);
    expect(() => ctx.currentTx()).toThrow(/outside a transaction/);
  });

  it('startAt sets where the slot resumes and forgets what was pending', () => {
    const ctx = new OffsetContext();
    const stale = received(ctx, 0x2000n);
    ctx.startAt(0x9000n);
    expect(ctx.confirmed).toBe(0x9000n);
    expect(ctx.pendingCount).toBe(0);
    // An acknowledgement from before the restart neither confirms nor moves anything back.
    expect(ctx.acknowledge(stale)).toBe(false);
    expect(ctx.confirmed).toBe(0x9000n);
  });
});
