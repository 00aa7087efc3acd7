import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { envSetting } from '../src/config.ts';
import { kafkaReady, startKafka } from './stack/kafka.ts';
import { postgresReady, postgresUrl, startPostgres, stopPostgres } from './stack/postgres.ts';
import { isAlive, portOpen, stopProcess } from './stack/processes.ts';
import { registryReady, registryUrl, startRegistry } from './stack/registry.ts';

/**
 * `npm run stack -- up|down|env|status`: real PostgreSQL 15, Apache Kafka (KRaft) and Apicurio
 * Registry on loopback, non-default ports, in one directory per stack (default `.stack/`).
 * `up` is idempotent and returns only when each service passed a real round trip.
 */
export interface StackEnv {
  PG_URL: string;
  KAFKA_BROKERS: string;
  SCHEMA_REGISTRY_URL: string;
}

interface StackState {
  kafkaPid?: number;
  registryPid?: number;
}

const PORTS = { postgres: 54329, kafka: 39092, controller: 39093, registry: 38081 };

export function stackDir(): string {
  return envSetting('PG2CRM_STACK_DIR') ?? new URL('../.stack', import.meta.url).pathname;
}

function stackEnv(): StackEnv {
  return {
    PG_URL: postgresUrl(PORTS.postgres),
    KAFKA_BROKERS: `127.0.0.1:${PORTS.kafka}`,
    SCHEMA_REGISTRY_URL: registryUrl(PORTS.registry),
  };
}

function readState(): StackState | undefined {
  const file = join(stackDir(), 'state.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as StackState) : undefined;
}

function writeState(state: StackState): void {
  writeFileSync(join(stackDir(), 'state.json'), JSON.stringify(state, null, 2));
}

async function ready(env: StackEnv): Promise<void> {
  await Promise.all([postgresReady(PORTS.postgres), kafkaReady(env.KAFKA_BROKERS), registryReady(env.SCHEMA_REGISTRY_URL)]);
}

/** The running stack of this directory, if every service is alive. */
export async function stackRunning(): Promise<StackEnv | undefined> {
  const state = readState();
  if (!state || !isAlive(state.kafkaPid) || !isAlive(state.registryPid) || !(await portOpen(PORTS.postgres))) return undefined;
  return stackEnv();
}

export async function stackUp(): Promise<StackEnv> {
  const dir = stackDir();
  const env = stackEnv();
  if (await stackRunning()) {
    await ready(env);
    return env;
  }
  if (readState()) await stackDown(); // half-up from an earlier run: start clean
  for (const [name, port] of Object.entries(PORTS)) {
    if (await portOpen(port)) {
      throw new Error(`port ${port} (${name}) is already in use by another process; stop it or run \`npm run stack -- down\``);
    }
  }
  mkdirSync(dir, { recursive: true });
  const started = Date.now();
  const state: StackState = {};
  writeState(state);
  await Promise.all([
    startPostgres(join(dir, 'postgres'), PORTS.postgres),
    startKafka(join(dir, 'kafka'), PORTS.kafka, PORTS.controller).then((pid) => {
      state.kafkaPid = pid;
      writeState(state);
    }),
    (async () => {
      mkdirSync(join(dir, 'registry'), { recursive: true });
      state.registryPid = await startRegistry(join(dir, 'registry'), PORTS.registry);
      writeState(state);
    })(),
  ]);
  await ready(env);
  process.stderr.write(`stack up in ${((Date.now() - started) / 1000).toFixed(1)} s (${dir})\n`);
  return env;
}

export async function stackDown(): Promise<void> {
  const dir = stackDir();
  const state = readState();
  await Promise.all([stopProcess(state?.kafkaPid), stopProcess(state?.registryPid), stopPostgres(join(dir, 'postgres'))]);
  rmSync(dir, { recursive: true, force: true });
}

function printEnv(env: StackEnv): void {
  for (const [k, v] of Object.entries(env)) process.stdout.write(`${k}=${v}\n`);
}

async function main(command: string | undefined): Promise<number> {
  switch (command) {
    case 'up':
      printEnv(await stackUp());
      return 0;
    case 'down':
      await stackDown();
      process.stderr.write('stack down\n');
      return 0;
    case 'env': {
      const env = await stackRunning();
      if (!env) {
        process.stderr.write('the stack is not up; run `npm run stack -- up`\n');
        return 1;
      }
      printEnv(env);
      return 0;
    }
    case 'status': {
      const state = readState();
      process.stdout.write(`postgres  ${(await portOpen(PORTS.postgres)) ? 'up' : 'down'}  127.0.0.1:${PORTS.postgres}\n`);
      process.stdout.write(`kafka     ${isAlive(state?.kafkaPid) ? 'up' : 'down'}  127.0.0.1:${PORTS.kafka}\n`);
      process.stdout.write(`registry  ${isAlive(state?.registryPid) ? 'up' : 'down'}  127.0.0.1:${PORTS.registry}\n`);
      return 0;
    }
    default:
      process.stderr.write('usage: npm run stack -- up|down|env|status\n');
      return 2;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv[2]).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`stack: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
