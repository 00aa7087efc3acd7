import type { Clock } from './rate-budget.ts';
import { systemClock } from './rate-budget.ts';

/**
 * One breaker per CRM: when the CRM keeps failing (5xx, timeouts, connection errors — not
 * throttles, which have their own signal, and not validation errors, which are the record's
 * fault) every partition pauses instead of hammering it.
 *
 * - closed: calls flow. `failureThreshold` consecutive failures, or an empty retry budget, open it.
 * - open: nothing is sent for `cooldown` (doubling on each re-open, up to `maxCooldown`).
 * - half-open: one probe call at a time; a success closes the breaker, a failure re-opens it.
 *   After closing, `restore()` (0..1) ramps from 0.25 back to 1 over `rampMs`, and the sink
 *   scales its concurrency by it, so a recovering CRM is not hit by the full load at once.
 *
 * Retry budget (AWS SDK's retry quota): 500 tokens; a retried failure costs 5 (a timeout 10),
 * a success refunds 1. Retries can then be at most ~20% of successful traffic over time; when
 * the tokens run out the breaker opens rather than letting retries multiply the load.
 */
export type CircuitState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  failureThreshold?: number;
  cooldownMs?: number;
  maxCooldownMs?: number;
  rampMs?: number;
  retryTokens?: number;
}

export class CircuitBreaker {
  private readonly threshold: number;
  private readonly baseCooldown: number;
  private readonly maxCooldown: number;
  private readonly rampMs: number;
  private readonly maxTokens: number;
  private readonly clock: Clock;
  private stateValue: CircuitState = 'closed';
  private failures = 0;
  private cooldown: number;
  private openedAt = 0;
  private closedAt = -Infinity;
  private probing = false;
  private tokens: number;

  constructor(opts: BreakerOptions = {}, clock: Clock = systemClock) {
    this.threshold = opts.failureThreshold ?? 5;
    this.baseCooldown = opts.cooldownMs ?? 5_000;
    this.maxCooldown = opts.maxCooldownMs ?? 300_000;
    this.rampMs = opts.rampMs ?? 30_000;
    this.maxTokens = opts.retryTokens ?? 500;
    this.cooldown = this.baseCooldown;
    this.tokens = this.maxTokens;
    this.clock = clock;
  }

  get state(): CircuitState {
    if (this.stateValue === 'open' && this.clock.now() - this.openedAt >= this.cooldown) this.stateValue = 'half-open';
    return this.stateValue;
  }

  get retryTokens(): number {
    return this.tokens;
  }

  /** May a call be sent now? In half-open, only one probe at a time. */
  tryAcquire(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'open' || this.probing) return false;
    this.probing = true;
    return true;
  }

  /** Milliseconds until a call may be tried (0 when closed). */
  waitMs(): number {
    const s = this.state;
    if (s === 'closed') return 0;
    if (s === 'half-open') return this.probing ? 250 : 0;
    return Math.max(0, this.openedAt + this.cooldown - this.clock.now());
  }

  /** Fraction of the normal concurrency to use: ramps up after the breaker closed. */
  restore(): number {
    const since = this.clock.now() - this.closedAt;
    if (since >= this.rampMs) return 1;
    return 0.25 + (0.75 * since) / this.rampMs;
  }

  onSuccess(): void {
    this.tokens = Math.min(this.maxTokens, this.tokens + 1);
    this.failures = 0;
    if (this.stateValue !== 'closed') {
      this.stateValue = 'closed';
      this.closedAt = this.clock.now();
      this.cooldown = this.baseCooldown;
    }
    this.probing = false;
  }

  /** A whole call failed transiently. Returns true when the breaker (re)opened. */
  onFailure(kind: 'error' | 'timeout' = 'error'): boolean {
    this.tokens = Math.max(0, this.tokens - (kind === 'timeout' ? 10 : 5));
    this.failures++;
    const wasProbe = this.probing;
    this.probing = false;
    if (wasProbe || this.stateValue === 'half-open') {
      this.cooldown = Math.min(this.maxCooldown, this.cooldown * 2);
      return this.open();
    }
    if (this.stateValue === 'closed' && (this.failures >= this.threshold || this.tokens < 5)) return this.open();
    return false;
  }

  private open(): boolean {
    this.stateValue = 'open';
    this.openedAt = this.clock.now();
    return true;
  }
}
