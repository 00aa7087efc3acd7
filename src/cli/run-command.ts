import type { Config } from '../config.ts';
import { CaptureSource } from '../capture/capture-source.ts';
import { createAdapter } from '../crm/create-adapter.ts';
import { CrmCaches } from '../crm/crm-caches.ts';
import { reportFatal } from './fatal.ts';
import { probeKafka } from './kafka-probe.ts';
import { componentLogger } from '../logger.ts';
import { LagMonitor } from '../ops/lag-monitor.ts';
import { registry } from '../metrics.ts';
import { OpsServer } from '../ops/ops-server.ts';
import { TimeseriesSampler } from '../ops/timeseries.ts';
import { SinkRunner } from '../sink/sink-runner.ts';
import { onStopSignal } from './stop-signals.ts';

export type Role = 'all' | 'source' | 'sink';

/**
 * `pg2crm run`: the long-lived connector. SIGTERM/SIGINT drain in-flight work: the source
 * publishes and confirms what it received, the sink finishes its batch and commits what is done.
 * A fatal error (bad credentials, lost replication stream) stops everything with exit code 1;
 * nothing unconfirmed is lost, a restart resumes from the slot and the committed offsets.
 */
export async function runConnector(config: Config, role: Role): Promise<void> {
  const log = componentLogger('cli.run');
  let stopping: Promise<void> | undefined;
  const components: { stop(): Promise<void> }[] = [];
  const stopAll = (code: number): Promise<void> => {
    stopping ??= (async () => {
      log.info({ code }, 'stopping');
      await Promise.allSettled(components.map((c) => c.stop()));
      log.info('stopped');
      process.exit(code);
    })();
    return stopping;
  };
  const onFatal = (err: Error): void => {
    log.error({ err }, 'fatal error; stopping');
    // One stderr line: the first fatal error (what follows is often its consequence).
    if (!stopping) reportFatal(err);
    void stopAll(1);
  };
  onStopSignal(() => void stopAll(0));
  // Every role needs Kafka. Asked once up front, an unreachable or misconfigured cluster stops
  // the start within KAFKA_PROBE_MS with the setting to fix, instead of each component retrying
  // (8 retries up to 10 s apart) and failing one after the other.
  try {
    await probeKafka(config);
  } catch (err) {
    log.error({ err }, 'fatal error; stopping');
    throw err; // main.ts writes the stderr line and exits 1
  }

  const source = role !== 'sink' ? new CaptureSource(config.postgres, config.kafka, onFatal) : undefined;
  // One cache of CRM ids and links for all credentials' adapters (see crm-caches.ts).
  const caches = new CrmCaches();
  const sink =
    role !== 'source'
      ? new SinkRunner(config, (credential) => createAdapter({ ...config.crm, auth: credential }, caches), onFatal)
      : undefined;
  if (config.ops.port) {
    const lag = new LagMonitor(config, { slot: !!source, group: !!sink });
    const timeseries = new TimeseriesSampler({
      name: config.name,
      registry,
      ...(sink ? { quota: { requests: config.crm.limits.requests, windowSeconds: config.crm.limits.windowSeconds } } : {}),
      details: () => {
        const { partitions, slot } = lag.latest();
        const paused = new Set(sink?.pausedPartitions() ?? []);
        return {
          ...(partitions ? { partitions: partitions.map((p) => ({ ...p, paused: paused.has(`${p.topic}/${p.partition}`) })) } : {}),
          ...(slot ? { slot } : {}),
        };
      },
    });
    const ops = new OpsServer(
      config.ops.port,
      () => (source ? source.isStreaming() : true) && (sink ? sink.isJoined() : true),
      timeseries,
      { host: config.ops.host, token: config.ops.token },
    );
    components.push(ops, lag, timeseries);
    await ops.start();
    void lag.start();
    timeseries.start();
  }
  try {
    if (sink) {
      components.push(sink);
      await sink.start();
    }
    if (source) {
      components.push(source);
      await source.start();
    }
  } catch (err) {
    onFatal(err as Error);
    return;
  }
  log.info({ role, name: config.name }, 'connector running');
}
