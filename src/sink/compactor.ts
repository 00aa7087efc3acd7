import type { CrmLookup, CrmWrite } from '../crm/crm-adapter.ts';

/**
 * Per-key compaction inside one flush window: all changes to one CRM record become one write.
 *
 * Delivery is at-least-once: after a crash, a rebalance or a batch cut short, a window is
 * delivered again, and some of its writes may already have reached the CRM (a write can even
 * reach it while the sink sees a timeout). So no rule may reason "this happened inside this
 * window, hence the CRM never saw it": every rule must give the same CRM state whether the window
 * is seen once or many times, and a snapshot row (`r`) says nothing about what the CRM holds.
 * Rules, applied in offset order:
 *  - upsert + upsert -> one upsert with the fields merged (later values win); a lookup keeps, as
 *    `previousExternalId`, the target the CRM held before the window (see mergeLookups);
 *  - anything + delete -> delete, always sent: even a record inserted inside the window may be in
 *    the CRM from an earlier delivery of the same window, and nothing here can prove otherwise;
 *  - delete + upsert -> upsert (the insert that follows a delete carries every mapped field, so
 *    the CRM ends equal to the row whether or not it still held the record).
 * `restore` marks an upsert no written-hash no-op skip may apply to: it folds in a snapshot row
 * since the last delete (its purpose may be to restore a CRM that lost data, which the hashes do
 * not know), or it replaces a delete of this window (that delete may have reached the CRM in an
 * earlier delivery, the hashes do not know that either).
 * Each compacted write remembers the offsets it stands for, so offsets are resolved only when
 * the write that covers them is done.
 */
export interface CompactedWrite {
  write: CrmWrite | null;
  /** Offsets (as bigint) of every message folded into this write. */
  offsets: bigint[];
  /** Smallest offset folded in: the write's place in the partition's order. */
  firstOffset: bigint;
  /** An upsert folding in a snapshot row since the last delete, or replacing a delete: never skipped as unchanged. */
  restore: boolean;
  /** Commit time (ms) of the earliest change folded in, when known: end-to-end latency. */
  commitMs?: number;
}

export interface KeyedChange {
  offset: bigint;
  /** null = the mapping says nothing is to be written for this change. */
  write: CrmWrite | null;
  /** The change is a snapshot row (op `r`): it may be restoring the CRM, so no no-op skip applies. */
  restore: boolean;
  /** A delete's lookup targets from its old row (REPLICA IDENTITY FULL), by lookup field: links the deleted record had. */
  held?: Record<string, string>;
  /** Commit time of the change in PostgreSQL, ms. */
  commitMs?: number;
}

/** Compacts a window held whole (tests, small windows); see Compactor. */
export function compact(changes: KeyedChange[]): CompactedWrite[] {
  const compactor = new Compactor();
  for (const change of changes) compactor.add(change);
  return compactor.writes();
}

/**
 * Compaction fed one change at a time, in offset order, so a fetch is never held as a list of
 * decoded events: what stays is one write per record of the window (a backlog behind a
 * throttled CRM is many fetches, and each is decoded again after every pause).
 */
export class Compactor {
  private readonly byKey = new Map<string, CompactedWrite>();
  private readonly out: CompactedWrite[] = [];
  /** Per record and lookup field: every target named in this window (see staleLinks). */
  private readonly named = new Map<string, Map<string, Set<string>>>();

  add(change: KeyedChange): void {
    const w = change.write;
    const commitMs = change.commitMs === undefined ? {} : { commitMs: change.commitMs };
    if (!w) {
      this.out.push({ write: null, offsets: [change.offset], firstOffset: change.offset, restore: false, ...commitMs });
      return;
    }
    const key = `${w.object}\u0000${w.externalId}`;
    noteTargets(this.named, key, w, change.held);
    const prev = this.byKey.get(key);
    if (!prev) {
      const first: CompactedWrite = {
        write: w,
        offsets: [change.offset],
        firstOffset: change.offset,
        restore: w.op === 'upsert' && change.restore,
        ...commitMs,
      };
      this.byKey.set(key, first);
      this.out.push(first);
      return;
    }
    prev.offsets.push(change.offset);
    const before = prev.write;
    if (w.op === 'delete') {
      prev.write = w;
      prev.restore = false;
    } else if (before && before.op === 'upsert') {
      prev.write = {
        ...w,
        fields: { ...before.fields, ...w.fields },
        ...(before.lookups || w.lookups ? { lookups: mergeLookups(before.lookups ?? {}, w.lookups ?? {}) } : {}),
      };
      prev.restore = prev.restore || change.restore;
    } else {
      // The delete this upsert replaces may have reached the CRM in an earlier delivery, which
      // the written hashes do not know: what the CRM holds is unknown, so no skip may apply.
      prev.write = w;
      prev.restore = true;
    }
    prev.write = staleLinks(prev.write, this.named.get(key));
  }

  /** The compacted writes, in the order of their first offsets. */
  writes(): CompactedWrite[] {
    return this.out.sort((a, b) => (a.firstOffset < b.firstOffset ? -1 : a.firstOffset > b.firstOffset ? 1 : 0));
  }
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

function noteTargets(
  named: Map<string, Map<string, Set<string>>>,
  key: string,
  w: CrmWrite,
  held: Record<string, string> | undefined,
): void {
  const note = (field: string, target: string | null | undefined): void => {
    if (target === null || target === undefined) return;
    // Created on the first target only: most records of a window have no lookups.
    let fields = named.get(key);
    if (!fields) named.set(key, (fields = new Map()));
    let set = fields.get(field);
    if (!set) fields.set(field, (set = new Set()));
    set.add(target);
  };
  for (const [field, l] of Object.entries(w.lookups ?? {})) {
    note(field, l.externalId);
    note(field, l.previousExternalId);
  }
  for (const [field, target] of Object.entries(held ?? {})) note(field, target);
}

/**
 * A folded upsert's lookups with `staleExternalIds`: every target named in the window other than
 * the one it now points to and its previous one. Under redelivery any of them may already be
 * linked in the CRM, and a delete folded into a re-insert never removed the deleted record's
 * links; a many-to-many CRM keeps a link until it is removed.
 */
function staleLinks(w: CrmWrite | null, fields: Map<string, Set<string>> | undefined): CrmWrite | null {
  if (w?.op !== 'upsert' || !w.lookups || !fields) return w;
  const lookups: Record<string, CrmLookup> = {};
  for (const [field, l] of Object.entries(w.lookups)) {
    const { staleExternalIds: _s, ...rest } = l;
    const stale = [...(fields.get(field) ?? [])].filter((t) => t !== l.externalId && t !== l.previousExternalId).sort();
    lookups[field] = stale.length ? { ...rest, staleExternalIds: stale } : rest;
  }
  return { ...w, lookups };
}
