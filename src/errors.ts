import { scrubSecrets } from './secrets.ts';

/**
 * What kind of failure an error is. Retry code reads this, never the code's spelling:
 * - `throttle`: the remote side's budget (429, lockout): wait, it is nobody's fault.
 * - `server`: the remote side is failing (5xx, an outage).
 * - `unreachable`: no answer at all (connection refused, DNS, reset).
 * - `timeout`: an answer did not come in time; the request may or may not have taken effect.
 * - `too-large`: the request or message is over a size limit; a smaller one may pass.
 * - `auth`: credentials or TLS trust refused; no retry fixes it.
 * - `config`: pg2crm's configuration or the database's setup is wrong; the message says which setting.
 * - `protocol`: the remote side answered in a way the protocol does not allow (out of order, unknown).
 * - `bad-response`: an answer that is not the documented shape (a proxy's page, a cut-off body).
 * - `data`: one record or value cannot be handled as it is (no key, unconvertible value).
 * - `state`: something pg2crm depends on is in the wrong state (slot lost, in use, snapshot failed).
 */
export type ErrorKind =
  | 'throttle'
  | 'server'
  | 'unreachable'
  | 'timeout'
  | 'too-large'
  | 'auth'
  | 'config'
  | 'protocol'
  | 'bad-response'
  | 'data'
  | 'state';

/** Every error code pg2crm raises, with its kind. A new code is added here, nowhere else. */
export const ERROR_CODES = {
  CONFIG_CRM_KIND: 'config',
  CONFIG_ENV_MISSING: 'config',
  CONFIG_INVALID: 'config',
  CONFIG_NOT_FOUND: 'config',
  CONFIG_SECRET_FILE: 'config',
  CONFIG_SIM_KIND: 'config',
  CONFIG_SIM_LIMIT: 'config',
  CONFIG_SIM_TTL: 'config',
  CONFIG_SYNTAX: 'config',
  CONFIG_TABLE: 'config',
  CRM_AUTH: 'auth',
  CRM_BAD_RESPONSE: 'bad-response',
  CRM_BATCH_REJECTED: 'protocol',
  CRM_BULK_FAILED: 'server',
  CRM_BULK_RESULT: 'bad-response',
  CRM_BULK_TIMEOUT: 'timeout',
  CRM_BULK_WRITE: 'server',
  CRM_CALL: 'server',
  CRM_FILTER_IGNORED: 'protocol',
  CRM_FORBIDDEN: 'auth',
  CRM_NOT_FOUND: 'config',
  CRM_PING: 'config',
  CRM_TIMEOUT: 'timeout',
  CRM_TLS: 'auth',
  CRM_TOKEN_UNAVAILABLE: 'server',
  CRM_TOO_LARGE: 'too-large',
  CRM_UNAVAILABLE: 'server',
  CRM_UNREACHABLE: 'unreachable',
  DECODE: 'data',
  EXTERNAL_ID_NULL: 'data',
  HUBSPOT_ID_PROPERTY_NOT_UNIQUE: 'config',
  INTERNAL: 'state',
  KAFKA_AUTH: 'auth',
  KAFKA_MESSAGE_TOO_LARGE: 'too-large',
  KAFKA_PRODUCE: 'server',
  KAFKA_TLS: 'auth',
  KAFKA_TOPIC_NOT_READY: 'timeout',
  KAFKA_UNREACHABLE: 'unreachable',
  KEY_COLUMN_MISSING: 'data',
  MAPPING_COLUMN_MISSING: 'config',
  NOT_AVRO: 'data',
  OPS_LISTEN: 'config',
  PGOUTPUT_ORDER: 'protocol',
  PLAN_TABLE_MISSING: 'config',
  POSTGRES_CONNECT: 'unreachable',
  POSTGRES_NOT_READY: 'config',
  POSTGRES_PRIVILEGE: 'config',
  POSTGRES_TLS: 'auth',
  PUBLICATION_ALL_TABLES: 'config',
  RATE_LIMITED: 'throttle',
  REPLICATION_ENDED: 'unreachable',
  SCHEMA_FETCH: 'unreachable',
  SCHEMA_NOT_FOUND: 'data',
  SCHEMA_REGISTER: 'unreachable',
  SCHEMA_REGISTRY_AUTH: 'auth',
  SCHEMA_REGISTRY_TLS: 'auth',
  SLOT_CREATE: 'state',
  SLOT_IN_USE: 'state',
  SLOT_LOST: 'state',
  SLOT_MISSING: 'state',
  SLOT_WRONG_PLUGIN: 'config',
  SNAPSHOT_FAILED: 'state',
  SNAPSHOT_WAIT_TIMEOUT: 'timeout',
  SNAPSHOT_WATERMARK: 'state',
  TABLE_NOT_CAPTURABLE: 'config',
  UNEXPECTED_TABLE: 'protocol',
  UNSUPPORTED_BYTEA_FORMAT: 'config',
  VALUE_CONVERSION: 'data',
  VERIFY_UNSUPPORTED: 'config',
  ZIP_INVALID: 'bad-response',
} as const satisfies Record<string, ErrorKind>;

export type KnownErrorCode = keyof typeof ERROR_CODES;
/** An HTTP status the remote side answered, kept in the code because operators search for it. */
export type HttpErrorCode = `CRM_HTTP_${number}` | `HTTP_${number}`;
export type ErrorCode = KnownErrorCode | HttpErrorCode;

/** The kind of an HTTP status (RFC 9110 §15): what retrying it can achieve. */
export function httpStatusKind(status: number): ErrorKind {
  if (status === 429) return 'throttle';
  if (status === 408 || status === 504) return 'timeout';
  if (status === 413) return 'too-large';
  if (status === 401 || status === 403) return 'auth';
  if (status >= 500) return 'server';
  return 'protocol';
}

interface ErrorOptions {
  retriable?: boolean;
  cause?: unknown;
  retryAfterSeconds?: number;
}

/**
 * The one error type of pg2crm. `kind` says what failed (see ErrorKind); `retriable` says
 * whether the same call may succeed when tried again unchanged (network blip, 5xx, throttle);
 * a permanent one will not (bad config, auth failure, validation error) and must be surfaced
 * or dead-lettered.
 */
export class ConnectorError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly retriable: boolean;
  /** Seconds the remote side asked us to wait before retrying (Retry-After), when known. */
  readonly retryAfterSeconds: number | undefined;

  constructor(code: KnownErrorCode, message: string, options?: ErrorOptions);
  constructor(code: HttpErrorCode, message: string, options: ErrorOptions & { status: number });
  constructor(code: ErrorCode, message: string, options: ErrorOptions & { status?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ConnectorError';
    this.code = code;
    this.kind = options.status !== undefined ? httpStatusKind(options.status) : ERROR_CODES[code as KnownErrorCode];
    this.retriable = options.retriable ?? false;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** The kind of any thrown value: a ConnectorError's own, else undefined (not classified). */
export function errorKind(err: unknown): ErrorKind | undefined {
  return err instanceof ConnectorError ? err.kind : undefined;
}

export function isRetriable(err: unknown): boolean {
  return err instanceof ConnectorError ? err.retriable : false;
}

/** The message, without credentials (secrets.ts): messages end up in logs, on stderr and in `check`. */
export function errorMessage(err: unknown): string {
  return scrubSecrets(err instanceof Error ? err.message : String(err));
}
