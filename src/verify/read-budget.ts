import type { CrmConfig } from '../config.ts';
import type { RateSignal } from '../crm/crm-adapter.ts';
import { ThrottledCall } from '../crm/http.ts';
import { ConnectorError, type ErrorKind } from '../errors.ts';
import { type Clock, RateBudget, systemClock } from '../sink/rate-budget.ts';

/**
 * The CRM quota `pg2crm verify` may read with: `readShare` of `crm.limits` (window and daily),
 * through the sink's own RateBudget (rolling window, daily ledger, Retry-After block, AIMD on
 * throttles) with its pacing bucket, so the reads are spread over the window instead of spent
 * in one burst. Reads count against the same quota as writes on these CRMs (Salesforce API
 * calls, HubSpot's burst and daily limits, Dataverse service protection, Zoho credits, Sell's
 * per-token bucket), and the writers running beside verify hold budgets of the whole quota
 * minus nothing: the share left to them is what keeps them from being throttled, and their own
 * adaptive budgets (remaining-count headers, AIMD) absorb the rest.
 *
 * A throttle the CRM answers anyway (someone else spent the bucket) comes through the one
 * Retry-After path (http.ts `throttled` -> ThrottledCall): the budget is blocked for the wait
 * and the read is tried again, at most MAX_THROTTLES times in a row; a wait longer than
 * `maxWaitSeconds` stops verify with RATE_LIMITED instead of sleeping for an hour.
 */
const PACING_BURST = 0.1;
/**
 * The failures a read is tried again after: the CRM's budget or the CRM itself (by the error's
 * kind, src/errors.ts). A 4xx is the request's own fault whatever an adapter marks retriable
 * (HubSpot marks some): sending it again cannot help.
 */
const RETRIED_KINDS: ReadonlySet<ErrorKind> = new Set(['throttle', 'server', 'unreachable', 'timeout']);
/** Failed attempts of one read (throttles and retriable failures) before verify gives up. */
const MAX_THROTTLES = 5;
/** Wait after a throttle that named no wait (the budget's own slow-down applies besides). */
const THROTTLE_BACKOFF_MS = 1_000;

export interface ReadBudgetOptions {
  /** Fraction of the quota (window and daily) verify may use, 0 < share <= 1. */
  share: number;
  /** Longest wait verify sits out (for budget or a Retry-After) before it gives up. */
  maxWaitSeconds: number;
}

export class ReadBudget {
  readonly budget: RateBudget;
  /** Calls made (sent to the CRM), throttled ones included. */
  calls = 0;
  /** Calls the CRM throttled. */
  throttled = 0;
  private readonly maxWaitMs: number;
  private readonly clock: Clock;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    limits: CrmConfig['limits'],
    opts: ReadBudgetOptions,
    clock: Clock = systemClock,
    sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms)),
  ) {
    this.budget = new RateBudget(
      {
        requests: Math.max(1, Math.floor(limits.requests * opts.share)),
        windowSeconds: limits.windowSeconds,
        utilisation: limits.utilisation,
        daily: limits.daily === undefined ? undefined : Math.max(1, Math.floor(limits.daily * opts.share)),
        burst: PACING_BURST,
      },
      clock,
    );
    this.maxWaitMs = opts.maxWaitSeconds * 1000;
    this.clock = clock;
    this.sleep = sleep;
  }

  /** Calls per window verify may make (its share of the quota, after utilisation). */
  get quota(): number {
    return this.budget.quota;
  }

  /** Runs one CRM read (one request) within the budget; `what` names it in errors. */
  async call<T>(what: string, read: (onSignal: (s: RateSignal) => void) => Promise<T>): Promise<T> {
    for (let failures = 0; ; ) {
      await this.waitForOne(what);
      const spent = this.budget.take(1);
      if (!spent) {
        await this.sleep(50); // the pacing bucket's last fraction of a token
        continue;
      }
      this.calls++;
      try {
        return await read((s) => {
          // Requests an adapter made beyond the one paid for (a further page, a split list).
          if (s.extraRequests !== undefined && s.extraRequests > 0) this.calls += s.extraRequests;
          this.budget.observe(s);
        });
      } catch (err) {
        // A throttle, a 5xx, no answer or none in time: tried again after a pause.
        if (!(err instanceof ConnectorError) || !err.retriable || !RETRIED_KINDS.has(err.kind)) throw err;
        if (err instanceof ThrottledCall) this.throttled++;
        if (++failures >= MAX_THROTTLES) throw err;
        if (err.retryAfterSeconds === undefined) await this.sleep(THROTTLE_BACKOFF_MS);
      } finally {
        this.budget.complete(spent);
      }
    }
  }

  private async waitForOne(what: string): Promise<void> {
    const started = this.clock.now();
    for (;;) {
      const wait = this.budget.waitMs(1);
      if (wait <= 0) return;
      if (this.clock.now() - started + wait > this.maxWaitMs) {
        throw new ConnectorError(
          'RATE_LIMITED',
          `verify: ${what} would wait ${Math.ceil(wait / 1000)} s for its share of the CRM quota (longer than --max-wait ${this.maxWaitMs / 1000} s); run verify later, raise --read-share, or check with --sample`,
          { retriable: true },
        );
      }
      await this.sleep(Math.min(wait, 5_000));
    }
  }
}
