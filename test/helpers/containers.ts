import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import type { StackEnv } from '../../scripts/stack.ts';
import { APICURIO_VERSION, KAFKA_VERSION } from '../../scripts/stack/artifacts.ts';
import { SERVER_CERT_HOSTS, type StackCerts, stackCerts } from '../../scripts/stack/certs.ts';
import { KAFKA_SASL_USER, saslSslProperties, scramCredentials } from '../../scripts/stack/kafka.ts';
import { CREATE_TLS_ONLY_ROLE, TLS_ONLY_ROLE, tlsOnlyHbaLines } from '../../scripts/stack/postgres.ts';

/**
 * The integration tests' services in containers (testcontainers), for machines with a Docker
 * engine: PostgreSQL 15 with logical replication, Apache Kafka in KRaft mode and Apicurio
 * Registry, with the settings of the local stack (scripts/stack/postgres.ts, kafka.ts,
 * registry.ts), so that a test behaves the same on either. The development machines and CI of
 * this project have no engine: there the global setup takes the local stack, and this path is
 * covered by unit tests of its choice and settings only (test/unit/helpers/containers.test.ts).
 *
 * Like the local stack (issue 12 §1), Kafka also has a SASL_SSL listener (PLAIN and SCRAM users)
 * and PostgreSQL runs with ssl=on and has the TLS-only role, both with a certificate of a CA made
 * for the run by scripts/stack/certs.ts; startContainerServices() returns the same StackEnv
 * entries (KAFKA_SASL_SSL_BROKERS, STACK_CA_FILE, PG_TLS_ONLY_URL, ...).
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
  if (env.PG_URL && env.KAFKA_BROKERS && env.SCHEMA_REGISTRY_URL)
    return { kind: 'env', reason: 'PG_URL, KAFKA_BROKERS and SCHEMA_REGISTRY_URL are set' };
  const forced = env[SERVICES_ENV];
  if (forced === 'stack') return { kind: 'stack', reason: `${SERVICES_ENV}=stack` };
  if (forced === 'containers') {
    if (!(await engineReachable()))
      throw new Error(
        `${SERVICES_ENV}=containers but no Docker engine is reachable (DOCKER_HOST or /var/run/docker.sock); start one, or unset ${SERVICES_ENV} to use the local stack`,
      );
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
export const KAFKA_BROKER_PORT = 9093;
const KAFKA_CONTROLLER_PORT = 9094;
/** Kafka's SASL_SSL listener for clients outside the container (advertised with its mapped host port). */
export const KAFKA_SASL_SSL_PORT = 9095;
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

/** The apache/kafka image maps KAFKA_FOO_BAR to foo.bar ("_" in a name is written "__", "-" "___"). */
export function kafkaEnvName(property: string): string {
  return `KAFKA_${property.replace(/_/g, '__').replace(/-/g, '___').replace(/\./g, '_').toUpperCase()}`;
}

/** `key=value` property lines as the image's environment entries. */
export function kafkaPropertiesEnv(lines: string[]): Record<string, string> {
  return Object.fromEntries(
    lines.map((line) => {
      const eq = line.indexOf('=');
      return [kafkaEnvName(line.slice(0, eq)), line.slice(eq + 1)];
    }),
  );
}

/**
 * The engine's host as clients should name it: the local stack's services are at 127.0.0.1, and
 * tests match that address in messages; a loopback engine ("localhost", testcontainers' name for a
 * local socket) publishes its ports there too. Any other host is used as it is.
 */
export function serviceHost(engineHost: string): string {
  return engineHost === 'localhost' ? '127.0.0.1' : engineHost;
}

/** The names the server certificate must carry: the stack's loopback names, and the engine host where it is another. */
export function serverCertHosts(engineHost: string): string[] {
  return [...new Set([...SERVER_CERT_HOSTS, engineHost, serviceHost(engineHost)])];
}

/**
 * A CA and server certificate (+ PKCS12 keystore) for the containers, made as the local stack's
 * are (scripts/stack/certs.ts), in `<dir>/certs`: ca.pem, server.pem, server.key, server.p12.
 */
