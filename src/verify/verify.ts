import type pg from 'pg';
import { openPg } from '../capture/pg-connect.ts';
import { quoteIdent, selectAsText } from '../capture/sql-identifiers.ts';
import { describeTables, type TableInfo } from '../capture/table-catalog.ts';
import type { Config, MappingConfig } from '../config.ts';
import type { CrmAdapter, CrmTarget } from '../crm/crm-adapter.ts';
import { createAdapter } from '../crm/create-adapter.ts';
import { ConnectorError } from '../errors.ts';
import type { Row } from '../events/change-event.ts';
import { compareRecords, type Drift, type Fields } from './compare.ts';
import { confirmDrift } from './confirm.ts';
import { ReadBudget } from './read-budget.ts';
import { repairDrift } from './repair.ts';
import { type MappingReport, reportOf, type VerifyReport } from './report.ts';
import { mapRows } from './rows.ts';

/**
 * `pg2crm verify`: reads the CRM's records by external id under a read budget (read-budget.ts),
 * compares their mapped fields with PostgreSQL's current rows (compare.ts), and reports what is
 * missing, stale and extra; `repair` re-drives them (repair.ts).
 *
 * Full check (no `sample`): every row of the table, and every record of the CRM object that
 * holds an external id, listed page by page (`listRecords`): one pass finds all three kinds.
 * Both sides are held in memory for the comparison (a few hundred bytes per record).
 * Sample (`sample` N): N random rows, their records read by external id (`readByExternalIds`);
 * records without a row cannot be sampled, so extras are not looked for.
 *
 * Several mappings may write the same CRM records' id space (customers_eu and customers_us ->
 * contacts, both by erp_id): a listing holds all their records, so an id is extra only when no
 * mapping of that object and external id field expects it (sharingTarget), `--table` or not.
 *
 * Lookup fields (CRM ids of other records) are not compared: their values are the CRM's own ids.
 * What differs is looked at a second time after `settleSeconds` (confirm.ts): changes in flight
 * to the CRM while verify reads are not drift.
 */
export interface VerifyOptions {
  /** Only the mapping of this table (`schema.table`). */
  table?: string | undefined;
  /** Check a random sample of this many rows per mapping instead of all. */
  sample?: number | undefined;
  repair: boolean;
  /** With `repair`: also publish deletes for extras (`--delete-extras`; see repair.ts). */
  deleteExtras?: boolean | undefined;
  /** Fraction of the CRM quota verify may use (read-budget.ts). */
  readShare: number;
  maxWaitSeconds: number;
  /** Wait before the second look at what the first comparison found (confirm.ts); 0 = at once. */
  settleSeconds: number;
  /** Examples kept per kind of drift. */
  examples: number;
  /** Rows per query of a full read (default ROWS_PER_QUERY; small in tests to cross pages). */
  rowsPerQuery?: number | undefined;
}

/** A row as verify compares it: its primary key (for a repair) and the fields the mapping writes. */
export interface ExpectedRecord {
  key: Row;
  fields: Fields;
}

export interface MappingCheck {
  mapping: MappingConfig;
  table: TableInfo;
  expected: Map<string, ExpectedRecord>;
  /** Rows that map to no CRM record (their external id column is NULL): key and why. */
  unmappable: { key: Row; reason: string }[];
  drift: Drift;
}

function selectMappings(config: Config, table: string | undefined): MappingConfig[] {
  if (table === undefined) return config.mappings;
  const chosen = config.mappings.filter((m) => m.table === table);
  if (chosen.length === 0) {
    throw new ConnectorError(
      'CONFIG_TABLE',
      `--table ${table} is not the table of any mapping; use one of: ${config.mappings.map((m) => m.table).join(', ')}`,
    );
  }
  return chosen;
}

function requireReads(adapter: CrmAdapter): Required<Pick<CrmAdapter, 'readBatchSize' | 'readByExternalIds' | 'listRecords'>> {
  if (!adapter.readBatchSize || !adapter.readByExternalIds || !adapter.listRecords) {
    throw new ConnectorError(
      'VERIFY_UNSUPPORTED',
      `crm.kind ${adapter.kind} cannot read records back in this build, so verify cannot compare; use a CRM kind that can (salesforce, hubspot, dynamics, zoho, zendesk-sell)`,
    );
  }
  return adapter as Required<Pick<CrmAdapter, 'readBatchSize' | 'readByExternalIds' | 'listRecords'>>;
}

