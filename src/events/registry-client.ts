import { Agent as HttpsAgent } from 'node:https';
import { SchemaRegistry } from '@kafkajs/confluent-schema-registry';
import { Agent, fetch, type Response } from 'undici';
import { ConnectorError } from '../errors.ts';
import { isCertificateError } from '../tls-errors.ts';

/**
 * How pg2crm reaches the schema registry (issue 12 §1): the URL (config validation refuses a
 * user and password in it; text that prints it still goes through the secret scrubber, which
 * also masks `api_key=` and the like in a query string), HTTP basic auth, and a CA for an
 * https registry with a private CA. Both the registry client (register, encode) and the plain
 * HTTP calls (`check`, fetching schemas by id) go through here.
 */
export interface RegistryConnection {
  url: string;
  username?: string | undefined;
  password?: string | undefined;
  ca?: string | undefined;
}

function basicAuth(r: RegistryConnection): string | undefined {
  return r.username !== undefined && r.password !== undefined
    ? `Basic ${Buffer.from(`${r.username}:${r.password}`).toString('base64')}`
    : undefined;
}

/** @kafkajs/confluent-schema-registry's client with the connection's auth and CA. */
export function schemaRegistryClient(r: RegistryConnection): SchemaRegistry {
  const url = r.url.replace(/\/+$/, '');
  return new SchemaRegistry({
    host: url,
    ...(r.username !== undefined && r.password !== undefined ? { auth: { username: r.username, password: r.password } } : {}),
    // mappersmith passes the agent to https.request; an http URL takes no CA.
    ...(r.ca && url.startsWith('https:') ? { agent: new HttpsAgent({ ca: r.ca, keepAlive: true }) } : {}),
  });
}

const dispatchers = new Map<string, Agent>();

/** GET `<url><path>` with the connection's auth and CA. */
export function registryFetch(r: RegistryConnection, path: string, timeoutMs = 10_000): Promise<Response> {
  let dispatcher: Agent | undefined;
  if (r.ca) {
    dispatcher = dispatchers.get(r.ca);
    if (!dispatcher) dispatchers.set(r.ca, (dispatcher = new Agent({ connect: { ca: r.ca } })));
  }
  const auth = basicAuth(r);
  return fetch(`${r.url.replace(/\/+$/, '')}${path}`, {
    signal: AbortSignal.timeout(timeoutMs),
    headers: { accept: 'application/vnd.schemaregistry.v1+json, application/json', ...(auth ? { authorization: auth } : {}) },
    ...(dispatcher ? { dispatcher } : {}),
  });
}

/**
 * 401/403 from the registry: an error naming the settings to fix. Permanent where it stops the
 * connector (the source registering a schema); `retriable` where a permanent error would
 * dead-letter a message that is fine (the sink decoding it pauses and warns instead).
 */
export function registryAuthError(status: number, r: RegistryConnection, cause?: unknown, retriable = false): ConnectorError {
  const fix =
    r.username === undefined
      ? 'the registry requires authentication: set kafka.schemaRegistry.username and kafka.schemaRegistry.password (or password_FILE)'
      : status === 401
        ? `check kafka.schemaRegistry.username (${r.username}) and kafka.schemaRegistry.password (or password_FILE)`
        : `the user kafka.schemaRegistry.username (${r.username}) lacks permission on the registry; grant it read and write on the subjects`;
  return new ConnectorError('SCHEMA_REGISTRY_AUTH', `the schema registry answered HTTP ${status}: ${fix}`, { cause, retriable });
}

/** A TLS failure towards an https registry as the fix naming kafka.schemaRegistry.ca; undefined when it is not one. */
export function registryTlsError(err: unknown, retriable = false): ConnectorError | undefined {
  for (let x = err as { code?: unknown; cause?: unknown; message?: unknown } | undefined, i = 0; x && i < 5; x = x.cause as typeof x, i++) {
    if (isCertificateError(x)) {
      const code = String(x.code);
      return new ConnectorError(
        'SCHEMA_REGISTRY_TLS',
        `TLS to the schema registry failed (${String(x.message)}, ${code}); check kafka.schemaRegistry.ca (or ca_FILE): it must hold the CA that signed the registry's certificate`,
        { cause: err, retriable },
      );
    }
  }
  return undefined;
}