export function containerCerts(dir: string, engineHost: string): Promise<StackCerts> {
  return stackCerts(dir, serverCertHosts(engineHost));
}

/** Where the server certificate and key are in the PostgreSQL container (the postgres user's home, outside PGDATA, which initdb wants empty). */
export const POSTGRES_TLS_CERT = '/var/lib/postgresql/server.crt';
export const POSTGRES_TLS_KEY = '/var/lib/postgresql/server.key';
/** Settings added to POSTGRES_SETTINGS: the stack sets them with ALTER SYSTEM (ensurePostgresSsl). */
export const POSTGRES_SSL_SETTINGS: Record<string, string> = {
  ssl: 'on',
  ssl_cert_file: POSTGRES_TLS_CERT,
  ssl_key_file: POSTGRES_TLS_KEY,
};
export const POSTGRES_INIT_SCRIPT = '/docker-entrypoint-initdb.d/pg2crm-tls-only.sh';

/**
 * PostgreSQL refuses a key file that is not its user's with mode 0600 (or root's and group
 * readable), and files copied into a container are root's: this wrapper of the image's entrypoint
 * (which still runs as root here) gives both files to the postgres user (uid 999 in the image)
 * before the servers start, then hands over with the command unchanged.
 */
export const POSTGRES_ENTRYPOINT_SCRIPT = `set -e; chown postgres:postgres ${POSTGRES_TLS_CERT} ${POSTGRES_TLS_KEY}; chmod 0600 ${POSTGRES_TLS_KEY}; exec docker-entrypoint.sh "$@"`;

/**
 * Run by the image's entrypoint once, as postgres, on the init server (before the server the
 * tests use starts, so it reads the new pg_hba.conf without a reload): creates the TLS-only role
 * and puts the lines that refuse it without TLS first (the first matching line wins). Clients
 * come from the engine's network, not loopback, hence the address `all` (the stack: 127.0.0.1/32).
 */
export function postgresInitScript(): string {
  return [
    '#!/bin/bash',
    'set -euo pipefail',
    'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<\'EOSQL\'',
    `${CREATE_TLS_ONLY_ROLE};`,
    'EOSQL',
    'hba="$PGDATA/pg_hba.conf"',
    'cat - "$hba" > "$hba.pg2crm" <<\'EOF\'',
    ...tlsOnlyHbaLines('all'),
    'EOF',
    'mv "$hba.pg2crm" "$hba"',
    '',
  ].join('\n');
}

/** PostgreSQL with the local stack's settings, ssl=on with `certs`' server certificate, and the TLS-only role. */
export function postgresContainer(certs: StackCerts): GenericContainer {
  return (
    new GenericContainer(POSTGRES_IMAGE)
      .withEnvironment({ POSTGRES_USER: 'pg2crm', POSTGRES_PASSWORD: 'pg2crm', POSTGRES_DB: 'pg2crm' })
      .withEntrypoint(['sh', '-c', POSTGRES_ENTRYPOINT_SCRIPT, 'pg2crm-entrypoint'])
      .withCommand([
        'postgres',
        ...Object.entries({ ...POSTGRES_SETTINGS, ...POSTGRES_SSL_SETTINGS }).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
      ])
      .withCopyFilesToContainer([
        { source: certs.server.cert, target: POSTGRES_TLS_CERT, mode: 0o644 },
        { source: certs.server.key, target: POSTGRES_TLS_KEY, mode: 0o600 },
      ])
      .withCopyContentToContainer([{ content: postgresInitScript(), target: POSTGRES_INIT_SCRIPT, mode: 0o755 }])
      .withExposedPorts(POSTGRES_PORT)
      // The image's entrypoint runs a temporary server for initdb first, then the real one: the
      // second "ready" line is the server the tests use.
      .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
      .withStartupTimeout(STARTUP_TIMEOUT_MS)
  );
}

