import type { RateSignal } from '../crm/crm-adapter.ts';
import { PacingBucket } from './pacing-bucket.ts';
import { type Spent, SpendLedger } from './spend-ledger.ts';

export type { Spent };

/**
 * The request budget of one sink instance for one CRM credential.
 *
 * Window: at most `limit` calls in any rolling `windowSeconds` span, which is how Zendesk Sell,
 * HubSpot and Dynamics count (a token bucket refilled at the average rate would allow a full
 * bucket plus refill inside one window, i.e. more than the limit).
 *
 * Share: the instance may use `quota × share` of the window (see budget-share.ts). A smaller
 * share applies at once; a larger one only after a whole window has passed since it was granted,
 * because the instance that gave the difference up may already have spent it in the current
 * window. Formally: the calls an instance makes in any window are at most the smallest share it
 * held during that window, so the instances' calls sum to at most the quota as long as the
 * shares they hold at any one moment do. For windows longer than a minute (Salesforce's and
 * Zoho's rolling 24 h) the delay is capped at 60 s — a day's delay would leave a new instance
 * idle for a day — and the CRM's remaining-quota headers (Sforce-Limit-Info,
 * X-API-CREDITS-REMAINING), which count every instance's calls, keep each instance under what
 * is really left.
 *
 * Adaptive: a throttle from the CRM (429/403 or a remaining count below ours) means someone else
 * spends from the bucket or the configured limit is wrong: the usable fraction drops to 0.7×
 * (at most once per second, so one burst of parallel throttles counts once) and then recovers
 * additively, 5% of the limit every tenth of a window (AIMD; AWS's adaptive retry uses the same
 * 0.7 factor). A Retry-After blocks the budget until it has passed, however long.
 *
 * Daily: an optional rolling-24 h quota in the CRM's own unit (calls or Zoho credits), counted in
 * one-minute buckets (spend-ledger.ts); shared by the same fraction.
 *
 * Priorities: a caller that could not get budget registers its demand with its priority; callers
 * of lower priority then leave that much budget for it.
 *
 * Pacing (`burst` < 1): a token bucket of `burst × limit` (at least two requests) refilled at
 * limit/window spreads the calls evenly inside the window (pacing-bucket.ts says why).
 */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

const DECREASE = 0.7;
const MIN_SCALE = 0.05;
const INCREASE = 0.05;
const MAX_RAISE_DELAY_MS = 60_000;
/** How soon to look again when the share is below one call: BudgetShare samples at most every 5 s. */
const SHARE_RECHECK_MS = 5_000;

interface Grant {
  at: number;
  limit: number;
}

export interface BudgetOptions {
  requests: number;
  windowSeconds: number;
  utilisation?: number;
  daily?: number | undefined;
  /** Fraction of the window limit that may be sent at once (1 = no pacing). */
  burst?: number;
}

export class RateBudget {
  /** The credential's quota per window (all instances together), after `utilisation`. */
  readonly quota: number;
  readonly dailyQuota: number | undefined;
  private readonly windowMs: number;
  private readonly clock: Clock;
  /** What was spent in the window and the day. */
  private readonly ledger: SpendLedger;
  private blockedUntil = 0;
  /** Share limits granted, newest last; entries older than a window are dropped but the newest of them. */
  private grants: Grant[];
  private share = 1;
  private scale = 1;
  private lastDecrease = -Infinity;
  private lastIncrease = 0;
  private dailyCorrection = 0;
  private readonly demand = new Map<string, { n: number; priority: number; at: number }>();
  /** Absent without pacing (`burst` 1). */
  private readonly pacing: PacingBucket | undefined;

  constructor(opts: BudgetOptions, clock: Clock = systemClock) {
    const utilisation = opts.utilisation ?? 1;
    this.quota = Math.max(1, Math.floor(opts.requests * utilisation));
    this.dailyQuota = opts.daily === undefined ? undefined : Math.max(1, Math.floor(opts.daily * utilisation));
    this.windowMs = opts.windowSeconds * 1000;
    this.clock = clock;
    this.grants = [{ at: -Infinity, limit: this.quota }];
    this.lastIncrease = clock.now();
    const burst = opts.burst ?? 1;
    this.pacing = burst < 1 ? new PacingBucket(this.windowMs, burst) : undefined;
    this.ledger = new SpendLedger(this.windowMs, this.dailyQuota !== undefined);
  }

