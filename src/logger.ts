import { pino, type Logger } from 'pino';
import { ConnectorError } from './errors.ts';
import { scrubSecrets } from './secrets.ts';

export type { Logger };

/**
 * Paths that may carry secrets anywhere in a log line (config slices, HTTP options, errors).
 * pino replaces them with "[redacted]" before serialisation.
 */
const REDACT = [
  'password',
  'token',
  'apiKey',
  'secret',
  'authorization',
  'auth',
  'url',
  '*.password',
  '*.token',
  '*.apiKey',
  '*.secret',
  '*.authorization',
  '*.Authorization',
  '*.auth',
  '*.*.password',
  '*.*.token',
  // OAuth credentials (crm.auth / crm.credentials[] fields).
  'clientSecret',
  'refreshToken',
  'privateKey',
  'assertion',
  'client_assertion',
  'client_secret',
  'refresh_token',
  'access_token',
  '*.clientSecret',
  '*.refreshToken',
  '*.privateKey',
  '*.*.clientSecret',
  '*.*.refreshToken',
  '*.*.privateKey',
  'headers.authorization',
  'headers.Authorization',
];

let root: Logger | undefined;

/**
 * pino's error serializer (type, message and stack with their causes, and the error's own fields:
 * code, kind, retriable). A ConnectorError is a condition pg2crm named and explained; its stack
 * is noise to the operator and is kept only at debug level. Anything else (a bug) keeps its stack.
 */
function serializeError(err: Error): ReturnType<typeof pino.stdSerializers.err> {
  const out = pino.stdSerializers.err(err);
  if (err instanceof ConnectorError && !root?.isLevelEnabled('debug')) delete (out as { stack?: string }).stack;
  return out;
}

export function rootLogger(): Logger {
  root ??= pino({
    name: 'pg2crm',
    level: 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    serializers: { err: serializeError },
    // Secrets quoted inside messages and error texts (secrets.ts), which paths cannot reach.
    hooks: { streamWrite: scrubSecrets },
  });
  return root;
}

/** One child logger per component, e.g. `componentLogger('sink.batcher')`. */
export function componentLogger(component: string): Logger {
  return rootLogger().child({ component });
}

/** Set once from the parsed config (config.ts is the only reader of the environment). */
export function setLogLevel(level: string): void {
  rootLogger().level = level;
}
