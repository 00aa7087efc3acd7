import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { type GenericContainer, type WaitStrategy } from 'testcontainers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { APICURIO_VERSION, KAFKA_VERSION } from '../../../scripts/stack/artifacts.ts';
import {
  chooseServices,
  dockerEngineReachable,
  KAFKA_CLUSTER_ID,
  KAFKA_PORT,
  KAFKA_READY_LOG,
  KAFKA_START_SCRIPT,
  KAFKA_TOPIC_SETTINGS,
  KAFKA_WAITING_LINE,
  KafkaKraftContainer,
  kafkaEnvName,
  kafkaStartScript,
  POSTGRES_SETTINGS,
  postgresContainer,
  registryContainer,
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
}
const inside = (c: GenericContainer) => c as unknown as Inside;

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
    expect(await chooseServices({ PG_URL: addresses.PG_URL, KAFKA_BROKERS: '', SCHEMA_REGISTRY_URL: addresses.SCHEMA_REGISTRY_URL }, async () => false)).toMatchObject({ kind: 'stack' });
  });

  it('PG2CRM_TEST_SERVICES forces the stack (no probe) or containers (engine required), and rejects other values', async () => {
    const probe = vi.fn(async () => true);
    expect(await chooseServices({ PG2CRM_TEST_SERVICES: 'stack' }, probe)).toEqual({ kind: 'stack', reason: 'PG2CRM_TEST_SERVICES=stack' });
    expect(probe).not.toHaveBeenCalled();
    expect(await chooseServices({ PG2CRM_TEST_SERVICES: 'containers' }, async () => true)).toMatchObject({ kind: 'containers' });
    await expect(chooseServices({ PG2CRM_TEST_SERVICES: 'containers' }, async () => false)).rejects.toThrow(/PG2CRM_TEST_SERVICES=containers but no Docker engine is reachable.*unset PG2CRM_TEST_SERVICES/);
    await expect(chooseServices({ PG2CRM_TEST_SERVICES: 'docker' }, async () => true)).rejects.toThrow(/PG2CRM_TEST_SERVICES=docker: use "containers" or "stack"/);
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
  it('PostgreSQL 15 with logical replication and the local stack settings, ready on the second "ready" line', () => {
    const c = inside(postgresContainer());
    expect(c.createOpts.Image).toBe('postgres:15');
    expect(c.createOpts.Cmd).toEqual([
      'postgres',
      '-c', 'wal_level=logical',
      '-c', 'max_replication_slots=50',
      '-c', 'max_wal_senders=50',
      '-c', 'max_connections=200',
      '-c', 'fsync=off',
      '-c', 'synchronous_commit=off',
      '-c', 'full_page_writes=off',
      '-c', 'shared_buffers=256MB',
    ]);
    expect(c.createOpts.Env).toEqual(['POSTGRES_USER=pg2crm', 'POSTGRES_PASSWORD=pg2crm', 'POSTGRES_DB=pg2crm']);
    expect(c.createOpts.ExposedPorts).toEqual({ '5432/tcp': {} });
    expect(c.waitStrategy.constructor.name).toBe('LogWaitStrategy');
    expect(c.waitStrategy.message).toEqual(/database system is ready to accept connections/);
    expect(c.waitStrategy.times).toBe(2);
    expect(c.startupTimeoutMs).toBe(180_000);
  });

  it('Apache Kafka (KRaft) of the local stack version, with its topic settings, advertised on the mapped port', () => {
    const k = new KafkaKraftContainer();
    const c = inside(k);
    expect(c.createOpts.Image).toBe(`apache/kafka:${KAFKA_VERSION}`);
    expect(c.environment).toMatchObject({
      CLUSTER_ID: KAFKA_CLUSTER_ID,
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: 'PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094',
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT',
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
    expect(c.createOpts.ExposedPorts).toEqual({ [`${KAFKA_PORT}/tcp`]: {} });
    // The container announces it waits, then waits for the start script copied in by containerStarted().
    expect(c.createOpts.Entrypoint).toEqual(['sh', '-c']);
    expect(c.createOpts.Cmd).toHaveLength(1);
    expect(c.createOpts.Cmd?.[0]).toBe(`echo '${KAFKA_WAITING_LINE}'; while [ ! -f ${KAFKA_START_SCRIPT} ]; do sleep 0.1; done; ${KAFKA_START_SCRIPT}`);
    expect(c.waitStrategy.constructor.name).toBe('LogWaitStrategy');
    expect(c.waitStrategy.message).toBe(KAFKA_WAITING_LINE);
    // Then ready when the broker is unfenced.
    const ready = k.readyWaitStrategy as WaitStrategy & Record<string, unknown>;
    expect(ready.constructor.name).toBe('LogWaitStrategy');
    expect(ready.message).toBe(KAFKA_READY_LOG);
    expect(KAFKA_READY_LOG.test('[2026-12-01 18:00:00,000] INFO [BrokerLifecycleManager id=1] The broker has been unfenced. Transitioning from RECOVERY to RUNNING. (kafka.server.BrokerLifecycleManager)')).toBe(true);
    expect(ready.getStartupTimeout()).toBe(180_000);
  });

  it('the Kafka start script advertises host:mapped port to clients and the container name to the broker listener', () => {
    expect(kafkaStartScript('localhost', 55123, 'c0ffee')).toBe(
      '#!/bin/bash\nexport KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://localhost:55123,BROKER://c0ffee:9093\nexec /etc/kafka/docker/run\n',
    );
  });

  it("maps properties to the apache/kafka image's env names (. -> _, _ -> __)", () => {
    expect(kafkaEnvName('offsets.topic.replication.factor')).toBe('KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR');
    expect(kafkaEnvName('listener.name.sasl_ssl.plain.sasl.jaas.config')).toBe('KAFKA_LISTENER_NAME_SASL__SSL_PLAIN_SASL_JAAS_CONFIG');
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
    const kafkaTs = readFileSync(new URL('../../../scripts/stack/kafka.ts', import.meta.url), 'utf8');
    for (const [k, v] of Object.entries(KAFKA_TOPIC_SETTINGS)) expect(kafkaTs).toContain(`'${k}=${v}'`);
  });
});
