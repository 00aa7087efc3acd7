import type { TestProject } from 'vitest/node';
import { envSetting } from '../../src/config.ts';
import { type StackEnv, stackDown, stackRunning, stackUp } from '../../scripts/stack.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackEnv;
  }
}

/**
 * Real services for the integration tests, once per run: addresses from the environment win;
 * else a stack already running in `.stack/` is used (and left running); else one is started
 * here and stopped when the run ends.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const fromEnv = { PG_URL: envSetting('PG_URL'), KAFKA_BROKERS: envSetting('KAFKA_BROKERS'), SCHEMA_REGISTRY_URL: envSetting('SCHEMA_REGISTRY_URL') };
  let env: StackEnv;
  let startedHere = false;
  if (fromEnv.PG_URL && fromEnv.KAFKA_BROKERS && fromEnv.SCHEMA_REGISTRY_URL) {
    env = fromEnv as StackEnv;
    console.log('integration tests use services from the environment');
  } else {
    const running = await stackRunning();
    if (running) env = await stackUp();
    else {
      env = await stackUp();
      startedHere = true;
    }
    console.log(`integration tests use the local stack${startedHere ? ' (started for this run)' : ''}`);
  }
  console.log(`  PostgreSQL ${env.PG_URL.replace(/:[^:@/]*@/, ':***@')}\n  Kafka ${env.KAFKA_BROKERS}\n  schema registry ${env.SCHEMA_REGISTRY_URL}`);
  project.provide('stack', env);
  return async () => {
    if (startedHere) await stackDown();
  };
}
