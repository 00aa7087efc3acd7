import pg from 'pg';
import {
  BoundPorts,
  GenericContainer,
  getContainerRuntimeClient,
  type InspectResult,
  type StartedTestContainer,
  Wait,
  waitForContainer,
  type WaitStrategy,
} from 'testcontainers';
import { APICURIO_VERSION, KAFKA_VERSION } from '../../scripts/stack/artifacts.ts';

/**
 * The integration tests' services in containers (testcontainers), for machines with a Docker
 * engine: PostgreSQL 15 with logical replication, Apache Kafka in KRaft mode and Apicurio
 * Registry, with the settings of the local stack (scripts/stack/postgres.ts, kafka.ts,
 * registry.ts), so that a test behaves the same on either. The development machines and CI of
 * this project have no engine: there the global setup takes the local stack, and this path is
 * covered by unit tests of its choice and settings only (test/unit/helpers/containers.test.ts).
 *
 * Not here yet: the local stack's Kafka SASL_SSL listener and PostgreSQL ssl=on (issue 12 §1).
 * Tests that need them read KAFKA_SASL_SSL_BROKERS / STACK_CA_FILE, which this path leaves unset.
 */

/** Which services the integration tests use, and why (printed by the global setup). */
export type ServicesChoice = { kind: 'env' | 'containers' | 'stack'; reason: string };

/** PG2CRM_TEST_SERVICES=containers|stack forces a path; unset, a reachable engine means containers. */
export const SERVICES_ENV = 'PG2CRM_TEST_SERVICES';

/**
 * Addresses from the environment win; then PG2CRM_TEST_SERVICES; then containers where a Docker
 * engine answers, else the local stack. `engineReachable` is injected so the choice is testable
 * without an engine.
 */
export async function chooseServices(env: NodeJS.ProcessEnv, engineReachable: () => Promise<boolean>): Promise<ServicesChoice> {
  if (env.PG_URL && env.KAFKA_BROKERS && env.SCHEMA_REGISTRY_URL) return { kind: 'env', reason: 'PG_URL, KAFKA_BROKERS and SCHEMA_REGISTRY_URL are set' };
  const forced = env[SERVICES_ENV];
  if (forced === 'stack') return { kind: 'stack', reason: `${SERVICES_ENV}=stack` };
  if (forced === 'containers') {
    if (!(await engineReachable())) throw new Error(`${SERVICES_ENV}=containers but no Docker engine is reachable (DOCKER_HOST or /var/run/docker.sock); start one, or unset ${SERVICES_ENV} to use the local stack`);
    return { kind: 'containers', reason: `${SERVICES_ENV}=containers` };
  }
  if (forced !== undefined && forced !== '') throw new Error(`${SERVICES_ENV}=${forced}: use "containers" or "stack", or unset it`);
  return (await engineReachable())
    ? { kind: 'containers', reason: 'a Docker engine is reachable' }
    : { kind: 'stack', reason: 'no Docker engine is reachable' };
}

