import type { KafkaConfig } from '../config.ts';
import { AvroCodec, envelopeSchema, type RegisteredSchema } from '../events/avro-codec.ts';
import { type ChangeEvent, encodeKey } from '../events/change-event.ts';
import type { ColumnShape } from '../events/row-codec.ts';
import { topicFor } from '../events/topic-router.ts';
import type { OutgoingMessage } from './publisher.ts';

/** A table's shape as one schema version: a new object (new Relation message) = a new version. */
export interface SchemaSource {
  schema: string;
  table: string;
  columns: ColumnShape[];
}

/**
 * Change event -> Kafka messages: topic per table, key = primary key JSON, Avro value with the
 * table's schema registered once per shape, plus a tombstone after a delete (when configured)
 * so log compaction can drop the key once consumers have seen the delete.
 */
export class EventEncoder {
  private readonly config: KafkaConfig;
  private readonly codec: AvroCodec;
  private readonly schemas = new WeakMap<SchemaSource, Promise<RegisteredSchema>>();

  constructor(config: KafkaConfig) {
    this.config = config;
    this.codec = new AvroCodec(config.schemaRegistry);
  }

  async encode(event: ChangeEvent, shape: SchemaSource): Promise<OutgoingMessage[]> {
    const topic = topicFor(this.config.topicPrefix, event.source.schema, event.source.table);
    let registered = this.schemas.get(shape);
    if (!registered) {
      registered = this.codec.register(`${topic}-value`, envelopeSchema(this.config.topicPrefix, shape.schema, shape.table, shape.columns));
      // A failed registration (registry away) is not remembered: the next encode asks again.
      registered.catch(() => this.schemas.delete(shape));
      this.schemas.set(shape, registered);
    }
    const key = encodeKey(event.key);
    const out: OutgoingMessage[] = [{ topic, key, value: this.codec.encode(await registered, event, key) }];
    if (event.op === 'd' && this.config.tombstones) out.push({ topic, key, value: null });
    return out;
  }
}