/**
 * Mappings other than `mapping` to the same CRM object and external id field: their records
 * share one id space with `mapping`'s (compared without case: Salesforce's names are caseless).
 */
export function sharingTarget(mappings: MappingConfig[], mapping: MappingConfig): MappingConfig[] {
  const same = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();
  return mappings.filter((m) => m !== mapping && same(m.object, mapping.object) && same(m.externalId.field, mapping.externalId.field));
}

/** Rows per query of a full read: keyset pages by primary key, so no table is held by one query result. */
const ROWS_PER_QUERY = 10_000;

/** The rows to check (all, or a random sample of `sample`), mapped as the sink maps them. */
async function expectedRecords(
  db: pg.Client,
  table: TableInfo,
  mapping: MappingConfig,
  sample: number | undefined,
  rowsPerQuery = ROWS_PER_QUERY,
): Promise<Pick<MappingCheck, 'expected' | 'unmappable'>> {
  const from = `${quoteIdent(table.schema)}.${quoteIdent(table.table)}`;
  const select = selectAsText(table.columns);
  if (sample !== undefined || table.primaryKey.length === 0) {
    // A sample is small; a table without a primary key (replica identity full) has no key to page by.
    const res = await db.query<(string | null)[]>({
      text: `SELECT ${select} FROM ${from}${sample === undefined ? '' : ' ORDER BY random() LIMIT $1'}`,
      values: sample === undefined ? [] : [sample],
      rowMode: 'array',
    });
    return mapRows(table, mapping, res.rows);
  }
  // Keyset pagination: the primary key's values of the page's last row (as text, cast back to
  // the column types) start the next page. Each page is its own statement, so a row changed
  // between pages is seen in either state; the second look (confirm.ts) settles such rows.
  const pk = table.primaryKey.map(quoteIdent).join(', ');
  const pkIndex = table.primaryKey.map((k) => table.columns.findIndex((c) => c.name === k));
  const typeOf = (k: string) => table.columns.find((c) => c.name === k)?.typeName ?? 'text';
  const after = `(${pk}) > (${table.primaryKey.map((k, i) => `$${i + 2}::${typeOf(k)}`).join(', ')})`;
  const out: Pick<MappingCheck, 'expected' | 'unmappable'> = { expected: new Map(), unmappable: [] };
  let last: (string | null)[] | undefined;
  for (;;) {
    const res = await db.query<(string | null)[]>({
      text: `SELECT ${select} FROM ${from}${last ? ` WHERE ${after}` : ''} ORDER BY ${pk} LIMIT $1`,
      values: [rowsPerQuery, ...(last ? pkIndex.map((i) => last![i]) : [])],
      rowMode: 'array',
    });
    const mapped = mapRows(table, mapping, res.rows);
    for (const [id, r] of mapped.expected) out.expected.set(id, r);
    out.unmappable.push(...mapped.unmappable);
    if (res.rows.length < rowsPerQuery) return out;
    last = res.rows[res.rows.length - 1];
  }
}

/** Every record of the object that holds an external id, page by page. */
async function listAll(
  adapter: ReturnType<typeof requireReads>,
  budget: ReadBudget,
  target: CrmTarget,
  fields: string[],
): Promise<Map<string, Fields>> {
  const out = new Map<string, Fields>();
  let cursor: string | undefined;
  do {
    const page = await budget.call(`listing ${target.object}`, (onSignal) => adapter.listRecords(target, fields, cursor, onSignal));
    for (const r of page.records) out.set(r.externalId, r.fields);
    cursor = page.next;
  } while (cursor !== undefined);
  return out;
}

/** The records of these external ids, `readBatchSize` per call. */
async function readIds(
  adapter: ReturnType<typeof requireReads>,
  budget: ReadBudget,
  target: CrmTarget,
  ids: string[],
  fields: string[],
): Promise<Map<string, Fields>> {
  const out = new Map<string, Fields>();
  const size = Math.max(1, adapter.readBatchSize(target.object));
  for (let i = 0; i < ids.length; i += size) {
    const chunk = ids.slice(i, i + size);
    const found = await budget.call(`reading ${target.object}`, (onSignal) => adapter.readByExternalIds(target, chunk, fields, onSignal));
    for (const [id, f] of found) out.set(id, f);
  }
  return out;
}

