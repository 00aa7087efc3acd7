import type { CrmAdapter, WriteOutcome } from '../crm/crm-adapter.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import type { BatchSizer } from './batch-sizer.ts';
import type { Call, InFlight } from './call-planner.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import { retryKindOf, serverFailure } from './outcome-policy.ts';

export interface CallWriterDeps {
  /** The adapter for a call that holds none (any credential's: they differ only in their token). */
  adapter: CrmAdapter;
  breaker: Pick<CircuitBreaker, 'onFailure' | 'onSuccess' | 'retryTokens'>;
  sizer: Pick<BatchSizer, 'observe'>;
  inFlight: Pick<InFlight, 'enter' | 'leave'>;
  log: Logger;
  /** A failure no retry can fix (bad credentials): the sink stops with its message. */
  onFatal?: ((err: Error) => void) | undefined;
  now?: () => number;
}

/**
 * Sends one planned call and returns one outcome per record, never throwing: a failure of the
 * whole call becomes a retry outcome for each of its records, with a kind read from the error's
 * kind. On the way it holds an in-flight slot, feeds the budget the CRM's rate signals, the
 * circuit breaker the CRM's health and the batch sizer the call's size and duration.
 */
export class CallWriter {
  private readonly deps: CallWriterDeps;
  private readonly now: () => number;

  constructor(deps: CallWriterDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  /** `heartbeat` is called on every response: a call can last minutes (a Bulk API job polled until it ends). */
  async write(call: Call, heartbeat: () => void): Promise<WriteOutcome[]> {
    const { inFlight } = this.deps;
    const object = call[0]!.write.object;
    const t0 = this.now();
    inFlight.enter();
    metrics.batchSize.observe({ object }, call.length);
    let throttled = false;
    // Whether the CRM executed the call: only then does its duration say how long records take.
    let executed = false;
    try {
      const outcomes = await (call.adapter ?? this.deps.adapter).write(
        call.map((p) => p.write),
        (signal) => {
          if (signal.throttled) {
            throttled = true;
            metrics.throttles.inc();
          }
          call.lane?.budget.observe(signal);
          heartbeat();
        },
      );
      metrics.crmRequests.inc({ object, outcome: 'ok' });
      executed = !throttled;
      this.answered(object, outcomes, throttled);
      this.deps.sizer.observe(object, call.length, this.now() - t0, false);
      // Records of a throttled call that must be retried were throttled, whatever the adapter called them.
      return throttled ? outcomes.map((o) => (o.status === 'retry' && o.kind === undefined ? { ...o, kind: 'throttle' } : o)) : outcomes;
    } catch (err) {
      metrics.crmRequests.inc({ object, outcome: 'error' });
      return this.failed(call, err, throttled, this.now() - t0);
    } finally {
      if (call.spent) call.lane?.budget.complete(call.spent);
      // The call's wall time is what it spent of the CRM's execution-time limit, from now on.
      if (call.execution) call.lane?.meter?.settle(call.execution, this.now() - t0, executed);
      inFlight.leave();
    }
  }

  /**
   * The CRM answered. A throttle is not the CRM failing: the budget handles it; the breaker only
   * sees health. Single-record APIs report a server error per record: all records failing so
   * counts as the call failing.
   */
  private answered(object: string, outcomes: WriteOutcome[], throttled: boolean): void {
    if (throttled) return;
    const { breaker } = this.deps;
    if (outcomes.length === 0 || !outcomes.every(serverFailure)) {
      breaker.onSuccess();
      return;
    }
    const timeout = outcomes.some((o) => o.status === 'retry' && o.kind === 'timeout');
    if (breaker.onFailure(timeout ? 'timeout' : 'error')) {
      const code = (outcomes[0] as { code: string }).code;
      this.deps.log.warn({ object, code, retryTokens: breaker.retryTokens }, 'CRM failing; circuit open, all partitions pause');
    }
  }

  /** The whole call failed: every record is to be retried, with the kind of the error. */
  private failed(call: Call, err: unknown, throttled: boolean, ms: number): WriteOutcome[] {
    const { breaker, log } = this.deps;
    const object = call[0]!.write.object;
    const e = err instanceof ConnectorError ? err : new ConnectorError('CRM_CALL', errorMessage(err), { retriable: true, cause: err });
    const tooLarge = e.kind === 'too-large';
    this.deps.sizer.observe(object, call.length, ms, tooLarge);
    // A throttle (signalled, or the error's own kind) is the budget's business, not the breaker's;
    // a call too large says nothing about the CRM's health either (the sizer halves it). Only a
    // retriable ConnectorError says the CRM is failing: anything else is pg2crm's own trouble.
    if (err instanceof ConnectorError && err.retriable && !throttled && e.kind !== 'throttle' && !tooLarge) {
      if (breaker.onFailure(e.kind === 'timeout' ? 'timeout' : 'error')) {
        log.warn({ object, err, retryTokens: breaker.retryTokens }, 'CRM failing; circuit open, all partitions pause');
      }
    }
    // Bad credentials and the like: no retry can fix them; stop with a clear message.
    if (err instanceof ConnectorError && !err.retriable) this.deps.onFatal?.(err);
    const kind = throttled ? 'throttle' : retryKindOf(e.kind);
    const retryAfter = e.retryAfterSeconds !== undefined ? { retryAfterSeconds: e.retryAfterSeconds } : {};
    return call.map(() => ({ status: 'retry', code: e.code, message: e.message, kind, ...retryAfter }));
  }
}
