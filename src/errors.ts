import { scrubSecrets } from './secrets.ts';

/**
 * The one error type of pg2crm. `retriable` is what retry code reads: a retriable error may
 * succeed when tried again unchanged (network blip, 5xx, throttle); a permanent one will not
 * (bad config, auth failure, validation error) and must be surfaced or dead-lettered.
 */
export class ConnectorError extends Error {
  readonly code: string;
  readonly retriable: boolean;
  /** Seconds the remote side asked us to wait before retrying (Retry-After), when known. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    code: string,
    message: string,
    options: { retriable?: boolean; cause?: unknown; retryAfterSeconds?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ConnectorError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export function isRetriable(err: unknown): boolean {
  return err instanceof ConnectorError ? err.retriable : false;
}

/** The message, without credentials (secrets.ts): messages end up in logs, on stderr and in `check`. */
export function errorMessage(err: unknown): string {
  return scrubSecrets(err instanceof Error ? err.message : String(err));
}
