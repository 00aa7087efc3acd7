import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { envSetting } from '../src/config.ts';
import { dropKafkajsTimerWarning } from '../src/kafka/timer-warning.ts';
import { stackCerts } from './stack/certs.ts';
import {
  addScramUsers,
  KAFKA_SASL_USER,
  kafkaHasSaslSsl,
  kafkaListensSaslSsl,
  kafkaReady,
  kafkaSaslSslReady,
  startKafka,
} from './stack/kafka.ts';
import {
  ensurePostgresSsl,
  postgresHasSsl,
  TLS_ONLY_ROLE,
  postgresReady,
  postgresUrl,
  restartPostgres,
  startPostgres,
  stopPostgres,
} from './stack/postgres.ts';
import { isAlive, portOpen, stopProcess } from './stack/processes.ts';
import { registryReady, registryUrl, startRegistry } from './stack/registry.ts';

/**
 * `npm run stack -- up|down|env|status`: real PostgreSQL 15, Apache Kafka (KRaft) and Apicurio
 * Registry on loopback, non-default ports, in one directory per stack (default `.stack/`;
 * PG2CRM_STACK_DIR and PG2CRM_STACK_PORT_BASE select another one, ports base..base+4).
 * `up` is idempotent and returns only when each service passed a real round trip.
 *
 * Transport security (issue 12 §1): the broker also has a SASL_SSL listener (TLS with the stack
 * CA, SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 for one user) and PostgreSQL runs with ssl=on;
 * the plaintext addresses stay as they are. A stack made before that has neither: `stackUp`
 * reports it, and `stackUp({ upgrade: true })` (`npm run stack -- up`) adds both (Kafka is
 * restarted once on its data; PostgreSQL only reloads its configuration).
 */
export interface StackEnv {
  PG_URL: string;
  KAFKA_BROKERS: string;
  SCHEMA_REGISTRY_URL: string;
  /** The SASL_SSL listener (host:port); absent on a stack made before it existed. */
  KAFKA_SASL_SSL_BROKERS?: string;
  KAFKA_SASL_USERNAME?: string;
  KAFKA_SASL_PASSWORD?: string;
  /** PEM file of the CA that signed the certificates of Kafka's SASL_SSL listener and PostgreSQL (ssl=on). */
  STACK_CA_FILE?: string;
  /** PostgreSQL as a role the server lets in over TLS only (pg_hba hostnossl ... reject). */
  PG_TLS_ONLY_URL?: string;
}

interface StackState {
  kafkaPid?: number;
  registryPid?: number;
}

export interface StackPorts {
  postgres: number;
  kafka: number;
  controller: number;
  registry: number;
  /** Kafka's SASL_SSL listener. */
  kafkaSaslSsl: number;
}

/**
 * Where a stack lives. The default (`.stack/`, ports 54329/39092/39093/38081) is the one tests
 * and demos share; a second stack (e.g. the chaos suite, which kills its services) takes its own
 * directory and port base so it never touches the shared one.
 */
export interface StackOptions {
  dir?: string;
  ports?: StackPorts;
  /**
   * Keep the registry's schemas in an H2 file in the stack directory instead of memory, so a
   * registry restart keeps every schema id (as a production registry does).
   */
  persistentRegistry?: boolean;
  /**
   * A running stack made before the SASL_SSL listener and PostgreSQL TLS existed is brought up
   * to date (Kafka restarted once). Off, such a stack is used as it is and its env lacks the
   * secure entries, so that a test run never restarts a broker other runs are using.
   */
  upgrade?: boolean;
}

const DEFAULT_PORTS: StackPorts = { postgres: 54329, kafka: 39092, controller: 39093, registry: 38081, kafkaSaslSsl: 39094 };

