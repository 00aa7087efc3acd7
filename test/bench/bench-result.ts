import { loadavg } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The one result every bench hands to the `npm run bench` aggregator: printed last on stdout as a
 * single line prefixed `BENCH_RESULT `, and written to `--json-out <file>` when given. Human-readable
 * lines go before it; the aggregator reads only this line, so its shape is the contract between benches.
 */
export interface BenchGoal {
  /** What is compared, e.g. `p99 latency, linger 0 (ms)`. */
  name: string;
  /** The measured figure, in the goal's unit. */
  value: number;
  /** The bound the goal sets, in the same unit. */
  limit: number;
  /** Always value / limit; `kind` says which side of 1 meets the goal. */
  ratio: number;
  met: boolean;
  /** `max` (default): value ≤ limit meets the goal; `min`: value ≥ limit does. */
  kind?: 'max' | 'min';
}

export interface BenchResult {
  /** Short bench name, e.g. `latency`, `memory`. */
  bench: string;
  /** The command line that produced it, e.g. `npm run bench:latency -- --seconds 60`. */
  command: string;
  /** When the run finished (ISO 8601, UTC). */
  at?: string;
  /** The machine's load average (1 and 5 min) when the run finished: speed and latency figures move with it. */
  loadAverage?: { oneMinute: number; fiveMinutes: number };
  /** Measured figures, flat or nested, numbers or short strings; units in the key names (`p99Ms`, `peakRssMb`). */
  figures: Record<string, unknown>;
  goals: BenchGoal[];
}

export const BENCH_RESULT_PREFIX = 'BENCH_RESULT ';

/** A goal with its ratio (value / limit) and whether it is met, rounded for printing. */
export function goal(name: string, value: number, limit: number, kind: 'max' | 'min' = 'max'): BenchGoal {
  const ratio = limit === 0 ? Number.POSITIVE_INFINITY : value / limit;
  const met = kind === 'max' ? value <= limit : value >= limit;
  return { name, value: round(value), limit, ratio: round(ratio, 3), met, kind };
}

/** Prints `result` as the final `BENCH_RESULT {json}` line on stdout and writes it to `jsonOut` when given. */
export function printResult(result: BenchResult, jsonOut?: string): void {
  const [one = 0, five = 0] = loadavg();
  const loadAverage = { oneMinute: Math.round(one * 100) / 100, fiveMinutes: Math.round(five * 100) / 100 };
  const full: BenchResult = { ...result, at: result.at ?? new Date().toISOString(), loadAverage: result.loadAverage ?? loadAverage };
  const json = JSON.stringify(full);
  if (jsonOut) {
    mkdirSync(dirname(jsonOut), { recursive: true });
    writeFileSync(jsonOut, `${JSON.stringify(full, null, 2)}\n`);
  }
  process.stdout.write(`${BENCH_RESULT_PREFIX}${json}\n`);
}

/** Reads a `BENCH_RESULT` line back (for the aggregator); undefined for any other line. */
export function parseResultLine(line: string): BenchResult | undefined {
  if (!line.startsWith(BENCH_RESULT_PREFIX)) return undefined;
  return JSON.parse(line.slice(BENCH_RESULT_PREFIX.length)) as BenchResult;
}

/** The value of `--json-out <file>` (or `--json-out=<file>`) in `argv`, if any. */
export function jsonOutArg(argv: readonly string[] = process.argv.slice(2)): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--json-out') return argv[i + 1];
    if (a.startsWith('--json-out=')) return a.slice('--json-out='.length);
  }
  return undefined;
}

function round(n: number, digits = 2): number {
  if (!Number.isFinite(n)) return n;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
