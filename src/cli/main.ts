import { Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig } from '../config.ts';
import { ConnectorError, type ErrorCode, type KnownErrorCode } from '../errors.ts';
import { reportFatal } from './fatal.ts';
import { probeKafka } from './kafka-probe.ts';
import { setLogLevel } from '../logger.ts';
import { printChecks, runChecks } from './check-command.ts';
import { runConnector, type Role } from './run-command.ts';
import { runSimulator } from './sim-command.ts';
import { dropSlotCommand } from './slot-command.ts';
import { requestSnapshot } from './snapshot-command.ts';
import { installStopSignals } from './stop-signals.ts';
import { formatStatus, readStatus } from '../ops/status.ts';
import { describeSkipped, replayDeadLetters } from './dlq-replay.ts';
import { planFor } from './plan-command.ts';
import { DEFAULT_READ_SHARE, readShare, sampleSize, settleSeconds, type VerifyCommandOptions, verifyCommand } from './verify-command.ts';
import { formatPlan } from '../plan/format-plan.ts';

/**
 * Exit codes: 0 success; 1 runtime failure or failed checks; 2 invalid usage or config.
 */
const EXIT_FAILURE = 1;
const EXIT_CONFIG = 2;

/**
 * The config file (or a command's arguments) cannot be used as written: exit 2. Other errors of
 * kind `config` are about the database's or CRM's setup, found at run time: exit 1.
 */
const CONFIG_FILE_CODES: ReadonlySet<ErrorCode> = new Set<KnownErrorCode>([
  'CONFIG_CRM_KIND',
  'CONFIG_ENV_MISSING',
  'CONFIG_INVALID',
  'CONFIG_NOT_FOUND',
  'CONFIG_SECRET_FILE',
  'CONFIG_SIM_KIND',
  'CONFIG_SIM_LIMIT',
  'CONFIG_SIM_TTL',
  'CONFIG_SYNTAX',
  'CONFIG_TABLE',
]);

installStopSignals(); // already done by bin/pg2crm.js; here for `node src/cli/main.ts`

function fail(err: unknown): never {
  const code = err instanceof ConnectorError && CONFIG_FILE_CODES.has(err.code) ? EXIT_CONFIG : EXIT_FAILURE;
  reportFatal(err);
  process.exit(code);
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('give a port number 0-65535');
  return n;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('give a number of seconds greater than 0');
  return n;
}

function milliseconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('give a number of milliseconds greater than 0');
  return n;
}

const program = new Command('pg2crm')
  .description('Change-data-capture from PostgreSQL through Kafka into CRMs, within their API rate limits')
  .addHelpText('after', '\nExit codes: 0 ok, 1 runtime failure or failed checks, 2 invalid usage or configuration.')
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG));

