import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { GenericContainer, WaitStrategy } from 'testcontainers';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { APICURIO_VERSION, KAFKA_VERSION } from '../../../scripts/stack/artifacts.ts';
import type { StackCerts } from '../../../scripts/stack/certs.ts';
import { KAFKA_SASL_USER, saslSslProperties } from '../../../scripts/stack/kafka.ts';
import { TLS_ONLY_ROLE } from '../../../scripts/stack/postgres.ts';
import {
  chooseServices,
  containerCerts,
  containerServicesEnv,
  dockerEngineReachable,
  KAFKA_CLUSTER_ID,
  KAFKA_PORT,
  KAFKA_READY_LOG,
  KAFKA_SASL_SSL_PORT,
  KAFKA_START_SCRIPT,
  KAFKA_TOPIC_SETTINGS,
  KAFKA_WAITING_LINE,
  KafkaKraftContainer,
  kafkaEnvName,
  kafkaPropertiesEnv,
  kafkaScramCommands,
  kafkaStartScript,
  POSTGRES_ENTRYPOINT_SCRIPT,
  POSTGRES_INIT_SCRIPT,
  POSTGRES_SETTINGS,
  POSTGRES_SSL_SETTINGS,
  postgresContainer,
  postgresInitScript,
  registryContainer,
  serverCertHosts,
  serviceHost,
} from '../../helpers/containers.ts';

/**
 * The integration setup's container path (testcontainers). No Docker engine runs on these
 * machines, so what is checked here is the choice between containers and the local stack, and
 * what testcontainers would send to the engine: the Docker create options it keeps for each
 * container (Image, Cmd, Entrypoint, Env, ExposedPorts: the Engine API's names) and the wait
 * strategies built with its Wait API.
 */

/** What GenericContainer hands to Docker's container create, plus its wait settings (protected in the API). */
interface Inside {
  createOpts: { Image: string; Cmd?: string[]; Entrypoint?: string[]; Env?: string[]; ExposedPorts?: Record<string, object> };
  environment: Record<string, string>;
  waitStrategy: WaitStrategy & Record<string, unknown>;
  startupTimeoutMs?: number;
  /** withCopyFilesToContainer / withCopyContentToContainer: put into the container (one tar archive) before it starts. */
  filesToCopy: { source: string; target: string; mode?: number }[];
  contentsToCopy: { content: string | Buffer; target: string; mode?: number }[];
}
const inside = (c: GenericContainer) => c as unknown as Inside;

/** Certificate files as startContainerServices() makes them; the settings only name them (read when a container starts). */
const certs: StackCerts = {
  dir: '/tmp/run/certs',
  ca: { cert: '/tmp/run/certs/ca.pem', key: '/tmp/run/certs/ca.key' },
  server: { cert: '/tmp/run/certs/server.pem', key: '/tmp/run/certs/server.key' },
  keystore: '/tmp/run/certs/server.p12',
  keystorePassword: 'pg2crm-stack',
};

/**
 * The apache/kafka image's reading of an environment name (KafkaDockerWrapper.getServerConfigsFromEnv,
 * as its docker/examples/README documents it): drop KAFKA_, lower case, "_" -> ".", then "..." -> "-", ".." -> "_".
 */
const imageProperty = (envName: string) =>
  envName
    .replace('KAFKA_', '')
    .toLowerCase()
    .replace(/_/g, '.')
    .replace(/\.\.\./g, '-')
    .replace(/\.\./g, '_');

