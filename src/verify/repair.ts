import type { TableInfo } from '../capture/table-catalog.ts';
import type { Config, MappingConfig } from '../config.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import type { Row } from '../events/change-event.ts';
import { avroName, convertValue } from '../events/row-codec.ts';
import { CurrentRowPublisher, isDataException } from '../replay/current-row-publisher.ts';
import type { MappingCheck } from './verify.ts';

/**
 * `pg2crm verify --repair`: re-drives the drift the way `pg2crm dlq replay` does, through the
 * connector's own topics (CurrentRowPublisher): never by writing to the CRM from here, so the
 * running sink stays the one writer, under its budget, in key order with the record's other
 * changes.
 * - missing and stale: the row's CURRENT state as a snapshot event (op `r`), a full upsert the
 *   sink never skips as a no-op;
 * - extra (a CRM record whose row is gone): deleted ONLY with `deleteExtras` (`--delete-extras`),
 *   never by `--repair` alone: a record carrying the external id field may have been made by
 *   another tool or by hand, and is then not pg2crm's to delete. With the flag, a delete for that
 *   key, only when the mapping applies deletes (`onDelete: delete`) and its external id column is
 *   the table's primary key, so the key can be named; the publisher still reads the row first and
 *   sends it instead if it came back meanwhile. Under `onDelete: ignore | set` a record without a
 *   row is what the mapping asks for: it is reported as retained, never deleted. (Extras are
 *   already only ids that no mapping of the same object and external id field expects: verify.ts.)
 */
export interface RepairOptions {
  /** Publish deletes for extras (`--delete-extras`); without it they are reported, left alone. */
  deleteExtras: boolean;
}

export interface RepairResult {
  /** Rows re-published as snapshot events. */
  upserts: number;
  /** Deletes published for extras. */
  deletes: number;
  /** Drift left alone, with why (extras that cannot be named by a key, keys that do not fit). */
  left: { externalId: string; reason: string }[];
}

export type ExtraPolicy = 'delete' | 'retained' | 'manual';

/** What --repair does with a mapping's extras (see the header comment). */
export function extraPolicy(mapping: MappingConfig, table: TableInfo): ExtraPolicy {
  if (mapping.onDelete !== 'delete') return 'retained';
  return table.primaryKey.length === 1 && table.primaryKey[0] === mapping.externalId.column ? 'delete' : 'manual';
}

/** The primary key an extra's external id names (policy `delete`: the id is the one key column's value). */
function keyOfExtra(table: TableInfo, externalId: string): Row {
  const column = table.columns.find((c) => c.name === table.primaryKey[0])!;
  return { [avroName(column.name)]: convertValue(column, externalId) };
}

async function repairCheck(out: Pick<CurrentRowPublisher, 'publish'>, check: MappingCheck, options: RepairOptions): Promise<RepairResult> {
  const result: RepairResult = { upserts: 0, deletes: 0, left: [] };
  const publish = async (id: string, key: () => Row): Promise<void> => {
    try {
      if ((await out.publish(check.table, key())) === 'd') result.deletes++;
      else result.upserts++;
    } catch (err) {
      const unfit = isDataException(err) || (err instanceof ConnectorError && err.code === 'VALUE_CONVERSION');
      if (!unfit) throw err;
      result.left.push({
        externalId: id,
        reason: `its external id does not fit the primary key of ${check.mapping.table}: ${errorMessage(err)}`,
      });
    }
  };
  for (const id of [...check.drift.missing, ...check.drift.stale.map((s) => s.externalId)]) {
    await publish(id, () => check.expected.get(id)!.key);
  }
  const policy = extraPolicy(check.mapping, check.table);
  for (const id of check.drift.extra ?? []) {
    if (policy === 'delete' && !options.deleteExtras) {
      result.left.push({
        externalId: id,
        reason: 'a record with no row is deleted only with --delete-extras (check first that no other tool made it)',
      });
    } else if (policy === 'delete') await publish(id, () => keyOfExtra(check.table, id));
    else if (policy === 'manual') {
      result.left.push({
        externalId: id,
        reason: `${check.mapping.externalId.column} is not the primary key of ${check.mapping.table}, so no delete can be keyed for it; delete the record in the CRM`,
      });
    }
  }
  return result;
}

/** Repairs every check's drift; one result per check, in order. */
export async function repairDrift(config: Config, checks: MappingCheck[], options: RepairOptions): Promise<RepairResult[]> {
  const out = await CurrentRowPublisher.open(config, 'verify-repair');
  try {
    const results: RepairResult[] = [];
    for (const check of checks) results.push(await repairCheck(out, check, options));
    return results;
  } finally {
    await out.close();
  }
}
