import { InvalidArgumentError } from 'commander';
import type { Config } from '../config.ts';
import { formatReport, type VerifyReport } from '../verify/report.ts';
import { type VerifyOptions, verify } from '../verify/verify.ts';

/**
 * `pg2crm verify --config c.yaml [--table t] [--sample N] [--repair [--delete-extras]] [--read-share f] [--json]`:
 * compares the CRM with PostgreSQL's current rows (src/verify/verify.ts) and prints what differs.
 *
 * Exit codes: 0 no drift; 3 drift found (missing, stale, or extra records; after --repair too:
 * the repair is published, the sink writes it afterwards, so run verify again to see it gone);
 * 1 runtime failure; 2 invalid usage or config.
 */
export const EXIT_DRIFT = 3;

/**
 * Default share of the CRM quota verify reads with: a quarter leaves the writers three quarters
 * of every window, and on a quota that allows it reads 25,000 records a minute in HubSpot
 * (100 a call at 190/10 s × 0.25) or 2,500 an hour in Zendesk Sell's 36,000/h.
 */
export const DEFAULT_READ_SHARE = 0.25;

export function readShare(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 1) throw new InvalidArgumentError('give a fraction of the quota, 0 < f <= 1 (e.g. 0.25)');
  return n;
}

export function settleSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('give a number of seconds, 0 or more');
  return n;
}

export function sampleSize(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('give a number of rows, at least 1');
  return n;
}

export interface VerifyCommandOptions {
  table?: string;
  sample?: number;
  repair?: boolean;
  deleteExtras?: boolean;
  readShare: number;
  maxWait: number;
  settle: number;
  examples: number;
  json?: boolean;
}

/** Runs verify, prints the report, returns the exit code (0 no drift, EXIT_DRIFT drift). */
export async function verifyCommand(config: Config, opts: VerifyCommandOptions, print: (line: string) => void): Promise<number> {
  const options: VerifyOptions = {
    table: opts.table,
    sample: opts.sample,
    repair: opts.repair === true,
    deleteExtras: opts.deleteExtras === true,
    readShare: opts.readShare,
    maxWaitSeconds: opts.maxWait,
    settleSeconds: opts.settle,
    examples: opts.examples,
  };
  const report: VerifyReport = await verify(config, options);
  if (opts.json) print(JSON.stringify(report, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
  else for (const line of formatReport(report)) print(line);
  return report.drift ? EXIT_DRIFT : 0;
}
