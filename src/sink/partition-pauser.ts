import type { EachBatchPayload } from 'kafkajs';
import type { Logger } from '../logger.ts';
import { metrics } from '../metrics.ts';

/** What the pauser needs of a batch: which partition, and kafkajs' pause (which returns its resume). */
export type Pausable = Pick<EachBatchPayload, 'batch' | 'pause'>;

/** Why a partition is paused: backpressure (throttle, outage, budget, retry) or linger (waiting for fuller calls). */
export type PauseReason = 'backpressure' | 'linger';

/**
 * Pauses partitions and resumes them by timer. A paused kafkajs consumer keeps heartbeating and
 * stays in the group, so a pause of any length costs only the refetch after it.
 *
 * One pause per partition at a time: a second one while a timer runs is ignored (the first
 * timer resumes it). A linger pause waits for more changes to fill a call; it is not
 * backpressure, so it is neither counted in `sink_paused_partitions` nor listed by `paused()`.
 */
export class PartitionPauser {
  private readonly log: Logger;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly lingering = new Set<string>();
  private stopped = false;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Pauses the batch's partition for `ms` (at least 10 ms), unless it is paused already. */
  pause(payload: Pausable, ms: number, why: PauseReason = 'backpressure'): void {
    const { topic, partition } = payload.batch;
    const id = `${topic}/${partition}`;
    if (this.timers.has(id)) return;
    const resume = payload.pause();
    const counted = why === 'backpressure';
    if (counted) {
      metrics.pausedPartitions.inc();
      this.log.debug({ topic, partition, ms: Math.round(ms) }, 'partition paused');
    } else this.lingering.add(id);
    const timer = setTimeout(
      () => {
        this.timers.delete(id);
        if (counted) metrics.pausedPartitions.dec();
        else this.lingering.delete(id);
        if (!this.stopped) resume();
      },
      Math.max(10, ms),
    );
    this.timers.set(id, timer);
  }

  /** True while a timer will resume this partition (backpressure or linger). */
  isPaused(topic: string, partition: number): boolean {
    return this.timers.has(`${topic}/${partition}`);
  }

  /** `topic/partition` of every partition paused by backpressure right now (status page). */
  paused(): string[] {
    return [...this.timers.keys()].filter((id) => !this.lingering.has(id));
  }

  /**
   * Drops every timer: the consumer is leaving the group, nothing is resumed. Its backpressure
   * pauses leave the gauge too, or it would count them for as long as the process lives.
   */
  stop(): void {
    this.stopped = true;
    for (const [id, t] of this.timers) {
      clearTimeout(t);
      if (!this.lingering.has(id)) metrics.pausedPartitions.dec();
    }
    this.timers.clear();
    this.lingering.clear();
  }
}
