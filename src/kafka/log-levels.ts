import { createRequire } from 'node:module';
import { logLevel } from 'kafkajs';

/**
 * Which pino level a kafkajs log line gets. kafkajs logs at ERROR every attempt that failed,
 * also those it retries itself (a coordinator still loading at start-up, a broker that is not
 * up yet, a rebalance in progress), and it throws to pg2crm what it finally gives up on, which
 * pg2crm's own code reports (with the setting to fix). So a retried attempt is debug; what is
 * left at warn/error is what an operator should look at.
 */
export type PinoLevel = 'error' | 'warn' | 'debug' | 'trace';

/** A kafkajs log entry's fields besides `message` (kafkajs names them freely). */
export type KafkajsEntry = { message: string } & Record<string, unknown>;

// kafkajs's table of Kafka protocol errors says which are retriable; the lines that log a failed
// response carry the error's message (`error`). kafkajs has no typed export for the table.
const protocolErrors = (createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
  errorCodes: { type: string; message: string; retriable: boolean }[];
}).errorCodes;
const RETRIABLE_PROTOCOL_MESSAGES = new Set(protocolErrors.filter((e) => e.retriable).map((e) => e.message));

/** Lines that are the group protocol or client start-up doing its job, not trouble. */
const ROUTINE = [
  /^The group is rebalancing, re-joining/,
  /^The coordinator is not aware of this member, re-joining the group/,
  // pg2crm's producers that are idempotent with bounded retries (sink status, written hashes)
  // write compacted topics where a duplicate after exhausted retries is harmless; the change-event
  // publisher retries without bound.
  /^Limiting retries for the idempotent producer may invalidate EoS guarantees/,
];

/** Network failures of one connection attempt: the caller retries, then throws. */
const CONNECTION = /^(Connection error|Connection timeout|Closed connection|Connection closed)\b/;

export function kafkajsLevel(level: number, entry: KafkajsEntry): PinoLevel {
  if (level === logLevel.INFO) return 'debug';
  if (level !== logLevel.ERROR && level !== logLevel.WARN) return 'trace';
  const message = entry.message;
  if (ROUTINE.some((re) => re.test(message))) return 'debug';
  // A consumer crash: kafkajs restarts it when the cause is retriable, and pg2crm stops on one
  // it does not restart (sink-runner's CRASH listener). Worth a warning either way.
  if (message.startsWith('Crash:') || message.startsWith('Restarting the consumer')) return 'warn';
  if (typeof entry.error === 'string' && RETRIABLE_PROTOCOL_MESSAGES.has(entry.error)) return 'debug';
  if (RETRIABLE_PROTOCOL_MESSAGES.has(message)) return 'debug';
  if (CONNECTION.test(message)) return 'debug';
  // The retrier's report of an attempt it will repeat (`retryCount`, `retryTime`).
  if (entry.retryCount !== undefined && entry.retryTime !== undefined) return 'debug';
  return level === logLevel.ERROR ? 'error' : 'warn';
}
