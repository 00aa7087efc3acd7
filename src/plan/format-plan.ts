import type { MappingPlan, Plan } from './build-plan.ts';
import type { SnapshotEstimate } from './estimate.ts';

/** `pg2crm plan`'s text output: one block per mapping, the totals, the steady state and fixes. */

export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 120) return `${s} s`;
  const d = Math.floor(s / 86_400);
  const h = Math.floor((s % 86_400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return `${m}m ${s % 60}s`;
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
/** 9000, 12.5, 0.015: a count of windows or days as precise as it needs to be. */
const amount = (v: number): string => (v >= 100 ? int(v) : v >= 1 ? v.toFixed(1) : v === 0 ? '0' : v.toPrecision(2));
const pct = (share: number): string => `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`;

function snapshotLine(s: SnapshotEstimate, unit: string): string {
  const days = s.days === undefined ? '' : `, ${amount(s.days)} days of the daily quota`;
  return `${int(s.calls)} calls, ${int(s.requests)} ${unit} (${amount(s.windows)} quota windows${days}), ~${formatDuration(s.seconds)} (bound: ${s.bound})`;
}

function mappingLines(p: MappingPlan, plan: Plan): string[] {
  return [
    `${p.table} -> ${p.object}`,
    `  rows      ${int(p.rows)} (${p.rowsSource})`,
    `  changes   ${p.changesPerSecond.toFixed(2)}/s (${p.changesSource})`,
    `  snapshot  ${p.recordsPerCall} records/call: ${snapshotLine(p.snapshot, plan.unit)} alone`,
    `  steady    ${p.steady.recordsPerCall} records/call, ${int(p.steady.requestsPerHour)} ${plan.unit}/h = ${pct(p.steady.share)} of the quota`,
  ];
}

function quotaLine(plan: Plan): string {
  const q = plan.quota;
  const daily = q.daily === undefined ? '' : `, ${int(q.daily)} a day`;
  const e = q.execution;
  const execution = e
    ? `, ${e.seconds} s of CRM execution time per ${e.windowSeconds} s (assumed ${e.secondsPerRecord * 1000} ms per record)`
    : '';
  return `quota: ${int(q.perWindow)} ${plan.unit} per ${q.windowSeconds} s${daily} × ${q.groups} quota group(s), ${q.concurrency} calls in flight${execution}`;
}

function steadyLines(plan: Plan): string[] {
  const s = plan.steady;
  const daily = s.dailyShare === undefined ? '' : `, ${pct(s.dailyShare)} of the daily quota`;
  const execution = s.executionShare === undefined ? '' : `, ${pct(s.executionShare)} of the execution-time limit`;
  const head = `steady state: ${int(s.recordsPerHour)} records/h need ${int(s.requestsPerHour)} ${plan.unit}/h = ${pct(s.share)} of the quota${daily}${execution}`;
  if (s.status === 'keeps-up')
    return [`${head}; keeps up with ${pct(Math.max(0, 1 - Math.max(s.share, s.dailyShare ?? 0, s.executionShare ?? 0)))} headroom`];
  if (s.status === 'batches-up')
    return [
      `${head}; keeps up only by batching changes into fuller calls (${pct(s.fullShare)} of the quota with full calls): latency grows`,
    ];
  const lines = [`${head}; falls behind by ${int(s.behindPerHour)} records/hour even with full calls`];
  const fix = plan.fix;
  if (fix) {
    lines.push('  to keep up (20% headroom), any of:');
    lines.push(
      `  - ${fix.groupsNeeded} credentials in separate quota groups (crm.credentials[].quotaGroup; now ${plan.quota.groups}), if the CRM counts them separately`,
    );
    if (fix.bulk) lines.push(`  - ${fix.bulk}`);
    if (fix.dropMappings.length) lines.push(`  - fewer mapped tables: leave out ${fix.dropMappings.join(', ')}`);
  }
  return lines;
}

export function formatPlan(plan: Plan): string[] {
  const a = plan.assumptions;
  return [
    `pg2crm plan for ${plan.crm}`,
    quotaLine(plan),
    `assumed: ${a.callSeconds} s per call, ${a.startupSeconds} s to start, ${Math.round(a.paceEfficiency * 100)}% of the paced quota used, source ${int(a.sourceRowsPerSecond)} rows/s`,
    '',
    ...plan.mappings.flatMap((p) => [...mappingLines(p, plan), '']),
    `initial snapshot (all mappings): ${snapshotLine(plan.snapshot, plan.unit)}`,
    ...steadyLines(plan),
  ];
}
