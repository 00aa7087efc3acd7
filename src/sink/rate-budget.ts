import type { RateSignal } from '../crm/crm-adapter.ts';

/**
 * A rolling-window request budget: at most `requests` calls in any `windowSeconds` span,
 * which is how Zendesk Sell, HubSpot and Dynamics count (a token bucket refilled at the average
 * rate would allow a full bucket plus refill inside one window, i.e. more than the limit).
 * A Retry-After from the CRM blocks the budget until it has passed.
 */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export class RateBudget {
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly clock: Clock;
  /** Send times of the calls inside the current window, oldest first. */
  private readonly sent: number[] = [];
  private blockedUntil = 0;

  constructor(opts: { requests: number; windowSeconds: number; utilisation?: number }, clock: Clock = systemClock) {
    this.limit = Math.max(1, Math.floor(opts.requests * (opts.utilisation ?? 1)));
    this.windowMs = opts.windowSeconds * 1000;
    this.clock = clock;
  }

  private prune(now: number): void {
    while (this.sent.length > 0 && this.sent[0]! <= now - this.windowMs) this.sent.shift();
  }

  /** Requests that may be sent right now. */
  available(): number {
    const now = this.clock.now();
    if (now < this.blockedUntil) return 0;
    this.prune(now);
    return this.limit - this.sent.length;
  }

  /** Takes `n` requests if all are available now. */
  tryTake(n: number): boolean {
    if (this.available() < n) return false;
    const now = this.clock.now();
    for (let i = 0; i < n; i++) this.sent.push(now);
    return true;
  }

  /** Milliseconds until `n` requests will be available (0 = now). */
  waitMs(n: number): number {
    const now = this.clock.now();
    const blocked = Math.max(0, this.blockedUntil - now);
    this.prune(now);
    const excess = this.sent.length + n - this.limit;
    const windowWait = excess <= 0 ? 0 : this.sent[Math.min(excess, this.sent.length) - 1]! + this.windowMs - now;
    return Math.max(blocked, windowWait);
  }

  /** Applies what the CRM said: a Retry-After blocks; a lower remaining count than ours wins. */
  observe(signal: RateSignal): void {
    const now = this.clock.now();
    if (signal.retryAfterSeconds !== undefined) {
      this.blockedUntil = Math.max(this.blockedUntil, now + signal.retryAfterSeconds * 1000);
    }
    if (signal.remaining !== undefined) {
      this.prune(now);
      const ours = this.limit - this.sent.length;
      // Someone else (another tool of the account) spends from the same bucket: count it.
      for (let i = signal.remaining; i < ours; i++) this.sent.push(now);
    }
  }
}