/** The first look at one mapping: its rows against the CRM's records (confirmDrift is the second). */
async function checkMapping(
  db: pg.Client,
  table: TableInfo,
  mapping: MappingConfig,
  reads: { adapter: ReturnType<typeof requireReads>; budget: ReadBudget },
  options: Pick<VerifyOptions, 'sample' | 'rowsPerQuery'>,
): Promise<MappingCheck> {
  const { sample } = options;
  const { expected, unmappable } = await expectedRecords(db, table, mapping, sample, options.rowsPerQuery);
  const target = { object: mapping.object, externalIdField: mapping.externalId.field };
  const fields = Object.keys(mapping.fields);
  const crm =
    sample === undefined
      ? await listAll(reads.adapter, reads.budget, target, fields)
      : await readIds(reads.adapter, reads.budget, target, [...expected.keys()], fields);
  const plain = new Map([...expected].map(([id, e]) => [id, e.fields]));
  return { mapping, table, expected, unmappable, drift: compareRecords(plain, crm, sample === undefined) };
}

/**
 * Drops from each check's extras the ids another mapping of the same object and external id
 * field expects. Read after every listing, so a record listed is covered by its rows as they
 * were then or later. Mappings not checked (`--table`) have their rows read for this.
 */
async function dropSharedExtras(
  db: pg.Client,
  config: Config,
  checks: MappingCheck[],
  tables: Map<string, TableInfo>,
  rowsPerQuery: number | undefined,
): Promise<void> {
  const idsOf = new Map<MappingConfig, Set<string>>();
  for (const c of checks) idsOf.set(c.mapping, new Set(c.expected.keys()));
  for (const check of checks) {
    if (check.drift.extra === undefined || check.drift.extra.length === 0) continue;
    for (const other of sharingTarget(config.mappings, check.mapping)) {
      let ids = idsOf.get(other);
      if (!ids) {
        ids = new Set((await expectedRecords(db, tables.get(other.table)!, other, undefined, rowsPerQuery)).expected.keys());
        idsOf.set(other, ids);
      }
      const theirs = ids;
      check.drift.extra = check.drift.extra.filter((id) => !theirs.has(id));
    }
  }
}

/** Compares every mapping (or the one of `options.table`); repairs when asked. */
export async function verify(config: Config, options: VerifyOptions): Promise<VerifyReport> {
  const mappings = selectMappings(config, options.table);
  const adapter = createAdapter({ ...config.crm, auth: config.crm.credentials[0]! });
  const budget = new ReadBudget(config.crm.limits, { share: options.readShare, maxWaitSeconds: options.maxWaitSeconds });
  const checks: MappingCheck[] = [];
  try {
    const reads = { adapter: requireReads(adapter), budget };
    const db = await openPg(config.postgres);
    try {
      const shared = mappings.flatMap((m) => sharingTarget(config.mappings, m));
      const tables = await describeTables(db, [...new Set([...mappings, ...shared].map((m) => m.table))]);
      for (const mapping of mappings) checks.push(await checkMapping(db, tables.get(mapping.table)!, mapping, reads, options));
      if (options.sample === undefined) await dropSharedExtras(db, config, checks, tables, options.rowsPerQuery);
      for (const [i, check] of checks.entries()) {
        const target = { object: check.mapping.object, externalIdField: check.mapping.externalId.field };
        const fields = Object.keys(check.mapping.fields);
        const again = { read: (ids: string[]) => readIds(reads.adapter, budget, target, ids, fields) };
        checks[i] = await confirmDrift(db, check, again, options.settleSeconds * 1000);
      }
    } finally {
      await db.end().catch(() => undefined);
    }
  } finally {
    await adapter.close();
  }
  const repaired = options.repair ? await repairDrift(config, checks, { deleteExtras: options.deleteExtras === true }) : undefined;
  const mappingReports: MappingReport[] = checks.map((c, i) => reportOf(c, options, repaired?.[i]));
  return {
    sample: options.sample ?? null,
    mappings: mappingReports,
    reads: {
      calls: budget.calls,
      throttled: budget.throttled,
      quota: budget.quota,
      windowSeconds: config.crm.limits.windowSeconds,
      share: options.readShare,
    },
    drift: mappingReports.some((m) => m.drift),
  };
}
