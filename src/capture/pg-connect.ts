import pg from 'pg';
import { ConnectorError, errorMessage } from '../errors.ts';
import { tlsFailure } from '../tls-errors.ts';

/**
 * Every PostgreSQL connection pg2crm opens is made here, so none is without bounds. node-postgres
 * waits forever by default: a server (or proxy, or load balancer) that accepts the TCP connection
 * and never answers held `pg2crm run` for good. Each connection gets
 * - a connect timeout (`postgres.connectTimeoutMs`): TCP connect, TLS and the startup handshake;
 * - TCP keepalive, so a peer that vanished without a FIN/RST is noticed by the OS;
 * - for query connections, a query timeout (`postgres.queryTimeoutMs`): the server cancels a
 *   statement running longer (statement_timeout, the connection stays usable), and the client
 *   gives up waiting a little after that (query_timeout) when the server does not answer at all.
 *
 * Replication connections (`kind: 'replication'`) get the connect timeout and keepalive only:
 * START_REPLICATION streams for as long as the connector runs, and CREATE_REPLICATION_SLOT
 * legitimately waits for every running transaction to end; a query timeout would break both.
 * The stream's own liveness is PostgreSQL's wal_sender_timeout and its keepalive messages.
 */
export interface PgConnection {
  url: string;
  /** `postgres.ssl`: libpq's sslmode and the CA to trust; absent = plaintext. */
  ssl?: PgSsl | undefined;
  connectTimeoutMs?: number | undefined;
  /** 0 = no query timeout. */
  queryTimeoutMs?: number | undefined;
}

/** A URL alone takes the default timeouts. */
export type PgTarget = string | PgConnection;

function resolve(target: PgTarget): PgConnection {
  return typeof target === 'string' ? { url: target } : target;
}

export const PG_DEFAULTS = { connectTimeoutMs: 10_000, queryTimeoutMs: 60_000, keepAliveInitialDelayMs: 10_000 } as const;

/** How long after the server-side statement_timeout the client stops waiting for any answer. */
const CLIENT_GRACE_MS = 5_000;

export type PgConnectionKind = 'query' | 'replication';

export interface PgSsl {
  mode: 'disable' | 'require' | 'verify-ca' | 'verify-full';
  rootCert?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

/**
 * libpq's sslmode as node-postgres' `ssl` (tls.connect options), the same for query and
 * replication connections:
 * - require: encrypted, certificate not checked (libpq's meaning; node-postgres reads the URL's
 *   sslmode=require as verify-full, which is why the mode lives in postgres.ssl, not the URL);
 * - verify-ca: the chain must end at rootCert (or a system CA), the host name is not compared;
 * - verify-full: also the certificate must name the host of postgres.url (node-postgres sets
 *   servername to a host name, and Node compares IP addresses against IP SANs).
 */
export function pgSslOptions(ssl: PgSsl | undefined): pg.ClientConfig['ssl'] {
  // No postgres.ssl: leave it to node-postgres, which then honours PGSSLMODE as it always did
  // (a deployment that sets PGSSLMODE=verify-full must not fall back to plaintext silently).
  if (!ssl) return undefined;
  if (ssl.mode === 'disable') return false;
  const client = ssl.cert && ssl.key ? { cert: ssl.cert, key: ssl.key } : {};
  if (ssl.mode === 'require') return { rejectUnauthorized: false, ...client };
  const ca = ssl.rootCert ? { ca: ssl.rootCert } : {};
  if (ssl.mode === 'verify-ca') return { rejectUnauthorized: true, ...ca, ...client, checkServerIdentity: () => undefined };
  return { rejectUnauthorized: true, ...ca, ...client };
}

/**
 * Output styles pinned for every session: values are read as text (pgoutput's text format and
 * the snapshot's `::text`), and the text depends on these settings, which a role or database may
 * set otherwise (ALTER ROLE/DATABASE ... SET; they apply to replication connections too).
 * Startup options take precedence over those (GucSource PGC_S_CLIENT), and come after any
 * `options` of postgres.url so they win over it as well.
 * https://www.postgresql.org/docs/15/runtime-config-client.html#RUNTIME-CONFIG-CLIENT-FORMAT
 * https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNECT-OPTIONS
 */
export const SESSION_OPTIONS = '-c DateStyle=ISO -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=1 -c TimeZone=UTC';

/** postgres.url without its `options` parameter, and those options followed by SESSION_OPTIONS. */
function withSessionOptions(url: string): { url: string; options: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, options: SESSION_OPTIONS };
  }
  const own = parsed.searchParams.get('options');
  if (own === null) return { url, options: SESSION_OPTIONS };
  parsed.searchParams.delete('options');
  return { url: parsed.toString(), options: `${own} ${SESSION_OPTIONS}` };
}

export function pgClientConfig(target: PgTarget, kind: PgConnectionKind = 'query'): pg.ClientConfig {
  const conn = resolve(target);
  const session = withSessionOptions(conn.url);
  const config: pg.ClientConfig = {
    connectionString: session.url,
    options: session.options,
    connectionTimeoutMillis: conn.connectTimeoutMs ?? PG_DEFAULTS.connectTimeoutMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: PG_DEFAULTS.keepAliveInitialDelayMs,
    ssl: pgSslOptions(conn.ssl),
  };
  const queryTimeoutMs = conn.queryTimeoutMs ?? PG_DEFAULTS.queryTimeoutMs;
  if (kind === 'query' && queryTimeoutMs > 0) {
    config.statement_timeout = queryTimeoutMs;
    config.query_timeout = queryTimeoutMs + CLIENT_GRACE_MS;
  }
  return config;
}

