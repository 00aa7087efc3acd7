import kafkajs, {
  type Admin,
  Kafka,
  type KafkaConfig as KafkaJSConfig,
  logLevel,
  type logCreator,
  Partitioners,
  type SASLOptions,
} from 'kafkajs';

// kafkajs is CommonJS: Node's ESM loader does not see this export by name.
const { ConfigResourceTypes } = kafkajs;
import net from 'node:net';
import tls from 'node:tls';
import { ConnectorError } from '../errors.ts';
import { componentLogger } from '../logger.ts';
import { type TlsFailure, tlsFailure } from '../tls-errors.ts';
import { kafkajsLevel } from './log-levels.ts';
import { dropKafkajsTimerWarning } from './timer-warning.ts';
import type { KafkaConfig } from '../config.ts';

/**
 * The only module that constructs kafkajs objects' root: everything Kafka goes through here, so
 * another client could replace kafkajs behind these few functions.
 */
const toPino: logCreator = () => {
  const log = componentLogger('kafka.client');
  return ({ namespace, level, log: entry }) => {
    const { message, ...fields } = entry;
    // Retried attempts and routine group traffic are debug (see log-levels.ts).
    log[kafkajsLevel(level, entry, namespace)](fields, message);
  };
};

/**
 * Producers that name no partitioner get kafkajs 2's default, the Java-compatible murmur2
 * DefaultPartitioner, as they did before (the change-event publisher names it itself): the
 * same key goes to the same partition as with the Java client. Naming it is kafkajs's documented
 * way to drop its "switched default partitioner" warning
 * (https://kafka.js.org/docs/migration-guide-v2.0.0#producer-new-default-partitioner).
 */
function withDefaultPartitioner(kafka: Kafka): Kafka {
  const producer = kafka.producer.bind(kafka);
  kafka.producer = (cfg) => producer({ ...cfg, createPartitioner: cfg?.createPartitioner ?? Partitioners.DefaultPartitioner });
  return kafka;
}

/** What createKafka needs of `kafka.*`: the brokers and, when configured, TLS and SASL. */
export type KafkaClientConfig = Pick<KafkaConfig, 'brokers' | 'clientId'> & Partial<Pick<KafkaConfig, 'ssl' | 'sasl'>>;

export function createKafka(config: KafkaClientConfig, suffix: string, retries = 8): Kafka {
  dropKafkajsTimerWarning();
  const tlsWatch = watchTls();
  const kafka = new Kafka({
    clientId: `${config.clientId ?? 'pg2crm'}-${suffix}`,
    brokers: config.brokers,
    logLevel: logLevel.WARN,
    logCreator: toPino,
    retry: { retries, initialRetryTime: 200, maxRetryTime: 10_000 },
    connectionTimeout: 5_000,
    ...kafkaSecurity(config),
    ...(config.ssl ? { socketFactory: tlsWatch.socketFactory } : {}),
  });
  return withSecurityErrors(withDefaultPartitioner(kafka), config, tlsWatch);
}

/** `kafka.ssl` / `kafka.sasl` as kafkajs options (`ssl` goes to tls.connect as it is). */
export function kafkaSecurity(config: Partial<Pick<KafkaConfig, 'ssl' | 'sasl'>>): Pick<KafkaJSConfig, 'ssl' | 'sasl'> {
  const out: Pick<KafkaJSConfig, 'ssl' | 'sasl'> = {};
  if (config.ssl) {
    const { ca, cert, key, passphrase, rejectUnauthorized } = config.ssl;
    out.ssl = {
      rejectUnauthorized,
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
      ...(passphrase ? { passphrase } : {}),
    };
  }
  if (config.sasl) {
    const { mechanism, username, password } = config.sasl;
    // kafkajs's SASLOptions is a union keyed by mechanism; each of these three takes user + password.
    out.sasl = { mechanism, username, password } as SASLOptions;
  }
  return out;
}

/**
 * kafkajs's own socket factory (network/socketFactory.js: no servername for an IP address,
 * keepalive 60 s) that also reports TLS failures. kafkajs turns a socket error into a retriable
 * KafkaJSConnectionError and retries it for up to a minute; a certificate the client does not
 * trust will not become trusted by retrying, so connect() fails on the first one (see
 * withSecurityErrors).
 */
interface TlsWatch {
  socketFactory: NonNullable<KafkaJSConfig['socketFactory']>;
  /**
   * A promise that rejects on the first TLS failure of any socket of this client while `done`
   * is not called: one per connect(), so a failure seen once (a broker restarting with another
   * certificate, say) never fails later connects of a long-lived client. `handshakeDropped`
   * says whether the last socket that failed meanwhile was closed by the other end after the TCP
   * connect and before the TLS handshake finished (a plaintext listener drops a ClientHello):
   * Node reports that as ECONNRESET, and kafkajs keeps only the code, so it is seen here.
   */
  during(): { failed: Promise<never>; done: () => void; handshakeDropped: () => boolean };
}

