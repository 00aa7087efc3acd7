import { createHash, hash } from 'node:crypto';
import type { Kafka, Producer } from 'kafkajs';
import type { CrmWrite } from '../crm/crm-adapter.ts';
import { readTopic } from '../kafka/read-topic.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { Hash64Table } from './hash-table.ts';

/**
 * What pg2crm last wrote to each CRM record, as a hash, so a change that leaves every mapped
 * field as the CRM already has it is not sent (a no-op skip saves a call of the quota).
 *
 * Durable as a changelog, the way Kafka Streams keeps state stores: a compacted topic keyed by
 * `object\0externalId` whose value is the 16-byte hash as 22 base64url characters (a delete
 * writes a tombstone). Entries go to the partition number of the change that produced them, so
 * the topic is co-partitioned with the change topics. The hash is produced before the change's
 * offset is committed; the store is (re)loaded from the topic on every rebalance, because a
 * partition that moved here was written by another instance meanwhile. Partitions wait for the
 * load (well under a second usually), at most 15 s (hash-load-wait.ts), then are
 * written without skipping while it goes on; if it fails, nothing is skipped until the next
 * rebalance — sending a write twice is safe, skipping one that was needed is not.
 *
 * A hash is kept only for writes that carried every mapped field (an update that left a
 * TOASTed column unchanged does not say what the CRM holds for it): such a write removes it.
 *
 * Memory: a record is 64 bits of the SHA-256 of its key and 64 bits of its write hash in an
 * open-addressing table over one typed array (hash-table.ts): 16 bytes a slot at a load of
 * 0.35-0.7, i.e. 23-46 bytes a record, ~34 MB per million records (`npm run bench:hashes`; the
 * Map of strings this replaced took 125 B, 101-157 B by how its strings were built). The array
 * is outside the V8 heap: `--max-old-space-size` does not bound it, the container's RSS does.
 * While it doubles, the old and the new array live together for a moment; a reload drops the
 * table before it builds the new one, as it is not read until the load ends. The topic keeps
 * the full 16-byte hash (~60 bytes per key after compaction), in the format older versions
 * wrote and read, so their topics load as they are.
 *
 * Why 64 + 64 bits never skip a needed write in practice. A wrong skip of write W to record R
 * needs the table to hold, under R's 64-bit key hash, exactly W's 64-bit value while the CRM
 * holds other values. The value is the write hash's first 64 bits XOR 64 further bits of the
 * key's SHA-256 (a mask per record), so the entry found is either
 * (a) R's own, for values V ≠ W, and the write hashes of V and W agree in 64 bits: 2^-64
 *     (5e-20) per check — or
 * (b) another record's, R', whose 64-bit key hash equals R's (≤ n·2^-64 per check), AND whose
 *     masked value equals W's: with different masks that is another 2^-64, even when R' holds
 *     exactly W's values (records with equal fields) — n·2^-128, 3e-32 at n = 10M records.
 * A key-hash collision alone (n²/2^65 ≈ 3e-6 somewhere in a store of 10M records) only costs
 * skips: the two records overwrite each other's entry. At 10M records each checked a million
 * times (10^13 checks), the chance of one wrong skip ever is ≈ 10^13 · 2^-64 ≈ 5e-7. The key
 * hash is SHA-256, not a fast non-cryptographic hash, because external ids come from the ERP's
 * data and nobody can then pick ids that collide on purpose; it costs ~1 µs a record, nothing
 * next to a CRM call; a reload stays as fast as with the Map (bench: a few µs a record).
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

/**
 * The 16-byte SHA-256 prefix of what a write sets: its fields and its lookups' targets. The
 * topic holds it as 22 base64url characters (writeHash); the table holds 64 bits of it.
 */
export function writeDigest(write: CrmWrite): Buffer {
  const h = createHash('sha256');
  const fields = Object.keys(write.fields).sort();
  for (const f of fields) h.update(`${f}\u0000${JSON.stringify(write.fields[f])}\u0001`);
  for (const f of Object.keys(write.lookups ?? {}).sort()) h.update(`@${f}\u0000${lookupTarget(write.lookups![f]!.externalId)}\u0001`);
  return h.digest().subarray(0, 16);
}

/**
 * A lookup's target as hashed: a cleared lookup (null) as \u0002, which no id is hashed as; an
 * id as itself — unless it holds a control character (it could then end the entry early or
 * read as null), as \u0003 and its JSON, which escapes them. Ids without control characters
 * hash as they always did, so the hashes in existing topics still match.
 */
function lookupTarget(externalId: string | null): string {
  if (externalId === null) return '\u0002';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is looked for
  return /[\u0000-\u001f]/.test(externalId) ? `\u0003${JSON.stringify(externalId)}` : externalId;
}

export function writeHash(write: CrmWrite): string {
  return writeDigest(write).toString('base64url');
}

export function recordKey(object: string, externalId: string): string {
  return `${object}\u0000${externalId}`;
}

/** Where a record's entry is in the table: 64 bits of its key's SHA-256, and 64 more that mask its value. */
interface RecordSlot {
  keyHi: number;
  keyLo: number;
  maskHi: number;
  maskLo: number;
}

/** `key`: a record key, as a string or as the UTF-8 bytes of a topic message's key. */
function recordSlot(key: string | Buffer): RecordSlot {
  const d = hash('sha256', key, 'buffer');
  return { keyHi: d.readUInt32BE(0), keyLo: d.readUInt32BE(4), maskHi: d.readUInt32BE(8), maskLo: d.readUInt32BE(12) };
}