export function registryContainer(): GenericContainer {
  return new GenericContainer(REGISTRY_IMAGE)
    .withEnvironment({ JAVA_OPTS_APPEND: '-Xms128m -Xmx512m' })
    .withExposedPorts(REGISTRY_PORT)
    .withWaitStrategy(Wait.forHttp(`${REGISTRY_PATH}/subjects`, REGISTRY_PORT).forStatusCode(200))
    .withStartupTimeout(STARTUP_TIMEOUT_MS);
}

/**
 * The image's SSL files: its configure script (run before the broker) requires, once an
 * advertised listener is SSL or SASL_SSL, a keystore and two files holding its passwords in this
 * directory, named by KAFKA_SSL_KEYSTORE_FILENAME / _CREDENTIALS / KAFKA_SSL_KEY_CREDENTIALS.
 */
export const KAFKA_SECRETS_DIR = '/etc/kafka/secrets';
export const KAFKA_KEYSTORE_FILE = 'server.p12';
const KAFKA_KEYSTORE_CREDENTIALS_FILE = 'keystore_creds';
const KAFKA_KEY_CREDENTIALS_FILE = 'key_creds';

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
 *
 * Its SASL_SSL listener has the local stack's properties (saslSslProperties of
 * scripts/stack/kafka.ts, as environment entries) with `certs`' keystore copied in; the SCRAM
 * users are added once the broker runs (kafka-configs, as addScramUsers does on the stack).
 */
export class KafkaKraftContainer extends GenericContainer {
  /** Waited for after the start script is in place (the first wait is for the waiting line). */
  readonly readyWaitStrategy: WaitStrategy = Wait.forLogMessage(KAFKA_READY_LOG).withStartupTimeout(STARTUP_TIMEOUT_MS);

  constructor(certs: StackCerts, image = KAFKA_IMAGE) {
    super(image);
    const keystore = `${KAFKA_SECRETS_DIR}/${KAFKA_KEYSTORE_FILE}`;
    this.withEnvironment({
      // The image formats the storage with this id (a base64url UUID, 22 characters) on first start.
      CLUSTER_ID: KAFKA_CLUSTER_ID,
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: `PLAINTEXT://0.0.0.0:${KAFKA_PORT},BROKER://0.0.0.0:${KAFKA_BROKER_PORT},CONTROLLER://0.0.0.0:${KAFKA_CONTROLLER_PORT},SASL_SSL://0.0.0.0:${KAFKA_SASL_SSL_PORT}`,
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL',
      KAFKA_INTER_BROKER_LISTENER_NAME: 'BROKER',
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_CONTROLLER_QUORUM_VOTERS: `1@localhost:${KAFKA_CONTROLLER_PORT}`,
      // Same heap as the local stack's broker.
      KAFKA_HEAP_OPTS: '-Xms256m -Xmx768m',
      ...Object.fromEntries(Object.entries(KAFKA_TOPIC_SETTINGS).map(([k, v]) => [kafkaEnvName(k), v])),
      ...kafkaPropertiesEnv(saslSslProperties({ keystore, keystorePassword: certs.keystorePassword, ...KAFKA_SASL_USER })),
      // What the image's configure script demands once a listener is SASL_SSL (it exits otherwise):
      // the keystore and password files by name (it sets ssl.keystore.* from them, the same
      // keystore as the listener's own properties) and a non-empty KAFKA_OPTS, where it expects
      // a JAAS file; the JAAS lines are listener properties here, as on the stack, so KAFKA_OPTS
      // only repeats a JVM default.
      KAFKA_SSL_KEYSTORE_FILENAME: KAFKA_KEYSTORE_FILE,
      KAFKA_SSL_KEYSTORE_CREDENTIALS: KAFKA_KEYSTORE_CREDENTIALS_FILE,
      KAFKA_SSL_KEY_CREDENTIALS: KAFKA_KEY_CREDENTIALS_FILE,
      KAFKA_SSL_KEYSTORE_TYPE: 'PKCS12',
      KAFKA_OPTS: '-Djava.awt.headless=true',
    })
      .withEntrypoint(['sh', '-c'])
      .withCommand([`echo '${KAFKA_WAITING_LINE}'; while [ ! -f ${KAFKA_START_SCRIPT} ]; do sleep 0.1; done; ${KAFKA_START_SCRIPT}`])
      // The broker runs as the image's appuser; copied files are root's, so they are world-readable (test-only secrets).
      .withCopyFilesToContainer([{ source: certs.keystore, target: keystore, mode: 0o644 }])
      .withCopyContentToContainer([
        { content: certs.keystorePassword, target: `${KAFKA_SECRETS_DIR}/${KAFKA_KEYSTORE_CREDENTIALS_FILE}`, mode: 0o644 },
        { content: certs.keystorePassword, target: `${KAFKA_SECRETS_DIR}/${KAFKA_KEY_CREDENTIALS_FILE}`, mode: 0o644 },
      ])
      .withExposedPorts(KAFKA_PORT, KAFKA_SASL_SSL_PORT)
      .withWaitStrategy(Wait.forLogMessage(KAFKA_WAITING_LINE))
      .withStartupTimeout(STARTUP_TIMEOUT_MS);
  }

