/** The smallest bucket, in requests (see `fill`). */
const MIN_CAPACITY = 2;

/**
 * Pacing for a RateBudget (`burst` < 1). A rolling window hands calls back in the pattern they
 * were spent, so a burst of a whole window stays a burst — and the sink, with nothing to send
 * for most of the window, pauses and pays a refetch before the next burst. A token bucket of
 * `burst × limit` (at least two requests) refilled at limit/window spreads the calls evenly (the sink uses burst 0.1;
 * same total: the window still rules), so the wait for the next call is short enough to wait
 * for.
 */
export class PacingBucket {
  private readonly windowMs: number;
  private readonly burst: number;
  /**
   * The bucket's fill as a fraction of its capacity (1 = full). Kept as a fraction, not a token
   * count, so a limit that was 0 for a moment (share 0 before the first view of the group) does
   * not leave the bucket empty once the share arrives: refilled at limit/window, an empty bucket
   * would hold back a 500-credit Zoho Bulk Write job for 45 s at 1,000,000 credits a day.
   */
  private level = 1;
  private at = 0;

  constructor(windowMs: number, burst: number) {
    this.windowMs = windowMs;
    this.burst = burst;
  }

  /** Refills the bucket up to `now` for a window limit of `limit`; returns its tokens, capacity and refill rate. */
  fill(now: number, limit: number): { tokens: number; capacity: number; ratePerMs: number } {
    // At least two requests (within the limit): a bucket that holds no more than the call must
    // be full for it, and whatever refills between full and the caller's return (a timer, a
    // batch being assembled) is lost: a sink with 5 calls per 10 s (one of four on 20/10 s),
    // 200 ms late each time, made 5 calls in 11 s. Two calls at once are no burst to speak of.
    const capacity = Math.max(limit * this.burst, Math.min(limit, MIN_CAPACITY));
    const ratePerMs = limit / this.windowMs;
    // The fill rises by ratePerMs tokens per ms: ratePerMs / capacity of the bucket (with no
    // limit, as a bucket of `burst × limit` would: see `level`).
    const perMs = capacity > 0 ? ratePerMs / capacity : 1 / (this.windowMs * this.burst);
    this.level = Math.min(1, this.level + Math.max(0, now - this.at) * perMs);
    this.at = now;
    return { tokens: this.level * capacity, capacity, ratePerMs };
  }

  /** Takes `n` tokens of a bucket of `capacity` (as `fill` returned it). */
  take(n: number, capacity: number): void {
    if (capacity <= 0) return;
    this.level -= n / capacity;
    // Fractions round: 25 takes of 1/25 must leave the bucket exactly empty, not 1e-16 short.
    if (Math.abs(this.level) < 1e-9) this.level = 0;
  }

  /** Requests spent that were not announced: out of the bucket too, which may go below empty. */
  drain(n: number, now: number, limit: number): void {
    const { capacity } = this.fill(now, limit);
    if (capacity > 0) this.level -= n / capacity;
  }
}