/** A write hash's value in the table (see the collision argument above): 64 bits, masked by the record's key. */
interface TableValue {
  hi: number;
  lo: number;
}

function tableValue(slot: RecordSlot, digest: Buffer): TableValue {
  return { hi: (digest.readUInt32BE(0) ^ slot.maskHi) >>> 0, lo: (digest.readUInt32BE(4) ^ slot.maskLo) >>> 0 };
}

const TOPIC_HASH = /^[A-Za-z0-9_-]{22}$/;

export class WrittenHashes {
  private readonly log = componentLogger('sink.hashes');
  private readonly kafka: Kafka;
  private readonly topic: string;
  private readonly groupId: string;
  private readonly producer: Producer;
  /** Only read while loaded; a reload drops it at once (its contents are of no use until the load ends). */
  private table = new Hash64Table();
  /** Changes made while a load runs (record key -> write hash, null: removed); applied over the loaded state. */
  private pending: Map<string, Buffer | null> | undefined;
  private loaded = false;
  /** A load failed: the store stays unused (nothing skipped) until the next rebalance. */
  private failed = false;
  private generation = 0;

  constructor(kafka: Kafka, topic: string, groupId: string) {
    this.kafka = kafka;
    this.topic = topic;
    this.groupId = groupId;
    // Not idempotent: kafkajs' idempotent producer sends one request at a time, so the forgets
    // of partitions worked on at once queued behind each other before every write (up to 40 ms
    // of end-to-end latency). Order per key does not need it: a key's hash is only ever sent
    // by the batch of its change partition, which awaits each send before the next one; a retry
    // that duplicates a send writes the same hash or tombstone again.
    this.producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: false });
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
    const slot = recordSlot(recordKey(write.object, write.externalId));
    const value = tableValue(slot, writeDigest(write));
    return this.table.holds(slot.keyHi, slot.keyLo, value.hi, value.lo);
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
      if (!this.loaded) {
        keys.add(key);
        continue;
      }
      const slot = recordSlot(key);
      if (!this.table.has(slot.keyHi, slot.keyLo)) continue;
      if (w.op === 'upsert') {
        const value = tableValue(slot, writeDigest(w));
        if (this.table.holds(slot.keyHi, slot.keyLo, value.hi, value.lo)) continue;
      }
      keys.add(key);
      this.table.delete(slot.keyHi, slot.keyLo);
    }
    if (keys.size === 0) return;
    if (this.loaded) metrics.writtenHashKeys.set(this.table.size);
    else for (const key of keys) this.pending?.set(key, null);
    await this.producer.send({ topic: this.topic, acks: -1, messages: [...keys].map((key) => ({ key, value: null, partition })) });
  }

  /** Records what the CRM holds after successful writes; resolves once Kafka has them. */
  async remember(partition: number, writes: { write: CrmWrite; full: boolean }[]): Promise<void> {
    if (writes.length === 0) return;
    const messages = writes.map(({ write, full }) => {
      const key = recordKey(write.object, write.externalId);
      const digest = write.op === 'upsert' && full ? writeDigest(write) : null;
      if (this.loaded) this.put(this.table, key, digest);
      else this.pending?.set(key, digest);
      return { key, value: digest ? digest.toString('base64url') : null, partition };
    });
    if (this.loaded) metrics.writtenHashKeys.set(this.table.size);
    await this.producer.send({ topic: this.topic, acks: -1, messages });
  }

  /** Reloads the whole changelog (called after each rebalance). */
  reload(): void {
    const generation = ++this.generation;
    this.loaded = false;
    this.failed = false;
    this.pending = new Map();
    // Dropped now, not when the new table is in: two tables at once would double the peak.
    this.table = new Hash64Table();
    this.load()
      .then((table) => {
        if (generation !== this.generation) return;
        for (const [key, digest] of this.pending ?? []) this.put(table, key, digest);
        this.table = table;
        this.pending = undefined;
        this.loaded = true;
        metrics.writtenHashKeys.set(table.size);
        this.log.info({ keys: table.size, tableBytes: table.bytes }, 'written-hash store loaded');
      })
      .catch((err: unknown) => {
        if (generation !== this.generation) return;
        this.failed = true;
        this.pending = undefined;
        metrics.writtenHashKeys.set(0);
        this.log.warn({ err }, 'cannot load the written-hash store; no-op skipping is off until the next rebalance');
      });
  }

  /** Sets a record's entry from its write hash (`digest`), or removes it (null). */
  private put(table: Hash64Table, key: string | Buffer, digest: Buffer | null): void {
    const slot = recordSlot(key);
    if (digest === null) table.delete(slot.keyHi, slot.keyLo);
    else {
      const value = tableValue(slot, digest);
      table.set(slot.keyHi, slot.keyLo, value.hi, value.lo);
    }
  }

  private async load(): Promise<Hash64Table> {
    const table = new Hash64Table();
    await readTopic(
      this.kafka,
      this.topic,
      (m) => {
        const text = m.value?.toString('latin1');
        // A value that is not a hash this code wrote says nothing of the CRM: as if absent.
        this.put(table, m.key ?? '', text !== undefined && TOPIC_HASH.test(text) ? Buffer.from(text, 'base64url') : null);
      },
      { groupPrefix: `${this.groupId}-hashes` },
    );
    return table;
  }

  async stop(): Promise<void> {
    this.generation++;
    await this.producer.disconnect().catch(() => undefined);
  }
}