  protected override async containerStarted(container: StartedTestContainer, inspectResult: InspectResult): Promise<void> {
    const script = kafkaStartScript(
      serviceHost(container.getHost()),
      container.getMappedPort(KAFKA_PORT),
      container.getMappedPort(KAFKA_SASL_SSL_PORT),
      inspectResult.hostname,
    );
    await container.copyContentToContainer([{ content: script, target: KAFKA_START_SCRIPT, mode: 0o755 }]);
    const client = await getContainerRuntimeClient();
    const boundPorts = BoundPorts.fromInspectResult(client.info.containerRuntime.hostIps, inspectResult).filter(this.exposedPorts);
    await waitForContainer(client, client.container.getById(container.getId()), this.readyWaitStrategy, boundPorts);
    for (const command of kafkaScramCommands()) {
      // The tool's JVM needs no broker-sized heap.
      const r = await container.exec(command, { env: { KAFKA_HEAP_OPTS: '-Xmx256m' } });
      if (r.exitCode !== 0)
        throw new Error(
          `adding the SCRAM user ${KAFKA_SASL_USER.username} in the Kafka container failed (exit ${r.exitCode}): ${r.output.trim().slice(-2000)}`,
        );
    }
  }
}

/**
 * kafka-configs runs inside the container, through the broker's inter-broker listener (its
 * advertised name, the container's hostname, resolves there), one mechanism per call: the broker
 * refuses two credentials of one user in one request.
 */
export function kafkaScramCommands(): string[][] {
  return scramCredentials(KAFKA_SASL_USER, false).map((credential) => [
    '/opt/kafka/bin/kafka-configs.sh',
    '--bootstrap-server',
    `localhost:${KAFKA_BROKER_PORT}`,
    '--alter',
    '--entity-type',
    'users',
    '--entity-name',
    KAFKA_SASL_USER.username,
    '--add-config',
    credential,
  ]);
}

/**
 * The start script: advertise the host's address and mapped ports for outside clients (plaintext
 * and SASL_SSL), the container's for the inter-broker listener.
 */
export function kafkaStartScript(host: string, mappedPort: number, mappedSaslSslPort: number, containerHostname: string): string {
  const advertised = [
    `PLAINTEXT://${host}:${mappedPort}`,
    `BROKER://${containerHostname}:${KAFKA_BROKER_PORT}`,
    `SASL_SSL://${host}:${mappedSaslSslPort}`,
  ];
  return ['#!/bin/bash', `export KAFKA_ADVERTISED_LISTENERS=${advertised.join(',')}`, 'exec /etc/kafka/docker/run', ''].join('\n');
}

