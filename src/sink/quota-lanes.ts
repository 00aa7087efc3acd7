import type { CrmConfig, CrmCredential } from '../config.ts';
import type { CrmAdapter, CrmWrite } from '../crm/crm-adapter.ts';
import { ExecutionMeter, type Reservation } from './execution-meter.ts';
import { RateBudget, type Spent } from './rate-budget.ts';

/**
 * The credentials of one CRM, grouped into quota groups. Tokens of one group spend from one
 * bucket (several Zendesk Sell tokens of one account, several users of one HubSpot app), so they
 * share one RateBudget and take turns; separate groups are separate buckets, i.e. more capacity,
 * each with `crm.limits`. A call goes to the group with the most budget left now.
 */
/**
 * A tenth of the window may go at once; the rest is paced evenly (see rate-budget.ts). Measured
 * with `npm run bench:sink` (HubSpot, Salesforce): 0.1 → 0.98 / 0.96 of capacity, 0.25 → 0.95–0.98
 * / 0.91–0.98, 0.5 → 0.67 / 0.67 — a bigger burst makes the window bind before the bucket does,
 * and the wait for the burst to age out grows past what the sink waits for without pausing.
 */
export const PACING_BURST = 0.1;
/** The largest call worth making, as a share of one group's window limit (see maxCallCost). */
export const CALL_SHARE_OF_LIMIT = 0.1;

export interface Lane {
  group: string;
  budget: RateBudget;
  /** The CRM's execution-time limit of the group (Dataverse), when it has one. */
  meter?: ExecutionMeter | undefined;
  adapters: CrmAdapter[];
  next: number;
}

export interface Taken {
  lane: Lane;
  adapter: CrmAdapter;
  spent: Spent;
  /** The call's share of the execution-time limit, to settle with its duration (CallWriter). */
  execution?: Reservation | undefined;
}

export class QuotaLanes {
  readonly lanes: Lane[];

  constructor(crm: CrmConfig, adapterFor: (credential: CrmCredential) => CrmAdapter) {
    const groups = new Map<string, CrmCredential[]>();
    for (const c of crm.credentials) groups.set(c.quotaGroup, [...(groups.get(c.quotaGroup) ?? []), c]);
    this.lanes = [...groups].map(([group, credentials]) => {
      const budget = new RateBudget({ ...crm.limits, burst: PACING_BURST });
      // Token requests (OAuth flows) go to the token endpoint, never through this budget.
      const adapters = credentials.map((c) => adapterFor(c));
      const seconds = crm.limits.executionSeconds ?? adapters[0]!.executionSeconds?.(crm.limits.windowSeconds);
      const meter =
        seconds === undefined
          ? undefined
          : new ExecutionMeter({
              seconds,
              windowSeconds: crm.limits.windowSeconds,
              utilisation: crm.limits.utilisation,
              requests: budget.quota,
              burst: PACING_BURST,
              // The request budget's share of the group and its back-off after a throttle apply to the time too.
              fraction: () => budget.limit() / budget.quota,
            });
      return { group, budget, meter, adapters, next: 0 };
    });
  }

  /** Any adapter: they differ only in their token (batch sizes, costs). */
  get adapter(): CrmAdapter {
    return this.lanes[0]!.adapters[0]!;
  }

  cost(writes: CrmWrite[]): { requests: number; daily: number } {
    const a = this.adapter;
    const requests = a.cost(writes);
    return { requests, daily: a.dailyCost ? a.dailyCost(writes) : requests };
  }

  /** Takes the budget for a call from the group with the most left; undefined when none can pay. */
  take(writes: CrmWrite[], opts: { priority: number; who: string }): Taken | undefined {
    const { requests, daily } = this.cost(writes);
    const order = [...this.lanes].sort((a, b) => b.budget.available() - a.budget.available());
    for (const lane of order) {
      if (lane.meter && !lane.meter.canTake(writes.length)) continue;
      const spent = lane.budget.take(requests, { ...opts, daily });
      if (!spent) continue;
      for (const other of this.lanes) if (other !== lane) other.budget.withdraw(opts.who);
      const adapter = lane.adapters[lane.next++ % lane.adapters.length]!;
      return { lane, adapter, spent, execution: lane.meter?.take(writes.length) };
    }
    return undefined;
  }

  /** A taken call was not sent after all: its requests and execution time are free again. */
  refund(taken: Pick<Taken, 'lane' | 'spent' | 'execution'>): void {
    taken.lane.budget.refund(taken.spent);
    if (taken.execution) taken.lane.meter?.refund(taken.execution);
  }

  /** Milliseconds until some group can pay for `writes` (requests and, where counted, execution time). */
  waitMs(writes: CrmWrite[]): number {
    const { requests, daily } = this.cost(writes);
    return Math.min(...this.lanes.map((l) => Math.max(l.budget.waitMs(requests, daily), l.meter?.waitMs(writes.length) ?? 0)));
  }

  /**
   * The most records worth sending in one call where execution time is counted (Infinity
   * elsewhere): short calls waste little of the time budget (execution-meter.ts).
   */
  maxCallWrites(): number {
    return Math.max(...this.lanes.map((l) => l.meter?.maxCallRecords() ?? Number.POSITIVE_INFINITY));
  }

  withdraw(who: string): void {
    for (const l of this.lanes) l.budget.withdraw(who);
  }

  // The instance's share of the group's quota is the same fraction in every quota group.
  setShare(fraction: number, immediate = false): void {
    for (const l of this.lanes) l.budget.setShare(fraction, immediate);
  }

  get fraction(): number {
    return this.lanes[0]!.budget.fraction;
  }

  get quota(): number {
    return this.sum((b) => b.quota);
  }

  /** Every quota group has `crm.limits`, so one group's quota is any lane's. */
  get groupQuota(): number {
    return this.lanes[0]!.budget.quota;
  }

  get windowSeconds(): number {
    return this.lanes[0]!.budget.windowSeconds;
  }

  get dailyQuota(): number | undefined {
    const d = this.lanes.map((l) => l.budget.dailyQuota);
    return d.some((x) => x === undefined) ? undefined : d.reduce((n, x) => n! + x!, 0);
  }

  limit(): number {
    return this.sum((b) => b.limit());
  }

  /**
   * The largest call (in requests) worth making: a tenth of one group's window limit. Where a
   * call costs one request this never binds; where records cost (Zoho 1 credit per 10 records,
   * a Dynamics call of several $batch requests), a call bigger than the limit could never be
   * paid for, and one near it would leave the quota idle while it waits for a large refill.
   */
  maxCallCost(): number {
    return Math.max(...this.lanes.map((l) => l.budget.limit() * CALL_SHARE_OF_LIMIT));
  }

  used(): number {
    return this.sum((b) => b.used());
  }

  available(): number {
    return this.sum((b) => b.available());
  }

  private sum(f: (b: RateBudget) => number): number {
    return this.lanes.reduce((n, l) => n + f(l.budget), 0);
  }

  async close(): Promise<void> {
    await Promise.all(this.lanes.flatMap((l) => l.adapters.map((a) => a.close().catch(() => undefined))));
  }
}
