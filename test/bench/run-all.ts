import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type BenchResult, parseResultLine } from './bench-result.ts';

/**
 * `npm run bench [-- --only sink,scale] [--merge a.json,b.json] [--table-only] [--skip-readme]`: runs every bench
 * (or those of --only), each as `npm run <script> -- <args> --json-out <tmp>`, and merges their
 * BENCH_RESULTs into ONE report, docs/bench-report.json (--report): per bench the command that
 * produced it, the machine it ran on and when, its figures and goals. A bench not run this time
 * keeps its previous entry, so long benches can run apart (`--only windows`), or by hand with
 * other options and `--json-out`, then `--merge` that file. The README's Benchmarks table (between
 * `<!-- bench-table:start -->` and `<!-- bench-table:end -->`) is rewritten from the merged report
 * (not with --skip-readme); --table-only rewrites it from the report without running anything.
 * Exit code 1 when a bench failed or gave no BENCH_RESULT (its previous entry is kept).
 */
interface BenchSpec {
  name: string;
  script: string;
  args: string[];
  what: string;
}

export const BENCHES: BenchSpec[] = [
  {
    name: 'source',
    script: 'bench:source',
    // 200,000 rows (the issue's figure): three contenders, two transaction sizes, 1 + 3 rounds each.
    args: ['--rows', '200000'],
    what: 'PostgreSQL -> Kafka: backlog drain and steady rate vs Debezium and pg_recvlogical',
  },
  {
    name: 'sink',
    script: 'bench:sink',
    args: [],
    what: 'Kafka -> CRM per simulator: capacity, throttling, calls per change vs the naive script',
  },
  { name: 'hashes', script: 'bench:hashes', args: [], what: 'memory per CRM record of the written-hash store' },
  { name: 'latency', script: 'bench:latency', args: [], what: 'commit -> CRM write latency' },
  { name: 'memory', script: 'bench:memory', args: [], what: 'memory of the running connector' },
  {
    name: 'scale',
    script: 'bench:scale',
    args: [],
    what: 'sink scale-out: 1, 2, 4 instances, separate quota groups and one shared credential',
  },
  {
    name: 'windows',
    script: 'bench:sink',
    args: ['--real-windows'],
    what: "sink at the CRMs' real windows (Zendesk Sell 60 s, Dynamics 300 s)",
  },
];

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
}

export type ReportEntry = BenchResult & { machine: Machine };

export interface Report {
  /** When the report was last written. */
  updated: string;
  results: Record<string, ReportEntry>;
}

export function machine(): Machine {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    cores: c.length,
    memoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    node: process.version,
    os: `${process.platform} ${release()}`,
  };
}

const MARK_START = '<!-- bench-table:start -->';
const MARK_END = '<!-- bench-table:end -->';

const fmt = (v: unknown): string => {
  if (typeof v !== 'number') return v === null || v === undefined ? '—' : String(v);
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  const digits = abs >= 100 ? 0 : abs >= 1 ? 2 : 4;
  return v.toLocaleString('en-US', { maximumFractionDigits: digits });
};

type Figures = Record<string, unknown>;
const obj = (v: unknown): Figures => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Figures) : {});

