import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import { DynamicsAdapter } from '../../../src/crm/dynamics/adapter.ts';
import { startDynamicsSimulator } from '../../../src/crm/dynamics/simulator.ts';
import type { CrmSimulator, SimStats } from '../../../src/crm/sim-server.ts';
import { BatchSizer } from '../../../src/sink/batch-sizer.ts';
import { BatchWorker } from '../../../src/sink/batch-worker.ts';
import { CircuitBreaker } from '../../../src/sink/circuit-breaker.ts';
import { QuotaLanes } from '../../../src/sink/quota-lanes.ts';
import { decode, fakeBatch, message, silentLog } from './fake-batch.ts';

/**
 * Dataverse's combined execution time (1,200 s per user per 5 minutes, api-limits) binds long
 * before its 6,000 requests when operations are batched. The sink (BatchWorker, QuotaLanes,
 * DynamicsAdapter, all real) against the simulator with Dataverse's rate scaled to a 4 s window:
 * 1,000 requests and 16 s of execution time per 4 s (4 s per second, as 1,200 s per 300 s), each
 * operation 40 ms charged and 40 ms in answering (a $batch runs its operations in order).
 */
const TOPIC = 'erp.public.customers';
const WINDOW_SECONDS = 4;
const EXECUTION_SECONDS = 16;
const OP_MS = 40;
const RUN_MS = 7_000;

let sim: CrmSimulator | undefined;
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  await sim?.close();
  sim = undefined;
});

async function stats(s: CrmSimulator): Promise<SimStats> {
  return (await (await fetch(`${s.url}/__sim/stats`)).json()) as SimStats;
}

describe('Dynamics execution-time limit', () => {
  it(
    'the sink stays under the combined execution time of concurrent $batch calls: no 0x80072321 throttle, the next request admitted',
    async () => {
      sim = await startDynamicsSimulator({
        port: 0,
        control: true,
        limit: { requests: 1000, windowSeconds: WINDOW_SECONDS },
        executionSeconds: EXECUTION_SECONDS,
        executionMsPerOperation: OP_MS,
        answerMsPerOperation: OP_MS,
      });
      const config = parseConfig(
        {
          name: 'c',
          postgres: { url: 'postgresql://u@h/db', tables: ['public.customers'] },
          kafka: { brokers: 'k:9092', topicPrefix: 'erp', schemaRegistry: { url: 'http://r' } },
          // No executionSeconds: the adapter's default, 1,200 s per 300 s scaled to the 4 s window.
          crm: {
            kind: 'dynamics',
            baseUrl: sim.url,
            auth: { token: 'sim-token' },
            limits: { requests: 1000, windowSeconds: WINDOW_SECONDS, concurrency: 8 },
          },
          sink: { lingerMs: 0, maxAttempts: 8 },
          mappings: [
            {
              table: 'public.customers',
              object: 'contacts',
              externalId: { column: 'id', field: 'erp_id' },
              fields: { lastname: 'name' },
            },
          ],
        },
        {},
      );
      const budget = new QuotaLanes(config.crm, () => new DynamicsAdapter(config.crm));
      cleanups.push(() => budget.close());
      const adapter = budget.adapter;
      const worker = new BatchWorker({
        sink: config.sink,
        concurrency: config.crm.limits.concurrency,
        budget,
        breaker: new CircuitBreaker(),
        sizer: new BatchSizer((o) => adapter.maxBatchSize(o), config.crm.timeoutMs / 3),
        adapter,
        codec: { decode },
        mappingFor: (topic) => (topic === TOPIC ? config.mappings[0] : undefined),
        hashes: undefined,
        hashPartitions: () => 1,
        sendDeadLetters: async () => undefined,
        log: silentLog,
      });
      cleanups.push(() => worker.stop());

      // Six partitions (more calls in flight than 4 s of execution per second allows) with a
      // backlog no sink drains in the run, fed as kafkajs would: a batch from the first
      // unresolved offset, again once a pause has ended.
      const started = Date.now();
      const end = started + RUN_MS;
      const feed = async (partition: number): Promise<void> => {
        let next = 0;
        while (Date.now() < end) {
          const messages = Array.from({ length: 500 }, (_, i) => message(next + i, `${partition}-${next + i}`));
          const fake = fakeBatch({ topic: TOPIC, partition, messages });
          const stop = setTimeout(() => (fake.running = false), Math.max(0, end - Date.now()));
          await worker.onBatch(fake.payload);
          clearTimeout(stop);
          next += fake.resolved.length;
          while (fake.pauses > fake.resumes && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
        }
      };
      await Promise.all([0, 1, 2, 3, 4, 5].map(feed));
      const seconds = (Date.now() - started) / 1000;
      const s = await stats(sim);
      // What the sink left of the window: the next request is still admitted.
      const next = await fetch(`${sim.url}/api/data/v9.2/WhoAmI`, { headers: { authorization: 'Bearer sim-token' } });
      // Execution time allows 16 s per 4 s window: at 40 ms an operation, at most 400 records in
      // a window and 100 a second after it, about 700 + 400 in the run. The sink counts its calls'
      // wall time (HTTP and all), more than the simulator charges, and in a 4 s window keeps calls
      // to one record: 350 is plenty.
      const allowed = Math.floor((EXECUTION_SECONDS * 1000 * (seconds / WINDOW_SECONDS + 1)) / OP_MS);
      expect({ throttled: s.throttled, next: next.status, withinExecutionTime: s.recordsWritten <= allowed }).toEqual({
        throttled: 0,
        next: 200,
        withinExecutionTime: true,
      });
      expect(s.recordsWritten).toBeGreaterThan(350);
    },
    RUN_MS + 40_000,
  );
});
