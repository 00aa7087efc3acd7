import { createHash } from 'node:crypto';
import type { Kafka, Producer } from 'kafkajs';
import type { CrmWrite } from '../crm/crm-adapter.ts';
import { readTopic } from '../kafka/read-topic.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';

/**
 * What pg2crm last wrote to each CRM record, as a hash, so a change that leaves every mapped
 * field as the CRM already has it is not sent (a no-op skip saves a call of the quota).
 *
 * Durable as a changelog, the way Kafka Streams keeps state stores: a compacted topic keyed by
 * `object\0externalId` whose value is the 16-byte hash (a delete writes a tombstone). Entries
 * go to the partition number of the change that produced them, so the topic is co-partitioned
 * with the change topics. The hash is produced before the change's offset is committed; the
 * store is (re)loaded from the topic on every rebalance, because a partition that moved here
 * was written by another instance meanwhile. Partitions wait for the load (seconds); if it fails,
 * nothing is skipped until the next rebalance — sending a write twice is safe, skipping one
 * that was needed is not.
 *
 * A hash is kept only for writes that carried every mapped field (an update that left a
 * TOASTed column unchanged does not say what the CRM holds for it): such a write removes it.
 *
 * Memory: one Map entry per CRM record, key (object name + external id) and the 16-byte hash
 * as a 22-character string: 125 bytes per key in V8, i.e. ~125 MB per million records
 * (`npm run bench:hashes`). The topic holds ~60 bytes per key after compaction.
 */
/**
 * Whether a write may ever be skipped as unchanged: an upsert of every mapped field that names
 * no link to remove. The hash says which values and targets the CRM holds, not which old links
 * (a moved lookup's previous target, the stale targets of a redelivered window, see CrmLookup)
 * a many-to-many CRM still has.
 */
export function hashSkippable(write: CrmWrite, allFields: number): boolean {
  if (write.op !== 'upsert' || Object.keys(write.fields).length < allFields) return false;
  return !Object.values(write.lookups ?? {}).some((l) => l.previousExternalId !== undefined || l.staleExternalIds?.length);
}

export function writeHash(write: CrmWrite): string {
  const h = createHash('sha256');
  const fields = Object.keys(write.fields).sort();
  for (const f of fields) h.update(`${f}\u0000${JSON.stringify(write.fields[f])}\u0001`);
  // A cleared lookup (null) hashes apart from any external id, "null" included.
  for (const f of Object.keys(write.lookups ?? {}).sort()) h.update(`@${f}\u0000${write.lookups![f]!.externalId ?? '\u0002'}\u0001`);
  return h.digest().subarray(0, 16).toString('base64url');
}

export function recordKey(object: string, externalId: string): string {
  return `${object}\u0000${externalId}`;
}

export class WrittenHashes {
  private readonly log = componentLogger('sink.hashes');
  private readonly kafka: Kafka;
  private readonly topic: string;
  private readonly groupId: string;
  private readonly producer: Producer;
  private map = new Map<string, string>();
  /** Changes made while a load runs; applied over the loaded state. */
  private pending: Map<string, string | null> | undefined;
  private loaded = false;
  /** A load failed: the store stays unused (nothing skipped) until the next rebalance. */
  private failed = false;
  private generation = 0;

  constructor(kafka: Kafka, topic: string, groupId: string) {
    this.kafka = kafka;
    this.topic = topic;
    this.groupId = groupId;
    this.producer = kafka.producer({ idempotent: true, maxInFlightRequests: 5 });
  }

  async start(): Promise<void> {
    await this.producer.connect();
  }

  /** Loaded, or given up on: the sink may process (a partition waits for this after a rebalance). */
  ready(): boolean {
    return this.loaded || this.failed;
  }

  /** True when `write` is exactly what the CRM already holds (and the store is loaded). */
  unchanged(write: CrmWrite, allFields: number): boolean {
    if (!this.loaded || !hashSkippable(write, allFields)) return false;
    return this.map.get(recordKey(write.object, write.externalId)) === writeHash(write);
  }

  /**
   * Drops, durably, the hashes of records about to be written with other values; resolves once
   * Kafka has the tombstones. Once a call is sent the CRM may hold its values although no answer
   * came back (a timeout, a crash before the checkpoint): a hash of the earlier state left in the
   * store would let a redelivered change back to that state pass as a no-op (found by the
   * redelivery property test). While the store is not loaded, every record's hash is dropped.
   */
  async forgetBeforeWrite(partition: number, writes: CrmWrite[]): Promise<void> {
    const keys = new Set<string>();
    for (const w of writes) {
      const key = recordKey(w.object, w.externalId);
      const held = this.map.get(key);
      if (!this.loaded || (held !== undefined && (w.op !== 'upsert' || held !== writeHash(w)))) keys.add(key);
    }
    if (keys.size === 0) return;
    for (const key of keys) {
      this.map.delete(key);
      this.pending?.set(key, null);
    }
    metrics.writtenHashKeys.set(this.map.size);
    await this.producer.send({ topic: this.topic, acks: -1, messages: [...keys].map((key) => ({ key, value: null, partition })) });
  }

  /** Records what the CRM holds after successful writes; resolves once Kafka has them. */
  async remember(partition: number, writes: { write: CrmWrite; full: boolean }[]): Promise<void> {
    if (writes.length === 0) return;
    const messages = writes.map(({ write, full }) => {
      const key = recordKey(write.object, write.externalId);
      const value = write.op === 'upsert' && full ? writeHash(write) : null;
      if (value === null) this.map.delete(key);
      else this.map.set(key, value);
      this.pending?.set(key, value);
      return { key, value, partition };
    });
    metrics.writtenHashKeys.set(this.map.size);
    await this.producer.send({ topic: this.topic, acks: -1, messages });
  }

  /** Reloads the whole changelog (called after each rebalance). */
  reload(): void {
    const generation = ++this.generation;
    this.loaded = false;
    this.failed = false;
    this.pending = new Map();
    this.load()
      .then((map) => {
        if (generation !== this.generation) return;
        for (const [k, v] of this.pending ?? []) {
          if (v === null) map.delete(k);
          else map.set(k, v);
        }
        this.map = map;
        this.pending = undefined;
        this.loaded = true;
        metrics.writtenHashKeys.set(map.size);
        this.log.info({ keys: map.size }, 'written-hash store loaded');
      })
      .catch((err: unknown) => {
        if (generation !== this.generation) return;
        this.failed = true;
        this.log.warn({ err }, 'cannot load the written-hash store; no-op skipping is off until the next rebalance');
      });
  }

  private async load(): Promise<Map<string, string>> {
    const map = new Map<string, string>();
    await readTopic(
      this.kafka,
      this.topic,
      (m) => {
        const key = m.key?.toString() ?? '';
        if (m.value === null) map.delete(key);
        else map.set(key, m.value.toString());
      },
      { groupPrefix: `${this.groupId}-hashes` },
    );
    return map;
  }

  async stop(): Promise<void> {
    this.generation++;
    await this.producer.disconnect().catch(() => undefined);
  }
}