describe('chooseServices', () => {
  const addresses = { PG_URL: 'postgresql://u:p@h:1/d', KAFKA_BROKERS: 'h:2', SCHEMA_REGISTRY_URL: 'http://h:3/apis/ccompat/v7' };

  it('takes the services from the environment when all three addresses are set, without probing', async () => {
    const probe = vi.fn(async () => true);
    expect(await chooseServices(addresses, probe)).toMatchObject({ kind: 'env' });
    expect(probe).not.toHaveBeenCalled();
  });

  it('starts containers where a Docker engine is reachable, else uses the local stack', async () => {
    expect(await chooseServices({}, async () => true)).toEqual({ kind: 'containers', reason: 'a Docker engine is reachable' });
    expect(await chooseServices({}, async () => false)).toEqual({ kind: 'stack', reason: 'no Docker engine is reachable' });
    // Only some addresses set (or empty ones): not enough to skip starting services.
    expect(
      await chooseServices(
        { PG_URL: addresses.PG_URL, KAFKA_BROKERS: '', SCHEMA_REGISTRY_URL: addresses.SCHEMA_REGISTRY_URL },
        async () => false,
      ),
    ).toMatchObject({ kind: 'stack' });
  });

  it('PG2CRM_TEST_SERVICES forces the stack (no probe) or containers (engine required), and rejects other values', async () => {
    const probe = vi.fn(async () => true);
    expect(await chooseServices({ PG2CRM_TEST_SERVICES: 'stack' }, probe)).toEqual({ kind: 'stack', reason: 'PG2CRM_TEST_SERVICES=stack' });
    expect(probe).not.toHaveBeenCalled();
    expect(await chooseServices({ PG2CRM_TEST_SERVICES: 'containers' }, async () => true)).toMatchObject({ kind: 'containers' });
    await expect(chooseServices({ PG2CRM_TEST_SERVICES: 'containers' }, async () => false)).rejects.toThrow(
      /PG2CRM_TEST_SERVICES=containers but no Docker engine is reachable.*unset PG2CRM_TEST_SERVICES/,
    );
    await expect(chooseServices({ PG2CRM_TEST_SERVICES: 'docker' }, async () => true)).rejects.toThrow(
      /PG2CRM_TEST_SERVICES=docker: use "containers" or "stack"/,
    );
  });
});

