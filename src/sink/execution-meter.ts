import { PacingBucket } from './pacing-bucket.ts';
import { type Clock, systemClock } from './rate-budget.ts';

/**
 * The CRM's execution-time budget of one quota group, kept on the client. Dataverse allows each
 * user 1,200 s of combined execution time per 5-minute sliding window besides its 6,000 requests
 * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits): a `$batch` is one
 * request but each of its operations spends time, so with batches the time binds long before the
 * requests do. Microsoft says its `x-ms-ratelimit-time-remaining-xrm-requests` header is for
 * debugging, not for pacing (reference/crm-apis.md, Corrections): the time is measured here.
 *
 * What is counted: the wall time of each call, from sending to the answer. Dataverse runs a
 * batch's operations one after another, so a call lasts at least the execution time it is charged,
 * and the sum of our durations bounds the server's sum from above, concurrent calls included.
 * Microsoft does not say when a request's time is charged; it is known only when the request
 * ends, so a duration counts in the window from the call's end (never earlier than the server's).
 *
 * Before a call: its estimate (records × the observed milliseconds per record, an EWMA) is
 * reserved and counts from the moment it is taken; after it, the measured duration replaces the
 * estimate. A reservation thus holds budget from the start of the call to a window after its end:
 * a call of d seconds would waste about d / window of the budget. Two things keep that small:
 * calls are kept short (`maxCallRecords`), and a call may count on what leaves the window during
 * the first half of its estimated duration (`LOOK_AHEAD`): its own time counts only once it has
 * run, and a call runs at least as long as the time it is charged, so what ages out meanwhile is
 * gone by then. Only a call lasting under half its estimate could meet spending not yet aged out
 * — and then it was charged under half its estimate too.
 *
 * Pacing: a sliding window hands time back in the pattern it was spent, so a burst stays a burst
 * and the sink pauses between bursts (pacing-bucket.ts). As the request budget does, a bucket of
 * a tenth of the window's time refilled at limit/window spreads the calls evenly. The bucket
 * starts empty: a restarted sink does not know what its previous run spent in the window (no
 * header may tell, see above), and spending at limit/window from the start is safe if that run
 * spent at most as evenly; a full bucket would add a burst on top of it.
 *
 * Share: the limit is scaled by the request budget's current fraction (its share of the group
 * and its adaptive back-off after a throttle), so instances split the time as they split requests.
 */

/** What one call holds of the budget: its estimate until it ends, then its measured duration. */
export interface Reservation {
  at: number;
  ms: number;
  records: number;
}

export interface ExecutionMeterOptions {
  /** Combined execution time allowed per window, seconds (all instances of the group together, before utilisation). */
  seconds: number;
  windowSeconds: number;
  utilisation?: number;
  /** The request budget's fraction right now (share × adaptive scale), 0..1. */
  fraction?: () => number;
  /** Starting estimate, ms per record. */
  startMsPerRecord?: number;
  /** Fraction of the window's time that may be spent at once (1 = no pacing; the sink uses PACING_BURST). */
  burst?: number;
  /** The request limit per window of the group, to keep calls long enough not to spend requests faster than they come. */
  requests?: number;
}

/**
 * Microsoft does not document how long an operation takes; 100 ms is what pg2crm plan assumes
 * (build-plan.ts) and the simulator charges. Replaced by the first measurement.
 */
const START_MS_PER_RECORD = 100;
/** Weight of a new measurement in the EWMA of milliseconds per record. */
const ALPHA = 0.3;
/** The longest call worth making, as a share of the window: what a reservation wastes (see above). */
const CALL_SHARE_OF_WINDOW = 0.01;
/**
 * Calls at least this many times the request rate's share of the time: at the execution limit,
 * calls of time/requests seconds would spend requests as fast as the window refills them.
 */
const REQUEST_HEADROOM = 2;
/** How soon to look again when the share is below anything usable (as RateBudget does). */
const SHARE_RECHECK_MS = 5_000;
/** The share of a call's estimate during which what leaves the window is counted as gone (see above). */
const LOOK_AHEAD = 0.5;

export class ExecutionMeter {
  private readonly windowMs: number;
  /** The group's time per window after utilisation, ms. */
  readonly quotaMs: number;
  private readonly clock: Clock;
  private readonly fraction: () => number;
  private readonly requests: number | undefined;
  /** Calls that ended, oldest end first: their measured durations. */
  private readonly ended: Reservation[] = [];
  private endedMs = 0;
  /** Calls in flight: their estimates, counted from when they were taken. */
  private readonly inFlight = new Set<Reservation>();
  private inFlightMs = 0;
  private msPerRecord: number;
  private measured = false;
  private readonly pacing: PacingBucket | undefined;
  /** The bucket was emptied once (at the first moment it had a capacity). */
  private primed = false;

  constructor(opts: ExecutionMeterOptions, clock: Clock = systemClock) {
    this.windowMs = opts.windowSeconds * 1000;
    this.quotaMs = opts.seconds * 1000 * (opts.utilisation ?? 1);
    this.clock = clock;
    this.fraction = opts.fraction ?? (() => 1);
    this.requests = opts.requests;
    this.msPerRecord = opts.startMsPerRecord ?? START_MS_PER_RECORD;
    const burst = opts.burst ?? 1;
    this.pacing = burst < 1 ? new PacingBucket(this.windowMs, burst) : undefined;
  }

  /** Milliseconds per record as observed (EWMA). */
  get perRecordMs(): number {
    return this.msPerRecord;
  }

  /** This instance's time per window right now, ms. */
  limitMs(): number {
    return this.quotaMs * Math.min(1, Math.max(0, this.fraction()));
  }

