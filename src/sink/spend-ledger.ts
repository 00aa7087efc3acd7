const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;

/** Requests spent at one moment; `complete()` of the budget moves `at` to when the call returned. */
export interface Spent {
  at: number;
  n: number;
}

/**
 * What one RateBudget spent: the calls inside the rolling window (send time and cost, oldest
 * first) and, when a daily quota is kept, the last 24 h in one-minute buckets, so memory does
 * not grow with the quota. Callers prune before they read.
 */
export class SpendLedger {
  private readonly windowMs: number;
  private readonly sent: Spent[] = [];
  private windowCount = 0;
  /** Minute (ms since epoch / 60 000) -> daily units spent in it, oldest first; undefined: no daily quota. */
  private readonly daily: Map<number, number> | undefined;
  private dailyCount = 0;

  constructor(windowMs: number, trackDaily: boolean) {
    this.windowMs = windowMs;
    this.daily = trackDaily ? new Map() : undefined;
  }

  /** Requests spent in the current window (after `prune`). */
  get inWindow(): number {
    return this.windowCount;
  }

  /** Daily units spent in the last 24 h (after `prune`). */
  get today(): number {
    return this.dailyCount;
  }

  /** Forgets what left the window and the day. */
  prune(now: number): void {
    // Completed calls may move behind younger ones; the head then waits for them (conservative).
    while (this.sent.length > 0 && this.sent[0]!.at <= now - this.windowMs) this.windowCount -= this.sent.shift()!.n;
    if (!this.daily) return;
    const oldest = Math.floor((now - DAY_MS) / MINUTE_MS);
    for (const [minute, n] of this.daily) {
      if (minute > oldest) break;
      this.daily.delete(minute);
      this.dailyCount -= n;
    }
  }

  /** Counts `n` requests in the window from `now`, and `daily` units in the day when given. */
  spend(now: number, n: number, daily?: number): Spent {
    const spent = { at: now, n };
    this.sent.push(spent);
    this.windowCount += n;
    if (this.daily && daily !== undefined) {
      const minute = Math.floor(now / MINUTE_MS);
      this.daily.set(minute, (this.daily.get(minute) ?? 0) + daily);
      this.dailyCount += daily;
    }
    return spent;
  }

  /** The call was not sent after all: its requests leave the window (its daily units stay counted). */
  refund(spent: Spent): void {
    this.windowCount -= spent.n;
    spent.n = 0;
  }

  /** Milliseconds until `excess` requests have left the window (0 when `excess` ≤ 0). */
  windowWait(excess: number, now: number): number {
    let wait = 0;
    for (const s of this.sent) {
      if (excess <= 0) break;
      excess -= s.n;
      wait = s.at + this.windowMs - now;
    }
    return wait;
  }

  /** Milliseconds until the oldest minute of daily spending leaves the day (a minute when there is none). */
  dailyWait(now: number): number {
    const first = this.daily?.keys().next();
    return !first || first.done ? MINUTE_MS : (first.value + 1) * MINUTE_MS + DAY_MS - now;
  }
}
