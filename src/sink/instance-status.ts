import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kafka, Producer } from 'kafkajs';
import { type InstanceReport, REPORT_INTERVAL_MS } from '../kafka/instance-report.ts';
import { componentLogger } from '../logger.ts';

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
    const value: InstanceReport = {
      instance: this.instance,
      host: hostname(),
      pid: process.pid,
      at: new Date().toISOString(),
      ...this.report(),
    };
    await this.producer
      .send({ topic: this.topic, messages: [{ key: this.instance, value: JSON.stringify(value) }] })
      .catch((err: unknown) => this.log.warn({ err }, 'cannot publish the instance status'));
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.timer) clearInterval(this.timer);
    await this.producer.send({ topic: this.topic, messages: [{ key: this.instance, value: null }] }).catch(() => undefined);
    await this.producer.disconnect().catch(() => undefined);
  }
}