/** Ports from a base (`base`, `base+1`, ...); without one, PG2CRM_STACK_PORT_BASE, else the defaults. */
export function stackPorts(base?: number): StackPorts {
  const fromEnv = envSetting('PG2CRM_STACK_PORT_BASE');
  const b = base ?? (fromEnv ? Number(fromEnv) : undefined);
  if (b === undefined) return { ...DEFAULT_PORTS };
  if (!Number.isInteger(b) || b < 1024 || b > 65_000) throw new Error(`stack port base ${b}: use an integer from 1024 to 65000`);
  return { postgres: b, kafka: b + 1, controller: b + 2, registry: b + 3, kafkaSaslSsl: b + 4 };
}

export function stackDir(opts: StackOptions = {}): string {
  return opts.dir ?? envSetting('PG2CRM_STACK_DIR') ?? new URL('../.stack', import.meta.url).pathname;
}

function portsOf(opts: StackOptions): StackPorts {
  return opts.ports ?? stackPorts();
}

function stackEnv(opts: StackOptions = {}): StackEnv {
  const ports = portsOf(opts);
  return {
    PG_URL: postgresUrl(ports.postgres),
    KAFKA_BROKERS: `127.0.0.1:${ports.kafka}`,
    SCHEMA_REGISTRY_URL: registryUrl(ports.registry),
  };
}

/** The secure entries, when this stack has them (Kafka's SASL_SSL listener and PostgreSQL ssl=on). */
async function secureEnv(opts: StackOptions): Promise<Partial<StackEnv>> {
  const dir = stackDir(opts);
  const caFile = join(dir, 'certs', 'ca.pem');
  if (!existsSync(caFile) || !kafkaHasSaslSsl(join(dir, 'kafka')) || !(await postgresHasSsl(portsOf(opts).postgres))) return {};
  return {
    KAFKA_SASL_SSL_BROKERS: `127.0.0.1:${portsOf(opts).kafkaSaslSsl}`,
    KAFKA_SASL_USERNAME: KAFKA_SASL_USER.username,
    KAFKA_SASL_PASSWORD: KAFKA_SASL_USER.password,
    STACK_CA_FILE: caFile,
    PG_TLS_ONLY_URL: `postgresql://${TLS_ONLY_ROLE.username}:${TLS_ONLY_ROLE.password}@127.0.0.1:${portsOf(opts).postgres}/pg2crm`,
  };
}

async function saslSslReady(env: StackEnv): Promise<void> {
  if (env.KAFKA_SASL_SSL_BROKERS && env.STACK_CA_FILE && env.KAFKA_SASL_USERNAME && env.KAFKA_SASL_PASSWORD) {
    await kafkaSaslSslReady(env.KAFKA_SASL_SSL_BROKERS, env.STACK_CA_FILE, {
      username: env.KAFKA_SASL_USERNAME,
      password: env.KAFKA_SASL_PASSWORD,
    });
  }
}

