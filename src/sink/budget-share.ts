import { AssignerProtocol, type Kafka } from 'kafkajs';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
/** What the share is applied to: a RateBudget, or every quota group of a sink (QuotaLanes). */
export interface Shareable {
  readonly quota: number;
  /** The quota of one quota group (every group has `crm.limits`): shares are whole calls of it. */
  readonly groupQuota: number;
  readonly fraction: number;
  setShare(fraction: number, immediate?: boolean): void;
}

/**
 * Splits one credential's quota between the instances of a consumer group without a
 * coordinator. Every instance reads the same facts from Kafka: the group's assignment
 * (DescribeGroups) and each partition's lag (end offset - committed offset). It weighs each
 * partition by
 *
 *     weight(p) = priorityFactor(p) × (lag(p) + floor)
 *     floor     = 1 + 2% of the mean lag per partition
 *
 * and takes `quota × (weight of its partitions / weight of all partitions)`. The shares follow
 * rebalances (the assignment), busy partitions take the budget of idle ones (lag), and the floor
 * keeps a trickle for a partition that just became busy. A higher mapping priority multiplies
 * the weight (factor 2^(priority/3): priority 9 outweighs priority 0 8:1).
 *
 * The shares are whole calls of the window: every instance computes every member's exact
 * `quota × weight / total` and hands out the calls the floors leave over by largest remainder
 * (ties by member id), so the members' limits add up to the quota instead of losing up to one
 * call each to rounding (2 of 20 calls with four instances). Whole calls also keep a share still
 * while the lags move by less than half a call's worth: every change of a share costs a window
 * (a cut applies at once, the matching raise a window later), and with a share taken straight
 * from the lags each commit of a busy group moved them.
 *
 * Instances sample at different moments, so their views can disagree for up to one interval;
 * the budget therefore applies a raise only one window after it was granted (see
 * rate-budget.ts), and the interval is kept well under the window. An instance that is the
 * only member takes the whole quota at once. Throttles and remaining-quota headers from the
 * CRM then correct what is left (another tool on the same credential, a crashed incarnation).
 */
export interface ShareOptions {
  groupId: string;
  topics: string[];
  /** Mapping priority per topic (0..9). */
  priority: (topic: string) => number;
  intervalMs: number;
}

type Admin = ReturnType<Kafka['admin']>;

export function priorityFactor(priority: number): number {
  return 2 ** (priority / 3);
}

export interface GroupView {
  /** memberId -> topic -> partitions */
  assignment: Map<string, Map<string, number[]>>;
  lag: Map<string, number>;
}

/**
 * The share of `memberId` in a group view (pure; unit-tested). With `quota` (calls per window of
 * one quota group): whole calls of it by largest remainder, so the members' shares of one view
 * add up to exactly the quota.
 */
export function shareOf(view: GroupView, memberId: string, priority: (topic: string) => number, quota?: number): number {
  let total = 0;
  let partitions = 0;
  let lagSum = 0;
  for (const topics of view.assignment.values()) {
    for (const [topic, ps] of topics) {
      for (const p of ps) {
        partitions++;
        lagSum += view.lag.get(`${topic}/${p}`) ?? 0;
      }
    }
  }
  if (partitions === 0) return 0;
  const floor = 1 + (0.02 * lagSum) / partitions;
  const weights = new Map<string, number>();
  for (const [member, topics] of view.assignment) {
    let w = 0;
    for (const [topic, ps] of topics) {
      for (const p of ps) w += priorityFactor(priority(topic)) * ((view.lag.get(`${topic}/${p}`) ?? 0) + floor);
    }
    weights.set(member, w);
    total += w;
  }
  if (!(total > 0)) return 0;
  const mine = weights.get(memberId) ?? 0;
  if (quota === undefined) return mine / total;
  // Largest remainder: a member's exact number of calls, floored, plus one of the calls the
  // floors leave over if its remainder is among the largest (ties by member id: every member
  // computes the same split). Members without weight (no partitions) get none.
  const exact = [...weights].map(([member, w]) => {
    const x = (quota * w) / total;
    const calls = Math.floor(x + 1e-9);
    return { member, w, calls, rest: x - calls };
  });
  let left = quota - exact.reduce((n, e) => n + e.calls, 0);
  exact.sort((a, b) => b.rest - a.rest || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0));
  for (const e of exact) {
    if (left <= 0) break;
    if (e.w <= 0) continue;
    e.calls++;
    left--;
  }
  return (exact.find((e) => e.member === memberId)?.calls ?? 0) / quota;
}

export class BudgetShare {
  private readonly log = componentLogger('sink.share');
  private readonly admin: Admin;
  private readonly budget: Shareable;
  private readonly opts: ShareOptions;
  private memberId: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private connected = false;
  private sampling: Promise<void> | undefined;
  private stopped = false;
  private granted = false;

  constructor(kafka: Kafka, budget: Shareable, opts: ShareOptions) {
    this.admin = kafka.admin();
    this.budget = budget;
    this.opts = opts;
    // Until the first view: no share. An instance that joins a running group must not spend
    // what the others hold (its first share applies one window after it is granted).
    budget.setShare(0, true);
  }

  async start(): Promise<void> {
    if (this.timer || this.stopped) return;
    await this.admin.connect();
    this.connected = true;
    this.timer = setInterval(() => void this.sample(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Called on every group join (a rebalance): resample at once. */
  joined(memberId: string): void {
    this.memberId = memberId;
    void this.sample();
  }

  sample(): Promise<void> {
    if (this.sampling || !this.memberId || !this.connected || this.stopped) return this.sampling ?? Promise.resolve();
    this.sampling = this.read()
      .catch((err: unknown) => this.log.warn({ err }, 'cannot read the group; keeping the last share'))
      .finally(() => {
        this.sampling = undefined;
      });
    return this.sampling;
  }

  private async read(): Promise<void> {
    const { groups } = await this.admin.describeGroups([this.opts.groupId]);
    const group = groups[0];
    if (group?.state !== 'Stable') return; // mid-rebalance: the next join resamples
    const assignment = new Map<string, Map<string, number[]>>();
    for (const m of group.members) {
      const decoded = m.memberAssignment.length ? AssignerProtocol.MemberAssignment.decode(m.memberAssignment) : null;
      assignment.set(m.memberId, new Map(Object.entries(decoded?.assignment ?? {})));
    }
    if (!this.memberId || !assignment.has(this.memberId)) return;
    const lag = new Map<string, number>();
    const committed = await this.admin.fetchOffsets({ groupId: this.opts.groupId, topics: this.opts.topics });
    for (const topic of this.opts.topics) {
      const ends = await this.admin.fetchTopicOffsets(topic);
      const c = committed.find((x) => x.topic === topic)?.partitions ?? [];
      for (const e of ends) {
        const at = Number(c.find((x) => x.partition === e.partition)?.offset ?? -1);
        lag.set(`${topic}/${e.partition}`, Math.max(0, Number(e.high) - (at >= 0 ? at : Number(e.low))));
      }
    }
    const share = shareOf({ assignment, lag }, this.memberId, this.opts.priority, this.budget.groupQuota);
    const alone = assignment.size === 1;
    const before = this.budget.fraction;
    this.budget.setShare(share, alone && !this.granted);
    this.granted = true;
    metrics.budgetShare.set(share);
    if (Math.abs(share - before) >= 0.05) {
      this.log.info(
        { share: Number(share.toFixed(3)), members: assignment.size, limit: Math.floor(this.budget.quota * share) },
        'budget share changed',
      );
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.sampling;
    if (this.connected) await this.admin.disconnect().catch(() => undefined);
  }
}
