import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { kafkaJars } from './artifacts.ts';
import { run, spawnDetached, waitUntil } from './processes.ts';

/**
 * The broker's SASL_SSL listener (issue 12 §1), next to the plaintext one every other test uses:
 * TLS with the stack CA's server certificate, SASL PLAIN and SCRAM-SHA-256/512 for one user.
 */
export interface KafkaSaslSsl {
  port: number;
  keystore: string;
  keystorePassword: string;
  username: string;
  password: string;
}

/** The stack's SASL user (test-only credentials). */
export const KAFKA_SASL_USER = { username: 'pg2crm', password: 'pg2crm-sasl-secret' } as const;

/** The SCRAM credentials of KAFKA_SASL_USER, as kafka-storage/kafka-configs take them (also used by test/helpers/containers.ts). */
export function scramCredentials(s: { username: string; password: string }, withName: boolean): string[] {
  const name = withName ? `name=${s.username},` : '';
  return ['SCRAM-SHA-256', 'SCRAM-SHA-512'].map((m) => `${m}=[${name}password=${s.password}]`);
}

/** True when the broker of `dir` was configured (started) with a SASL_SSL listener. */
export function kafkaListensSaslSsl(dir: string): boolean {
  const props = join(dir, 'server.properties');
  return existsSync(props) && readFileSync(props, 'utf8').includes('SASL_SSL://');
}

/** True when the broker of `dir` has a SASL_SSL listener and its SCRAM users exist. */
export function kafkaHasSaslSsl(dir: string): boolean {
  return kafkaListensSaslSsl(dir) && existsSync(join(dir, 'scram-users'));
}

/**
 * The broker properties of the SASL_SSL listener (`key=value` lines), shared with the container
 * path of the integration tests (test/helpers/containers.ts) so that both brokers are alike.
 */
export function saslSslProperties(s: Omit<KafkaSaslSsl, 'port'>): string[] {
  return [
    // PLAIN's users live in the JAAS line; SCRAM's in the cluster metadata (added at format or by addScramUsers).
    'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
    `listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${s.username}="${s.password}";`,
    'listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
    'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
    'listener.name.sasl_ssl.ssl.keystore.type=PKCS12',
    `listener.name.sasl_ssl.ssl.keystore.location=${s.keystore}`,
    `listener.name.sasl_ssl.ssl.keystore.password=${s.keystorePassword}`,
    `listener.name.sasl_ssl.ssl.key.password=${s.keystorePassword}`,
  ];
}

/**
 * Apache Kafka in KRaft mode, one combined broker + controller. Replication factors of the
 * internal topics are 1 (a single node cannot hold more replicas).
 */
export async function startKafka(dir: string, port: number, controllerPort: number, saslSsl?: KafkaSaslSsl): Promise<number> {
  const jars = await kafkaJars();
  const classpath = `${jars}/*`;
  mkdirSync(dir, { recursive: true });
  const props = join(dir, 'server.properties');
  const secure = saslSsl ? saslSslProperties(saslSsl) : [];
  const listeners = [
    `PLAINTEXT://127.0.0.1:${port}`,
    `CONTROLLER://127.0.0.1:${controllerPort}`,
    ...(saslSsl ? [`SASL_SSL://127.0.0.1:${saslSsl.port}`] : []),
  ];
  const advertised = [`PLAINTEXT://127.0.0.1:${port}`, ...(saslSsl ? [`SASL_SSL://127.0.0.1:${saslSsl.port}`] : [])];
  writeFileSync(
    props,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
      `listeners=${listeners.join(',')}`,
      `advertised.listeners=${advertised.join(',')}`,
      'controller.listener.names=CONTROLLER',
      `listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${saslSsl ? ',SASL_SSL:SASL_SSL' : ''}`,
      'inter.broker.listener.name=PLAINTEXT',
      ...secure,
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
    [
      'log4j.rootLogger=WARN, stdout',
      'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
      'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka.server.KafkaRaftServer=INFO',
      '',
    ].join('\n'),
  );
  if (!existsSync(join(dir, 'data', 'meta.properties'))) {
    const scram = saslSsl ? scramCredentials(saslSsl, true).flatMap((c) => ['--add-scram', c]) : [];
    await run('java', [
      '-cp',
      classpath,
      `-Dlog4j.configuration=file:${log4j}`,
      'kafka.tools.StorageTool',
      'format',
      '-t',
      randomUUID().replace(/-/g, '').slice(0, 22),
      '-c',
      props,
      ...scram,
    ]);
    if (saslSsl) writeFileSync(join(dir, 'scram-users'), `${saslSsl.username}\n`);
  }
  return spawnDetached(
    'java',
    ['-Xms256m', '-Xmx768m', '-XX:+UseG1GC', `-Dlog4j.configuration=file:${log4j}`, '-cp', classpath, 'kafka.Kafka', props],
    {
      cwd: dir,
      log: join(dir, 'kafka.log'),
    },
  );
}

/**
 * SCRAM users for a broker formatted before it had a SASL_SSL listener (kafka-storage adds them
 * only at format): kafka-configs through the running broker's plaintext listener.
 */
export async function addScramUsers(dir: string, port: number, saslSsl: KafkaSaslSsl): Promise<void> {
  if (existsSync(join(dir, 'scram-users'))) return;
  const jars = await kafkaJars();
  // One mechanism per call: the broker refuses two credentials of one user in one request.
  for (const credential of scramCredentials(saslSsl, false)) {
    await run('java', [
      '-cp',
      `${jars}/*`,
      `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`,
      'kafka.admin.ConfigCommand',
      '--bootstrap-server',
      `127.0.0.1:${port}`,
      '--alter',
      '--entity-type',
      'users',
      '--entity-name',
      saslSsl.username,
      '--add-config',
      credential,
    ]);
  }
  writeFileSync(join(dir, 'scram-users'), `${saslSsl.username}\n`);
}

/** Ready = a topic can be created and a message produced and consumed back. */
export async function kafkaReady(brokers: string): Promise<void> {
  const kafka = new Kafka({ clientId: 'pg2crm-stack', brokers: [brokers], logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  await waitUntil('Kafka', () => listsTopics(kafka), 90_000, 'kafka.log in the stack directory');
  // The group coordinator needs __consumer_offsets, created on first use: retry the round trip.
  await waitUntil('Kafka produce/consume round trip', () => roundTrip(kafka), 90_000, 'kafka.log in the stack directory');
}

async function roundTrip(kafka: Kafka): Promise<boolean> {
  const topic = '__pg2crm_stack_check';
  const admin = kafka.admin();
  await admin.connect();
  try {
    if (!(await admin.listTopics()).includes(topic))
      await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
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

/** Ready = an admin round trip over the SASL_SSL listener with SCRAM-SHA-512 and the stack CA. */
export async function kafkaSaslSslReady(brokers: string, caFile: string, user: { username: string; password: string }): Promise<void> {
  const kafka = new Kafka({
    clientId: 'pg2crm-stack',
    brokers: [brokers],
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    ssl: { ca: readFileSync(caFile, 'utf8') },
    sasl: { mechanism: 'scram-sha-512', username: user.username, password: user.password },
  });
  await waitUntil('Kafka SASL_SSL listener', () => listsTopics(kafka), 60_000, 'kafka.log in the stack directory');
}

async function listsTopics(kafka: Kafka): Promise<boolean> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.listTopics();
    return true;
  } finally {
    await admin.disconnect();
  }
}
