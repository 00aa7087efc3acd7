import type { Batch, KafkaMessage } from 'kafkajs';
import type { MappingConfig } from '../config.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import type { ChangeEvent } from '../events/change-event.ts';
import { metrics } from '../metrics.ts';
import type { KeyedChange } from './compactor.ts';
import { type DeadLetter, deadLetterOf } from './dead-letter.ts';
import { heldLookups, mapEvent, touchesMapping } from './field-mapper.ts';

/** A fetched batch decoded and mapped: one change per message, in offset order. */
export interface DecodedBatch {
  /** What each message asks of the CRM (`write: null`: nothing, e.g. a tombstone). */
  changes: KeyedChange[];
  /** Decoded events by offset. */
  events: Map<bigint, ChangeEvent>;
  /** The original messages by offset (for their dead letters). */
  messages: Map<bigint, KafkaMessage>;
  /** Poison messages (they will never decode or map), with the reason. */
  letters: DeadLetter[];
  /**
   * The first message that cannot be decoded yet (schema registry unreachable): not the
   * message's fault. Decoding stopped there; the batch goes on with the changes before it.
   */
  stoppedAt?: { offset: bigint; err: ConnectorError };
}

/** Decodes and maps the messages of one batch for one mapping. */
export async function decodeBatch(
  batch: Pick<Batch, 'topic' | 'partition' | 'messages'>,
  mapping: MappingConfig,
  decode: (value: Buffer) => Promise<ChangeEvent>,
): Promise<DecodedBatch> {
  const out: DecodedBatch = { changes: [], events: new Map(), messages: new Map(), letters: [] };
  for (const message of batch.messages) {
    const offset = BigInt(message.offset);
    out.messages.set(offset, message);
    if (!message.value) {
      out.changes.push({ offset, write: null, restore: false }); // tombstone: nothing to write
      continue;
    }
    try {
      const event = await decode(message.value);
      out.events.set(offset, event);
      out.changes.push(changeOf(offset, event, mapping));
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
      out.changes.push({ offset, write: null, restore: false });
    }
  }
  return out;
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
  return { offset, write: mapEvent(event, mapping), restore: event.op === 'r', ...(held ? { held } : {}) };
}
