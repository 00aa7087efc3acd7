import type { Row } from '../events/change-event.ts';
import type { StaleRecord } from './compare.ts';
import { type ExtraPolicy, extraPolicy, type RepairResult } from './repair.ts';
import type { MappingCheck, VerifyOptions } from './verify.ts';

/**
 * What `pg2crm verify` reports (`--json` prints it as it is): per mapping the counts and up to
 * `--examples` examples of each kind, by external id and field NAME (never a field's value: the
 * report goes to terminals and CI logs, and CRM fields hold personal data).
 */
export interface KindReport<T> {
  count: number;
  examples: T[];
}

export interface MappingReport {
  table: string;
  object: string;
  /** Rows compared (a sample's size when sampled). */
  checked: number;
  sample: boolean;
  missing: KindReport<string>;
  /** Examples name the fields that differ. */
  stale: KindReport<StaleRecord>;
  /**
   * Records in the CRM with no row. `null` in a sample (not looked for). `policy` says what
   * --repair does with them: delete, retained (onDelete ignore|set: not drift), manual.
   */
  extra: (KindReport<string> & { policy: ExtraPolicy }) | null;
  /** Rows that map to no CRM record (external id column NULL); the sink dead-letters them too. */
  unmappable: KindReport<{ key: Row; reason: string }>;
  /** Whether anything here is drift (missing, stale, or extra under policy delete|manual). */
  drift: boolean;
  repair?: RepairResult;
}

export interface VerifyReport {
  /** Rows sampled per mapping; null for a full check. */
  sample: number | null;
  mappings: MappingReport[];
  reads: {
    /** CRM read calls made (throttled ones included). */
    calls: number;
    throttled: number;
    /** Calls per window verify allowed itself: readShare of crm.limits.requests (after utilisation). */
    quota: number;
    windowSeconds: number;
    share: number;
  };
  drift: boolean;
}

function kind<T>(all: T[], examples: number): KindReport<T> {
  return { count: all.length, examples: all.slice(0, examples) };
}

export function reportOf(check: MappingCheck, options: VerifyOptions, repair: RepairResult | undefined): MappingReport {
  const { drift, mapping } = check;
  const policy = extraPolicy(mapping, check.table);
  const extra = drift.extra === undefined ? null : { ...kind(drift.extra, options.examples), policy };
  const extraDrift = extra !== null && extra.count > 0 && policy !== 'retained';
  return {
    table: mapping.table,
    object: mapping.object,
    checked: drift.checked,
    sample: options.sample !== undefined,
    missing: kind(drift.missing, options.examples),
    stale: kind(drift.stale, options.examples),
    extra,
    unmappable: kind(check.unmappable, options.examples),
    drift: drift.missing.length > 0 || drift.stale.length > 0 || extraDrift,
    ...(repair ? { repair } : {}),
  };
}

/** The report as lines for a terminal. */
export function formatReport(report: VerifyReport): string[] {
  const lines: string[] = [];
  for (const m of report.mappings) {
    const what = m.sample ? `a random sample of ${m.checked} row(s)` : `${m.checked} row(s)`;
    lines.push(`${m.table} -> ${m.object}: checked ${what}`);
    lines.push(`  missing ${m.missing.count}${m.missing.count ? `  e.g. ${m.missing.examples.join(', ')}` : ''}`);
    const stale = m.stale.examples.map((s) => `${s.externalId} (${s.fields.join(', ')})`).join(', ');
    lines.push(`  stale   ${m.stale.count}${m.stale.count ? `  e.g. ${stale}` : ''}`);
    if (m.extra === null) lines.push('  extra   not checked (a sample reads records by the sampled rows only)');
    else {
      const note = m.extra.policy === 'retained' ? ' (kept by onDelete: not drift)' : '';
      lines.push(`  extra   ${m.extra.count}${note}${m.extra.count ? `  e.g. ${m.extra.examples.join(', ')}` : ''}`);
    }
    if (m.unmappable.count) lines.push(`  unmappable ${m.unmappable.count}: ${m.unmappable.examples[0]!.reason}`);
    if (m.repair) {
      lines.push(`  repair: ${m.repair.upserts} row(s) re-published, ${m.repair.deletes} delete(s) published`);
      for (const l of m.repair.left) lines.push(`  not repaired ${l.externalId}: ${l.reason}`);
    }
  }
  const r = report.reads;
  lines.push(
    `CRM reads: ${r.calls} call(s), ${r.throttled} throttled; budget ${r.quota} per ${r.windowSeconds} s (--read-share ${r.share} of crm.limits)`,
  );
  lines.push(report.drift ? 'DRIFT found' : 'no drift');
  return lines;
}
