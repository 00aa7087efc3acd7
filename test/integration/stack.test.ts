import { randomUUID } from 'node:crypto';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, inject, it } from 'vitest';
import { withPg } from '../helpers/fixtures.ts';

/** The services the other integration tests rely on are the real ones, and really work. */
const env = inject('stack');

describe('local stack', () => {
  it('PostgreSQL 15 with logical replication', async () => {
    const r = await withPg(env.PG_URL, (c) =>
      c.query<{ wal_level: string; v: string }>("SELECT current_setting('wal_level') AS wal_level, current_setting('server_version') AS v"),
    );
    expect(r.rows[0]?.wal_level).toBe('logical');
    expect(r.rows[0]?.v).toMatch(/^15\./);
  });

  it('Kafka round trip', async () => {
    const kafka = new Kafka({ clientId: 'stack-test', brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
    const topic = `stack-test-${randomUUID()}`;
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    const metadata = await admin.describeCluster();
    await admin.disconnect();
    expect(metadata.brokers).toHaveLength(1);
    const producer = kafka.producer({ idempotent: true });
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ key: 'k', value: 'v' }] });
    await producer.disconnect();
    const consumer = kafka.consumer({ groupId: topic });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got = await new Promise<string>(
      (resolve) => void consumer.run({ eachMessage: async ({ message }) => resolve(`${message.key}=${message.value}`) }),
    );
    await consumer.disconnect();
    expect(got).toBe('k=v');
  });

  it('schema registry (Confluent API) round trip', async () => {
    const registry = new SchemaRegistry({ host: env.SCHEMA_REGISTRY_URL });
    const schema = JSON.stringify({ type: 'record', name: 'T', fields: [{ name: 'n', type: 'long' }] });
    const { id } = await registry.register({ type: SchemaType.AVRO, schema }, { subject: `stack-test-${randomUUID()}-value` });
    expect(await registry.decode(await registry.encode(id, { n: 42 }))).toEqual({ n: 42 });
  });
});
