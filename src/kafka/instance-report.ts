/* The status topic's message: written by each sink instance, read by `pg2crm status` and the ops server. */

/**
 * What one sink instance reports about itself, for `pg2crm status` run from anywhere: which
 * partitions it has paused and how it uses its budget. Kafka does not know that a consumer
 * paused a partition, so each instance publishes this every few seconds to a compacted topic
 * (key = instance id; a tombstone when it stops). A report older than three intervals belongs
 * to an instance that died without saying so.
 */
export interface InstanceReport {
  instance: string;
  host: string;
  pid: number;
  memberId: string | null;
  at: string;
  paused: string[];
  /**
   * `topic/partition` -> seconds its committed offset has not moved while messages wait behind
   * it. Absent in reports of versions before it existed.
   */
  stalled?: Record<string, number>;
  budget: {
    quota: number;
    windowSeconds: number;
    share: number;
    limit: number;
    used: number;
    dailyQuota: number | null;
  };
  circuit: 'closed' | 'open' | 'half-open';
  inFlight: number;
}

export const REPORT_INTERVAL_MS = 5_000;
