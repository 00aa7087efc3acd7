import type { Batch, KafkaMessage } from 'kafkajs';
import type { MappingConfig } from '../config.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import type { ChangeEvent } from '../events/change-event.ts';
import { metrics } from '../metrics.ts';
import { type CompactedWrite, Compactor, type KeyedChange } from './compactor.ts';
import { type DeadLetter, deadLetterOf } from './dead-letter.ts';
import { heldLookups, mapEvent, touchesMapping } from './field-mapper.ts';

/** A fetched batch decoded, mapped and compacted. */
export interface DecodedBatch {
  /** What the messages ask of the CRM, compacted per record (`write: null`: nothing, e.g. a tombstone), in offset order. */
  writes: CompactedWrite[];
  /** Messages decoded into events. */
  events: number;
  /** Poison messages (they will never decode or map), with the reason. */
  letters: DeadLetter[];
  /**
   * The first message that cannot be decoded yet (schema registry unreachable): not the
   * message's fault. Decoding stopped there; the batch goes on with the changes before it.
   */
  stoppedAt?: { offset: bigint; err: ConnectorError };
}

/**
 * Decodes, maps and compacts the messages of one batch for one mapping. Each event is folded
 * into its record's write as it is decoded and then dropped: a fetch of 8 MiB is some 40,000
 * events, and holding them all (several times their encoded size) is what made a sink behind a
 * throttle outgrow a 256 MB container.
 */
export async function decodeBatch(
  batch: Pick<Batch, 'topic' | 'partition' | 'messages'>,
  mapping: MappingConfig,
  decode: (value: Buffer) => Promise<ChangeEvent>,
): Promise<DecodedBatch> {
  const compactor = new Compactor();
  const out: DecodedBatch = { writes: [], events: 0, letters: [] };
  for (const message of batch.messages) {
    const offset = BigInt(message.offset);
    if (!message.value) {
      compactor.add({ offset, write: null, restore: false }); // tombstone: nothing to write
      continue;
    }
    try {
      const event = await decode(message.value);
      out.events++;
      compactor.add(changeOf(offset, event, mapping));
    } catch (err) {
      if (err instanceof ConnectorError && err.retriable) {
        out.stoppedAt = { offset, err };
        break;
      }
      // A poison message: it will never decode or map. Dead-letter it with the reason.
      const e = err instanceof ConnectorError ? err : new ConnectorError('DECODE', errorMessage(err), { cause: err });
      const error = { code: e.code, message: e.message };
      out.letters.push(
        deadLetterOf(batch.topic, batch.partition, message, { object: mapping.object, externalId: null, error, attempts: 1 }),
      );
      compactor.add({ offset, write: null, restore: false });
    }
  }
  out.writes = compactor.writes();
  return out;
}

/** Heap a fetched change takes while its batch is worked on, as a multiple of its bytes (kafkajs' message objects and its record's write; a heap snapshot gave ~1.3 KB per ~170-byte change). */
export const HEAP_PER_FETCHED_BYTE = 8;

/**
 * Why fetches of `fetchBytesPerPartition` for `partitions` partitions at once may not fit in a
 * heap of `heapLimitBytes` (half of it: the rest is the written-hash store and what the process
 * holds anyway), or undefined when they fit.
 */
export function fetchHeapProblem(fetchBytesPerPartition: number, partitions: number, heapLimitBytes: number): string | undefined {
  const need = fetchBytesPerPartition * partitions * HEAP_PER_FETCHED_BYTE;
  if (need <= heapLimitBytes / 2) return undefined;
  const mb = (n: number): number => Math.round(n / 1024 / 1024);
  return `${partitions} fetches of sink.fetchMaxBytesPerPartition (${mb(fetchBytesPerPartition)} MiB) take about ${mb(need)} MiB of heap decoded, more than half of this process's heap limit (${mb(heapLimitBytes)} MiB): lower sink.fetchMaxBytesPerPartition or give the process more memory (a container's limit, or NODE_OPTIONS=--max-old-space-size)`;
}

/** The message at `offset` in a batch's messages (ascending offsets, possibly with gaps), by bisection. */
export function messageAt(messages: KafkaMessage[], offset: bigint): KafkaMessage | undefined {
  let lo = 0;
  let hi = messages.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const at = BigInt(messages[mid]!.offset);
    if (at === offset) return messages[mid];
    if (at < offset) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

/** The change one decoded event asks of the CRM; throws when the event cannot be mapped. */
function changeOf(offset: bigint, event: ChangeEvent, mapping: MappingConfig): KeyedChange {
  if (!touchesMapping(event, mapping)) {
    // An update of columns the CRM does not get (REPLICA IDENTITY FULL says which changed).
    metrics.noopSkipped.inc({ object: mapping.object });
    return { offset, write: null, restore: false };
  }
  // A snapshot row may be there to restore a CRM that lost its records: never a no-op.
  const held = heldLookups(event, mapping);
  const commitMs = Number(event.source.commitTsMicros / 1000n);
  return { offset, write: mapEvent(event, mapping), restore: event.op === 'r', commitMs, ...(held ? { held } : {}) };
}