  get windowSeconds(): number {
    return this.windowMs / 1000;
  }

  /** The quota a share is whole calls of (see budget-share.ts). */
  get groupQuota(): number {
    return this.quota;
  }

  /** This instance's fraction of the quota (0..1). */
  get fraction(): number {
    return this.share;
  }

  /**
   * Sets this instance's fraction of the quota. `immediate` skips the one-window delay of a
   * raise; only for an instance that knows nobody else holds a share (the sole group member).
   */
  setShare(fraction: number, immediate = false): void {
    const now = this.clock.now();
    this.share = Math.min(1, Math.max(0, fraction));
    // A share of whole calls (k / quota, budget-share.ts) must give k, not k - 1 by rounding.
    const limit = Math.floor(this.quota * this.share + 1e-9);
    if (immediate) this.grants = [{ at: -Infinity, limit }];
    else this.grants.push({ at: now, limit });
  }

  /** The share limit in force: the smallest granted within the last window (at most 60 s). */
  private shareLimit(now: number): number {
    const from = now - Math.min(this.windowMs, MAX_RAISE_DELAY_MS);
    let keep = 0;
    for (let i = 0; i < this.grants.length; i++) if (this.grants[i]!.at <= from) keep = i;
    if (keep > 0) this.grants = this.grants.slice(keep);
    let limit = Infinity;
    for (const g of this.grants) limit = Math.min(limit, g.limit);
    return limit;
  }

  private recover(now: number): void {
    const step = this.windowMs / 10;
    while (this.scale < 1 && now - this.lastIncrease >= step && now - this.lastDecrease >= step) {
      this.scale = Math.min(1, this.scale + INCREASE);
      this.lastIncrease += step;
    }
    if (this.scale >= 1 || now - this.lastIncrease > this.windowMs) this.lastIncrease = now;
  }

  /** Calls this instance may make per window right now (share × adaptive scale). */
  limit(): number {
    const now = this.clock.now();
    this.recover(now);
    return Math.floor(this.shareLimit(now) * this.scale);
  }

  /** Calls spent in the current window. */
  used(): number {
    this.ledger.prune(this.clock.now());
    return this.ledger.inWindow;
  }

  /** Requests that may be sent right now (before priorities). */
  available(): number {
    const now = this.clock.now();
    if (now < this.blockedUntil) return 0;
    this.ledger.prune(now);
    return Math.max(0, this.limit() - this.ledger.inWindow);
  }

  private dailyAvailable(): number {
    if (this.dailyQuota === undefined) return Infinity;
    this.ledger.prune(this.clock.now());
    return Math.floor(this.dailyQuota * this.share) - this.ledger.today - this.dailyCorrection;
  }

  private reservedAbove(priority: number, who: string | undefined): number {
    const now = this.clock.now();
    let n = 0;
    for (const [key, d] of this.demand) {
      if (now - d.at > 2 * this.windowMs) this.demand.delete(key);
      else if (d.priority > priority && key !== who) n += d.n;
    }
    return n;
  }

  /**
   * Takes `n` requests (and `daily` units of the daily quota) if all are available now and
   * higher-priority callers waiting for budget are left enough. `who` identifies the caller
   * (a partition) for its demand record.
   */
  tryTake(n: number, opts: { priority?: number; who?: string; daily?: number } = {}): boolean {
    return this.take(n, opts) !== undefined;
  }

  /** As `tryTake`; returns the spending, to be passed to `complete` when the call returns. */
  take(n: number, opts: { priority?: number; who?: string; daily?: number } = {}): Spent | undefined {
    const priority = opts.priority ?? 5;
    const daily = opts.daily ?? n;
    const bucket = this.pacing?.fill(this.clock.now(), this.limit());
    const paced = !bucket || bucket.tokens + 1e-9 >= Math.min(n, bucket.capacity);
    const ok = paced && this.available() - this.reservedAbove(priority, opts.who) >= n && this.dailyAvailable() >= daily;
    if (!ok) {
      if (opts.who !== undefined) this.demand.set(opts.who, { n, priority, at: this.clock.now() });
      return undefined;
    }
    if (opts.who !== undefined) this.demand.delete(opts.who);
    if (bucket) this.pacing!.take(n, bucket.capacity);
    return this.ledger.spend(this.clock.now(), n, daily);
  }