interface TlsWatcher {
  fail: (err: Error) => void;
  handshakeDropped: boolean;
}

function watchTls(): TlsWatch {
  const watchers = new Set<TlsWatcher>();
  return {
    during() {
      const watcher: TlsWatcher = { fail: () => undefined, handshakeDropped: false };
      const failed = new Promise<never>((_, reject) => {
        watcher.fail = reject;
      });
      failed.catch(() => undefined); // observed by whoever races it
      watchers.add(watcher);
      return { failed, done: () => watchers.delete(watcher), handshakeDropped: () => watcher.handshakeDropped };
    },
    socketFactory: ({ host, port, ssl, onConnect }) => {
      const socket = ssl
        ? tls.connect({ host, port, ...(!net.isIP(host) ? { servername: host } : {}), ...ssl }, onConnect)
        : net.connect({ host, port }, onConnect);
      socket.setKeepAlive(true, 60_000);
      // A TLSSocket emits 'connect' when TCP is up and 'secureConnect' when the handshake is done.
      let tcpUp = false;
      let secured = false;
      socket.once('connect', () => (tcpUp = true));
      socket.once('secureConnect', () => (secured = true));
      socket.on('error', (err: Error & { code?: string }) => {
        if (!ssl) return;
        const failure = tlsFailure(err);
        for (const w of watchers) {
          w.handshakeDropped = failure === undefined && tcpUp && !secured;
          if (failure) w.fail(err);
        }
      });
      return socket;
    },
  };
}

/**
 * A kafkajs failure caused by `kafka.ssl` or `kafka.sasl` as a permanent ConnectorError naming the
 * setting and the fix; anything else unchanged. kafkajs gives up on a SASL failure at once (it is
 * not retriable) but only says "SASL SCRAM SHA512 authentication failed".
 */
export function kafkaSecurityError(err: unknown, config: KafkaClientConfig, seen: { handshakeDropped?: boolean } = {}): unknown {
  // kafkajs wraps the failure it gave up on (KafkaJSNumberOfRetriesExceeded, KafkaJSNonRetriableError): look down the causes.
  type Cause = { name?: string; code?: string; message?: string; cause?: unknown };
  const chain: Cause[] = [];
  for (let x = err as Cause | undefined; x && typeof x === 'object' && chain.length < 5; x = x.cause as Cause | undefined) chain.push(x);
  const sasl = chain.find((c) => c.name === 'KafkaJSSASLAuthenticationError');
  const brokers = config.brokers.join(',');
  if (sasl) {
    const mech = config.sasl ? `${config.sasl.mechanism} as user ${config.sasl.username}` : 'SASL';
    return new ConnectorError(
      'KAFKA_AUTH',
      `Kafka at ${brokers} refused ${mech}: ${sasl.message ?? 'authentication failed'}; check kafka.sasl (mechanism, username, password or password_FILE) against the user the brokers know`,
      { cause: err },
    );
  }
  const failed = config.ssl ? tlsFailureIn(chain, seen.handshakeDropped === true) : undefined;
  if (failed) {
    const { failure, code, message } = failed;
    const fix =
      failure === 'handshake'
        ? "the address may not be a TLS listener: check that kafka.brokers names the brokers' TLS (SSL or SASL_SSL) listener, or remove kafka.ssl for a plaintext one"
        : "check kafka.ssl: ca (or ca_FILE) must hold the CA that signed the brokers' certificates, and kafka.brokers must use a host name or address the certificates name";
    return new ConnectorError('KAFKA_TLS', `TLS to Kafka at ${brokers} failed: ${message ?? code} (${code}); ${fix}`, { cause: err });
  }
  return err;
}

/**
 * The TLS failure in kafkajs's chain of causes (by code: see tls-errors.ts), or a handshake the
 * broker dropped (TLS towards a plaintext listener: the broker closes the connection during the
 * handshake), which is named ERR_SSL_HANDSHAKE_CLOSED here.
 */
function tlsFailureIn(
  chain: { code?: string; message?: string }[],
  handshakeDropped: boolean,
): { failure: TlsFailure; code: string; message: string | undefined } | undefined {
  for (const c of chain) {
    const failure = tlsFailure(c);
    if (failure) return { failure, code: c.code ?? '', message: c.message };
  }
  if (handshakeDropped) return { failure: 'handshake', code: 'ERR_SSL_HANDSHAKE_CLOSED', message: chain.at(-1)?.message };
  return undefined;
}

