import { logLevel } from 'kafkajs';
import type { Config } from '../config.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import { createKafka } from '../kafka/client.ts';

/** How long `run` waits for the first answer of Kafka before it gives up. */
export const KAFKA_PROBE_MS = 10_000;

/**
 * Connects an admin client to `kafka.brokers` and lists the topics, retrying within
 * KAFKA_PROBE_MS (a broker still starting next to pg2crm gets a few seconds). Throws a
 * ConnectorError naming the setting to fix; TLS/SASL failures come as createKafka maps them.
 */
export async function probeKafka(config: Pick<Config, 'kafka'>, timeoutMs = KAFKA_PROBE_MS): Promise<void> {
  const kafka = createKafka(config.kafka, 'probe', 5);
  // The probe's verdict is the error below; kafkajs's own lines about each attempt are noise.
  kafka.logger().setLogLevel(logLevel.NOTHING);
  const admin = kafka.admin();
  const brokers = config.kafka.brokers.join(',');
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      (async () => {
        await admin.connect();
        await admin.listTopics();
      })(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new ConnectorError(
                'KAFKA_UNREACHABLE',
                `Kafka at ${brokers} did not answer within ${timeoutMs / 1000} s; check kafka.brokers and that the brokers run and are reachable from this host`,
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } catch (err) {
    if (err instanceof ConnectorError) throw err;
    throw new ConnectorError(
      'KAFKA_UNREACHABLE',
      `Kafka at ${brokers} cannot be reached (${errorMessage(err)}); check kafka.brokers and that the brokers run and are reachable from this host`,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
    // A broker that took the connection but never answers holds disconnect() until kafkajs's
    // 30 s request timeout: do not wait for it longer than a moment.
    await boundedDisconnect(admin);
  }
}

/** Disconnects a kafkajs client, waiting at most `ms` (a hung request holds disconnect()). */
export async function boundedDisconnect(client: { disconnect(): Promise<void> }, ms = 1_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.disconnect().catch(() => undefined),
    new Promise<void>((r) => {
      timer = setTimeout(r, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}
