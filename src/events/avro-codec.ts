import { COMPATIBILITY, type SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type avro from 'avsc';
import { ConnectorError } from '../errors.ts';
import { avroType } from './avro-types.ts';
import { avroName, type ColumnShape, rowSchema } from './row-codec.ts';
import { type ChangeEvent, encodeKey } from './change-event.ts';
import { type RegistryConnection, registryAuthError, registryFetch, registryTlsError, schemaRegistryClient } from './registry-client.ts';

/**
 * Avro encoding of change events through a Confluent-compatible schema registry.
 * Wire format (https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format):
 * byte 0 = magic 0, bytes 1-4 = schema id (big-endian int32), then the Avro binary body.
 * Subjects follow TopicNameStrategy: `<topic>-value`.
 */
const MAGIC = 0;
const HEADER_BYTES = 5;

export function envelopeSchema(topicPrefix: string, schema: string, table: string, columns: ColumnShape[]): Record<string, unknown> {
  return {
    type: 'record',
    name: 'Envelope',
    namespace: ['pg2crm', topicPrefix, schema, table].map(avroName).join('.'),
    doc: `Change events of ${schema}.${table}, captured by pg2crm`,
    fields: [
      { name: 'op', type: { type: 'enum', name: 'Op', symbols: ['c', 'u', 'd', 'r'] } },
      { name: 'key', type: 'string', doc: 'primary key as canonical JSON' },
      { name: 'before', type: ['null', rowSchema('Row', columns)], default: null },
      { name: 'after', type: ['null', 'Row'], default: null },
      { name: 'changed', type: ['null', { type: 'array', items: 'string' }], default: null },
      { name: 'unchanged', type: { type: 'array', items: 'string' }, default: [] },
      {
        name: 'source',
        type: {
          type: 'record',
          name: 'Source',
          fields: [
            { name: 'lsn', type: 'string' },
            { name: 'seq', type: 'int' },
            { name: 'xid', type: 'long' },
            { name: 'commitTsMicros', type: 'long', doc: 'commit time, microseconds since the Unix epoch' },
            { name: 'schema', type: 'string' },
            { name: 'table', type: 'string' },
            { name: 'snapshot', type: 'boolean' },
          ],
        },
      },
    ],
  };
}

/** What an envelope holds on the wire (`key` as JSON text, xid as long). */
interface WireEvent extends Omit<ChangeEvent, 'key' | 'source'> {
  key: string;
  source: Omit<ChangeEvent['source'], 'xid'> & { xid: bigint };
}

export interface RegisteredSchema {
  id: number;
  type: avro.Type;
}

export class AvroCodec {
  private readonly registry: SchemaRegistry;
  private readonly connection: RegistryConnection;
  private readonly byDefinition = new Map<string, Promise<RegisteredSchema>>();
  private readonly byId = new Map<number, Promise<avro.Type>>();
  private scratch = Buffer.allocUnsafe(64 * 1024);

  private readonly compatibility: COMPATIBILITY;

  constructor(registry: RegistryConnection & { compatibility?: keyof typeof COMPATIBILITY }) {
    this.connection = registry;
    this.registry = schemaRegistryClient(registry);
    this.compatibility = COMPATIBILITY[registry.compatibility ?? 'NONE'];
  }

  /** Registers (or finds) the schema under `subject`; cached, so call it per event freely. */
  register(subject: string, schema: Record<string, unknown>): Promise<RegisteredSchema> {
    const definition = JSON.stringify(schema);
    const cacheKey = `${subject}\n${definition}`;
    let found = this.byDefinition.get(cacheKey);
    if (!found) {
      found = this.registry
        .register({ type: SchemaType.AVRO, schema: definition }, { subject, compatibility: this.compatibility })
        .then(({ id }) => ({ id, type: avroType(schema) }))
        .catch((err: unknown) => {
          this.byDefinition.delete(cacheKey);
          // 409: the new version breaks the subject's compatibility rule; other failures
          // (registry down, 5xx) may pass when tried again.
          const status = (err as { status?: number }).status;
          if (status === 401 || status === 403) throw registryAuthError(status, this.connection, err);
          const tls = registryTlsError(err);
          if (tls) throw tls;
          const permanent = status === 409 || status === 422 || (err as Error).name === 'ConfluentSchemaRegistryCompatibilityError';
          throw new ConnectorError(
            'SCHEMA_REGISTER',
            `schema registry refused the schema of subject ${subject}: ${(err as Error).message}; ` +
              (permanent
                ? "the table's change breaks the subject's compatibility level: set kafka.schemaRegistry.compatibility (or the subject's config) to allow it"
                : 'check kafka.schemaRegistry.url and that the registry runs'),
            { retriable: !permanent, cause: err },
          );
        });
      this.byDefinition.set(cacheKey, found);
    }
    return found;
  }

  /** `key`: the event's key as encodeKey gives it, when the caller has it already. */
  encode(registered: RegisteredSchema, event: ChangeEvent, key = encodeKey(event.key)): Buffer {
    const wire: WireEvent = { ...event, key, source: { ...event.source, xid: BigInt(event.source.xid) } };
    // Written once into a reused scratch buffer after the header, then copied out: toBuffer plus
    // a header and a concat made three buffers per event. type.encode returns a negative position
    // when the buffer is too small (by how much), https://github.com/mtth/avsc/wiki/API#typeencodeval-buf-pos
    let end = registered.type.encode(wire, this.scratch, HEADER_BYTES);
    if (end < 0) {
      this.scratch = Buffer.allocUnsafe(Math.max(2 * this.scratch.length, HEADER_BYTES - end + this.scratch.length));
      end = registered.type.encode(wire, this.scratch, HEADER_BYTES);
    }
    this.scratch.writeUInt8(MAGIC, 0);
    this.scratch.writeInt32BE(registered.id, 1);
    const out = Buffer.allocUnsafe(end);
    this.scratch.copy(out, 0, 0, end);
    return out;
  }

  async decode(buf: Buffer): Promise<ChangeEvent> {
    if (buf.length < HEADER_BYTES || buf.readUInt8(0) !== MAGIC) {
      throw new ConnectorError('NOT_AVRO', 'message value is not in the schema-registry Avro wire format (magic byte 0)');
    }
    const type = await this.schemaById(buf.readInt32BE(1));
    const wire = type.fromBuffer(buf.subarray(HEADER_BYTES)) as WireEvent;
    return { ...wire, key: JSON.parse(wire.key) as ChangeEvent['key'], source: { ...wire.source, xid: Number(wire.source.xid) } };
  }

  private schemaById(id: number): Promise<avro.Type> {
    let found = this.byId.get(id);
    if (!found) {
      found = fetchSchema(this.connection, id)
        .then((schema) => avroType(JSON.parse(schema)))
        .catch((err: unknown) => {
          this.byId.delete(id);
          if (err instanceof ConnectorError) throw err;
          throw new ConnectorError(
            'SCHEMA_FETCH',
            `cannot fetch schema id ${id} from the registry: ${(err as Error).message}; check kafka.schemaRegistry.url and that the registry runs`,
            {
              retriable: true,
              cause: err,
            },
          );
        });
      this.byId.set(id, found);
    }
    return found;
  }
}

/**
 * Confluent's error code for "schema not found" (https://docs.confluent.io/platform/current/schema-registry/develop/api.html#errors,
 * also answered by Apicurio's ccompat API). Only this answer says the registry does not know
 * the id: a message carrying it will never decode, so it is permanent. A bare 404 (a wrong
 * path, a proxy) or any other failure may pass when tried again.
 */
const SCHEMA_NOT_FOUND = 40403;

async function fetchSchema(connection: RegistryConnection, id: number): Promise<string> {
  // Retriable: a wrong registry setting is not the message's fault, so it must not be dead-lettered.
  const res = await registryFetch(connection, `/schemas/ids/${id}`).catch((err: unknown) => {
    throw registryTlsError(err, true) ?? err;
  });
  if (res.status === 401 || res.status === 403) throw registryAuthError(res.status, connection, undefined, true);
  const text = await res.text();
  let body: { schema?: unknown; error_code?: unknown } | undefined;
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = undefined;
  }
  if (res.status === 404 && body?.error_code === SCHEMA_NOT_FOUND) {
    throw new ConnectorError(
      'SCHEMA_NOT_FOUND',
      `the schema registry does not know schema id ${id} (404, error_code 40403): the message was written with a schema of another registry or one since deleted; it is dead-lettered`,
    );
  }
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  if (typeof body?.schema !== 'string') throw new Error(`HTTP ${res.status} without a schema in the body`);
  return body.schema;
}