/** Maps the connect() failures of every producer, consumer and admin through kafkaSecurityError. */
function withSecurityErrors(kafka: Kafka, config: KafkaClientConfig, tlsWatch: TlsWatch): Kafka {
  if (!config.ssl && !config.sasl) return kafka;
  const wrap = <T extends { connect(): Promise<void>; disconnect(): Promise<void> }>(client: T): T => {
    const connect = client.connect.bind(client);
    client.connect = () => {
      const watch = tlsWatch.during();
      return Promise.race([connect(), config.ssl ? watch.failed : new Promise<never>(() => undefined)])
        .catch((err: unknown) => {
          // Stop kafkajs's own retries of a connect given up on here.
          void client.disconnect().catch(() => undefined);
          return Promise.reject(kafkaSecurityError(err, config, { handshakeDropped: watch.handshakeDropped() }));
        })
        .finally(watch.done);
    };
    return client;
  };
  const producer = kafka.producer.bind(kafka);
  const consumer = kafka.consumer.bind(kafka);
  const admin = kafka.admin.bind(kafka);
  kafka.producer = (cfg) => wrap(producer(cfg));
  kafka.consumer = (cfg) => wrap(consumer(cfg));
  kafka.admin = (cfg) => wrap(admin(cfg));
  return kafka;
}

/** How long ensureTopics waits for the leaders of the topics it created. */
export const TOPIC_LEADERS_WAIT_MS = 30_000;
const TOPIC_LEADERS_POLL_MS = 100;

/**
 * Creates the topics that do not exist yet (existing ones are left as they are), and returns
 * once every partition of those it created has a leader, so that a producer right after it
 * does not fail; it gives up after `leaderWaitMs` (TOPIC_LEADERS_WAIT_MS).
 */
export async function ensureTopics(
  kafka: Kafka,
  topics: string[],
  opts: { partitions: number; replicationFactor: number; compacted?: boolean; maxMessageBytes?: number; leaderWaitMs?: number },
): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  let missing: string[];
  try {
    const existing = new Set(await admin.listTopics());
    missing = topics.filter((t) => !existing.has(t));
    if (missing.length === 0) return;
    await admin.createTopics({
      // kafkajs's own wait retries LEADER_NOT_AVAILABLE only and fails on the
      // UNKNOWN_TOPIC_OR_PARTITION a busy broker answers until the new topic's metadata is
      // out: waitForLeaders below waits out both.
      waitForLeaders: false,
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
  // Polled by an admin that retries little: the client's own retries (up to 10 s apart) would
  // sleep through the election this loop waits for, and under a busy broker one offsets request
  // answered NOT_LEADER a few times held a sink's start for 20 s.
  const probe = kafka.admin({ retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 500 } });
  await probe.connect();
  try {
    await waitForLeaders(probe, missing, opts.leaderWaitMs ?? TOPIC_LEADERS_WAIT_MS);
  } finally {
    await probe.disconnect();
  }
}

/**
 * Answers about a topic just created whose partitions' leaders are still being elected, or
 * elected in the metadata but not yet serving the partition.
 */
const LEADERS_PENDING: ReadonlySet<string> = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'LEADER_NOT_AVAILABLE', 'NOT_LEADER_FOR_PARTITION']);

/** The Kafka protocol error type (`type` of a KafkaJSProtocolError) in a kafkajs error or the errors it wraps. */
function kafkaErrorType(err: unknown): string | undefined {
  let x = err as { type?: unknown; cause?: unknown } | undefined;
  for (let depth = 0; x && typeof x === 'object' && depth < 5; depth++, x = x.cause as typeof x) {
    if (typeof x.type === 'string') return x.type;
  }
  return undefined;
}

/**
 * Polls the metadata of `topics` until every partition has a leader, and the leaders answer for
 * their partitions (offsets: the metadata names a leader before it serves). It stops polling
 * after `timeoutMs`; one request may run past that by kafkajs's own retries of it.
 */
async function waitForLeaders(admin: Admin, topics: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let pending: string;
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics });
      const leaderless = found.flatMap((t) => t.partitions.filter((p) => p.leader < 0).map((p) => `${t.name}/${p.partitionId}`));
      const unlisted = topics.filter((name) => !found.some((t) => t.name === name));
      if (leaderless.length === 0 && unlisted.length === 0) {
        for (const topic of topics) await admin.fetchTopicOffsets(topic);
        return;
      }
      pending = `no leader for ${[...unlisted, ...leaderless].join(', ')}`;
    } catch (err) {
      const type = kafkaErrorType(err);
      if (type === undefined || !LEADERS_PENDING.has(type)) throw err;
      pending = type;
    }
    if (Date.now() >= deadline) {
      throw new ConnectorError(
        'KAFKA_TOPIC_NOT_READY',
        `Kafka created the topics ${topics.join(', ')} but did not elect their partitions' leaders within ${timeoutMs / 1000} s (last answer: ${pending}); check that the brokers are healthy and that the replication factor is at most the number of brokers`,
        { retriable: true },
      );
    }
    await new Promise((r) => setTimeout(r, TOPIC_LEADERS_POLL_MS));
  }
}

/** The topic's `max.message.bytes` as the broker applies it (the topic may predate pg2crm's settings). */
export async function topicMaxMessageBytes(kafka: Kafka, topic: string): Promise<number | undefined> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const res = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['max.message.bytes'] }],
    });
    const value = res.resources[0]?.configEntries.find((e) => e.configName === 'max.message.bytes')?.configValue;
    return value ? Number(value) : undefined;
  } finally {
    await admin.disconnect();
  }
}