  /** Time spent or reserved in the current window, ms. */
  usedMs(): number {
    this.prune(this.clock.now());
    return this.endedMs + this.inFlightMs;
  }

  estimateMs(records: number): number {
    return Math.max(1, records) * this.msPerRecord;
  }

  /**
   * What will still count when a call of `estimate` ms taken now ends: the spending of calls
   * that ended and will not have left the window by then (LOOK_AHEAD), and every call in flight.
   */
  private countedAtEnd(now: number, estimate: number): number {
    this.prune(now);
    const from = now + LOOK_AHEAD * estimate - this.windowMs;
    let leaving = 0;
    for (const r of this.ended) {
      if (r.at > from) break;
      leaving += r.ms;
    }
    return this.endedMs - leaving + this.inFlightMs;
  }

  /** Whether a call of `records` records fits now. A call larger than the whole limit (or bucket) goes alone. */
  canTake(records: number): boolean {
    const now = this.clock.now();
    const limit = this.limitMs();
    if (limit <= 0) return false;
    const estimate = Math.min(limit, this.estimateMs(records));
    const b = this.bucket(now, limit);
    if (b && b.tokens + 1e-9 < Math.min(estimate, b.capacity)) return false;
    return this.countedAtEnd(now, estimate) + estimate <= limit;
  }

  /** Reserves the estimate of a call of `records` records; undefined when it does not fit. */
  take(records: number): Reservation | undefined {
    if (!this.canTake(records)) return undefined;
    const r: Reservation = { at: this.clock.now(), ms: this.estimateMs(records), records };
    this.inFlight.add(r);
    this.inFlightMs += r.ms;
    const b = this.bucket(r.at, this.limitMs());
    if (b) this.pacing!.take(r.ms, b.capacity);
    return r;
  }

  /**
   * The call ended after `ms` milliseconds: that is what it spent, counted from now. `learn`
   * false for a call the CRM did not execute (throttled, failed whole): its short duration says
   * nothing about how long records take.
   */
  settle(r: Reservation, ms: number, learn: boolean): void {
    if (!this.inFlight.delete(r)) return;
    this.inFlightMs -= r.ms;
    const now = this.clock.now();
    // The bucket paid the estimate: it pays the difference too (or gets it back).
    this.pacing?.drain(Math.max(0, ms) - r.ms, now, this.limitMs());
    r.at = now;
    r.ms = Math.max(0, ms);
    this.ended.push(r);
    this.endedMs += r.ms;
    if (learn && r.records > 0) {
      const sample = r.ms / r.records;
      this.msPerRecord = this.measured ? ALPHA * sample + (1 - ALPHA) * this.msPerRecord : sample;
      this.measured = true;
    }
  }

  /** The call was not sent after all. */
  refund(r: Reservation): void {
    if (!this.inFlight.delete(r)) return;
    this.inFlightMs -= r.ms;
    this.pacing?.drain(-r.ms, this.clock.now(), this.limitMs());
  }

  /**
   * Milliseconds until a call of `records` records fits (0 = now). Calls in flight are taken to
   * end when their estimate says (or now, when overdue) and to leave the window a window later.
   */
  waitMs(records: number): number {
    const now = this.clock.now();
    const limit = this.limitMs();
    if (limit <= 0) return Math.min(this.windowMs / 10, SHARE_RECHECK_MS);
    this.prune(now);
    const estimate = Math.min(limit, this.estimateMs(records));
    let paced = 0;
    const b = this.bucket(now, limit);
    if (b) {
      const need = Math.min(estimate, b.capacity);
      if (b.tokens + 1e-9 < need && b.ratePerMs > 0) paced = Math.ceil((need - b.tokens) / b.ratePerMs);
    }
    let excess = this.endedMs + this.inFlightMs + estimate - limit;
    if (excess <= 0) return paced;
    // What the call may count as gone: what has left the window LOOK_AHEAD into its estimate.
    const ahead = LOOK_AHEAD * estimate;
    const leaving = [
      ...this.ended.map((r) => ({ at: r.at + this.windowMs, ms: r.ms })),
      ...[...this.inFlight].map((r) => ({ at: Math.max(now, r.at + r.ms) + this.windowMs, ms: r.ms })),
    ].sort((a, b) => a.at - b.at);
    for (const l of leaving) {
      excess -= l.ms;
      if (excess <= 0) return Math.max(paced, 1, Math.ceil(l.at - ahead - now));
    }
    return Math.max(paced, this.windowMs);
  }

  /**
   * The most records worth sending in one call: about a hundredth of the window's duration (a
   * reservation wastes its call's duration), yet long enough that calls at the time limit spend
   * at most half the request limit.
   */
  maxCallRecords(): number {
    const perRequestMs = this.requests ? (REQUEST_HEADROOM * this.quotaMs) / this.requests : 0;
    const targetMs = Math.max(this.windowMs * CALL_SHARE_OF_WINDOW, perRequestMs);
    return Math.max(1, Math.floor(targetMs / this.msPerRecord));
  }

  /** The pacing bucket refilled to `now` (undefined without pacing); empty the first time (see above). */
  private bucket(now: number, limit: number): ReturnType<PacingBucket['fill']> | undefined {
    if (!this.pacing) return undefined;
    let b = this.pacing.fill(now, limit);
    if (!this.primed && b.capacity > 0) {
      this.primed = true;
      this.pacing.drain(b.tokens, now, limit);
      b = this.pacing.fill(now, limit);
    }
    return b;
  }

  private prune(now: number): void {
    while (this.ended.length > 0 && this.ended[0]!.at <= now - this.windowMs) this.endedMs -= this.ended.shift()!.ms;
  }
}
