/**
 * How long each partition has had lag while its committed offset stood still. Lag alone does
 * not show a stuck partition on a quiet table: one message retried without end is a lag of 1,
 * below any lag alert, while every later change of that partition waits behind it.
 */
export class StallTracker {
  private readonly last = new Map<string, { committed: number | null; since: number }>();

  /** Feeds one sample; returns the seconds each partition has been stalled (0 = moving or no lag). */
  observe(
    partitions: { topic: string; partition: number; committed: number | null; lag: number }[],
    now = Date.now(),
  ): Map<string, number> {
    const out = new Map<string, number>();
    for (const p of partitions) {
      const id = `${p.topic}/${p.partition}`;
      const prev = this.last.get(id);
      if (p.lag === 0) {
        this.last.delete(id);
        out.set(id, 0);
      } else if (!prev || prev.committed !== p.committed) {
        // Counted from the first sample that saw this offset with lag: a lower bound.
        this.last.set(id, { committed: p.committed, since: now });
        out.set(id, 0);
      } else out.set(id, Math.round((now - prev.since) / 1000));
    }
    return out;
  }
}
