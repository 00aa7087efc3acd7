import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { metrics } from '../../../src/metrics.ts';
import { PartitionPauser } from '../../../src/sink/partition-pauser.ts';
import { fakeBatch, silentLog } from './fake-batch.ts';

async function pausedGauge(): Promise<number> {
  return (await metrics.pausedPartitions.get()).values[0]?.value ?? 0;
}

describe('PartitionPauser', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('pauses once, resumes after the wait, and does not double-pause meanwhile', async () => {
    const pauser = new PartitionPauser(silentLog);
    const fake = fakeBatch({ partition: 3 });
    const before = await pausedGauge();
    pauser.pause(fake.payload, 1_000);
    pauser.pause(fake.payload, 50_000);
    expect(fake.pauses).toBe(1);
    expect(pauser.paused()).toEqual(['pg2crm.public.customers/3']);
    expect(pauser.isPaused('pg2crm.public.customers', 3)).toBe(true);
    expect(await pausedGauge()).toBe(before + 1);
    vi.advanceTimersByTime(999);
    expect(fake.resumes).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fake.resumes).toBe(1);
    expect(pauser.paused()).toEqual([]);
    expect(await pausedGauge()).toBe(before);
    pauser.pause(fake.payload, 10);
    expect(fake.pauses).toBe(2);
  });

  it('pauses other partitions independently', () => {
    const pauser = new PartitionPauser(silentLog);
    const a = fakeBatch({ partition: 0 });
    const b = fakeBatch({ partition: 1 });
    pauser.pause(a.payload, 100);
    pauser.pause(b.payload, 100);
    expect(a.pauses + b.pauses).toBe(2);
    expect(pauser.paused().sort()).toEqual(['pg2crm.public.customers/0', 'pg2crm.public.customers/1']);
  });

  it('a linger pause is not reported as paused nor counted, but blocks another pause', async () => {
    const pauser = new PartitionPauser(silentLog);
    const fake = fakeBatch();
    const before = await pausedGauge();
    pauser.pause(fake.payload, 200, 'linger');
    expect(fake.pauses).toBe(1);
    expect(pauser.paused()).toEqual([]);
    expect(pauser.isPaused('pg2crm.public.customers', 0)).toBe(true);
    expect(await pausedGauge()).toBe(before);
    pauser.pause(fake.payload, 5_000);
    expect(fake.pauses).toBe(1);
    vi.advanceTimersByTime(200);
    expect(fake.resumes).toBe(1);
    expect(pauser.isPaused('pg2crm.public.customers', 0)).toBe(false);
  });

  it('waits at least 10 ms', () => {
    const pauser = new PartitionPauser(silentLog);
    const fake = fakeBatch();
    pauser.pause(fake.payload, -5);
    vi.advanceTimersByTime(9);
    expect(fake.resumes).toBe(0);
    vi.advanceTimersByTime(1);
    expect(fake.resumes).toBe(1);
  });

  it('stop clears the timers and resumes nothing', () => {
    const pauser = new PartitionPauser(silentLog);
    const fake = fakeBatch();
    pauser.pause(fake.payload, 1_000);
    pauser.stop();
    expect(pauser.paused()).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(10_000);
    expect(fake.resumes).toBe(0);
  });

  it('stop takes its backpressure pauses off sink_paused_partitions (a linger pause was never on it)', async () => {
    const pauser = new PartitionPauser(silentLog);
    const before = await pausedGauge();
    pauser.pause(fakeBatch({ partition: 0 }).payload, 1_000);
    pauser.pause(fakeBatch({ partition: 1 }).payload, 1_000);
    pauser.pause(fakeBatch({ partition: 2 }).payload, 1_000, 'linger');
    expect(await pausedGauge()).toBe(before + 2);
    pauser.stop();
    expect(await pausedGauge()).toBe(before);
  });
});
