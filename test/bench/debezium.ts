import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { cacheDir } from '../../scripts/stack/artifacts.ts';
import { run, waitUntil } from '../../scripts/stack/processes.ts';

/**
 * Debezium as a contender in `bench:source`: the way a user runs it without Docker, a Kafka
 * Connect standalone worker (Kafka 3.9.1) with Debezium's PostgreSQL connector and Apicurio
 * Registry's Avro converter as plugins in their own directories. The worker starts once per bench
 * (JVM start-up and plugin scanning are not timed); each run creates a connector over REST on a
 * fresh, pre-created slot and is timed from that request until Kafka holds every row.
 */
export const DEBEZIUM_VERSION = '3.6.1.Final';
export const CONNECT_VERSION = '3.9.1';
/**
 * Apicurio's converter matching the stack's registry (3.0.9) is on Maven Central only as a jar:
 * its parent POM (io.apicurio:apicurio-registry:3.0.9) is not served, so Maven cannot resolve its
 * dependencies, and no other 3.x converter jar is served. 2.6.13.Final resolves; it talks to the
 * same registry through the v2 API, which Apicurio 3.0.x still serves.
 */
export const APICURIO_CONVERTER_VERSION = '2.6.13.Final';
export const CONVERTER_NOTE =
  `value: Apicurio AvroConverter ${APICURIO_CONVERTER_VERSION} (auto-register) against the stack's Apicurio 3.0.9 registry via /apis/registry/v2 — ` +
  'the 3.x converter does not resolve from Maven Central (its parent POM 3.0.9 is not served, no other 3.x converter jar is); ' +
  "key: JsonConverter without schemas (pg2crm's key is the primary key as JSON too)";

const pom = new URL('./debezium/pom.xml', import.meta.url).pathname;

/** Producer and connector settings a user tuning for throughput would choose (Connect's own defaults in comments). */
export const PRODUCER_SETTINGS: Record<string, string> = {
  acks: 'all', // Connect's default for source tasks too
  'enable.idempotence': 'true',
  'max.in.flight.requests.per.connection': '5', // Connect's default is 1; idempotence keeps order at 5
  'batch.size': '262144', // default 16384
  'linger.ms': '10', // default 0 in Kafka 3.9
  'compression.type': 'none', // as pg2crm (broker on loopback: compression costs CPU and saves nothing here)
  'buffer.memory': '67108864',
};
export const CONNECTOR_SETTINGS: Record<string, string> = {
  'max.batch.size': '8192', // default 2048
  'max.queue.size': '32768', // default 8192
  'poll.interval.ms': '50', // default 500
  'snapshot.mode': 'no_data',
  // Logical decoding messages other sessions write into the same WAL (pg2crm's heartbeats, say)
  // would go to `<prefix>.message`, a topic this stack does not auto-create: the producer would
  // block on it for ever. A user syncing tables filters them too.
  'message.prefix.exclude.list': '.*',
  'plugin.name': 'pgoutput',
};

/** Directory with runtime/ (the worker's classpath) and plugins/ (plugin.path), resolved by mvn into the cache. */
export async function debeziumJars(): Promise<string> {
  const target = join(cacheDir(), `debezium-${DEBEZIUM_VERSION}-connect-${CONNECT_VERSION}-apicurio-${APICURIO_CONVERTER_VERSION}`);
  if (existsSync(target)) return target;
  const tmp = `${target}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const parts: [profile: string, dir: string][] = [
    ['runtime', 'runtime'],
    ['debezium', 'plugins/debezium-connector-postgres'],
    ['apicurio', 'plugins/apicurio-registry-converter'],
  ];
  for (const [profile, dir] of parts) {
    process.stderr.write(`fetching the Debezium contender's ${profile} jars with mvn...\n`);
    await run('mvn', [
      '-q',
      '-B',
      '-f',
      pom,
      '-P',
      profile,
      'dependency:copy-dependencies',
      '-DincludeScope=runtime',
      `-DoutputDirectory=${join(tmp, dir)}`,
      // A plugin must not bring its own Kafka classes: the worker's are the ones it runs with.
      ...(profile === 'runtime' ? [] : ['-DexcludeGroupIds=org.apache.kafka']),
    ]);
  }
  renameSync(tmp, target);
  return target;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** utime + stime of a live process, in seconds (Linux /proc). */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is field 3 (state)
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** cutime + cstime of this process: CPU of the children it has waited for, in seconds. */
export function childrenCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS;
}

// sysconf(_SC_CLK_TCK): 100 on every Linux the stack runs on.
const CLOCK_TICKS = 100;

export interface PgTarget {
  host: string;
  port: string;
  user: string;
  password: string;
  database: string;
}

export class ConnectWorker {
  private readonly child: ChildProcess;
  readonly pid: number;
  private readonly restUrl: string;
  readonly dir: string;

  private constructor(child: ChildProcess, pid: number, restUrl: string, dir: string) {
    this.child = child;
    this.pid = pid;
    this.restUrl = restUrl;
    this.dir = dir;
  }

