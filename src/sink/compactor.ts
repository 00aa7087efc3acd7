import type { CrmLookup, CrmWrite } from '../crm/crm-adapter.ts';

/**
 * Per-key compaction inside one flush window: all changes to one CRM record become one write.
 * Rules, applied in offset order:
 *  - upsert + upsert -> one upsert with the fields merged (later values win); a lookup keeps, as
 *    `previousExternalId`, the target the CRM held before the window (see mergeLookups);
 *  - anything + delete -> delete;
 *  - a record created inside the window and deleted inside it -> nothing to write;
 *  - delete + upsert -> upsert (the insert that follows a delete carries every mapped field).
 * Each compacted write remembers the offsets it stands for, so offsets are resolved only when
 * the write that covers them is done.
 */
export interface CompactedWrite {
  write: CrmWrite | null;
  /** Offsets (as bigint) of every message folded into this write. */
  offsets: bigint[];
  /** Smallest offset folded in: the write's place in the partition's order. */
  firstOffset: bigint;
}

export interface KeyedChange {
  offset: bigint;
  /** null = the mapping says nothing is to be written for this change. */
  write: CrmWrite | null;
  /** The change created the record (insert / snapshot row). */
  creates: boolean;
}

export function compact(changes: KeyedChange[]): CompactedWrite[] {
  const byKey = new Map<string, CompactedWrite & { createdHere: boolean }>();
  const noop: CompactedWrite[] = [];
  for (const change of changes) {
    const w = change.write;
    if (!w) {
      noop.push({ write: null, offsets: [change.offset], firstOffset: change.offset });
      continue;
    }
    const key = `${w.object}\u0000${w.externalId}`;
    const prev = byKey.get(key);
    if (!prev) {
      byKey.set(key, { write: w, offsets: [change.offset], firstOffset: change.offset, createdHere: change.creates });
      continue;
    }
    prev.offsets.push(change.offset);
    const before = prev.write;
    if (w.op === 'delete') {
      prev.write = prev.createdHere ? null : w;
    } else if (before && before.op === 'upsert') {
      prev.write = {
        ...w,
        fields: { ...before.fields, ...w.fields },
        ...(before.lookups || w.lookups ? { lookups: mergeLookups(before.lookups ?? {}, w.lookups ?? {}) } : {}),
      };
    } else {
      prev.write = w;
      prev.createdHere = prev.createdHere || change.creates;
    }
  }
  const out: CompactedWrite[] = [...noop];
  for (const { createdHere: _c, ...rest } of byKey.values()) out.push(rest);
  return out.sort((a, b) => (a.firstOffset < b.firstOffset ? -1 : a.firstOffset > b.firstOffset ? 1 : 0));
}

/**
 * The lookups of two upserts of one record, merged: the later target wins, and the previous
 * target is what the CRM holds before the window, since the earlier write is never sent. That
 * is the earlier write's own previous target, or, when it did not change the lookup, its
 * target. A lookup moved back to where it started has nothing to remove.
 */
export function mergeLookups(earlier: Record<string, CrmLookup>, later: Record<string, CrmLookup>): Record<string, CrmLookup> {
  const out: Record<string, CrmLookup> = { ...earlier };
  for (const [field, l] of Object.entries(later)) {
    const e = earlier[field];
    const { previousExternalId: _p, ...target } = l;
    const held = (e ? (e.previousExternalId ?? e.externalId) : l.previousExternalId) ?? undefined;
    out[field] = held !== undefined && held !== l.externalId ? { ...target, previousExternalId: held } : target;
  }
  return out;
}