/** testcontainers' own runtime discovery (DOCKER_HOST, ~/.testcontainers.properties, the socket); false when none answers. */
export async function dockerEngineReachable(): Promise<boolean> {
  try {
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export const POSTGRES_IMAGE = 'postgres:15';
export const KAFKA_IMAGE = `apache/kafka:${KAFKA_VERSION}`;
// 3.x images are one image (in-memory storage by default); same version as the local stack's jar.
export const REGISTRY_IMAGE = `apicurio/apicurio-registry:${APICURIO_VERSION}`;

export const POSTGRES_PORT = 5432;
/** Kafka's listener for clients outside the container (advertised with the mapped host port). */
export const KAFKA_PORT = 9092;
const KAFKA_BROKER_PORT = 9093;
const KAFKA_CONTROLLER_PORT = 9094;
export const REGISTRY_PORT = 8080;
export const REGISTRY_PATH = '/apis/ccompat/v7';
const STARTUP_TIMEOUT_MS = 180_000;

/** The same server settings as scripts/stack/postgres.ts writes into postgresql.auto.conf. */
export const POSTGRES_SETTINGS: Record<string, string> = {
  wal_level: 'logical',
  max_replication_slots: '50',
  max_wal_senders: '50',
  max_connections: '200',
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  shared_buffers: '256MB',
};

/** The same broker and topic settings as scripts/stack/kafka.ts writes into server.properties. */
export const KAFKA_TOPIC_SETTINGS: Record<string, string> = {
  'offsets.topic.replication.factor': '1',
  'offsets.topic.num.partitions': '10',
  'transaction.state.log.replication.factor': '1',
  'transaction.state.log.min.isr': '1',
  'group.initial.rebalance.delay.ms': '0',
  'num.partitions': '1',
  'auto.create.topics.enable': 'false',
  'delete.topic.enable': 'true',
};

/** The apache/kafka image maps KAFKA_FOO_BAR to foo.bar ("_" in a name is written "__"). */
export function kafkaEnvName(property: string): string {
  return `KAFKA_${property.replace(/_/g, '__').replace(/\./g, '_').toUpperCase()}`;
}

export function postgresContainer(): GenericContainer {
  return new GenericContainer(POSTGRES_IMAGE)
    .withEnvironment({ POSTGRES_USER: 'pg2crm', POSTGRES_PASSWORD: 'pg2crm', POSTGRES_DB: 'pg2crm' })
    .withCommand(['postgres', ...Object.entries(POSTGRES_SETTINGS).flatMap(([k, v]) => ['-c', `${k}=${v}`])])
    .withExposedPorts(POSTGRES_PORT)
    // The image's entrypoint runs a temporary server for initdb first, then the real one: the
    // second "ready" line is the server the tests use.
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
    .withStartupTimeout(STARTUP_TIMEOUT_MS);
}

export function registryContainer(): GenericContainer {
  return new GenericContainer(REGISTRY_IMAGE)
    .withEnvironment({ JAVA_OPTS_APPEND: '-Xms128m -Xmx512m' })
    .withExposedPorts(REGISTRY_PORT)
    .withWaitStrategy(Wait.forHttp(`${REGISTRY_PATH}/subjects`, REGISTRY_PORT).forStatusCode(200))
    .withStartupTimeout(STARTUP_TIMEOUT_MS);
}

export const KAFKA_CLUSTER_ID = 'cGcyY3JtLXRlc3RzLWNkYw';
export const KAFKA_START_SCRIPT = '/tmp/pg2crm_kafka_start.sh';
export const KAFKA_WAITING_LINE = 'pg2crm: waiting for the start script';
/** Logged by the broker when it is unfenced and serving (KRaft). */
export const KAFKA_READY_LOG = /Transitioning from RECOVERY to RUNNING/;

/**
 * Apache Kafka (KRaft, one combined broker + controller). Clients must be told the host port
 * Docker mapped, known only once the container runs: as testcontainers' own Kafka modules do,
 * the container waits for a start script that exports KAFKA_ADVERTISED_LISTENERS with that port,
 * copied in by containerStarted(), and only then runs the image's /etc/kafka/docker/run.
 */
export class KafkaKraftContainer extends GenericContainer {
  /** Waited for after the start script is in place (the first wait is for the waiting line). */
  readonly readyWaitStrategy: WaitStrategy = Wait.forLogMessage(KAFKA_READY_LOG).withStartupTimeout(STARTUP_TIMEOUT_MS);

  constructor(image = KAFKA_IMAGE) {
    super(image);
    this.withEnvironment({
      // The image formats the storage with this id (a base64url UUID, 22 characters) on first start.
      CLUSTER_ID: KAFKA_CLUSTER_ID,
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: `PLAINTEXT://0.0.0.0:${KAFKA_PORT},BROKER://0.0.0.0:${KAFKA_BROKER_PORT},CONTROLLER://0.0.0.0:${KAFKA_CONTROLLER_PORT}`,
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT',
      KAFKA_INTER_BROKER_LISTENER_NAME: 'BROKER',
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_CONTROLLER_QUORUM_VOTERS: `1@localhost:${KAFKA_CONTROLLER_PORT}`,
      // Same heap as the local stack's broker.
      KAFKA_HEAP_OPTS: '-Xms256m -Xmx768m',
      ...Object.fromEntries(Object.entries(KAFKA_TOPIC_SETTINGS).map(([k, v]) => [kafkaEnvName(k), v])),
    })
      .withEntrypoint(['sh', '-c'])
      .withCommand([`echo '${KAFKA_WAITING_LINE}'; while [ ! -f ${KAFKA_START_SCRIPT} ]; do sleep 0.1; done; ${KAFKA_START_SCRIPT}`])
      .withExposedPorts(KAFKA_PORT)
      .withWaitStrategy(Wait.forLogMessage(KAFKA_WAITING_LINE))
      .withStartupTimeout(STARTUP_TIMEOUT_MS);
  }

  protected override async containerStarted(container: StartedTestContainer, inspectResult: InspectResult): Promise<void> {
    await container.copyContentToContainer([{ content: kafkaStartScript(container.getHost(), container.getMappedPort(KAFKA_PORT), inspectResult.hostname), target: KAFKA_START_SCRIPT, mode: 0o755 }]);
    const client = await getContainerRuntimeClient();
    const boundPorts = BoundPorts.fromInspectResult(client.info.containerRuntime.hostIps, inspectResult).filter(this.exposedPorts);
    await waitForContainer(client, client.container.getById(container.getId()), this.readyWaitStrategy, boundPorts);
  }
}

/** The start script: advertise the host's address for outside clients, the container's for the inter-broker listener. */
export function kafkaStartScript(host: string, mappedPort: number, containerHostname: string): string {
  return ['#!/bin/bash', `export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://${host}:${mappedPort},BROKER://${containerHostname}:${KAFKA_BROKER_PORT}`, 'exec /etc/kafka/docker/run', ''].join('\n');
}

export interface ContainerServices {
  env: { PG_URL: string; KAFKA_BROKERS: string; SCHEMA_REGISTRY_URL: string };
  stop(): Promise<void>;
}

/** Starts the three containers (in parallel) and returns their addresses; stop() removes them. */
export async function startContainerServices(): Promise<ContainerServices> {
  const results = await Promise.allSettled([postgresContainer().start(), new KafkaKraftContainer().start(), registryContainer().start()]);
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.allSettled(started.map((c) => c.stop()));
    throw failed.reason;
  }
  const [postgres, kafka, registry] = started as [StartedTestContainer, StartedTestContainer, StartedTestContainer];
  const env = {
    PG_URL: `postgresql://pg2crm:pg2crm@${postgres.getHost()}:${postgres.getMappedPort(POSTGRES_PORT)}/pg2crm`,
    KAFKA_BROKERS: `${kafka.getHost()}:${kafka.getMappedPort(KAFKA_PORT)}`,
    SCHEMA_REGISTRY_URL: `http://${registry.getHost()}:${registry.getMappedPort(REGISTRY_PORT)}${REGISTRY_PATH}`,
  };
  await postgresLogical(env.PG_URL);
  return {
    env,
    stop: async () => {
      await Promise.allSettled([postgres.stop(), kafka.stop(), registry.stop()]);
    },
  };
}

/** The container's PostgreSQL took the settings: logical decoding is what every capture test needs. */
async function postgresLogical(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const walLevel = (await c.query<{ wal_level: string }>('SHOW wal_level')).rows[0]?.wal_level;
    if (walLevel !== 'logical') throw new Error(`PostgreSQL container has wal_level=${walLevel}, not logical; check the command in test/helpers/containers.ts`);
  } finally {
    await c.end();
  }
}