/** A short note per goal from the bench's figures, where the figures' shape is known. */
function noteFor(bench: string, goalName: string, figures: Figures): string {
  const crm = goalName.split(/[: ]/)[0] ?? '';
  if (bench === 'sink' && goalName.endsWith('capacity used')) {
    const f = obj(figures[crm]);
    return `${fmt(f.recordsPerSecond)} records/s of ${fmt(f.theoreticalRecordsPerSecond)} (limit ${f.limit}, ${fmt(f.maxBatch)} per call); naive script ${fmt(f.naiveRecordsPerSecond)}`;
  }
  if (bench === 'sink' && goalName.endsWith('calls per change')) {
    const f = obj(figures[crm]);
    return `${fmt(f.callsPerChangeHourlySync)} calls per change; any sink needs ${fmt(f.writesPerChangeFloorHourlySync)} record writes per change`;
  }
  if (bench === 'windows' && goalName.endsWith('capacity used')) {
    const f = obj(figures[crm]);
    return `${fmt(f.recordsPerSecond)} records/s of ${fmt(f.theoreticalRecordsPerSecond)} (bound by ${f.boundBy}) over ${fmt(f.seconds)} s`;
  }
  if (bench === 'scale') {
    const runs = Array.isArray(figures.runs) ? (figures.runs as Figures[]) : [];
    const n = Number(
      goalName
        .match(/(\d+) instance|at (\d+) \//)
        ?.slice(1)
        .find(Boolean),
    );
    const mode = goalName.startsWith('separate') ? 'separate' : 'shared';
    const r = runs.find((x) => x.mode === mode && x.instances === n);
    if (r)
      return `${fmt(r.recordsPerSecond)} records/s of ${fmt(r.theoreticalRecordsPerSecond)}, ${fmt(r.quotaGroups)} quota group(s) of ${figures.limitPerQuotaGroup} (${figures.crm})`;
  }
  return '';
}

/** Rows for a bench without goals: its top-level numeric figures. */
function figureSummary(figures: Figures): string {
  return Object.entries(figures)
    .filter(([, v]) => typeof v === 'number')
    .slice(0, 4)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(', ');
}

export function renderTable(report: Report): string {
  const machines: Machine[] = [];
  const machineRef = (m: Machine): string => {
    let i = machines.findIndex((x) => JSON.stringify(x) === JSON.stringify(m));
    if (i < 0) i = machines.push(m) - 1;
    return `m${i + 1}`;
  };
  const lines = ['| bench | command | goal or figure | measured | goal | met | notes | run |', '|---|---|---|---|---|---|---|---|'];
  const order = [
    ...BENCHES.map((b) => b.name),
    ...new Set(
      Object.values(report.results)
        .map((r) => r.bench)
        .filter((k) => !BENCHES.some((b) => b.name === k)),
    ),
  ];
  const missing: string[] = [];
  const keys = order.flatMap((name) => {
    const found = Object.keys(report.results).filter((k) => k === name || k.startsWith(`${name}:`));
    if (!found.length) missing.push(name);
    return found;
  });
  for (const key of keys) {
    const r = report.results[key]!;
    const name = r.bench;
    const load = r.loadAverage ? `, load ${r.loadAverage.oneMinute}` : '';
    const run = `${(r.at ?? '').slice(0, 10)}, ${machineRef(r.machine)}${load}`;
    const cmd = `\`${r.command}\``;
    if (r.goals.length === 0) {
      lines.push(`| ${name} | ${cmd} | figures | ${figureSummary(r.figures)} | — | — |  | ${run} |`);
      continue;
    }
    for (const g of r.goals) {
      const bound = `${g.kind === 'min' ? '≥' : '≤'} ${fmt(g.limit)}`;
      lines.push(
        `| ${name} | ${cmd} | ${g.name} | ${fmt(g.value)} | ${bound} | ${g.met ? 'yes' : '**no**'} | ${noteFor(name, g.name, r.figures)} | ${run} |`,
      );
    }
  }
  const out = [lines.join('\n'), ''];
  out.push(
    machines.map((m, i) => `m${i + 1}: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.os}`).join('; ') +
      '. Generated by `npm run bench` from docs/bench-report.json (each row: the command that produced it, its date, machine and the 1-minute load average when it finished).',
  );
  if (missing.length) out.push('', `Not in the report yet: ${missing.map((m) => `\`npm run bench -- --only ${m}\``).join(', ')}.`);
  return out.join('\n');
}

/** README with the text between the markers replaced by `table`; an error when the markers are missing. */
export function withTable(readme: string, table: string): string {
  const a = readme.indexOf(MARK_START);
  const b = readme.indexOf(MARK_END);
  if (a < 0 || b < a) throw new Error(`README has no ${MARK_START} … ${MARK_END} pair around the Benchmarks table; add them`);
  return `${readme.slice(0, a + MARK_START.length)}\n${table}\n${readme.slice(b)}`;
}

/**
 * Benches measured per CRM (sink, windows) go into the report one entry per CRM, `<bench>:<crm>`:
 * a run of some CRMs (`--crm dynamics`) replaces those and keeps the others' rows and commands.
 */
const PER_CRM = new Set(['sink', 'windows']);

export function entriesOf(r: BenchResult): [string, BenchResult][] {
  if (!PER_CRM.has(r.bench)) return [[r.bench, r]];
  return Object.keys(r.figures).map((crm) => [
    `${r.bench}:${crm}`,
    {
      ...r,
      figures: { [crm]: r.figures[crm] },
      goals: r.goals.filter((g) => g.name.startsWith(`${crm}:`) || g.name.startsWith(`${crm} `)),
    },
  ]);
}

function readReport(file: string): Report {
  if (!existsSync(file)) return { updated: new Date().toISOString(), results: {} };
  return JSON.parse(readFileSync(file, 'utf8')) as Report;
}

/** Runs one bench; its BENCH_RESULT from --json-out (or the stdout line), undefined when it failed. */
async function runBench(spec: BenchSpec, dir: string): Promise<BenchResult | undefined> {
  const out = join(dir, `${spec.name}.json`);
  const argv = ['run', spec.script, '--', ...spec.args, '--json-out', out];
  process.stderr.write(`\n# bench ${spec.name}: npm ${argv.join(' ')}\n`);
  let last: BenchResult | undefined;
  let pending = '';
  const child = spawn('npm', argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout.on('data', (d: Buffer) => {
    process.stdout.write(d);
    pending += d.toString();
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const l of parts) last = parseResultLine(l) ?? last;
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  last = parseResultLine(pending) ?? last;
  const fromFile = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as BenchResult) : undefined;
  const result = fromFile ?? last;
  if (code !== 0 || !result) {
    process.stderr.write(
      `# bench ${spec.name} ${code !== 0 ? `exited with ${code}` : 'printed no BENCH_RESULT'}; its previous entry is kept\n`,
    );
    return undefined;
  }
  return result;
}

async function main(): Promise<number> {
  const { values: args } = parseArgs({
    options: {
      only: { type: 'string' },
      merge: { type: 'string' },
      'table-only': { type: 'boolean', default: false },
      report: { type: 'string', default: 'docs/bench-report.json' },
      readme: { type: 'string', default: 'README.md' },
      'skip-readme': { type: 'boolean', default: false },
    },
  });
  const only = args.only?.split(',').map((s) => s.trim());
  const unknown = (only ?? []).filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length) {
    console.error(`unknown bench ${unknown.join(', ')}; choose from ${BENCHES.map((b) => b.name).join(', ')}`);
    return 2;
  }
  const report = readReport(args.report);
  const here = machine();
  let failed = 0;
  const add = (r: BenchResult): void => {
    for (const [key, part] of entriesOf(r)) report.results[key] = { ...part, at: r.at ?? new Date().toISOString(), machine: here };
  };
  for (const file of args.merge?.split(',').filter(Boolean) ?? []) {
    const r = JSON.parse(readFileSync(file, 'utf8')) as BenchResult;
    add(r);
  }
  if (!args['table-only'] && !args.merge) {
    const dir = mkdtempSync(join(tmpdir(), 'pg2crm-bench-'));
    try {
      for (const spec of BENCHES.filter((b) => !only || only.includes(b.name))) {
        const r = await runBench(spec, dir);
        if (r) add({ ...r, bench: spec.name });
        else failed++;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  report.updated = new Date().toISOString();
  const sorted: Report = { updated: report.updated, results: {} };
  for (const k of Object.keys(report.results).sort()) sorted.results[k] = report.results[k]!;
  writeFileSync(args.report, `${JSON.stringify(sorted, null, 2)}\n`);
  const table = renderTable(sorted);
  if (!args['skip-readme']) writeFileSync(args.readme, withTable(readFileSync(args.readme, 'utf8'), table));
  process.stderr.write(`# wrote ${args.report}${args['skip-readme'] ? '' : ` and the table in ${args.readme}`}\n`);
  console.log(table);
  return failed ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main();
