import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { run, waitUntil } from './processes.ts';

/**
 * PostgreSQL 15 from the installed server binaries, in `<stack>/postgres`, with logical
 * replication on. As root the server must run as the `postgres` user (it refuses root).
 * fsync and synchronous_commit are off: this cluster is for tests and demos only.
 */
const BIN = '/usr/lib/postgresql/15/bin';
const isRoot = process.getuid?.() === 0;

function asPostgres(cmd: string, args: string[]): Promise<string> {
  return isRoot ? run('runuser', ['-u', 'postgres', '--', join(BIN, cmd), ...args]) : run(join(BIN, cmd), args);
}

export function postgresUrl(port: number): string {
  return `postgresql://pg2crm:pg2crm@127.0.0.1:${port}/pg2crm`;
}

export async function startPostgres(dir: string, port: number, opts: { walLevel?: 'logical' | 'replica' } = {}): Promise<void> {
  if (!existsSync(join(BIN, 'postgres'))) {
    throw new Error(`PostgreSQL 15 server binaries not found in ${BIN}; install them: apt-get install postgresql-15`);
  }
  const data = join(dir, 'data');
  const fresh = !existsSync(join(data, 'PG_VERSION'));
  mkdirSync(dir, { recursive: true });
  if (isRoot) {
    chownSync(dir, ...(await postgresIds()));
    letPostgresThrough(dirname(dir));
  }
  if (fresh) {
    await asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
    writeFileSync(
      join(data, 'postgresql.auto.conf'),
      [
        `port = ${port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        `wal_level = ${opts.walLevel ?? 'logical'}`,
        'max_replication_slots = 50',
        'max_wal_senders = 50',
        'max_connections = 200',
        'fsync = off',
        'synchronous_commit = off',
        'full_page_writes = off',
        'shared_buffers = 256MB',
        '',
      ].join('\n'),
    );
    if (isRoot) chownSync(join(data, 'postgresql.auto.conf'), ...(await postgresIds()));
  }
  await asPostgres('pg_ctl', ['-D', data, '-l', join(dir, 'postgres.log'), '-w', '-t', '60', 'start']);
  if (fresh) {
    const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query("CREATE ROLE pg2crm LOGIN SUPERUSER REPLICATION PASSWORD 'pg2crm'");
    await admin.query('CREATE DATABASE pg2crm OWNER pg2crm');
    await admin.end();
  }
}

/**
 * ssl=on with the stack CA's server certificate (issue 12 §1). Plaintext connections keep
 * working (pg_hba `host` lines match both), so only clients that ask for TLS use it. Done with
 * ALTER SYSTEM + reload, which needs no restart: a stack made before TLS existed gets it too.
 * PostgreSQL refuses a key file others may read, hence the copy owned by the server's user.
 */
export async function ensurePostgresSsl(dir: string, port: number, server: { cert: string; key: string }): Promise<void> {
  await switchSslOn(dir, port, server);
  await ensureTlsOnlyRole(dir, port);
}

/**
 * A role PostgreSQL lets in over TLS only (pg_hba `hostnossl ... reject` ahead of the trust
 * lines), so a test connecting as it proves the server requires TLS of it, on query and
 * replication connections alike.
 */
export const TLS_ONLY_ROLE = { username: 'pg2crm_tls', password: 'pg2crm-tls-only' };
const HBA_MARK = '# pg2crm: TLS only';
/** The statement that creates TLS_ONLY_ROLE (also run by the container path's init script, test/helpers/containers.ts). */
export const CREATE_TLS_ONLY_ROLE = `CREATE ROLE ${TLS_ONLY_ROLE.username} LOGIN SUPERUSER REPLICATION PASSWORD '${TLS_ONLY_ROLE.password}'`;

/** The pg_hba lines, marked, that refuse TLS_ONLY_ROLE without TLS from `address` (a pg_hba address field). */
export function tlsOnlyHbaLines(address: string): string[] {
  return [
    HBA_MARK,
    `hostnossl all ${TLS_ONLY_ROLE.username} ${address} reject`,
    `hostnossl replication ${TLS_ONLY_ROLE.username} ${address} reject`,
  ];
}

async function ensureTlsOnlyRole(dir: string, port: number): Promise<void> {
  const hba = join(dir, 'data', 'pg_hba.conf');
  const admin = new pg.Client({ connectionString: postgresUrl(port) });
  await admin.connect();
  try {
    const exists = (await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [TLS_ONLY_ROLE.username])).rowCount === 1;
    if (!exists) await admin.query(CREATE_TLS_ONLY_ROLE);
    const conf = readFileSync(hba, 'utf8');
    if (!conf.includes(HBA_MARK)) {
      // First matching line wins: these must come before initdb's `host all all ... trust`.
      const lines = [...tlsOnlyHbaLines('127.0.0.1/32'), ''];
      writeFileSync(hba, `${lines.join('\n')}${conf}`);
      await admin.query('SELECT pg_reload_conf()');
    }
  } finally {
    await admin.end();
  }
}

async function switchSslOn(dir: string, port: number, server: { cert: string; key: string }): Promise<void> {
  const admin = new pg.Client({ connectionString: postgresUrl(port) });
  await admin.connect();
  try {
    if ((await admin.query<{ ssl: string }>('SHOW ssl')).rows[0]?.ssl === 'on') return;
    const cert = join(dir, 'server.crt');
    const key = join(dir, 'server.key');
    copyFileSync(server.cert, cert);
    copyFileSync(server.key, key);
    chmodSync(key, 0o600);
    if (isRoot) {
      const ids = await postgresIds();
      chownSync(cert, ...ids);
      chownSync(key, ...ids);
    }
    await admin.query(`ALTER SYSTEM SET ssl_cert_file = '${cert}'`);
    await admin.query(`ALTER SYSTEM SET ssl_key_file = '${key}'`);
    await admin.query('ALTER SYSTEM SET ssl = on');
    await admin.query('SELECT pg_reload_conf()');
  } finally {
    await admin.end();
  }
  await waitUntil(
    'PostgreSQL ssl=on',
    () => withStackPg(port, async (c) => (await c.query<{ ssl: string }>('SHOW ssl')).rows[0]?.ssl === 'on'),
    20_000,
    'postgres.log in the stack directory',
  );
}

/** True when the stack's PostgreSQL serves TLS (ssl=on) and has its TLS-only role. */
export async function postgresHasSsl(port: number): Promise<boolean> {
  const c = new pg.Client({ connectionString: postgresUrl(port) });
  try {
    await c.connect();
    const ssl = (await c.query<{ ssl: string }>('SHOW ssl')).rows[0]?.ssl === 'on';
    return ssl && (await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [TLS_ONLY_ROLE.username])).rowCount === 1;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** One query session on the stack's PostgreSQL as its superuser. */
async function withStackPg<T>(port: number, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: postgresUrl(port) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function postgresReady(port: number): Promise<void> {
  await waitUntil(
    'PostgreSQL',
    () =>
      withStackPg(port, async (c) => {
        const r = await c.query<{ wal_level: string }>('SHOW wal_level');
        if (r.rows[0]?.wal_level !== 'logical') throw new Error(`wal_level is ${r.rows[0]?.wal_level}`);
        return true;
      }),
    60_000,
    'postgres.log in the stack directory',
  );
}

export async function stopPostgres(dir: string): Promise<void> {
  const data = join(dir, 'data');
  if (!existsSync(join(data, 'postmaster.pid'))) return;
  await asPostgres('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => undefined);
}

/** `pg_ctl restart -m fast|immediate`: immediate skips the shutdown checkpoint (crash recovery on start). */
export async function restartPostgres(dir: string, mode: 'fast' | 'immediate'): Promise<void> {
  await asPostgres('pg_ctl', ['-D', join(dir, 'data'), '-l', join(dir, 'postgres.log'), '-m', mode, '-w', '-t', '60', 'restart']);
}

/**
 * The `postgres` user must traverse every folder above its data directory; a checkout in a
 * `mktemp -d` folder (mode 0700, root's) would stop initdb with "Permission denied". Adds
 * search permission (o+x, not read) where it lacks.
 */
function letPostgresThrough(from: string): void {
  for (let d = from; ; d = dirname(d)) {
    const mode = statSync(d).mode;
    if ((mode & 0o001) === 0) chmodSync(d, (mode & 0o7777) | 0o001);
    if (dirname(d) === d) break;
  }
}

async function postgresIds(): Promise<[number, number]> {
  const uid = Number((await run('id', ['-u', 'postgres'])).trim());
  const gid = Number((await run('id', ['-g', 'postgres'])).trim());
  return [uid, gid];
}
