import type { CrmAdapter, CrmWrite } from '../crm/crm-adapter.ts';
import { metrics } from '../metrics.ts';
import type { BatchSizer } from './batch-sizer.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import type { CompactedWrite } from './compactor.ts';
import type { Reservation } from './execution-meter.ts';
import type { Lane, QuotaLanes } from './quota-lanes.ts';
import type { Spent } from './rate-budget.ts';

/** One compacted write waiting to be sent. */
export interface Pending {
  group: CompactedWrite;
  write: CrmWrite;
}

/** Writes sent in one CRM call, with the budget paid for it and the credential that sends it. */
export type Call = Pending[] & { spent?: Spent; lane?: Lane; adapter?: CrmAdapter; execution?: Reservation | undefined };

/**
 * The calls in flight in the whole process, and waiting for one to end. Calls of all
 * partitions share the CRM's concurrency limit.
 */
export class InFlight {
  private n = 0;
  private readonly waiters = new Set<() => void>();

  get count(): number {
    return this.n;
  }

  enter(): void {
    this.n++;
    metrics.inFlight.set(this.n);
  }

  /** A call ended: its slot is free, every waiter looks again. */
  leave(): void {
    this.n--;
    metrics.inFlight.set(this.n);
    for (const wake of [...this.waiters]) wake();
  }

  /** Resolves when a call ends or after `timeoutMs`, whichever is first. */
  freed(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const waiters = this.waiters;
      function done(): void {
        clearTimeout(timer);
        waiters.delete(done);
        resolve();
      }
      waiters.add(done);
    });
  }
}

/** What the planner needs of the quota lanes (quota-lanes.ts). */
export type PlannerBudget = Pick<QuotaLanes, 'take' | 'cost' | 'maxCallCost' | 'fraction'> &
  Partial<Pick<QuotaLanes, 'refund' | 'maxCallWrites'>>;
export type PlannerBreaker = Pick<CircuitBreaker, 'state' | 'waitMs' | 'tryAcquire' | 'restore'>;

export interface CallPlannerDeps {
  budget: PlannerBudget;
  breaker: PlannerBreaker;
  sizer: Pick<BatchSizer, 'size'>;
  inFlight: Pick<InFlight, 'count'>;
  /** The CRM's concurrency limit (crm.limits.concurrency), for all instances together. */
  concurrency: number;
}

/**
 * Turns the queue of compacted writes into CRM calls: each of consecutive writes to one object,
 * at most the API's batch size (as the BatchSizer has it now) and at most what the budget can
 * pay at once; as many at a time as there are free in-flight slots and budget to pay for them.
 */
export class CallPlanner {
  private readonly deps: CallPlannerDeps;

  constructor(deps: CallPlannerDeps) {
    this.deps = deps;
  }

  /**
   * In-flight calls allowed for the whole process: this instance's share of the CRM's
   * concurrency limit, scaled down while the circuit breaker ramps back up.
   */
  slots(): number {
    const { budget, breaker, concurrency } = this.deps;
    const share = Math.max(budget.fraction, 1 / concurrency);
    return Math.max(1, Math.floor(concurrency * share * breaker.restore()));
  }

  /** True when every in-flight slot is taken. */
  full(): boolean {
    return this.deps.inFlight.count >= this.slots();
  }

  /**
   * Removes from the queue the calls the budget can pay for now and the free slots allow, each
   * of consecutive writes to one object and at most the API's batch size. Each call holds its
   * budget (`spent`, to complete or refund) and, in half-open, the breaker's probe.
   */
  takeCalls(queue: Pending[], priority: number, who: string): Call[] {
    const { budget, breaker, inFlight } = this.deps;
    const calls: Call[] = [];
    const slots = this.slots();
    while (queue.length > 0 && inFlight.count + calls.length < slots) {
      const call: Call = this.nextCall(queue);
      if (breaker.state !== 'closed' && breaker.waitMs() > 0) break;
      const taken = budget.take(
        call.map((p) => p.write),
        { priority, who },
      );
      if (!taken) break;
      if (!breaker.tryAcquire()) {
        // Half-open with its probe out: the call is not sent.
        if (budget.refund) budget.refund(taken);
        else taken.lane.budget.refund(taken.spent);
        break;
      }
      call.spent = taken.spent;
      call.lane = taken.lane;
      call.adapter = taken.adapter;
      call.execution = taken.execution;
      queue.splice(0, call.length);
      calls.push(call);
    }
    return calls;
  }

  /** The writes at the head of the queue that one call can carry: same object, up to the API's batch size. */
  nextCall(queue: Pending[]): Pending[] {
    const { budget, sizer } = this.deps;
    const object = queue[0]!.write.object;
    // Where execution time is counted (Dataverse), short calls waste less of it (execution-meter.ts).
    const max = Math.min(sizer.size(object), budget.maxCallWrites?.() ?? Number.POSITIVE_INFINITY);
    let call: Pending[] = [];
    for (let i = 0; i < queue.length && call.length < max && queue[i]!.write.object === object; i++) call.push(queue[i]!);
    // A call must fit what the budget can pay at once, or it could never be paid for (Zoho
    // charges per 10 records; a small share of a small quota is less than a full call).
    const limit = Math.floor(budget.maxCallCost());
    if (limit >= 1) {
      for (let cost = budget.cost(call.map((p) => p.write)).requests; call.length > 1 && cost > limit; ) {
        call = call.slice(0, Math.max(1, Math.floor((call.length * limit) / cost)));
        cost = budget.cost(call.map((p) => p.write)).requests;
      }
    }
    return call;
  }
}
