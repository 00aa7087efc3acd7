import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kafka, Producer } from 'kafkajs';
import { errorMessage } from '../errors.ts';
import { componentLogger } from '../logger.ts';

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

export class InstanceStatus {
  private readonly log = componentLogger('sink.status');
  readonly instance = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private readonly producer: Producer;
  private readonly topic: string;
  private readonly report: () => Omit<InstanceReport, 'instance' | 'host' | 'pid' | 'at'>;
  private timer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(kafka: Kafka, topic: string, report: () => Omit<InstanceReport, 'instance' | 'host' | 'pid' | 'at'>) {
    this.producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    this.topic = topic;
    this.report = report;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.producer.connect();
    this.timer = setInterval(() => void this.publish(), REPORT_INTERVAL_MS);
    this.timer.unref();
  }

  async publish(): Promise<void> {
    const value: InstanceReport = { instance: this.instance, host: hostname(), pid: process.pid, at: new Date().toISOString(), ...this.report() };
    await this.producer
      .send({ topic: this.topic, messages: [{ key: this.instance, value: JSON.stringify(value) }] })
      .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'cannot publish the instance status'));
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.timer) clearInterval(this.timer);
    await this.producer.send({ topic: this.topic, messages: [{ key: this.instance, value: null }] }).catch(() => undefined);
    await this.producer.disconnect().catch(() => undefined);
  }
}
