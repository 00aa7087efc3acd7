import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { kafkaJars } from './artifacts.ts';
import { run, spawnDetached, waitUntil } from './processes.ts';

/**
 * Apache Kafka in KRaft mode, one combined broker + controller. Replication factors of the
 * internal topics are 1 (a single node cannot hold more replicas).
 */
export async function startKafka(dir: string, port: number, controllerPort: number): Promise<number> {
  const jars = await kafkaJars();
  const classpath = `${jars}/*`;
  mkdirSync(dir, { recursive: true });
  const props = join(dir, 'server.properties');
  writeFileSync(
    props,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
      'controller.listener.names=CONTROLLER',
      'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${join(dir, 'data')}`,
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=10',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'num.partitions=1',
      'auto.create.topics.enable=false',
      'delete.topic.enable=true',
      '',
    ].join('\n'),
  );
  const log4j = join(dir, 'log4j.properties');
  writeFileSync(
    log4j,
    ['log4j.rootLogger=WARN, stdout', 'log4j.appender.stdout=org.apache.log4j.ConsoleAppender', 'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout', 'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n', 'log4j.logger.kafka.server.KafkaRaftServer=INFO', ''].join('\n'),
  );
  if (!existsSync(join(dir, 'data', 'meta.properties'))) {
    await run('java', ['-cp', classpath, `-Dlog4j.configuration=file:${log4j}`, 'kafka.tools.StorageTool', 'format', '-t', randomUUID().replace(/-/g, '').slice(0, 22), '-c', props]);
  }
  return spawnDetached('java', ['-Xms256m', '-Xmx768m', '-XX:+UseG1GC', `-Dlog4j.configuration=file:${log4j}`, '-cp', classpath, 'kafka.Kafka', props], {
    cwd: dir,
    log: join(dir, 'kafka.log'),
  });
}

/** Ready = a topic can be created and a message produced and consumed back. */
export async function kafkaReady(brokers: string): Promise<void> {
  const kafka = new Kafka({ clientId: 'pg2crm-stack', brokers: [brokers], logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  await waitUntil(
    'Kafka',
    async () => {
      const admin = kafka.admin();
      await admin.connect();
      try {
        await admin.listTopics();
        return true;
      } finally {
        await admin.disconnect();
      }
    },
    90_000,
    'kafka.log in the stack directory',
  );
  // The group coordinator needs __consumer_offsets, created on first use: retry the round trip.
  await waitUntil('Kafka produce/consume round trip', () => roundTrip(kafka), 90_000, 'kafka.log in the stack directory');
}

async function roundTrip(kafka: Kafka): Promise<boolean> {
  const topic = '__pg2crm_stack_check';
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic)) await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  const producer = kafka.producer();
  await producer.connect();
  const marker = randomUUID();
  await producer.send({ topic, acks: -1, messages: [{ value: marker }] });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `stack-check-${marker}` });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    return await new Promise<boolean>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('produced message not consumed within 20 s')), 20_000);
      consumer
        .run({
          eachMessage: async ({ message }) => {
            if (message.value?.toString() === marker) {
              clearTimeout(timer);
              resolve(true);
            }
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
}
