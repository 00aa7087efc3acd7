/**
 * What adapters remember of the CRM (record ids by external id, links they made), shared by all
 * adapters of one connector process: there is one adapter per credential, and the sink spreads
 * calls over them, so a record's writes go through several adapters. Separate memories would
 * disagree: one adapter deleting a record by an id another adapter's write already replaced, or
 * skipping a link another adapter removed. Dropped on every rebalance (`CrmAdapter.forget`),
 * since partitions that come back may have been written by another instance meanwhile.
 */
/** Entries per cache: ~100 bytes each, so a cache stays around 10 MB however many records pass. */
const CACHE_MAX = 100_000;

/** Sets `key` as the most recently used entry of `map`, evicting the least recently used past CACHE_MAX. */
export function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  // Map iteration order is insertion order: the first key is the least recently used.
  if (map.size > CACHE_MAX) map.delete(map.keys().next().value!);
}

export class CrmCaches {
  private readonly maps = new Map<string, Map<string, unknown>>();

  /** The cache called `name` (created empty on first use). */
  map<V>(name: string): Map<string, V> {
    let m = this.maps.get(name);
    if (!m) this.maps.set(name, (m = new Map<string, unknown>()));
    return m as Map<string, V>;
  }

  clear(): void {
    for (const m of this.maps.values()) m.clear();
  }
}