describe('dockerEngineReachable', () => {
  const saved = process.env.DOCKER_HOST;
  afterEach(() => {
    if (saved === undefined) delete process.env.DOCKER_HOST;
    else process.env.DOCKER_HOST = saved;
  });

  it('is false, quickly, when the engine address answers nothing (testcontainers finds no runtime)', async () => {
    // A loopback port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    process.env.DOCKER_HOST = `tcp://127.0.0.1:${port}`;
    const t0 = Date.now();
    expect(await dockerEngineReachable()).toBe(false);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});

describe('container settings', () => {
  it('PostgreSQL 15 with logical replication, the local stack settings and ssl=on, ready on the second "ready" line', () => {
    const c = inside(postgresContainer(certs));
    expect(c.createOpts.Image).toBe('postgres:15');
    expect(c.createOpts.Cmd).toEqual([
      'postgres',
      '-c',
      'wal_level=logical',
      '-c',
      'max_replication_slots=50',
      '-c',
      'max_wal_senders=50',
      '-c',
      'max_connections=200',
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'shared_buffers=256MB',
      '-c',
      'ssl=on',
      '-c',
      'ssl_cert_file=/var/lib/postgresql/server.crt',
      '-c',
      'ssl_key_file=/var/lib/postgresql/server.key',
    ]);
    expect(c.createOpts.Env).toEqual(['POSTGRES_USER=pg2crm', 'POSTGRES_PASSWORD=pg2crm', 'POSTGRES_DB=pg2crm']);
    // The server certificate and key of the run's CA, copied in before start; the key 0600.
    expect(c.filesToCopy).toEqual([
      { source: '/tmp/run/certs/server.pem', target: '/var/lib/postgresql/server.crt', mode: 0o644 },
      { source: '/tmp/run/certs/server.key', target: '/var/lib/postgresql/server.key', mode: 0o600 },
    ]);
    // Copied files are root's: a wrapper of the image's entrypoint (root until it drops to postgres)
    // gives them to postgres, then runs the entrypoint with the command as its arguments.
    expect(c.createOpts.Entrypoint).toEqual(['sh', '-c', POSTGRES_ENTRYPOINT_SCRIPT, 'pg2crm-entrypoint']);
    expect(POSTGRES_ENTRYPOINT_SCRIPT).toBe(
      'set -e; chown postgres:postgres /var/lib/postgresql/server.crt /var/lib/postgresql/server.key; chmod 0600 /var/lib/postgresql/server.key; exec docker-entrypoint.sh "$@"',
    );
    // The TLS-only role and its pg_hba lines: an executable init script, run once by the image.
    expect(c.contentsToCopy).toEqual([
      { content: postgresInitScript(), target: '/docker-entrypoint-initdb.d/pg2crm-tls-only.sh', mode: 0o755 },
    ]);
    expect(POSTGRES_INIT_SCRIPT.startsWith('/docker-entrypoint-initdb.d/')).toBe(true);
    expect(c.createOpts.ExposedPorts).toEqual({ '5432/tcp': {} });
    expect(c.waitStrategy.constructor.name).toBe('LogWaitStrategy');
    expect(c.waitStrategy.message).toEqual(/database system is ready to accept connections/);
    expect(c.waitStrategy.times).toBe(2);
    expect(c.startupTimeoutMs).toBe(180_000);
  });

  it('Apache Kafka (KRaft) of the local stack version, with its topic settings, advertised on the mapped port', () => {
    const k = new KafkaKraftContainer(certs);
    const c = inside(k);
    expect(c.createOpts.Image).toBe(`apache/kafka:${KAFKA_VERSION}`);
    expect(c.environment).toMatchObject({
      CLUSTER_ID: KAFKA_CLUSTER_ID,
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: 'PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094,SASL_SSL://0.0.0.0:9095',
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL',
      KAFKA_INTER_BROKER_LISTENER_NAME: 'BROKER',
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_CONTROLLER_QUORUM_VOTERS: '1@localhost:9094',
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '10',
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
      KAFKA_NUM_PARTITIONS: '1',
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
      KAFKA_DELETE_TOPIC_ENABLE: 'true',
    });
    // Advertised listeners are not fixed at create time: the start script sets them.
    expect(c.environment.KAFKA_ADVERTISED_LISTENERS).toBeUndefined();
    expect(Buffer.from(KAFKA_CLUSTER_ID, 'base64url')).toHaveLength(16);
    expect(c.createOpts.ExposedPorts).toEqual({ [`${KAFKA_PORT}/tcp`]: {}, [`${KAFKA_SASL_SSL_PORT}/tcp`]: {} });
    // The container announces it waits, then waits for the start script copied in by containerStarted().
    expect(c.createOpts.Entrypoint).toEqual(['sh', '-c']);
    expect(c.createOpts.Cmd).toHaveLength(1);
    expect(c.createOpts.Cmd?.[0]).toBe(
      `echo '${KAFKA_WAITING_LINE}'; while [ ! -f ${KAFKA_START_SCRIPT} ]; do sleep 0.1; done; ${KAFKA_START_SCRIPT}`,
    );
    expect(c.waitStrategy.constructor.name).toBe('LogWaitStrategy');
    expect(c.waitStrategy.message).toBe(KAFKA_WAITING_LINE);
    // Then ready when the broker is unfenced.
    const ready = k.readyWaitStrategy as WaitStrategy & Record<string, unknown>;
    expect(ready.constructor.name).toBe('LogWaitStrategy');
    expect(ready.message).toBe(KAFKA_READY_LOG);
    expect(
      KAFKA_READY_LOG.test(
        '[2026-12-01 18:00:00,000] INFO [BrokerLifecycleManager id=1] The broker has been unfenced. Transitioning from RECOVERY to RUNNING. (kafka.server.BrokerLifecycleManager)',
      ),
    ).toBe(true);
    expect(ready.getStartupTimeout()).toBe(180_000);
  });

  it("Kafka's SASL_SSL listener: the local stack's properties, the keystore and its password files where the image wants them", () => {
    const c = inside(new KafkaKraftContainer(certs));
    // Every SASL_SSL property of the stack's broker, as the image reads it back, keystore path inside the container.
    const stackProps = saslSslProperties({
      keystore: '/etc/kafka/secrets/server.p12',
      keystorePassword: 'pg2crm-stack',
      ...KAFKA_SASL_USER,
    });
    expect(stackProps).toHaveLength(8);
    const fromEnv = Object.entries(c.environment)
      .filter(([k]) => k.startsWith('KAFKA_LISTENER_NAME_') || k === 'KAFKA_SASL_ENABLED_MECHANISMS')
      .map(([k, v]) => `${imageProperty(k)}=${v}`);
    expect(fromEnv.sort()).toEqual([...stackProps].sort());
    expect(c.environment).toMatchObject({
      KAFKA_SASL_ENABLED_MECHANISMS: 'PLAIN,SCRAM-SHA-256,SCRAM-SHA-512',
      KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG:
        'org.apache.kafka.common.security.plain.PlainLoginModule required user_pg2crm="pg2crm-sasl-secret";',
      KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___512_SASL_JAAS_CONFIG: 'org.apache.kafka.common.security.scram.ScramLoginModule required;',
      KAFKA_LISTENER_NAME_SASL__SSL_SSL_KEYSTORE_LOCATION: '/etc/kafka/secrets/server.p12',
      // The image's configure script exits without these once an advertised listener is SASL_SSL.
      KAFKA_SSL_KEYSTORE_FILENAME: 'server.p12',
      KAFKA_SSL_KEYSTORE_CREDENTIALS: 'keystore_creds',
      KAFKA_SSL_KEY_CREDENTIALS: 'key_creds',
      KAFKA_SSL_KEYSTORE_TYPE: 'PKCS12',
    });
    expect(c.environment.KAFKA_OPTS).toMatch(/\S/);
    // Copied into /etc/kafka/secrets before start, readable by the image's appuser.
    expect(c.filesToCopy).toEqual([{ source: '/tmp/run/certs/server.p12', target: '/etc/kafka/secrets/server.p12', mode: 0o644 }]);
    expect(c.contentsToCopy).toEqual([
      { content: 'pg2crm-stack', target: '/etc/kafka/secrets/keystore_creds', mode: 0o644 },
      { content: 'pg2crm-stack', target: '/etc/kafka/secrets/key_creds', mode: 0o644 },
    ]);
  });

  it('the Kafka start script advertises host:mapped ports to clients (plaintext, SASL_SSL) and the container name to the broker listener', () => {
    expect(kafkaStartScript('127.0.0.1', 55123, 55124, 'c0ffee')).toBe(
      '#!/bin/bash\nexport KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://127.0.0.1:55123,BROKER://c0ffee:9093,SASL_SSL://127.0.0.1:55124\nexec /etc/kafka/docker/run\n',
    );
  });

  it('the SCRAM users are added in the container with kafka-configs, one mechanism per call, as on the stack', () => {
    expect(kafkaScramCommands()).toEqual(
      ['SCRAM-SHA-256', 'SCRAM-SHA-512'].map((m) => [
        '/opt/kafka/bin/kafka-configs.sh',
        '--bootstrap-server',
        'localhost:9093',
        '--alter',
        '--entity-type',
        'users',
        '--entity-name',
        'pg2crm',
        '--add-config',
        `${m}=[password=pg2crm-sasl-secret]`,
      ]),
    );
  });

  it("maps properties to the apache/kafka image's env names (. -> _, _ -> __, - -> ___), which the image reads back", () => {
    expect(kafkaEnvName('offsets.topic.replication.factor')).toBe('KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR');
    expect(kafkaEnvName('listener.name.sasl_ssl.plain.sasl.jaas.config')).toBe('KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG');
    expect(kafkaEnvName('listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config')).toBe(
      'KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___256_SASL_JAAS_CONFIG',
    );
    for (const p of [
      'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config',
      'offsets.topic.num.partitions',
      'listener.name.sasl_ssl.ssl.key.password',
    ]) {
      expect(imageProperty(kafkaEnvName(p))).toBe(p);
    }
    // Values are kept whole, "=" included.
    expect(kafkaPropertiesEnv(['a.b-c=x=y'])).toEqual({ KAFKA_A_B___C: 'x=y' });
  });

  it('the TLS-only role init script creates the role and puts the reject lines first in pg_hba.conf (run with a stand-in psql)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg2crm-initdb-'));
    try {
      const pgdata = join(dir, 'data');
      const bin = join(dir, 'bin');
      mkdirSync(pgdata);
      mkdirSync(bin);
      writeFileSync(join(pgdata, 'pg_hba.conf'), 'local all all trust\nhost all all all scram-sha-256\n');
      // psql records its arguments and the SQL it is given.
      writeFileSync(join(bin, 'psql'), `#!/bin/sh\necho "$@" > "${dir}/psql.args"\ncat > "${dir}/psql.sql"\n`);
      chmodSync(join(bin, 'psql'), 0o755);
      const script = join(dir, 'init.sh');
      writeFileSync(script, postgresInitScript());
      execFileSync('bash', [script], {
        env: { PATH: `${bin}:/usr/bin:/bin`, PGDATA: pgdata, POSTGRES_USER: 'pg2crm', POSTGRES_DB: 'pg2crm' },
      });
      expect(readFileSync(join(dir, 'psql.args'), 'utf8').trim()).toBe('-v ON_ERROR_STOP=1 --username pg2crm --dbname pg2crm');
      expect(readFileSync(join(dir, 'psql.sql'), 'utf8')).toBe(
        `CREATE ROLE ${TLS_ONLY_ROLE.username} LOGIN SUPERUSER REPLICATION PASSWORD '${TLS_ONLY_ROLE.password}';\n`,
      );
      // Clients come from the engine's network: any address, not only loopback.
      expect(readFileSync(join(pgdata, 'pg_hba.conf'), 'utf8')).toBe(
        '# pg2crm: TLS only\nhostnossl all pg2crm_tls all reject\nhostnossl replication pg2crm_tls all reject\nlocal all all trust\nhost all all all scram-sha-256\n',
      );
      expect(existsSync(join(pgdata, 'pg_hba.conf.pg2crm'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Apicurio Registry of the local stack version, ready when the ccompat v7 API answers 200', () => {
    const c = inside(registryContainer());
    expect(c.createOpts.Image).toBe(`apicurio/apicurio-registry:${APICURIO_VERSION}`);
    expect(c.createOpts.ExposedPorts).toEqual({ '8080/tcp': {} });
    expect(c.waitStrategy.constructor.name).toBe('HttpWaitStrategy');
    expect(c.waitStrategy.path).toBe('/apis/ccompat/v7/subjects');
    expect(c.waitStrategy.port).toBe(8080);
    // forStatusCode(200) is its one response predicate.
    expect(c.waitStrategy.predicates).toHaveLength(1);
    expect(c.startupTimeoutMs).toBe(180_000);
  });

  it('the settings are the local stack ones (scripts/stack/postgres.ts and kafka.ts), so both paths behave alike', () => {
    const postgresTs = readFileSync(new URL('../../../scripts/stack/postgres.ts', import.meta.url), 'utf8');
    for (const [k, v] of Object.entries(POSTGRES_SETTINGS)) {
      // wal_level is written from an option whose default is the value (`wal_level = ${opts.walLevel ?? 'logical'}`).
      const written = postgresTs.includes(`'${k} = ${v}'`) || postgresTs.includes(`\`${k} = \${opts.walLevel ?? '${v}'}\``);
      expect(written, `scripts/stack/postgres.ts writes ${k} = ${v}`).toBe(true);
    }
    // The stack turns TLS on with ALTER SYSTEM (file paths of its own).
    expect(Object.keys(POSTGRES_SSL_SETTINGS)).toEqual(['ssl', 'ssl_cert_file', 'ssl_key_file']);
    expect(postgresTs).toContain('ALTER SYSTEM SET ssl = on');
    for (const k of ['ssl_cert_file', 'ssl_key_file']) expect(postgresTs).toContain(`ALTER SYSTEM SET ${k} = `);
    const kafkaTs = readFileSync(new URL('../../../scripts/stack/kafka.ts', import.meta.url), 'utf8');
    for (const [k, v] of Object.entries(KAFKA_TOPIC_SETTINGS)) expect(kafkaTs).toContain(`'${k}=${v}'`);
  });
});

describe('secure endpoints of the container path', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('clients name a loopback engine 127.0.0.1, as the stack; another engine host as it is', () => {
    expect(serviceHost('localhost')).toBe('127.0.0.1');
    expect(serviceHost('docker')).toBe('docker');
    expect(serviceHost('10.0.0.7')).toBe('10.0.0.7');
    expect(serverCertHosts('localhost')).toEqual(['localhost', '127.0.0.1']);
    expect(serverCertHosts('docker')).toEqual(['localhost', '127.0.0.1', 'docker']);
  });

  it("the run's certificates (scripts/stack/certs.ts): a server certificate of the run's CA naming loopback and the engine host", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg2crm-ccerts-'));
    dirs.push(dir);
    const made = await containerCerts(dir, '10.20.30.40');
    expect(made.dir).toBe(join(dir, 'certs'));
    // The files the secret-grep test takes next to STACK_CA_FILE, and the broker's keystore.
    for (const f of [made.ca.cert, made.server.cert, made.server.key, made.keystore]) expect(existsSync(f), f).toBe(true);
    expect(made.server.cert).toBe(join(dir, 'certs', 'server.pem'));
    const ca = new X509Certificate(readFileSync(made.ca.cert));
    const server = new X509Certificate(readFileSync(made.server.cert));
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:10.20.30.40');
    expect(server.checkIP('10.20.30.40')).toBe('10.20.30.40');
    expect(server.checkHost('localhost')).toBe('localhost');
    // The keystore opens with the password the broker is given.
    const listing = execFileSync('openssl', ['pkcs12', '-in', made.keystore, '-passin', `pass:${made.keystorePassword}`, '-nokeys'], {
      encoding: 'utf8',
    });
    expect(listing).toContain('friendlyName: server');
  });

  it('gives the StackEnv entries the transport-security and secret-grep tests read, from the mapped ports', () => {
    const env = containerServicesEnv(
      { postgres: 'localhost', kafka: 'localhost', registry: 'localhost' },
      { postgres: 32771, kafka: 32772, kafkaSaslSsl: 32773, registry: 32774 },
      '/tmp/run/certs/ca.pem',
    );
    expect(env).toEqual({
      PG_URL: 'postgresql://pg2crm:pg2crm@127.0.0.1:32771/pg2crm',
      KAFKA_BROKERS: '127.0.0.1:32772',
      SCHEMA_REGISTRY_URL: 'http://127.0.0.1:32774/apis/ccompat/v7',
      KAFKA_SASL_SSL_BROKERS: '127.0.0.1:32773',
      KAFKA_SASL_USERNAME: 'pg2crm',
      KAFKA_SASL_PASSWORD: 'pg2crm-sasl-secret',
      STACK_CA_FILE: '/tmp/run/certs/ca.pem',
      PG_TLS_ONLY_URL: 'postgresql://pg2crm_tls:pg2crm-tls-only@127.0.0.1:32771/pg2crm',
    });
    expect(
      containerServicesEnv(
        { postgres: 'docker', kafka: 'docker', registry: 'docker' },
        { postgres: 1, kafka: 2, kafkaSaslSsl: 3, registry: 4 },
        '/ca.pem',
      ).KAFKA_SASL_SSL_BROKERS,
    ).toBe('docker:3');
  });
});
