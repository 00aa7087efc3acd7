import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { envSetting } from '../../src/config.ts';
import { run } from './processes.ts';

/**
 * Kafka and the schema registry come from Maven Central through `mvn` (which knows its
 * repository and proxy settings), into a cache kept between runs. Downloads land in a temp dir
 * renamed into place at the end, so an interrupted download is never taken for a complete one.
 */
export const KAFKA_VERSION = '3.9.1';
// Apicurio 3.0.x runs on Java 17 (3.1+ needs Java 21, which these machines do not ship by default).
export const APICURIO_VERSION = '3.0.9';

const pomDir = new URL('./', import.meta.url).pathname;

export function cacheDir(): string {
  return envSetting('PG2CRM_CACHE_DIR') ?? join(homedir(), '.cache', 'pg2crm');
}

async function intoPlace(target: string, fill: (tmp: string) => Promise<void>): Promise<string> {
  if (existsSync(target)) return target;
  const tmp = `${target}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await fill(tmp);
  renameSync(tmp, target);
  return target;
}

/** Directory of the Kafka broker's jars (classpath `<dir>/*`). */
export function kafkaJars(): Promise<string> {
  return intoPlace(join(cacheDir(), `kafka-${KAFKA_VERSION}`), async (tmp) => {
    process.stderr.write(`fetching Apache Kafka ${KAFKA_VERSION} jars with mvn...\n`);
    await run('mvn', [
      '-q',
      '-B',
      '-f',
      join(pomDir, 'kafka-pom.xml'),
      'dependency:copy-dependencies',
      '-DincludeScope=runtime',
      `-DoutputDirectory=${tmp}`,
    ]);
  });
}

/** Directory of the unpacked Apicurio Registry (Quarkus runner jar + lib/). */
export function apicurioHome(): Promise<string> {
  return intoPlace(join(cacheDir(), `apicurio-registry-${APICURIO_VERSION}`), async (tmp) => {
    process.stderr.write(`fetching Apicurio Registry ${APICURIO_VERSION} with mvn...\n`);
    const artifact = `io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all`;
    await run('mvn', ['-q', '-B', 'dependency:copy', `-Dartifact=${artifact}`, `-DoutputDirectory=${tmp}`]);
    const archive = readdirSync(tmp).find((f) => f.endsWith('.tar.gz'));
    if (!archive) throw new Error(`mvn did not deliver ${artifact}`);
    await run('tar', ['-xzf', join(tmp, archive), '-C', tmp]);
    rmSync(join(tmp, archive));
  });
}

export function apicurioRunner(home: string): string {
  const jar = readdirSync(home).find((f) => f.endsWith('-runner.jar') || f === 'quarkus-run.jar');
  if (!jar) throw new Error(`no runner jar in ${home}; delete the directory to fetch it again`);
  return join(home, jar);
}
