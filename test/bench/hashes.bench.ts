import { writeHash, recordKey } from '../../src/sink/written-hashes.ts';
import { benchCommand } from './bench-command.ts';
import { jsonOutArg, printResult } from './bench-result.ts';

/**
 * Memory per CRM record of the sink's written-hash store (the no-op skip), measured the only
 * way that counts V8's real layout: fill the same Map the store uses and compare heap sizes.
 * `npm run bench:hashes [-- --keys N]`; prints JSON.
 */
const keysArg = process.argv.indexOf('--keys');
const keys = keysArg > 0 ? Number(process.argv[keysArg + 1]) : 1_000_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc (npm run bench:hashes does)');

gc();
const before = process.memoryUsage().heapUsed;
const map = new Map<string, string>();
for (let i = 0; i < keys; i++) {
  const externalId = String(1_000_000 + i);
  // The store keeps strings built from Kafka message bytes, as here (not interned literals).
  map.set(
    recordKey('contacts', externalId),
    writeHash({
      op: 'upsert',
      object: 'contacts',
      externalIdField: 'erp_id',
      externalId,
      fields: { email: `c${i}@example.com`, last_name: `L${i}` },
    }),
  );
}
gc();
const after = process.memoryUsage().heapUsed;
const bytesPerKey = (after - before) / keys;
process.stdout.write(
  `${JSON.stringify({ scenario: 'written-hash store', keys, heapBytes: after - before, bytesPerKey: Math.round(bytesPerKey), mbPerMillionKeys: Math.round(bytesPerKey) })}\n`,
);
if (map.size !== keys) throw new Error('lost keys');
// The BENCH_RESULT for `npm run bench` (bench-result.ts); the store has no stated bound, so no goal.
printResult(
  {
    bench: 'hashes',
    command: benchCommand('bench:hashes'),
    figures: { keys, heapBytes: after - before, bytesPerKey: Math.round(bytesPerKey), mbPerMillionKeys: Math.round(bytesPerKey) },
    goals: [],
  },
  jsonOutArg(),
);
