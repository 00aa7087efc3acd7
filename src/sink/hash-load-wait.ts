import type { Logger } from '../logger.ts';

/**
 * Longest the partitions wait for the written-hash store to (re)load after a rebalance (it takes
 * well under a second normally, its read gives up after 2 minutes). Past it they are written
 * without the no-op skip, which is safe while the store is loading: nothing is skipped, every
 * written record's hash is dropped first (written-hashes.ts). Only quota is at stake, not data.
 */
export const HASH_LOAD_WAIT_MS = 15_000;

/** How long partitions have waited for the written-hash store, and whether they may wait more. */
export class HashLoadWait {
  private since: number | undefined;
  private warned = false;

  /** True while a batch should still wait for a store that is `loading` (the first call starts the wait; a loaded store ends it). */
  waitMore(loading: boolean, log: Logger): boolean {
    if (!loading) {
      this.reset();
      return false;
    }
    const now = Date.now();
    this.since ??= now;
    if (now - this.since < HASH_LOAD_WAIT_MS) return true;
    if (!this.warned) {
      log.warn({ waitedMs: now - this.since }, 'written-hash store still loading; writing without the no-op skip meanwhile');
      this.warned = true;
    }
    return false;
  }

  /** A rebalance starts a new load: the next wait starts anew. */
  reset(): void {
    this.since = undefined;
    this.warned = false;
  }
}
