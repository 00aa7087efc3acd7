import type { TestProject } from 'vitest/node';
import { envSetting } from '../../src/config.ts';
import { type StackEnv, stackDown, stackRunning, stackUp } from '../../scripts/stack.ts';
import { kafkaReady, kafkaSaslSslReady } from '../../scripts/stack/kafka.ts';
import { registryReady } from '../../scripts/stack/registry.ts';
import { chooseServices, dockerEngineReachable, startContainerServices } from '../helpers/containers.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackEnv;
  }
}

/**
 * Real services for the integration tests, once per run: addresses from the environment win;
 * else, where a Docker engine is reachable, containers started here with testcontainers
 * (test/helpers/containers.ts) and removed when the run ends; else the local stack: one already
 * running in `.stack/` is used (and left running), or one is started here and stopped at the end.
 * PG2CRM_TEST_SERVICES=stack|containers forces one of the last two.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // A test-only switch (PG2CRM_TEST_SERVICES) is read here rather than through config.ts's envSetting.
  const choice = await chooseServices(process.env, dockerEngineReachable);
  let env: StackEnv;
  let teardown = async (): Promise<void> => undefined;
  if (choice.kind === 'env') {
    env = {
      PG_URL: envSetting('PG_URL') ?? '',
      KAFKA_BROKERS: envSetting('KAFKA_BROKERS') ?? '',
      SCHEMA_REGISTRY_URL: envSetting('SCHEMA_REGISTRY_URL') ?? '',
    };
    console.log(`integration tests use services from the environment (${choice.reason})`);
  } else if (choice.kind === 'containers') {
    console.log(`integration tests start PostgreSQL, Kafka and the registry in containers (${choice.reason})`);
    const services = await startContainerServices();
    teardown = services.stop;
    const e = services.env;
    try {
      // The same round trips as the local stack's readiness: a topic produced to and consumed
      // from, an Avro schema registered and used, and an admin call over SASL_SSL (SCRAM-SHA-512,
      // the run's CA), which also shows the SCRAM users were added.
      await Promise.all([
        kafkaReady(e.KAFKA_BROKERS),
        registryReady(e.SCHEMA_REGISTRY_URL),
        kafkaSaslSslReady(e.KAFKA_SASL_SSL_BROKERS, e.STACK_CA_FILE, { username: e.KAFKA_SASL_USERNAME, password: e.KAFKA_SASL_PASSWORD }),
      ]);
    } catch (err) {
      await services.stop();
      throw err;
    }
    env = services.env;
  } else {
    const startedHere = !(await stackRunning());
    env = await stackUp();
    if (startedHere) teardown = () => stackDown();
    console.log(`integration tests use the local stack${startedHere ? ' (started for this run)' : ''} (${choice.reason})`);
  }
  console.log(
    `  PostgreSQL ${env.PG_URL.replace(/:[^:@/]*@/, ':***@')}\n  Kafka ${env.KAFKA_BROKERS}\n  schema registry ${env.SCHEMA_REGISTRY_URL}`,
  );
  if (env.KAFKA_SASL_SSL_BROKERS) console.log(`  Kafka SASL_SSL ${env.KAFKA_SASL_SSL_BROKERS}, CA ${env.STACK_CA_FILE}`);
  project.provide('stack', env);
  return teardown;
}
