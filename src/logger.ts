import { pino, type Logger } from 'pino';
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

export function rootLogger(): Logger {
  root ??= pino({
    name: 'pg2crm',
    level: 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
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