program
  .command('run')
  .description('run the connector (long-lived): capture, publish to Kafka, write to the CRM')
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .addOption(
    new Option('--role <role>', 'what this process runs; scale sinks out with --role sink')
      .choices(['all', 'source', 'sink'])
      .default('all'),
  )
  .action(async (opts: { config: string; role: Role }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel(config.ops.logLevel);
      await runConnector(config, opts.role);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('check')
  .description('validate the config and check every dependency (PostgreSQL, Kafka, registry, CRM)')
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .action(async (opts: { config: string }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      process.stdout.write('PASS  config: valid\n');
      const failed = printChecks(await runChecks(config), (l) => process.stdout.write(`${l}\n`));
      process.exit(failed ? EXIT_FAILURE : 0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('status')
  .description('consumer lag per topic-partition, replication slot lag, dead-letter count')
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .option('--json', 'machine-readable output')
  .option('--watch <seconds>', 'refresh every N seconds', (v) => Number(v))
  .action(async (opts: { config: string; json?: boolean; watch?: number }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      for (;;) {
        const status = await readStatus(config);
        process.stdout.write(opts.json ? `${JSON.stringify(status)}\n` : `${formatStatus(status)}\n`);
        if (!opts.watch) break;
        await new Promise((r) => setTimeout(r, opts.watch! * 1000));
        if (!opts.json) process.stdout.write('\n');
      }
    } catch (err) {
      fail(err);
    }
  });

program
  .command('plan')
  .description(
    'estimate, before running: calls, quota windows and wall time of the initial snapshot, and the share of the quota the change rate needs',
  )
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .option('--json', 'machine-readable output')
  .option('--sample-seconds <seconds>', 'how long to watch the tables change (pg_stat_user_tables)', seconds, 10)
  .option('--call-ms <ms>', 'assumed duration of one CRM call (the CRM is not called)', milliseconds, 300)
  .action(async (opts: { config: string; json?: boolean; sampleSeconds: number; callMs: number }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      const plan = await planFor(config, { sampleSeconds: opts.sampleSeconds, callSeconds: opts.callMs / 1000 });
      process.stdout.write(opts.json ? `${JSON.stringify(plan)}\n` : `${formatPlan(plan).join('\n')}\n`);
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('verify')
  .description(
    "compare the CRM's records with PostgreSQL's current rows (missing, stale, extra), reading under a share of the CRM quota; --repair re-drives the drift",
  )
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .option('-t, --table <schema.table>', 'only the mapping of this table')
  .option('--sample <n>', 'check a random sample of n rows per mapping (extras are not looked for)', sampleSize)
  .option('--repair', "re-drive the drift through the connector's topics: current rows for missing/stale; extras are only reported")
  .option(
    '--delete-extras',
    'with --repair: also publish deletes for extras (CRM records with the external id field and no row in any mapping of that object); check first that no other tool made them',
  )
  .option('--read-share <f>', 'fraction of crm.limits (window and daily) verify may spend on reads', readShare, DEFAULT_READ_SHARE)
  .option('--max-wait <seconds>', 'give up when the CRM quota would keep verify waiting longer than this', seconds, 600)
  .option(
    '--settle <seconds>',
    'look again at what differs after this long (changes in flight while verify reads are not drift); 0 = at once',
    settleSeconds,
    5,
  )
  .option('--examples <n>', 'examples shown per kind of drift', sampleSize, 10)
  .option('--json', 'machine-readable output')
  .addHelpText(
    'after',
    '\nReads count against the CRM quota the running connector writes with; the rest of the quota stays with it.\n' +
      'Exit codes: 0 no drift, 3 drift found (also after --repair: run verify again once the sink has caught up), 1 runtime failure, 2 invalid usage or configuration.',
  )
  .action(async (opts: VerifyCommandOptions & { config: string }) => {
    if (opts.deleteExtras && !opts.repair)
      program.error('error: --delete-extras deletes as part of a repair; add --repair', { exitCode: 2 });
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      if (opts.repair) await probeKafka(config);
      process.exit(await verifyCommand(config, opts, (l) => process.stdout.write(`${l}\n`)));
    } catch (err) {
      fail(err);
    }
  });

program
  .command('snapshot')
  .description(
    're-snapshot one table while streaming continues (incremental, deduplicated against concurrent changes), e.g. after a CRM was wiped or a mapping changed; shows progress until done',
  )
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON) of the running connector')
  .requiredOption('-t, --table <schema.table>', 'table to snapshot again; one of postgres.tables')
  .option('--timeout <seconds>', 'stop waiting after this long (exit 1); the request stays queued', seconds)
  .addHelpText('after', '\nThe running connector (pg2crm run) does the work; a request made while it is down runs when it resumes.')
  .action(async (opts: { config: string; table: string; timeout?: number }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      await requestSnapshot(
        config,
        opts.table,
        (l) => process.stdout.write(`${l}\n`),
        opts.timeout ? { timeoutSeconds: opts.timeout } : {},
      );
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('slot')
  .description('replication slot tools')
  .command('drop')
  .description("decommission: drop the connector's replication slot (so PostgreSQL stops keeping WAL for it) and its publication")
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .option('-y, --yes', 'really drop; without it, only print what would be dropped')
  .addHelpText(
    'after',
    '\nRefuses while a connector streams from the slot: stop it first. Kafka topics and the consumer group are kept.\n' +
      'Exit codes: 0 dropped or nothing to drop, 1 refused (slot in use) or failed, 2 --yes missing (nothing dropped) or invalid config.',
  )
  .action(async (opts: { config: string; yes?: boolean }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      process.exit(await dropSlotCommand(config, opts.yes === true, (l) => process.stdout.write(`${l}\n`)));
    } catch (err) {
      fail(err);
    }
  });

program
  .command('dlq')
  .description('dead-letter topic tools')
  .command('replay')
  .description("re-drive dead-lettered records: publishes each record's current PostgreSQL row (or its deletion) again")
  .requiredOption('-c, --config <file>', 'connector config (YAML or JSON)')
  .action(async (opts: { config: string }) => {
    try {
      const config = loadConfig(opts.config);
      setLogLevel('warn');
      await probeKafka(config); // unreachable brokers: one line within 10 s, not after kafkajs's retries
      const r = await replayDeadLetters(config);
      // Letters that cannot be replayed are reported and passed over (exit 0): replaying them
      // again would fail the same way. The lines say where each is and why, for a manual fix.
      for (const s of r.skipped) process.stderr.write(`skipped dead letter ${describeSkipped(s)}\n`);
      if (r.letters === 0 && r.skipped.length === 0) process.stdout.write(`no dead letters to replay in ${config.sink.deadLetterTopic}\n`);
      else {
        process.stdout.write(
          `replayed ${r.letters} dead letter(s): ${r.records} record(s) re-published from PostgreSQL (${r.deleted} as deletions)\n`,
        );
        if (r.skipped.length > 0) {
          process.stdout.write(
            `skipped ${r.skipped.length} dead letter(s) that cannot be replayed (listed above); the replay group moved past them\n`,
          );
        }
      }
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('sim')
  .description("run a CRM simulator with the vendor's documented limits and throttling")
  .argument('<crm>', 'CRM kind, e.g. zendesk-sell')
  .requiredOption('-p, --port <n>', 'port to listen on (0 = any)', port)
  .option('--host <address>', 'address to listen on (0.0.0.0 in containers)', '127.0.0.1')
  .option('--limit <requests/window>', 'rate limit, e.g. 200/60s, 36000/1h')
  .option('--token <t...>', 'accepted API tokens (all share one bucket)')
  .option('--retry-after <seconds>', 'Retry-After of throttled responses', (v) => Number(v))
  .option(
    '--token-ttl <duration>',
    "lifetime of the OAuth access tokens the simulator's token endpoint issues, e.g. 20s, 5m, 1h (default: the vendor's)",
  )
  .option('--control', 'serve the /__sim/* control routes (stored records, stats, fault injection, clock, reset); off by default')
  .action(
    async (
      crm: string,
      opts: { port: number; host: string; limit?: string; token?: string[]; retryAfter?: number; tokenTtl?: string; control?: boolean },
    ) => {
      try {
        await runSimulator(crm, {
          port: opts.port,
          host: opts.host,
          ...(opts.limit ? { limit: opts.limit } : {}),
          ...(opts.token ? { token: opts.token } : {}),
          ...(opts.tokenTtl ? { tokenTtl: opts.tokenTtl } : {}),
          ...(opts.retryAfter !== undefined ? { retryAfter: opts.retryAfter } : {}),
          ...(opts.control ? { control: true } : {}),
        });
      } catch (err) {
        fail(err);
      }
    },
  );

await program.parseAsync(process.argv);
