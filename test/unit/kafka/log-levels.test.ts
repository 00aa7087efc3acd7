import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { logLevel } from 'kafkajs';
import { kafkajsLevel } from '../../../src/kafka/log-levels.ts';
import { isKafkajsTimerWarning } from '../../../src/kafka/timer-warning.ts';

const root = new URL('../../../', import.meta.url).pathname;

/**
 * What kafkajs logs through createKafka, as pg2crm's JSON log shows it: run in a child process
 * (pino writes to fd 1), at log level info, with lines kafkajs writes on a healthy start.
 */
function logThroughCreateKafka(): { level: number; msg: string }[] {
  const script = `
    import { createKafka } from '${root}src/kafka/client.ts';
    import { setLogLevel } from '${root}src/logger.ts';
    setLogLevel('info');
    const kafka = createKafka({ brokers: ['127.0.0.1:1'], clientId: 'unit' }, 'log-levels');
    // Created, not connected: kafkajs warns at creation (partitioner, idempotence).
    kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    kafka.producer();
    // Each line from the kafkajs namespace that writes it (logger.namespace(...) in kafkajs's sources).
    const log = kafka.logger();
    log.namespace('Connection').error('Response FindCoordinator(key: 10, version: 2)', { error: "The coordinator is loading and hence can't process requests for this group", correlationId: 3 });
    log.namespace('Connection').error('Connection error: connect ECONNREFUSED 127.0.0.1:1', { broker: '127.0.0.1:1', stack: 'Error: connect ECONNREFUSED' });
    log.namespace('BrokerPool').error('Failed to connect to seed broker, trying another broker from the list: Connection error', { retryCount: 0, retryTime: 200 });
    log.namespace('Runner').warn('The group is rebalancing, re-joining', { groupId: 'g', memberId: 'm', error: 'The group is rebalancing, so a rejoin is needed' });
    log.namespace('SASLSCRAMAuthenticator').error('SASL SCRAM SHA256 authentication failed', { broker: '127.0.0.1:1' });
    log.namespace('Consumer').error('Crash: KafkaJSNonRetriableError: boom', { groupId: 'g' });
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: root });
  expect(r.stderr).toBe('');
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string });
}

describe('kafkajs log levels', () => {
  it('retried attempts and start-up notices are below warn; real failures stay warn/error', () => {
    const loud = logThroughCreateKafka().map((e) => `${e.level} ${e.msg}`);
    expect(loud).toEqual(['50 SASL SCRAM SHA256 authentication failed', '40 Crash: KafkaJSNonRetriableError: boom']);
  });

  it('kafkajsLevel: a retriable protocol error is debug, a permanent one is error', () => {
    expect(
      kafkajsLevel(logLevel.ERROR, {
        message: 'Response JoinGroup(key: 11, version: 5)',
        error: 'This is not the correct coordinator for this group',
      }),
    ).toBe('debug');
    expect(
      kafkajsLevel(logLevel.ERROR, {
        message: 'Response CreateTopics(key: 19, version: 3)',
        error: 'Not authorized to access topics: [Topic authorization failed]',
      }),
    ).toBe('error');
    expect(kafkajsLevel(logLevel.INFO, { message: 'Starting' })).toBe('debug');
    expect(kafkajsLevel(logLevel.DEBUG, { message: 'Request Metadata' })).toBe('trace');
    expect(kafkajsLevel(logLevel.WARN, { message: 'Response without match', clientId: 'x' })).toBe('warn');
  });

  it('kafkajsLevel: group re-joins and connection attempts are debug; crashes warn; other consumer errors stay errors', () => {
    const ERROR = logLevel.ERROR;
    const notAware = 'The coordinator is not aware of this member';
    expect(
      kafkajsLevel(
        ERROR,
        { message: 'The coordinator is not aware of this member, re-joining the group', groupId: 'g', error: notAware },
        'Runner',
      ),
    ).toBe('debug');
    // The same protocol error on a response the runner does not recover from is left an error.
    expect(kafkajsLevel(ERROR, { message: 'Response Heartbeat(key: 12, version: 3)', error: notAware }, 'Connection')).toBe('error');
    expect(
      kafkajsLevel(ERROR, { message: 'Restarting the consumer in 300ms', retryCount: 1, retryTime: 300, groupId: 'g' }, 'Consumer'),
    ).toBe('warn');
    expect(kafkajsLevel(ERROR, { message: 'Caught error when disconnecting the consumer: boom', groupId: 'g' }, 'Consumer')).toBe('error');
    expect(kafkajsLevel(ERROR, { message: 'Connection timeout', broker: 'b:9092' }, 'Connection')).toBe('debug');
    expect(
      kafkajsLevel(logLevel.WARN, { message: 'Limiting retries for the idempotent producer may invalidate EoS guarantees' }, 'Producer'),
    ).toBe('debug');
  });

  it("drops only kafkajs's own negative-timeout warning", () => {
    const fromKafkajs = Object.assign(new Error('-1796150274787 is a negative number.'), { name: 'TimeoutNegativeWarning' });
    fromKafkajs.stack = `TimeoutNegativeWarning: -1796150274787 is a negative number.\n    at setTimeout (node:timers:125:19)\n    at RequestQueue.scheduleCheckPendingRequests (${root}node_modules/kafkajs/src/network/requestQueue/index.js:317:37)`;
    expect(isKafkajsTimerWarning(fromKafkajs)).toBe(true);
    const ours = Object.assign(new Error('-5 is a negative number.'), { name: 'TimeoutNegativeWarning' });
    ours.stack = `TimeoutNegativeWarning: -5 is a negative number.\n    at setTimeout (node:timers:125:19)\n    at BatchWorker.waitForBudget (${root}src/sink/batch-worker.ts:250:32)`;
    expect(isKafkajsTimerWarning(ours)).toBe(false);
    expect(isKafkajsTimerWarning(Object.assign(new Error('x'), { name: 'DeprecationWarning' }))).toBe(false);
  });
});
