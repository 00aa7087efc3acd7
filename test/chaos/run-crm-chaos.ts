import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChaos } from './crm-chaos.ts';

/**
 * `npm run test:chaos`: the full chaos run of issue 10 (the CI-sized one is crm-chaos.test.ts).
 * 100,000 changes over 2,500+ records; 8 source and 8 sink SIGKILLs one at a time plus one of
 * each in every mixed round (24 in all); every other fault kind at least once, then mixed.
 * Environment: CHAOS_SEED (replay), CHAOS_CHANGES, CHAOS_PORT_BASE (default 45400: ports
 * 45400-45404 for the suite's own PostgreSQL, Kafka, controller, registry and Kafka's SASL_SSL listener).
 * Exit code 0 only when lost, stale and extra are 0 and the dead letters are exactly the rejects.
 */
const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const dir = mkdtempSync(join(tmpdir(), 'pg2crm-chaos-'));
try {
  const result = await runChaos({
    seed,
    changes: Number(process.env.CHAOS_CHANGES ?? 100_000),
    changesPerSecond: 120,
    records: 2_500,
    rejects: 12,
    sourceKills: 8,
    sinkKills: 8,
    mixedRounds: 4,
    gapSeconds: [4, 12],
    lockoutSeconds: [30, 60],
    trafficWaitSeconds: 120,
    logLevel: process.env.CHAOS_LOG_LEVEL === 'debug' ? 'debug' : 'info',
    settleSeconds: 600,
    portBase: Number(process.env.CHAOS_PORT_BASE ?? 45_400),
    dir,
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${result.summary}\n`);
  if (result.problems.length === 0) rmSync(dir, { recursive: true, force: true });
  else process.stderr.write(`connector logs in ${dir}\n`);
  process.exit(result.problems.length ? 1 : 0);
} catch (err) {
  process.stderr.write(`chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\nlogs in ${dir}\n`);
  process.exit(2);
}