/** A client with pg2crm's timeouts; not yet connected (see `connectPg`, `openPg`). */
export function pgClient(target: PgTarget, kind: PgConnectionKind = 'query'): pg.Client {
  return new pg.Client(pgClientConfig(target, kind));
}

/** The URL without its password, for messages. */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres.url';
  }
}

/**
 * Connects `client`; a failure becomes POSTGRES_CONNECT naming postgres.url and the fix (a
 * timeout also names postgres.connectTimeoutMs). The client is ended on failure.
 */
export async function connectPg(client: pg.Client, target: PgTarget): Promise<pg.Client> {
  // node-postgres ends a connect that outlives connectionTimeoutMillis with a plain Error (no
  // code): this timer, started first with the same delay, fires first and says it was that.
  let timedOut = false;
  const timer = setTimeout(() => (timedOut = true), resolve(target).connectTimeoutMs ?? PG_DEFAULTS.connectTimeoutMs);
  try {
    await client.connect();
    return client;
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectError(err, target, timedOut);
  } finally {
    clearTimeout(timer);
  }
}

/** The OS gave up on the TCP connect (the host does not answer SYNs). */
const CONNECT_TIMEOUT_CODES: ReadonlySet<string> = new Set(['ETIMEDOUT']);

/**
 * A failed connect as POSTGRES_TLS (naming postgres.ssl) or POSTGRES_CONNECT (naming postgres.url,
 * and postgres.connectTimeoutMs when `timedOut`: pg2crm's connect timeout fired or the OS timed out).
 */
export function connectError(err: unknown, target: PgTarget, timedOut = CONNECT_TIMEOUT_CODES.has(codeOf(err))): ConnectorError {
  const conn = resolve(target);
  const timeoutMs = conn.connectTimeoutMs ?? PG_DEFAULTS.connectTimeoutMs;
  const where = `cannot connect to PostgreSQL at postgres.url (${redactedUrl(conn.url)})`;
  const tls = tlsProblem(err, conn.ssl);
  if (tls) return new ConnectorError('POSTGRES_TLS', `${where}: ${tls}`, { cause: err });
  const message = timedOut
    ? `${where}: no answer within postgres.connectTimeoutMs (${timeoutMs} ms); check that postgres.url points at a running PostgreSQL reachable from here (host, port, firewall, proxy), or raise postgres.connectTimeoutMs if the server is just slow to accept`
    : `${where}: ${errorMessage(err)}; check postgres.url and that PostgreSQL runs and accepts connections from this host`;
  return new ConnectorError('POSTGRES_CONNECT', message, { retriable: true, cause: err });
}

function codeOf(err: unknown): string {
  return String((err as { code?: unknown } | null)?.code ?? '');
}

/**
 * node-postgres's error when the server answers the SSLRequest with 'N' (ssl = off): a plain
 * Error with no code (pg/lib/connection.js), so its text is the only thing to compare (exactly).
 * https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.12
 */
const PG_SERVER_WITHOUT_TLS = 'The server does not support SSL connections';

/**
 * SQLSTATE 28000 invalid_authorization_specification: pg_hba.conf has no entry admitting the
 * connection as made ("no pg_hba.conf entry for host ..., no encryption") or rejects it; over a
 * plaintext connection, the usual cause is a server that admits only TLS (hostssl lines). 28P01
 * (invalid_password) is a wrong password, not this.
 * https://www.postgresql.org/docs/15/errcodes-appendix.html
 */
const SQLSTATE_INVALID_AUTHORIZATION = '28000';

/** What `postgres.ssl` has to do with a failed connect, with the fix; undefined when nothing. */
function tlsProblem(err: unknown, ssl: PgSsl | undefined): string | undefined {
  const code = codeOf(err);
  const msg = errorMessage(err);
  if (ssl && ssl.mode !== 'disable') {
    if (err instanceof Error && err.message === PG_SERVER_WITHOUT_TLS) {
      return `${msg}; the server has ssl=off: turn ssl on in postgresql.conf, or set postgres.ssl.mode to disable if plaintext is acceptable on this network`;
    }
    if (tlsFailure(err) !== undefined) {
      return `the server's TLS certificate was refused (${msg}, ${code}); check postgres.ssl: rootCert (or rootCert_FILE) must hold the CA that signed the server's certificate${
        ssl.mode === 'verify-full' ? ', and the host in postgres.url must be a name the certificate carries (or use mode verify-ca)' : ''
      }`;
    }
  } else if (code === SQLSTATE_INVALID_AUTHORIZATION) {
    return `${msg}; the server accepts only TLS connections: set postgres.ssl (mode verify-full and rootCert_FILE, or require)`;
  }
  return undefined;
}

/** A connect failure that `postgres.ssl` explains, as POSTGRES_TLS naming the fix; undefined otherwise. */
export function pgTlsError(err: unknown, target: PgTarget): ConnectorError | undefined {
  const tls = tlsProblem(err, resolve(target).ssl);
  return tls ? new ConnectorError('POSTGRES_TLS', tls, { cause: err }) : undefined;
}

/** `pgClient` + `connectPg`: a connected client, or POSTGRES_CONNECT naming postgres.url and the fix. */
export function openPg(target: PgTarget, kind: PgConnectionKind = 'query'): Promise<pg.Client> {
  return connectPg(pgClient(target, kind), target);
}
