import { describe, expect, it } from 'vitest';
import { deadLetterOf, type DeadLetter } from '../../../src/sink/dead-letter.ts';
import { OffsetTracker, StallWatch, type Written } from '../../../src/sink/offset-tracker.ts';
import { fakeBatch, message, silentLog, upsert } from './fake-batch.ts';

function letterAt(offset: number): DeadLetter {
  return deadLetterOf('t', 0, message(offset), {
    object: 'contacts',
    externalId: null,
    error: { code: 'DECODE', message: 'bad' },
    attempts: 1,
  });
}

/** A tracker over a fake batch whose hash store and dead-letter topic write into the batch's event log. */
function setup(offsets = [0, 1, 2, 3, 4], opts: { failLetters?: boolean; failHashes?: boolean } = {}) {
  const fake = fakeBatch({ offsets });
  const hashes: Written[][] = [];
  const letters: DeadLetter[][] = [];
  const stalls = new StallWatch();
  let now = 1_000;
  const tracker = new OffsetTracker(fake.payload, {
    rememberHashes: async (w) => {
      fake.events.push('hashes');
      if (opts.failHashes) throw new Error('hash topic down');
      hashes.push(w);
    },
    sendDeadLetters: async (l) => {
      fake.events.push('letters');
      if (opts.failLetters) throw new Error('dead-letter topic down');
      letters.push(l);
    },
    stalls,
    log: silentLog,
    now: () => now,
  });
  return { fake, tracker, hashes, letters, stalls, tick: (ms: number) => (now += ms) };
}

describe('OffsetTracker', () => {
  it('resolves in order only up to the lowest unfinished offset, then on as the gap fills', async () => {
    const { fake, tracker } = setup();
    tracker.finish([0n, 1n, 3n, 4n]);
    await tracker.checkpoint();
    expect(fake.resolved).toEqual(['0', '1']);
    expect(fake.events.at(-1)).toBe('commit');
    tracker.finish([2n]);
    await tracker.checkpoint();
    expect(fake.resolved).toEqual(['0', '1', '2', '3', '4']);
  });

  it('stores written hashes and sends dead letters before it resolves any offset', async () => {
    const { fake, tracker, hashes, letters } = setup([0, 1, 2]);
    tracker.wrote({ write: upsert('a'), full: true });
    tracker.finish([0n]);
    tracker.deadLetter([letterAt(1)]);
    tracker.finish([2n]);
    await tracker.checkpoint();
    expect(fake.events).toEqual(['hashes', 'letters', 'resolve:0', 'resolve:1', 'resolve:2', 'commit']);
    expect(hashes).toEqual([[{ write: upsert('a'), full: true }]]);
    expect(letters.flat().map((l) => l.offset)).toEqual(['1']);
  });

  it('an offset waiting for its dead letter is not done before the letter is sent', async () => {
    const { fake, tracker } = setup([0, 1]);
    tracker.deadLetter([letterAt(0)]);
    expect(tracker.awaitsDeadLetter(0n)).toBe(true);
    expect(tracker.awaitsDeadLetter(1n)).toBe(false);
    tracker.finish([1n]);
    await tracker.checkpoint();
    expect(tracker.awaitsDeadLetter(0n)).toBe(false);
    expect(fake.resolved).toEqual(['0', '1']);
  });

  it('a dead-letter send failure resolves and commits nothing', async () => {
    const { fake, tracker } = setup([0, 1, 2], { failLetters: true });
    tracker.finish([0n, 2n]);
    tracker.deadLetter([letterAt(1)]);
    await expect(tracker.checkpoint()).rejects.toThrow('dead-letter topic down');
    expect(fake.resolved).toEqual([]);
    expect(fake.events).not.toContain('commit');
  });

  it('a hash store failure resolves and commits nothing, and sends no letter', async () => {
    const { fake, tracker } = setup([0, 1], { failHashes: true });
    tracker.wrote({ write: upsert('a'), full: true });
    tracker.finish([0n]);
    tracker.deadLetter([letterAt(1)]);
    await expect(tracker.checkpoint()).rejects.toThrow('hash topic down');
    expect(fake.events).toEqual(['hashes']);
  });

  it('notes a partition whose offset does not move, and forgets it once it moves', async () => {
    const { tracker, stalls, tick } = setup([0, 1]);
    await tracker.checkpoint();
    tick(5_000);
    expect(stalls.stalled(6_000)).toEqual({ 'pg2crm.public.customers/0': 5 });
    tracker.finish([0n]);
    await tracker.checkpoint();
    expect(stalls.stalled(6_000)).toEqual({});
  });

  it('is due for a checkpoint CHECKPOINT_MS after the last one', async () => {
    const { fake, tracker, tick } = setup([0]);
    expect(tracker.due()).toBe(false);
    await tracker.checkpointIfDue();
    expect(fake.events).toEqual([]);
    tick(2_001);
    expect(tracker.due()).toBe(true);
    await tracker.checkpointIfDue();
    expect(fake.events).toEqual(['commit']);
    expect(tracker.due()).toBe(false);
  });
});
