import kafkajs, { Kafka, logLevel, type logCreator } from 'kafkajs';

// kafkajs is CommonJS: Node's ESM loader does not see this export by name.
const { ConfigResourceTypes } = kafkajs;
import { componentLogger } from '../logger.ts';
import type { KafkaConfig } from '../config.ts';

/**
 * The only module that constructs kafkajs objects' root: everything Kafka goes through here, so
 * another client could replace kafkajs behind these few functions.
 */
const toPino: logCreator = () => {
  const log = componentLogger('kafka.client');
  return ({ level, log: entry }) => {
    const { message, ...fields } = entry;
    if (level === logLevel.ERROR) log.error(fields, message);
    else if (level === logLevel.WARN) log.warn(fields, message);
    else if (level === logLevel.INFO) log.debug(fields, message);
    else log.trace(fields, message);
  };
};

export function createKafka(config: Pick<KafkaConfig, 'brokers' | 'clientId'>, suffix: string, retries = 8): Kafka {
  return new Kafka({
    clientId: `${config.clientId ?? 'pg2crm'}-${suffix}`,
    brokers: config.brokers,
    logLevel: logLevel.WARN,
    logCreator: toPino,
    retry: { retries, initialRetryTime: 200, maxRetryTime: 10_000 },
    connectionTimeout: 5_000,
  });
}

/** Creates the topics that do not exist yet (existing ones are left as they are). */
export async function ensureTopics(
  kafka: Kafka,
  topics: string[],
  opts: { partitions: number; replicationFactor: number; compacted?: boolean; maxMessageBytes?: number },
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length === 0) return;
    await admin.createTopics({
      waitForLeaders: true,
      topics: missing.map((topic) => ({
        topic,
        numPartitions: opts.partitions,
        replicationFactor: opts.replicationFactor,
        configEntries: [
          ...(opts.compacted ? [{ name: 'cleanup.policy', value: 'compact' }] : []),
          ...(opts.maxMessageBytes ? [{ name: 'max.message.bytes', value: String(opts.maxMessageBytes) }] : []),
        ],
      })),
    });
  } finally {
    await admin.disconnect();
  }
}

/** The topic's `max.message.bytes` as the broker applies it (the topic may predate pg2crm's settings). */
export async function topicMaxMessageBytes(kafka: Kafka, topic: string): Promise<number | undefined> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const res = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }] });
    const value = res.resources[0]?.configEntries.find((e) => e.configName === 'max.message.bytes')?.configValue;
    return value ? Number(value) : undefined;
  } finally {
    await admin.disconnect();
  }
}