  /**
   * The call returned: its requests count in the window from now on. The CRM counted them when
   * they arrived, somewhere between sending and now; counting from the later moment keeps this
   * window ending after the CRM's, so jitter between the two clocks never lets a call through
   * that the CRM would count in the previous window.
   */
  complete(spent: Spent): void {
    spent.at = Math.max(spent.at, this.clock.now());
  }

  /** The call was not sent after all: its requests are free again. */
  refund(spent: Spent): void {
    this.ledger.refund(spent);
  }

  /** Forgets a caller's demand (its partition was revoked or it has nothing left). */
  withdraw(who: string): void {
    this.demand.delete(who);
  }

  /** Milliseconds until `n` requests (and `daily` daily units) will be available (0 = now). */
  waitMs(n: number, daily = n): number {
    const now = this.clock.now();
    const blocked = Math.max(0, this.blockedUntil - now);
    this.ledger.prune(now);
    const limit = this.limit();
    let windowWait = 0;
    if (limit < n) {
      // The share or the adaptive scale is below one call: wait for it to grow back. The scale
      // grows a step every tenth of the window; the share is resampled every few seconds
      // (budget-share.ts), and a sink has share 0 until its first view of the group: a tenth of
      // a 24 h window (2.4 h, Salesforce and Zoho) would stall a sink started on a backlog.
      windowWait = Math.floor(this.shareLimit(now)) < n ? Math.min(this.windowMs / 10, SHARE_RECHECK_MS) : this.windowMs / 10;
    } else windowWait = this.ledger.windowWait(this.ledger.inWindow + n - limit, now);
    if (this.pacing && limit >= n) {
      const p = this.pacing.fill(now, this.limit());
      const need = Math.min(n, p.capacity);
      if (p.tokens + 1e-9 < need && p.ratePerMs > 0) windowWait = Math.max(windowWait, (need - p.tokens) / p.ratePerMs);
    }
    let dailyWait = 0;
    if (this.dailyAvailable() < daily) {
      // Below one call by the share alone (e.g. share 0 before the first view): spending ageing
      // out cannot help, a new share can.
      if (Math.floor((this.dailyQuota ?? 0) * this.share) < daily) dailyWait = SHARE_RECHECK_MS;
      else dailyWait = this.ledger.dailyWait(now);
    }
    return Math.max(blocked, windowWait, dailyWait);
  }

  /** Applies what the CRM said: a Retry-After blocks; a throttle or a lower remaining count than ours shrinks. */
  observe(signal: RateSignal): void {
    const now = this.clock.now();
    if (signal.extraRequests !== undefined && signal.extraRequests > 0) {
      // Calls the adapter made beyond what it was paid for: spent all the same (before the
      // remaining-count check below, which would otherwise take them for someone else's).
      const n = signal.extraRequests;
      this.ledger.prune(now);
      this.ledger.spend(now, n, n);
      this.pacing?.drain(n, now, this.limit());
    }
    if (signal.retryAfterSeconds !== undefined) {
      this.blockedUntil = Math.max(this.blockedUntil, now + signal.retryAfterSeconds * 1000);
    }
    if (signal.throttled) {
      if (now - this.lastDecrease >= 1000) {
        this.scale = Math.max(MIN_SCALE, this.scale * DECREASE);
        this.lastDecrease = now;
        this.lastIncrease = now;
      }
    }
    // A throttle's remaining count (0) only repeats the throttle, which Retry-After and the
    // slow-down above handle: taken as "the window is spent", it silenced a Zendesk Sell sink for
    // a whole hour after a 429 that asked for 2 s.
    if (signal.remaining !== undefined && !signal.throttled) {
      this.ledger.prune(now);
      const ours = this.limit() - this.ledger.inWindow;
      // Someone else (another tool of the account, a previous incarnation) spends from the same
      // bucket: count it as spent here too, so this window ends where the CRM's does.
      if (signal.remaining < ours) this.ledger.spend(now, ours - signal.remaining);
    }
    if (signal.dailyRemaining !== undefined && this.dailyQuota !== undefined) {
      const ours = Math.floor(this.dailyQuota * this.share) - this.ledger.today;
      this.dailyCorrection = Math.max(0, ours - signal.dailyRemaining);
    }
  }
}
