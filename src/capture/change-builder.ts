import type { ChangeEvent, ChangeSource, Row } from '../events/change-event.ts';
import { sameValue } from '../events/pg-values.ts';
import { avroName, type ColumnShape, convertValue, type TypeRule, typeRule } from '../events/row-codec.ts';
import { ConnectorError } from '../errors.ts';
import { type Relation, type Tuple, UNCHANGED_TOAST } from './pgoutput-decoder.ts';

/**
 * Turns decoded pgoutput row messages into change events. Rows are keyed by Avro field names
 * (see row-codec.avroName) so they match the registered schema exactly.
 */
export interface TxContext {
  lsn: string;
  xid: number;
  commitTsMicros: bigint;
  /** Next sequence number within the transaction. */
  seq: number;
}

interface Decoded {
  row: Row;
  unchanged: string[];
}

/**
 * Each column's Avro field name and type rule, worked out once per relation version (the hot
 * path needs them per value). Keyed by the columns array, which a new Relation message replaces;
 * domain base types are set on it before its first row (the handler awaits them).
 */
const plans = new WeakMap<ColumnShape[], { names: string[]; rules: TypeRule[] }>();

function planOf(columns: ColumnShape[]): { names: string[]; rules: TypeRule[] } {
  let plan = plans.get(columns);
  if (!plan) plans.set(columns, (plan = { names: columns.map((c) => avroName(c.name)), rules: columns.map(typeRule) }));
  return plan;
}

function decodeTuple(columns: ColumnShape[], tuple: Tuple): Decoded {
  const row: Row = {};
  const unchanged: string[] = [];
  const { names, rules } = planOf(columns);
  for (let i = 0; i < columns.length; i++) {
    const v = tuple[i];
    const name = names[i]!;
    if (v === UNCHANGED_TOAST) {
      // Not sent because unchanged: null in the record, listed in `unchanged` so no consumer
      // mistakes it for a value set to NULL.
      row[name] = null;
      unchanged.push(name);
    } else row[name] = v === null || v === undefined ? null : convertValue(columns[i]!, v, rules[i]);
  }
  return { row, unchanged };
}

function keyOf(relation: Relation, primaryKey: string[], row: Row): Row {
  const key: Row = {};
  for (const col of primaryKey) {
    const name = avroName(col);
    if (!(name in row)) {
      throw new ConnectorError(
        'KEY_COLUMN_MISSING',
        `primary key column ${col} of ${relation.schema}.${relation.table} is not in the replicated row; restart the connector after changing a primary key`,
      );
    }
    key[name] = row[name];
  }
  return key;
}

function sameKey(a: Row, b: Row): boolean {
  return Object.keys(a).every((k) => String(a[k]) === String(b[k]));
}

function source(relation: Relation, tx: TxContext): ChangeSource {
  return {
    lsn: tx.lsn,
    seq: tx.seq++,
    xid: tx.xid,
    commitTsMicros: tx.commitTsMicros,
    schema: relation.schema,
    table: relation.table,
    snapshot: false,
  };
}

export function buildInsert(relation: Relation, primaryKey: string[], after: Tuple, tx: TxContext): ChangeEvent {
  const { row } = decodeTuple(relation.columns, after);
  return {
    op: 'c',
    key: keyOf(relation, primaryKey, row),
    before: null,
    after: row,
    changed: Object.keys(row),
    unchanged: [],
    source: source(relation, tx),
  };
}

/**
 * An update. With REPLICA IDENTITY FULL the old row arrives and the changed columns are known;
 * otherwise `changed` is null (unknown) rather than a guess. A primary-key change becomes a
 * delete of the old key followed by an insert of the new one, as the record's identity changed.
 */
export function buildUpdate(
  relation: Relation,
  primaryKey: string[],
  before: Tuple | null,
  beforeIsKeyOnly: boolean,
  after: Tuple,
  tx: TxContext,
): ChangeEvent[] {
  const next = decodeTuple(relation.columns, after);
  const key = keyOf(relation, primaryKey, next.row);
  const prev = before ? decodeTuple(relation.columns, before) : null;
  if (prev) {
    const oldKey = keyOf(relation, primaryKey, prev.row);
    if (!sameKey(oldKey, key)) {
      const deleted: ChangeEvent = {
        op: 'd',
        key: oldKey,
        before: beforeIsKeyOnly ? null : prev.row,
        after: null,
        changed: null,
        unchanged: [],
        source: source(relation, tx),
      };
      return [deleted, { ...buildInsertFromRow(next.row, key), source: source(relation, tx) }];
    }
  }
  let changed: string[] | null = null;
  if (prev && !beforeIsKeyOnly) {
    changed = Object.keys(next.row).filter((c) => !next.unchanged.includes(c) && !sameValue(prev.row[c], next.row[c]));
  }
  return [
    {
      op: 'u',
      key,
      before: prev && !beforeIsKeyOnly ? prev.row : null,
      after: next.row,
      changed,
      unchanged: next.unchanged,
      source: source(relation, tx),
    },
  ];
}

function buildInsertFromRow(row: Row, key: Row): Omit<ChangeEvent, 'source'> {
  return { op: 'c', key, before: null, after: row, changed: Object.keys(row), unchanged: [] };
}

export function buildDelete(relation: Relation, primaryKey: string[], before: Tuple, beforeIsKeyOnly: boolean, tx: TxContext): ChangeEvent {
  const prev = decodeTuple(relation.columns, before);
  return {
    op: 'd',
    key: keyOf(relation, primaryKey, prev.row),
    // Under the default identity only key columns are sent; the rest would read as NULLs.
    before: beforeIsKeyOnly ? null : prev.row,
    after: null,
    changed: null,
    unchanged: [],
    source: source(relation, tx),
  };
}

/** A snapshot row (op `r`), from the columns' text output in table column order. */
export function buildSnapshotRow(
  table: { schema: string; table: string; columns: ColumnShape[]; primaryKey: string[] },
  texts: (string | null)[],
  tx: TxContext,
): ChangeEvent {
  const { row } = decodeTuple(table.columns, texts);
  const relationLike = { schema: table.schema, table: table.table } as Relation;
  return {
    op: 'r',
    key: keyOf(relationLike, table.primaryKey, row),
    before: null,
    after: row,
    changed: Object.keys(row),
    unchanged: [],
    source: { ...source(relationLike, tx), snapshot: true },
  };
}
