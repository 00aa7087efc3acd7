import { describe, expect, it } from 'vitest';
import { MessageSequencer } from '../../../src/capture/message-sequencer.ts';

/** A stream of numbered messages into a sequencer whose handler records them; `slow` ones wait for `release`. */
function harness(opts: { slow?: Set<number>; throwsAt?: number; rejectsAt?: number } = {}) {
  const handled: number[] = [];
  const flow: string[] = [];
  const failures: string[] = [];
  const gates = new Map<number, () => void>();
  const seq = new MessageSequencer<number>(
    (m) => {
      if (m === opts.throwsAt) throw new Error(`bad ${m}`);
      handled.push(m);
      if (m === opts.rejectsAt) return Promise.reject(new Error(`lookup for ${m} failed`));
      if (opts.slow?.has(m)) return new Promise<void>((resolve) => gates.set(m, resolve));
      return undefined;
    },
    { pause: () => flow.push('pause'), resume: () => flow.push('resume'), fail: (err) => failures.push(err.message) },
  );
  return { seq, handled, flow, failures, release: (m: number) => gates.get(m)!() };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

describe('MessageSequencer', () => {
  it('handles messages at once, in order, while no handler waits', () => {
    const h = harness();
    for (const m of [1, 2, 3]) h.seq.push(m);
    expect(h.handled).toEqual([1, 2, 3]);
    expect(h.flow).toEqual([]);
  });

  it('holds what arrives while a handler waits, with the socket paused, then handles it in order', async () => {
    const h = harness({ slow: new Set([2, 4]) });
    for (const m of [1, 2, 3, 4, 5]) h.seq.push(m);
    expect(h.handled).toEqual([1, 2]);
    expect(h.seq.heldCount).toBe(3);
    expect(h.flow).toEqual(['pause']);
    h.release(2);
    await settle();
    expect(h.handled).toEqual([1, 2, 3, 4]); // 4 waits in turn; 5 still held
    h.seq.push(6);
    h.release(4);
    await settle();
    expect(h.handled).toEqual([1, 2, 3, 4, 5, 6]);
    expect(h.flow).toEqual(['pause', 'resume']);
    h.seq.push(7);
    expect(h.handled.at(-1)).toBe(7);
  });

  it('handles nothing after a handler throws, so no later commit can confirm past the message', async () => {
    const h = harness({ throwsAt: 3 });
    for (const m of [1, 2, 3, 4, 5]) h.seq.push(m);
    expect(h.handled).toEqual([1, 2]);
    expect(h.failures).toEqual(['bad 3']);
    expect(h.flow).toEqual(['pause']);
  });

  it('handles nothing after a waiting handler fails, held messages included', async () => {
    const h = harness({ rejectsAt: 2 });
    for (const m of [1, 2, 3, 4]) h.seq.push(m);
    await settle();
    h.seq.push(5);
    expect(h.handled).toEqual([1, 2]);
    expect(h.failures).toEqual(['lookup for 2 failed']);
    expect(h.seq.heldCount).toBe(0);
  });
});