/** The addresses of the three containers, and of their secure endpoints, as the local stack gives them. */
export function containerServicesEnv(
  hosts: { postgres: string; kafka: string; registry: string },
  ports: { postgres: number; kafka: number; kafkaSaslSsl: number; registry: number },
  caFile: string,
): Required<StackEnv> {
  const pgHost = serviceHost(hosts.postgres);
  const kafkaHost = serviceHost(hosts.kafka);
  return {
    PG_URL: `postgresql://pg2crm:pg2crm@${pgHost}:${ports.postgres}/pg2crm`,
    KAFKA_BROKERS: `${kafkaHost}:${ports.kafka}`,
    SCHEMA_REGISTRY_URL: `http://${serviceHost(hosts.registry)}:${ports.registry}${REGISTRY_PATH}`,
    KAFKA_SASL_SSL_BROKERS: `${kafkaHost}:${ports.kafkaSaslSsl}`,
    KAFKA_SASL_USERNAME: KAFKA_SASL_USER.username,
    KAFKA_SASL_PASSWORD: KAFKA_SASL_USER.password,
    STACK_CA_FILE: caFile,
    PG_TLS_ONLY_URL: `postgresql://${TLS_ONLY_ROLE.username}:${TLS_ONLY_ROLE.password}@${pgHost}:${ports.postgres}/pg2crm`,
  };
}

export interface ContainerServices {
  env: Required<StackEnv>;
  stop(): Promise<void>;
}

/**
 * Makes the run's certificates (naming the engine's host), starts the three containers (in
 * parallel) and returns their addresses; stop() removes them and the certificates.
 */
export async function startContainerServices(): Promise<ContainerServices> {
  const engineHost = (await getContainerRuntimeClient()).info.containerRuntime.host;
  const dir = mkdtempSync(join(tmpdir(), 'pg2crm-containers-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  let certs: StackCerts;
  try {
    certs = await containerCerts(dir, engineHost);
  } catch (err) {
    removeDir();
    throw err;
  }
  const results = await Promise.allSettled([
    postgresContainer(certs).start(),
    new KafkaKraftContainer(certs).start(),
    registryContainer().start(),
  ]);
  const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const stop = async (): Promise<void> => {
    await Promise.allSettled(started.map((c) => c.stop()));
    removeDir();
  };
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  const [postgres, kafka, registry] = started as [StartedTestContainer, StartedTestContainer, StartedTestContainer];
  const env = containerServicesEnv(
    { postgres: postgres.getHost(), kafka: kafka.getHost(), registry: registry.getHost() },
    {
      postgres: postgres.getMappedPort(POSTGRES_PORT),
      kafka: kafka.getMappedPort(KAFKA_PORT),
      kafkaSaslSsl: kafka.getMappedPort(KAFKA_SASL_SSL_PORT),
      registry: registry.getMappedPort(REGISTRY_PORT),
    },
    certs.ca.cert,
  );
  try {
    await postgresTookSettings(env.PG_URL);
  } catch (err) {
    await stop();
    throw err;
  }
  return { env, stop };
}

/**
 * The container's PostgreSQL took the settings: logical decoding is what every capture test
 * needs; ssl=on and the TLS-only role what the transport-security test needs.
 */
async function postgresTookSettings(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const walLevel = (await c.query<{ wal_level: string }>('SHOW wal_level')).rows[0]?.wal_level;
    if (walLevel !== 'logical')
      throw new Error(`PostgreSQL container has wal_level=${walLevel}, not logical; check the command in test/helpers/containers.ts`);
    const ssl = (await c.query<{ ssl: string }>('SHOW ssl')).rows[0]?.ssl;
    if (ssl !== 'on')
      throw new Error(
        `PostgreSQL container has ssl=${ssl}, not on; check the command and the certificate files in test/helpers/containers.ts`,
      );
    if ((await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [TLS_ONLY_ROLE.username])).rowCount !== 1) {
      throw new Error(
        `PostgreSQL container lacks the role ${TLS_ONLY_ROLE.username}; check the init script (${POSTGRES_INIT_SCRIPT}) in test/helpers/containers.ts`,
      );
    }
  } finally {
    await c.end();
  }
}