function readState(opts: StackOptions = {}): StackState | undefined {
  const file = join(stackDir(opts), 'state.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as StackState) : undefined;
}

function writeState(state: StackState, opts: StackOptions = {}): void {
  writeFileSync(join(stackDir(opts), 'state.json'), JSON.stringify(state, null, 2));
}

async function ready(env: StackEnv, opts: StackOptions = {}): Promise<void> {
  await Promise.all([postgresReady(portsOf(opts).postgres), kafkaReady(env.KAFKA_BROKERS), registryReady(env.SCHEMA_REGISTRY_URL)]);
}

/** The running stack of this directory, if every service is alive. */
export async function stackRunning(opts: StackOptions = {}): Promise<StackEnv | undefined> {
  const state = readState(opts);
  if (!state || !isAlive(state.kafkaPid) || !isAlive(state.registryPid) || !(await portOpen(portsOf(opts).postgres))) return undefined;
  return { ...stackEnv(opts), ...(await secureEnv(opts)) };
}

async function launchKafka(opts: StackOptions): Promise<number> {
  const ports = portsOf(opts);
  const certs = await stackCerts(stackDir(opts));
  return startKafka(join(stackDir(opts), 'kafka'), ports.kafka, ports.controller, {
    port: ports.kafkaSaslSsl,
    keystore: certs.keystore,
    keystorePassword: certs.keystorePassword,
    ...KAFKA_SASL_USER,
  });
}

/**
 * Brings a running stack made before issue 12 up to date: PostgreSQL ssl=on (a reload), the
 * broker restarted with its SASL_SSL listener and the SCRAM users added.
 */
async function upgradeStack(opts: StackOptions): Promise<void> {
  const dir = stackDir(opts);
  const ports = portsOf(opts);
  const certs = await stackCerts(dir);
  await ensurePostgresSsl(join(dir, 'postgres'), ports.postgres, certs.server);
  const kafkaDir = join(dir, 'kafka');
  if (!kafkaHasSaslSsl(kafkaDir)) {
    if (!kafkaListensSaslSsl(kafkaDir)) {
      if (await portOpen(ports.kafkaSaslSsl)) {
        throw new Error(
          `port ${ports.kafkaSaslSsl} (Kafka SASL_SSL) is already in use by another process; stop it, or \`npm run stack -- down\` and up again with another PG2CRM_STACK_PORT_BASE`,
        );
      }
      process.stderr.write('stack: restarting Kafka to add its SASL_SSL listener\n');
      const state = readState(opts) ?? {};
      await stopProcess(state.kafkaPid, 30_000, 'SIGTERM');
      state.kafkaPid = await launchKafka(opts);
      writeState(state, opts);
      await kafkaReady(stackEnv(opts).KAFKA_BROKERS);
    }
    await addScramUsers(kafkaDir, ports.kafka, {
      port: ports.kafkaSaslSsl,
      keystore: certs.keystore,
      keystorePassword: certs.keystorePassword,
      ...KAFKA_SASL_USER,
    });
  }
}

function launchRegistry(opts: StackOptions): Promise<number> {
  const dir = join(stackDir(opts), 'registry');
  mkdirSync(dir, { recursive: true });
  return startRegistry(dir, portsOf(opts).registry, opts.persistentRegistry ? { dataDir: dir } : {});
}

export async function stackUp(opts: StackOptions = {}): Promise<StackEnv> {
  const dir = stackDir(opts);
  const running = await stackRunning(opts);
  if (running) {
    // Without `upgrade` a stale stack is used as it is, silently (demos and most tests do not need
    // TLS); `npm run stack -- env` and the transport-security test say how to upgrade it.
    if (!running.KAFKA_SASL_SSL_BROKERS && opts.upgrade) await upgradeStack(opts);
    const env = { ...stackEnv(opts), ...(await secureEnv(opts)) };
    await ready(env, opts);
    await saslSslReady(env);
    return env;
  }
  if (readState(opts)) await stackDown(opts); // half-up from an earlier run: start clean
  for (const [name, port] of Object.entries(portsOf(opts))) {
    if (await portOpen(port)) {
      throw new Error(`port ${port} (${name}) is already in use by another process; stop it or run \`npm run stack -- down\``);
    }
  }
  mkdirSync(dir, { recursive: true });
  const started = Date.now();
  await stackCerts(dir); // before the services that use them start in parallel
  const state: StackState = {};
  writeState(state, opts);
  await Promise.all([
    startPostgres(join(dir, 'postgres'), portsOf(opts).postgres).then(async () =>
      ensurePostgresSsl(join(dir, 'postgres'), portsOf(opts).postgres, (await stackCerts(dir)).server),
    ),
    launchKafka(opts).then((pid) => {
      state.kafkaPid = pid;
      writeState(state, opts);
    }),
    launchRegistry(opts).then((pid) => {
      state.registryPid = pid;
      writeState(state, opts);
    }),
  ]);
  const env = { ...stackEnv(opts), ...(await secureEnv(opts)) };
  await ready(env, opts);
  await saslSslReady(env);
  process.stderr.write(`stack up in ${((Date.now() - started) / 1000).toFixed(1)} s (${dir})\n`);
  return env;
}

export async function stackDown(opts: StackOptions = {}): Promise<void> {
  const dir = stackDir(opts);
  const state = readState(opts);
  await Promise.all([stopProcess(state?.kafkaPid), stopProcess(state?.registryPid), stopPostgres(join(dir, 'postgres'))]);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Stopping and starting one service of a running stack, for fault injection: a killed broker or
 * registry is started again on the same data directory and port, PostgreSQL restarts in place.
 */
export interface StackServices {
  /** Stops the broker (SIGKILL by default: a crash, no controlled shutdown). */
  stopKafka(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Starts the broker again and waits for a produce/consume round trip. */
  startKafka(): Promise<void>;
  stopRegistry(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  startRegistry(): Promise<void>;
  /** `pg_ctl restart -m fast|immediate`, returning once PostgreSQL accepts connections again. */
  restartPostgres(mode: 'fast' | 'immediate'): Promise<void>;
}

export function stackServices(opts: StackOptions = {}): StackServices {
  const env = stackEnv(opts);
  const stop = async (which: 'kafkaPid' | 'registryPid', signal: 'SIGKILL' | 'SIGTERM'): Promise<void> => {
    const state = readState(opts) ?? {};
    await stopProcess(state[which], 15_000, signal);
    delete state[which];
    writeState(state, opts);
  };
  const record = (which: 'kafkaPid' | 'registryPid', pid: number): void => {
    writeState({ ...readState(opts), [which]: pid }, opts);
  };
  return {
    stopKafka: (signal = 'SIGKILL') => stop('kafkaPid', signal),
    async startKafka() {
      record('kafkaPid', await launchKafka(opts));
      await kafkaReady(env.KAFKA_BROKERS);
    },
    stopRegistry: (signal = 'SIGTERM') => stop('registryPid', signal),
    async startRegistry() {
      record('registryPid', await launchRegistry(opts));
      await registryReady(env.SCHEMA_REGISTRY_URL);
    },
    async restartPostgres(mode) {
      await restartPostgres(join(stackDir(opts), 'postgres'), mode);
      await postgresReady(portsOf(opts).postgres);
    },
  };
}

function printEnv(env: StackEnv): void {
  for (const [k, v] of Object.entries(env)) process.stdout.write(`${k}=${v}\n`);
}

async function main(command: string | undefined): Promise<number> {
  // The readiness checks' kafkajs clients would print Node's TimeoutNegativeWarning (see timer-warning.ts).
  dropKafkajsTimerWarning();
  switch (command) {
    case 'up':
      printEnv(await stackUp({ upgrade: true }));
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
      if (!env.KAFKA_SASL_SSL_BROKERS) {
        process.stderr.write(
          'stack: made before the Kafka SASL_SSL listener and PostgreSQL TLS existed; `npm run stack -- up` adds them (it restarts Kafka once)\n',
        );
      }
      return 0;
    }
    case 'status': {
      const state = readState();
      const PORTS = stackPorts();
      process.stdout.write(`postgres  ${(await portOpen(PORTS.postgres)) ? 'up' : 'down'}  127.0.0.1:${PORTS.postgres}\n`);
      process.stdout.write(`kafka     ${isAlive(state?.kafkaPid) ? 'up' : 'down'}  127.0.0.1:${PORTS.kafka}\n`);
      process.stdout.write(`registry  ${isAlive(state?.registryPid) ? 'up' : 'down'}  127.0.0.1:${PORTS.registry}\n`);
      process.stdout.write(
        `kafka     ${kafkaHasSaslSsl(join(stackDir(), 'kafka')) ? 'configured' : 'absent'}  127.0.0.1:${PORTS.kafkaSaslSsl} (SASL_SSL)\n`,
      );
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
