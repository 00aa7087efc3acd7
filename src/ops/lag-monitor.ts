import type { Config } from '../config.ts';
import { createKafka } from '../kafka/client.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { StallTracker } from './stall-tracker.ts';
import { type ConnectorStatus, type PartitionStatus, readConsumerLag, slotStatus } from './status.ts';

/**
 * Publishes the numbers operators alert on as gauges, every `ops.lagIntervalSeconds`: consumer
 * lag per topic-partition (from committed vs end offsets, as Burrow and kafka-exporter compute
 * it, so it matches `pg2crm status`), how long each partition has had lag without its committed
 * offset moving (a stuck partition), and the WAL the replication slot holds, with a warning
 * when that passes `ops.slotLagWarnBytes` (an idle or stuck slot fills the disk).
 */
export class LagMonitor {
  private readonly log = componentLogger('ops.lag');
  private readonly config: Pick<Config, 'kafka' | 'mappings' | 'postgres' | 'ops'>;
  private readonly watchSlot: boolean;
  private readonly watchGroup: boolean;
  private readonly admin;
  private timer: NodeJS.Timeout | undefined;
  private connected = false;
  /** The last sample, for the status page's table (the gauges carry only the lag). */
  private lastPartitions: PartitionStatus[] | undefined;
  private lastSlot: ConnectorStatus['slot'] | undefined;
  private readonly stalls = new StallTracker();

  constructor(config: Pick<Config, 'kafka' | 'mappings' | 'postgres' | 'ops'>, watch: { slot: boolean; group: boolean }) {
    this.config = config;
    this.watchSlot = watch.slot;
    this.watchGroup = watch.group;
    this.admin = createKafka(config.kafka, 'lag', 2).admin();
  }

  async start(): Promise<void> {
    if (this.timer) return;
    await this.sample();
    this.timer = setInterval(() => void this.sample(), this.config.ops.lagIntervalSeconds * 1000);
    this.timer.unref();
  }

  async sample(): Promise<void> {
    try {
      if (this.watchGroup) {
        if (!this.connected) {
          await this.admin.connect();
          this.connected = true;
        }
        this.lastPartitions = await readConsumerLag(this.admin, this.config);
        const stalled = this.stalls.observe(this.lastPartitions);
        for (const p of this.lastPartitions) {
          p.stalledSeconds = stalled.get(`${p.topic}/${p.partition}`) ?? 0;
          metrics.consumerLag.set({ topic: p.topic, partition: String(p.partition) }, p.lag);
          metrics.partitionStalledSeconds.set({ topic: p.topic, partition: String(p.partition) }, p.stalledSeconds);
        }
      }
      if (this.watchSlot) {
        const slot = await slotStatus(this.config);
        this.lastSlot = slot;
        if (slot.lagBytes !== null) {
          metrics.slotLagBytes.set({ slot: slot.name }, slot.lagBytes);
          if (slot.lagBytes > this.config.ops.slotLagWarnBytes) {
            this.log.warn(
              { slot: slot.name, lagBytes: slot.lagBytes, thresholdBytes: this.config.ops.slotLagWarnBytes },
              'replication slot holds more WAL than the threshold',
            );
          }
        }
      }
    } catch (err) {
      this.log.warn({ err }, 'lag sample failed');
    }
  }

  latest(): { partitions?: PartitionStatus[]; slot?: ConnectorStatus['slot'] } {
    return { ...(this.lastPartitions ? { partitions: this.lastPartitions } : {}), ...(this.lastSlot ? { slot: this.lastSlot } : {}) };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.connected) await this.admin.disconnect().catch(() => undefined);
    this.connected = false;
  }
}
