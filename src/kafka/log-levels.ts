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

// kafkajs's table of Kafka protocol errors (type, retriable, message). The lines that log a failed
// response carry only the error's message (`error`), which is kafkajs's own text from this table:
// looked up exactly, it gives back the error's `type` and whether it is retriable. kafkajs has
// no typed export for the table.
const protocolErrors = (
  createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as {
    errorCodes: { type: string; message: string; retriable: boolean }[];
  }
).errorCodes;
const PROTOCOL_ERROR_BY_MESSAGE = new Map(protocolErrors.map((e) => [e.message, e]));

/** kafkajs's logger namespaces (`logger.namespace(...)` in its sources) whose lines are classified here. */
const NAMESPACE = { connection: 'Connection', runner: 'Runner', consumer: 'Consumer', producer: 'Producer' } as const;

/**
 * Protocol errors after which kafkajs's consumer runner re-joins the group by itself
 * (kafkajs/src/consumer/runner.js: isRebalancing, UNKNOWN_MEMBER_ID): the group protocol doing
 * its job, not trouble.
 */
const REJOIN_TYPES: ReadonlySet<string> = new Set([
  'REBALANCE_IN_PROGRESS',
  'NOT_COORDINATOR_FOR_GROUP',
  'ILLEGAL_GENERATION',
  'UNKNOWN_MEMBER_ID',
]);

/**
 * kafkajs's warning for an idempotent producer with bounded retries (kafkajs/src/producer/index.js),
 * a constant text with no fields. pg2crm's producers that are idempotent with bounded retries
 * (sink status, written hashes) write compacted topics where a duplicate after exhausted retries
 * is harmless; the change-event publisher retries without bound.
 */
const IDEMPOTENT_RETRIES_WARNING = 'Limiting retries for the idempotent producer may invalidate EoS guarantees';

/**
 * The start of kafkajs's consumer crash lines (kafkajs/src/consumer/index.js: `Crash: ${e.name}: ...`,
 * `Restarting the consumer in ${retryTime}ms`): the only fields they carry are also on other lines.
 */
const CONSUMER_CRASH_LINES = ['Crash: ', 'Restarting the consumer in '] as const;

/** The protocol errors a line names: its `error` field, or the line itself being one's message. */
function protocolErrorsOf(entry: KafkajsEntry): { type: string; retriable: boolean }[] {
  return [entry.error, entry.message].flatMap((text) => {
    const known = typeof text === 'string' ? PROTOCOL_ERROR_BY_MESSAGE.get(text) : undefined;
    return known ? [known] : [];
  });
}

/** `namespace`: the kafkajs logger namespace of the line (the log creator receives it). */
export function kafkajsLevel(level: number, entry: KafkajsEntry, namespace?: string): PinoLevel {
  if (level === logLevel.INFO) return 'debug';
  if (level !== logLevel.ERROR && level !== logLevel.WARN) return 'trace';
  const protocol = protocolErrorsOf(entry);
  // The consumer runner re-joining the group after a rebalance or a member it no longer knows.
  if (namespace === NAMESPACE.runner && protocol.some((e) => REJOIN_TYPES.has(e.type))) return 'debug';
  if (namespace === NAMESPACE.producer && entry.message === IDEMPOTENT_RETRIES_WARNING) return 'debug';
  // A consumer crash: kafkajs restarts it when the cause is retriable, and pg2crm stops on one
  // it does not restart (sink-runner's CRASH listener). Worth a warning either way.
  if (namespace === NAMESPACE.consumer && CONSUMER_CRASH_LINES.some((start) => entry.message.startsWith(start))) return 'warn';
  if (protocol.some((e) => e.retriable)) return 'debug';
  // A connection's own failure (socket error, connect timeout, closed) carries no protocol
  // error: one attempt, which the caller retries and then throws.
  if (namespace === NAMESPACE.connection && entry.error === undefined) return 'debug';
  // The retrier's report of an attempt it will repeat (`retryCount`, `retryTime`).
  if (entry.retryCount !== undefined && entry.retryTime !== undefined) return 'debug';
  return level === logLevel.ERROR ? 'error' : 'warn';
}
