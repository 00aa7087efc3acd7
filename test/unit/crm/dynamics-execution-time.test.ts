import { afterEach, describe, expect, it } from 'vitest';
import { keySegment } from '../../../src/crm/dynamics/adapter.ts';
import { type BatchOperation, buildBatchRequest } from '../../../src/crm/dynamics/multipart.ts';
import { startDynamicsSimulator } from '../../../src/crm/dynamics/simulator.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';

/**
 * The simulator's execution time as Dataverse documents it
 * (https://learn.microsoft.com/power-apps/developer/data-platform/api-limits): every operation of a
 * `$batch` spends execution time, and a `$batch` runs its operations in order
 * (execute-batch-operations-using-web-api), so its answer takes at least that long.
 */
const API = '/api/data/v9.2';
let sim: CrmSimulator | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

const upsert = (id: string): BatchOperation => ({
  method: 'PATCH',
  url: `${API}/contacts(${keySegment('erp_id', id)})`,
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ lastname: `n${id}` }),
});

async function batch(s: CrmSimulator, ops: BatchOperation[]): Promise<{ status: number; ms: number; code?: string }> {
  const t0 = performance.now();
  const res = await fetch(`${s.url}${API}/$batch`, {
    method: 'POST',
    headers: { authorization: 'Bearer sim-token', 'content-type': 'multipart/mixed; boundary=b', prefer: 'odata.continue-on-error' },
    body: buildBatchRequest('b', ops),
  });
  const text = await res.text();
  const ms = performance.now() - t0;
  return res.status === 429
    ? { status: res.status, ms, code: (JSON.parse(text) as { error: { code: string } }).error.code }
    : { status: res.status, ms };
}

describe('Dynamics simulator: execution time', () => {
  it('holds a $batch answer answerMsPerOperation per operation; answers at once by default', async () => {
    sim = await startDynamicsSimulator({ port: 0, executionMsPerOperation: 50, answerMsPerOperation: 50 });
    const slow = await batch(sim, [upsert('1'), upsert('2'), upsert('3'), upsert('4')]);
    expect(slow.status).toBe(200);
    expect(slow.ms).toBeGreaterThanOrEqual(195);
    await sim.close();
    sim = await startDynamicsSimulator({ port: 0, executionMsPerOperation: 50 });
    const quick = await batch(sim, [upsert('1'), upsert('2'), upsert('3'), upsert('4')]);
    expect(quick.status).toBe(200);
    expect(quick.ms).toBeLessThan(150);
  });

  it('charges a request when it has run: requests arriving meanwhile are admitted, later ones throttled (0x80072321)', async () => {
    // 1 s of execution time; a batch of 6 operations spends 1.2 s, in 0.3 s of answering.
    sim = await startDynamicsSimulator({ port: 0, executionSeconds: 1, executionMsPerOperation: 200, answerMsPerOperation: 50 });
    const long = batch(
      sim,
      [1, 2, 3, 4, 5, 6].map((i) => upsert(`${i}`)),
    );
    await new Promise((r) => setTimeout(r, 100));
    const during = await batch(sim, [upsert('7')]);
    expect(during.status).toBe(200);
    expect((await long).status).toBe(200);
    const after = await batch(sim, [upsert('8')]);
    expect(after).toMatchObject({ status: 429, code: '0x80072321' });
  });
});