  static async start(opts: { brokers: string; registryUrl: string; workDir: string }): Promise<ConnectWorker> {
    const jars = await debeziumJars();
    rmSync(opts.workDir, { recursive: true, force: true });
    mkdirSync(opts.workDir, { recursive: true });
    const port = await freePort();
    // The registry's native API (v2) beside the Confluent-compatible one the stack exports.
    const apicurioApi = opts.registryUrl.replace(/\/apis\/ccompat\/v\d+$/, '/apis/registry/v2');
    const worker = [
      `bootstrap.servers=${opts.brokers}`,
      `listeners=http://127.0.0.1:${port}`,
      `plugin.path=${join(jars, 'plugins')}`,
      `offset.storage.file.filename=${join(opts.workDir, 'offsets.dat')}`,
      'offset.flush.interval.ms=10000',
      'key.converter=org.apache.kafka.connect.json.JsonConverter',
      'key.converter.schemas.enable=false',
      'value.converter=io.apicurio.registry.utils.converter.AvroConverter',
      `value.converter.apicurio.registry.url=${apicurioApi}`,
      'value.converter.apicurio.registry.auto-register=true',
      'value.converter.apicurio.registry.find-latest=true',
      ...Object.entries(PRODUCER_SETTINGS).map(([k, v]) => `producer.${k}=${v}`),
    ];
    writeFileSync(join(opts.workDir, 'worker.properties'), `${worker.join('\n')}\n`);
    writeFileSync(
      join(opts.workDir, 'log4j.properties'),
      [
        'log4j.rootLogger=INFO, file',
        'log4j.appender.file=org.apache.log4j.FileAppender',
        `log4j.appender.file.File=${join(opts.workDir, 'connect.log')}`,
        'log4j.appender.file.layout=org.apache.log4j.PatternLayout',
        'log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n',
        'log4j.logger.org.reflections=ERROR',
      ].join('\n'),
    );
    const out = openSync(join(opts.workDir, 'stdout.log'), 'a');
    const child = spawn(
      'java',
      [
        '-Xms512m',
        '-Xmx2g', // connect-standalone.sh's heap
        '-XX:+UseG1GC',
        `-Dlog4j.configuration=file:${join(opts.workDir, 'log4j.properties')}`,
        '-cp',
        `${join(jars, 'runtime')}/*`,
        'org.apache.kafka.connect.cli.ConnectStandalone',
        join(opts.workDir, 'worker.properties'),
      ],
      { stdio: ['ignore', out, out] },
    );
    if (child.pid === undefined) throw new Error('could not start java for the Kafka Connect worker');
    // A bench interrupted or killed must not leave the JVM behind.
    process.once('exit', () => child.kill('SIGKILL'));
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        child.kill('SIGKILL');
        process.exit(130);
      });
    }
    const w = new ConnectWorker(child, child.pid, `http://127.0.0.1:${port}`, opts.workDir);
    await waitUntil(
      'Kafka Connect worker',
      async () => {
        if (child.exitCode !== null) throw new Error(`the worker exited ${child.exitCode}`);
        const res = await fetch(`${w.restUrl}/connector-plugins`);
        const body = (await res.json()) as { class: string }[];
        return res.ok && body.some((p) => p.class === 'io.debezium.connector.postgresql.PostgresConnector');
      },
      180_000,
      join(opts.workDir, 'connect.log'),
    );
    return w;
  }

  cpuSeconds(): number {
    return processCpuSeconds(this.pid);
  }

  async createConnector(
    name: string,
    pg: PgTarget,
    s: { schema: string; slot: string; publication: string; topicPrefix: string },
  ): Promise<void> {
    const config = {
      'connector.class': 'io.debezium.connector.postgresql.PostgresConnector',
      'tasks.max': '1',
      'database.hostname': pg.host,
      'database.port': pg.port,
      'database.user': pg.user,
      'database.password': pg.password,
      'database.dbname': pg.database,
      'topic.prefix': s.topicPrefix,
      'table.include.list': `${s.schema}.t`,
      'slot.name': s.slot,
      'publication.name': s.publication,
      'publication.autocreate.mode': 'disabled',
      ...CONNECTOR_SETTINGS,
    };
    const res = await fetch(`${this.restUrl}/connectors`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name, config }),
    });
    if (!res.ok) throw new Error(`creating Debezium connector ${name}: ${res.status} ${await res.text()}`);
  }

  /** Throws when the connector or its task failed (the bench would otherwise wait for rows forever). */
  async assertRunning(name: string): Promise<void> {
    const res = await fetch(`${this.restUrl}/connectors/${name}/status`);
    if (!res.ok) return;
    const status = (await res.json()) as { connector: { state: string; trace?: string }; tasks: { state: string; trace?: string }[] };
    const failed = [status.connector, ...status.tasks].find((x) => x.state === 'FAILED');
    if (failed) throw new Error(`Debezium connector ${name} failed: ${failed.trace?.slice(0, 2000)}`);
  }

  async deleteConnector(name: string): Promise<void> {
    await fetch(`${this.restUrl}/connectors/${name}`, { method: 'DELETE' });
  }

  /** Stops the worker; its directory (configs, connect.log) is kept when `keepDir`, e.g. after a failure. */
  async stop(keepDir = false): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      this.child.kill('SIGKILL');
    }
    if (keepDir) process.stderr.write(`Kafka Connect worker's files kept in ${this.dir}\n`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}
