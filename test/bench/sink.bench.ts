import { parseArgs } from 'node:util';
import { parseLsn } from '../../src/capture/lsn.ts';
import { type Config, parseConfig } from '../../src/config.ts';
import { createAdapter } from '../../src/crm/create-adapter.ts';
import type { CrmAdapter, CrmWrite, WriteOutcome } from '../../src/crm/crm-adapter.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { ConnectorError, errorMessage } from '../../src/errors.ts';
import { AvroCodec } from '../../src/events/avro-codec.ts';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { setLogLevel } from '../../src/logger.ts';
import { mapEvent } from '../../src/sink/field-mapper.ts';
import { benchCommand } from './bench-command.ts';
import { type BenchGoal, goal, printResult } from './bench-result.ts';
import { type RealWindow, realWindowCrm, type SinkBenchCrm, sinkBenchCrms } from './sink-bench-crms.ts';
import {
  type Capacity,
  chargedPerRecord,
  figuresOf,
  GOALS,
  goalsOf,
  type SinkFigures,
  theoreticalFigures,
  theoreticalRecordsPerSecond,
} from './sink-figures.ts';
import {
  delta,
  type Interval,
  note,
  type SinkProcess,
  type StartSimulator,
  sampleWrites,
  simReset,
  simStats,
  simulatorOf,
  sinkWorkbench,
  sleep,
  total,
  type Workload,
} from './sink-workbench.ts';

/**
 * `npm run bench:sink [-- --crm zendesk-sell,hubspot --seconds 30 --changes 200000]`: the sink half
 * (Kafka -> CRM) against each CRM simulator, side by side:
 *   pg2crm       `pg2crm run --role sink` as a child process, fresh consumer group;
 *   naive        what users write today: one call per change (adapter.write([one])), groups of
 *                50 then a 5 s sleep, no compaction, no budget; a throttled change is retried
 *                after Retry-After (5 s when the CRM sends none) and never given up;
 *   theoretical  limit / window × records per call ÷ budget units one full call costs (1, but
 *                Zoho counts credits), or what another limit allows when it binds first
 *                (Dynamics' execution time, sink-bench-crms.ts `bound`), computed.
 * Workload: N records created, then M updates (Zipf: 80% of updates on 5% of the keys) go
 * through the real source (CaptureSource: slot -> Kafka) BEFORE any sink starts. Both contenders
 * start at the first update's offsets (the creates only make the keys exist in PostgreSQL), each
 * against a freshly reset simulator (`POST /__sim/reset`), for the same measured interval.
 * Then the hourly sync: a second table's backlog (--hourly-changes updates, Zipf 80/5, over
 * --hourly-records records: most updates hit a few active records) is drained by pg2crm to its
 * end, and calls per change are counted over the whole backlog. On the capacity workload calls
 * per change only measure the interval's slice: committing a change needs its record written,
 * so the slice's distinct records bound every sink; each pg2crm line prints that floor
 * (writesPerChangeFloor, from the message keys).
 * Prints one JSON line per (crm, contender, workload), then a summary table and the goal verdicts.
 * Options: --crm a,b (default: every CRM whose adapter exists), --seconds N (30, rounded up to
 * whole windows of the CRM's limit), --changes M (400,000 updates), --records N (200,000: enough
 * distinct records that no CRM drains the compacted backlog within the interval), --warmup S (5),
 * --seed n (1), --hourly-records N (500), --hourly-changes M (10,000), --drain-seconds S (300),
 * --json-out <file> (the BENCH_RESULT, see bench-result.ts).
 * --real-windows: the CRMs whose documented window is longer than the bench's 10 s (Zendesk Sell
 * 200 / 60 s, Dynamics 6,000 / 300 s; sink-bench-crms.ts `real`) at that window, pg2crm only, on
 * the capacity workload for --windows W whole windows (2) after the warm-up; --seconds, the naive
 * script and the hourly sync are left out. Capacity is the lower of the request limit and any
 * other limit that binds first (Dynamics' execution time).
 */
const { values: args } = parseArgs({
  options: {
    crm: { type: 'string' },
    seconds: { type: 'string', default: '30' },
    changes: { type: 'string', default: '400000' },
    records: { type: 'string', default: '200000' },
    warmup: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1' },
    'hourly-records': { type: 'string', default: '500' },
    'hourly-changes': { type: 'string', default: '10000' },
    'drain-seconds': { type: 'string', default: '300' },
    'real-windows': { type: 'boolean', default: false },
    windows: { type: 'string', default: '2' },
    'json-out': { type: 'string' },
  },
});
const REAL_WINDOWS = args['real-windows'];
const WINDOWS = Number(args.windows);
const SECONDS = Number(args.seconds);
const UPDATES = Number(args.changes);
const RECORDS = Number(args.records);
const WARMUP_SECONDS = Number(args.warmup);
const SEED = Number(args.seed);
const HOURLY_RECORDS = Number(args['hourly-records']);
const HOURLY_UPDATES = Number(args['hourly-changes']);
const DRAIN_SECONDS = Number(args['drain-seconds']);
for (const [name, v] of Object.entries({
  seconds: SECONDS,
  changes: UPDATES,
  records: RECORDS,
  warmup: WARMUP_SECONDS,
  seed: SEED,
  'hourly-records': HOURLY_RECORDS,
  'hourly-changes': HOURLY_UPDATES,
  'drain-seconds': DRAIN_SECONDS,
  windows: WINDOWS,
})) {
  if (!Number.isFinite(v) || v < 0 || (name !== 'warmup' && name !== 'seed' && v === 0)) {
    console.error(`--${name} must be a positive number`);
    process.exit(2);
  }
}
/** The naive script: 50 calls, then a 5 s sleep. */
const NAIVE_GROUP = 50;
const NAIVE_SLEEP_MS = 5000;
/** Sleeps until performance.now() >= `t`: a timer may fire early by the event loop's stale clock. */
async function sleepUntil(t: number): Promise<void> {
  while (performance.now() < t) await sleep(Math.ceil(t - performance.now()));
}
setLogLevel('warn');

const wanted = args.crm ? new Set(args.crm.split(',').map((s) => s.trim())) : undefined;
const unknown = [...(wanted ?? [])].filter((k) => !sinkBenchCrms.some((c) => c.kind === k));
if (unknown.length) {
  console.error(`unknown --crm ${unknown.join(', ')}; choose from ${sinkBenchCrms.map((c) => c.kind).join(', ')}`);
  process.exit(2);
}

const wb = await sinkWorkbench({
  name: 'bench-sink',
  records: RECORDS,
  updates: UPDATES,
  hourlyRecords: HOURLY_RECORDS,
  hourlyUpdates: HOURLY_UPDATES,
  seed: SEED,
  partitions: 3,
});
const { env, kafka, capacityWl, hourlyWl, connectorConfig, floorOf, committed, freshGroup, firstCall } = wb;
const startSink = (crm: SinkBenchCrm, sim: CrmSimulator, w: Workload): Promise<SinkProcess> => wb.startSink(crm, sim.url, w);

/** The real sink on the capacity workload: measured after the first CRM call plus the warm-up. */
async function runPg2crm(crm: SinkBenchCrm, sim: CrmSimulator, w: Workload, interval: number): Promise<Interval> {
  const sink = await startSink(crm, sim, w);
  try {
    const problem = await firstCall(crm, () => simStats(sim), sink);
    await sleep(WARMUP_SECONDS * 1000);
    const [s0, c0] = await Promise.all([simStats(sim), committed(sink.groupId, w)]);
    const t0 = performance.now();
    await sleep(interval * 1000);
    const [s1, c1] = await Promise.all([simStats(sim), committed(sink.groupId, w)]);
    const seconds = (performance.now() - t0) / 1000;
    sink.check('during the interval');
    const end = total(w.ends);
    return {
      ...delta(s0, s1),
      changes: total(c1) - total(c0),
      seconds,
      backlogLeft: end - total(c1),
      writesPerChangeFloor: floorOf(w, c0, c1),
      ...(problem ? { problem } : {}),
    };
  } finally {
    await sink.stop();
  }
}

/**
 * The hourly sync: the sink started on a backlog that is all there, run until every change is
 * committed (or --drain-seconds); calls per change over the whole backlog, from a fresh simulator.
 */
async function runDrain(crm: SinkBenchCrm, sim: CrmSimulator, w: Workload): Promise<Interval> {
  const s0 = await simStats(sim);
  const sink = await startSink(crm, sim, w);
  const end = total(w.ends);
  const t0 = performance.now();
  try {
    let c = await committed(sink.groupId, w);
    while (total(c) < end && performance.now() - t0 < DRAIN_SECONDS * 1000) {
      sink.check('while draining');
      await sleep(250);
      c = await committed(sink.groupId, w);
    }
    const seconds = (performance.now() - t0) / 1000;
    const from = new Map(w.start.map((p) => [p.partition, Number(p.offset)]));
    const left = end - total(c);
    return {
      ...delta(s0, await simStats(sim)),
      changes: total(c) - total(from),
      seconds,
      backlogLeft: left,
      writesPerChangeFloor: floorOf(w, from, c),
      ...(left > 0 ? { problem: `not drained within --drain-seconds ${DRAIN_SECONDS}: ${left} changes left` } : {}),
    };
  } finally {
    await sink.stop();
  }
}

/**
 * The first `count` update events in commit order (lsn, seq), read once: the naive script is
 * handed its changes up front, so its figures carry no Kafka or decoding cost (in its favour).
 */
async function readChanges(w: Workload, count: number): Promise<ChangeEvent[]> {
  const groupId = await freshGroup('all', 'naive-reader', w);
  const codec = new AvroCodec({ url: env.SCHEMA_REGISTRY_URL });
  const perPartition = new Map<number, ChangeEvent[]>();
  const remaining = new Set(w.start.filter((p) => Number(p.offset) < (w.ends.get(p.partition) ?? 0)).map((p) => p.partition));
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic: w.topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    if (remaining.size === 0) resolve();
    consumer
      .run({
        eachBatch: async ({ batch }) => {
          if (!remaining.has(batch.partition)) return;
          const list = perPartition.get(batch.partition) ?? [];
          perPartition.set(batch.partition, list);
          for (const m of batch.messages) if (m.value && list.length < count) list.push(await codec.decode(m.value));
          const end = w.ends.get(batch.partition) ?? 0;
          if (list.length >= count || Number(batch.lastOffset()) + 1 >= end) remaining.delete(batch.partition);
          if (remaining.size === 0) resolve();
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  const order = (e: ChangeEvent): [bigint, number] => [parseLsn(e.source.lsn), e.source.seq];
  return [...perPartition.values()]
    .flat()
    .sort((a, b) => {
      const [la, sa] = order(a);
      const [lb, sb] = order(b);
      return la < lb ? -1 : la > lb ? 1 : sa - sb;
    })
    .slice(0, count);
}

async function writeOnce(adapter: CrmAdapter, write: CrmWrite): Promise<WriteOutcome> {
  try {
    const [outcome] = await adapter.write([write], () => undefined);
    return outcome ?? { status: 'retry', code: 'NO_OUTCOME', message: 'adapter returned no outcome' };
  } catch (err) {
    if (err instanceof ConnectorError && !err.retriable) throw err;
    const e = err instanceof ConnectorError ? err : new ConnectorError('CRM_CALL', errorMessage(err), { retriable: true });
    return {
      status: 'retry',
      code: e.code,
      message: e.message,
      ...(e.retryAfterSeconds !== undefined ? { retryAfterSeconds: e.retryAfterSeconds } : {}),
    };
  }
}

/** What users write today, for `interval` seconds: groups of 50 single-record calls, a 5 s sleep after each group. */
async function runNaive(adapter: CrmAdapter, sim: CrmSimulator, writes: CrmWrite[], interval: number): Promise<Interval> {
  const s0 = await simStats(sim);
  const t0 = performance.now();
  const end = t0 + interval * 1000;
  const left = (): number => end - performance.now();
  let done = 0;
  let rejected = 0;
  run: while (done < writes.length && left() > 0) {
    for (let g = 0; g < NAIVE_GROUP && done < writes.length; g++) {
      for (;;) {
        if (left() <= 0) break run;
        const outcome = await writeOnce(adapter, writes[done]!);
        if (outcome.status !== 'retry') {
          if (outcome.status === 'rejected') rejected++;
          done++;
          break;
        }
        // Throttled or failed: wait as told (5 s when the CRM does not say), then the same change again.
        await sleepUntil(Math.min(end, performance.now() + (outcome.retryAfterSeconds ?? NAIVE_SLEEP_MS / 1000) * 1000));
      }
    }
    await sleepUntil(Math.min(end, performance.now() + NAIVE_SLEEP_MS));
  }
  const seconds = (performance.now() - t0) / 1000;
  return { ...delta(s0, await simStats(sim)), changes: done, seconds, rejected };
}

// ---------------------------------------------------------------- per CRM
/**
 * --seconds rounded up to whole windows: a sender that reuses every slot the rolling window frees
 * repeats itself each window, so a whole number of windows holds exactly k × limit of its calls
 * wherever the interval starts; a partial window would count a burst or not by chance.
 */
function intervalFor(crm: SinkBenchCrm): number {
  if (REAL_WINDOWS) return WINDOWS * crm.limit.windowSeconds;
  return Math.ceil(SECONDS / crm.limit.windowSeconds) * crm.limit.windowSeconds;
}

interface CrmResult {
  crm: SinkBenchCrm;
  capacity: Capacity;
  figures: SinkFigures[];
  /** pg2crm on the hourly-sync backlog, drained. */
  drain: SinkFigures;
  /** writesPerChangeFloor of the capacity interval and of the drain. */
  floors: [number | null, number | null];
  backlogLeft: number;
  problem: string | undefined;
}

/**
 * The calls-per-change floor next to the measured figure: a single-record API needs one call per
 * record write; a batch API fits `maxBatch` writes in a call (fewer when the backlog is thin).
 */
function floorFields(f: SinkFigures, i: Interval, capacity: Capacity): Record<string, unknown> {
  const floor = i.writesPerChangeFloor;
  if (floor === null || floor === undefined) return {};
  const callsFloor = capacity.maxBatch > 1 ? Number((floor / capacity.maxBatch).toFixed(6)) : floor;
  return {
    writesPerChangeFloor: floor,
    ...(chargedPerRecord(capacity)
      ? { callsPerChangeVsFloor: f.callsPerChange === null || floor === 0 ? null : Number((f.callsPerChange / floor).toFixed(3)) }
      : { callsPerChangeFloor: callsFloor }),
  };
}

function line(f: SinkFigures, capacity: Capacity, i: Interval | undefined, interval: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    ...f,
    windowLimit: `${capacity.requests}/${capacity.windowSeconds}s`,
    maxBatch: capacity.maxBatch,
    changes: i?.changes ?? null,
    seconds: i ? Number(i.seconds.toFixed(1)) : interval,
    ...(i ? { calls: i.calls, throttled: i.throttled, records: i.records } : {}),
    ...extra,
  });
}

async function benchCrm(crm: SinkBenchCrm, start: StartSimulator, w: Workload, changes: ChangeEvent[]): Promise<CrmResult | undefined> {
  const sim = await start({ port: 0, control: true, limit: crm.limit, tokens: [crm.token], ...crm.simulator });
  let adapter: CrmAdapter | undefined;
  try {
    const config: Config = parseConfig(connectorConfig(crm, sim.url, 'unused'));
    try {
      adapter = createAdapter(config.crm);
    } catch (err) {
      console.log(`skipped: ${crm.kind}: ${errorMessage(err)}`);
      return undefined;
    }
    const maxBatch = adapter.maxBatchSize(crm.mapping.object);
    const capacity: Capacity = {
      ...crm.limit,
      maxBatch,
      costOfFullBatch: adapter.cost(sampleWrites(crm, maxBatch)),
      recordsPerWindowBound: crm.bound?.recordsPerWindow,
    };
    const theoretical = theoreticalRecordsPerSecond(capacity);
    const interval = intervalFor(crm);
    const tf = theoreticalFigures(crm.kind, capacity);
    const byRequests = theoreticalRecordsPerSecond({ ...capacity, recordsPerWindowBound: undefined });
    const boundBy = byRequests > theoretical ? crm.bound!.why : 'the request limit';
    console.log(line(tf, capacity, undefined, interval, { costOfFullBatch: capacity.costOfFullBatch, boundBy, limitScaling: crm.scaling }));

    note(`${crm.kind}: pg2crm sink, ${WARMUP_SECONDS} s warm-up + ${interval} s`);
    await simReset(sim);
    const p = await runPg2crm(crm, sim, w, interval);
    const pf = figuresOf(crm.kind, 'pg2crm', p, theoretical);
    console.log(
      line(pf, capacity, p, interval, {
        backlogLeft: p.backlogLeft,
        ...floorFields(pf, p, capacity),
        ...(p.problem ? { problem: p.problem } : {}),
      }),
    );

    note(`${crm.kind}: naive script, ${interval} s`);
    await simReset(sim);
    const mapping = config.mappings[0]!;
    const writes = changes.map((e) => mapEvent(e, mapping)).filter((x): x is CrmWrite => x !== null);
    const n = await runNaive(adapter, sim, writes, interval);
    const nf = figuresOf(crm.kind, 'naive', n, theoretical);
    console.log(
      line(nf, capacity, n, interval, {
        rejected: n.rejected,
        onThrottle: 'sleeps Retry-After (5 s if none), then retries the same change; never gives up',
      }),
    );

    note(`${crm.kind}: pg2crm sink draining the hourly-sync backlog (${HOURLY_UPDATES} changes, up to ${DRAIN_SECONDS} s)`);
    await simReset(sim);
    const d = await runDrain(crm, sim, hourlyWl);
    const df = figuresOf(crm.kind, 'pg2crm', d, theoretical);
    console.log(
      line(df, capacity, d, DRAIN_SECONDS, {
        workload: hourlyWl.name,
        backlogLeft: d.backlogLeft,
        ...floorFields(df, d, capacity),
        ...(d.problem ? { problem: d.problem } : {}),
      }),
    );
    return {
      crm,
      capacity,
      figures: [pf, nf, tf],
      drain: df,
      floors: [p.writesPerChangeFloor ?? null, d.writesPerChangeFloor ?? null],
      backlogLeft: p.backlogLeft ?? 0,
      problem: p.problem ?? d.problem,
    };
  } finally {
    await adapter?.close().catch(() => undefined);
    await sim.close();
  }
}

function summary(results: CrmResult[]): void {
  const pad = (s: string, n: number): string => s.padEnd(n);
  const num = (v: number | null | undefined, d = 3): string => (v === null || v === undefined ? '-' : v.toFixed(d));
  console.log('');
  console.log(
    `${pad('crm', 14)}${pad('contender', 13)}${pad('workload', 13)}${pad('limit', 10)}${pad('maxBatch', 10)}${pad('records/s', 12)}${pad('capacity', 10)}${pad('throttled', 11)}${pad('calls/change', 14)}writes/change floor`,
  );
  for (const r of results) {
    const rows: [SinkFigures, string, number | null][] = [
      [r.figures[0]!, capacityWl.name, r.floors[0]],
      [r.figures[1]!, capacityWl.name, null],
      [r.figures[2]!, capacityWl.name, null],
      [r.drain, hourlyWl.name, r.floors[1]],
    ];
    for (const [f, workload, floor] of rows) {
      const rate = workload === hourlyWl.name ? '-' : f.recordsPerSecond.toFixed(2);
      const cap = workload === hourlyWl.name ? '-' : num(f.capacityUsed);
      console.log(
        `${pad(r.crm.kind, 14)}${pad(f.contender, 13)}${pad(workload, 13)}${pad(`${r.capacity.requests}/${r.capacity.windowSeconds}s`, 10)}${pad(String(r.capacity.maxBatch), 10)}` +
          `${pad(rate, 12)}${pad(cap, 10)}${pad(num(f.throttledShare, 4), 11)}${pad(num(f.callsPerChange, 4), 14)}${num(floor, 4)}`,
      );
    }
  }
  console.log('');
  console.log(
    'goals (pg2crm): >= 95% of theoretical capacity and <= 0.5% throttled calls (capacity workload), >= 90% fewer calls than one call per change (hourly-sync backlog)',
  );
  for (const r of results) {
    const [pf, nf] = r.figures as [SinkFigures, SinkFigures];
    const verdicts = goalsOf(pf, r.drain).map((g) => `${g.met ? 'MET' : 'MISSED'} ${g.goal} (${g.value ?? '-'})`);
    const vsNaive =
      nf.recordsPerSecond > 0 ? `${(pf.recordsPerSecond / nf.recordsPerSecond).toFixed(1)}x naive records/s` : 'naive wrote nothing';
    const drained = r.backlogLeft === 0 ? '; NOTE backlog drained: pg2crm ran out of work, not at the limit (raise --changes)' : '';
    const problem = r.problem ? `; PROBLEM ${r.problem}` : '';
    console.log(`${r.crm.kind}: ${verdicts.join('; ')}; ${vsNaive}${drained}${problem}`);
    if (chargedPerRecord(r.capacity)) {
      console.log(
        `  every record costs one unit of quota: calls/change on the capacity interval ${num(pf.callsPerChange, 4)} vs ${num(r.floors[0], 4)} for any sink (writes/change floor)`,
      );
    }
    console.log(`  limits: ${r.crm.scaling}`);
  }
}

/** pg2crm at a CRM's real window (--real-windows): the capacity workload only. */
interface RealResult {
  crm: SinkBenchCrm;
  capacity: Capacity;
  /** Records per second the binding limit allows (the request limit, or another that binds first). */
  theoretical: number;
  bound: string;
  pf: SinkFigures;
  interval: Interval;
}

async function benchRealWindow(
  crm: SinkBenchCrm & { real: RealWindow },
  start: StartSimulator,
  w: Workload,
): Promise<RealResult | undefined> {
  const sim = await start({ port: 0, control: true, limit: crm.limit, tokens: [crm.token], ...crm.simulator });
  let adapter: CrmAdapter | undefined;
  try {
    adapter = createAdapter(parseConfig(connectorConfig(crm, sim.url, 'unused')).crm);
    const maxBatch = adapter.maxBatchSize(crm.mapping.object);
    const capacity: Capacity = { ...crm.limit, maxBatch, costOfFullBatch: adapter.cost(sampleWrites(crm, maxBatch)) };
    const byRequests = theoreticalRecordsPerSecond(capacity);
    const byOther = crm.real.bound ? crm.real.bound.recordsPerWindow / crm.limit.windowSeconds : Number.POSITIVE_INFINITY;
    const theoretical = Math.min(byRequests, byOther);
    const bound = byOther < byRequests ? crm.real.bound!.why : 'the request limit';
    const interval = intervalFor(crm);
    console.log(
      JSON.stringify({
        crm: crm.kind,
        contender: 'theoretical',
        windowLimit: `${capacity.requests}/${capacity.windowSeconds}s`,
        maxBatch,
        costOfFullBatch: capacity.costOfFullBatch,
        recordsPerSecondByRequests: Number(byRequests.toFixed(2)),
        recordsPerSecond: Number(theoretical.toFixed(2)),
        boundBy: bound,
        limitScaling: crm.scaling,
      }),
    );
    note(`${crm.kind}: pg2crm sink at the real window, ${WARMUP_SECONDS} s warm-up + ${interval} s (${WINDOWS} windows)`);
    await simReset(sim);
    const p = await runPg2crm(crm, sim, w, interval);
    const pf = figuresOf(crm.kind, 'pg2crm', p, theoretical);
    console.log(line(pf, capacity, p, interval, { backlogLeft: p.backlogLeft, ...(p.problem ? { problem: p.problem } : {}) }));
    return { crm, capacity, theoretical, bound, pf, interval: p };
  } catch (err) {
    console.log(`skipped: ${crm.kind}: ${errorMessage(err)}`);
    return undefined;
  } finally {
    await adapter?.close().catch(() => undefined);
    await sim.close();
  }
}

function summaryReal(results: RealResult[]): BenchGoal[] {
  console.log('');
  console.log(`goals (pg2crm at the real window): >= ${GOALS.capacityUsed} of capacity, <= ${GOALS.throttledShare} throttled calls`);
  const goals: BenchGoal[] = [];
  for (const r of results) {
    const g = [
      goal(
        `${r.crm.kind} ${r.crm.limit.requests}/${r.crm.limit.windowSeconds}s: capacity used`,
        r.pf.capacityUsed,
        GOALS.capacityUsed,
        'min',
      ),
      goal(
        `${r.crm.kind} ${r.crm.limit.requests}/${r.crm.limit.windowSeconds}s: throttled share`,
        r.pf.throttledShare,
        GOALS.throttledShare,
      ),
    ];
    goals.push(...g);
    const drained = r.interval.backlogLeft === 0 ? '; NOTE backlog drained: pg2crm ran out of work (raise --changes)' : '';
    console.log(
      `${r.crm.kind}: ${r.pf.recordsPerSecond} records/s of ${r.theoretical.toFixed(2)} (bound by ${r.bound}) over ${r.interval.seconds.toFixed(0)} s; ` +
        `${g.map((x) => `${x.met ? 'MET' : 'MISSED'} ${x.name} (${x.value})`).join('; ')}${drained}`,
    );
  }
  return goals;
}

/** The BENCH_RESULT of a default run: per CRM, pg2crm's figures, the naive script's and the goals. */
function sinkResult(results: CrmResult[]): { figures: Record<string, unknown>; goals: BenchGoal[] } {
  const figures: Record<string, unknown> = {};
  const goals: BenchGoal[] = [];
  for (const r of results) {
    const [pf, nf, tf] = r.figures as [SinkFigures, SinkFigures, SinkFigures];
    figures[r.crm.kind] = {
      limit: `${r.capacity.requests}/${r.capacity.windowSeconds}s`,
      maxBatch: r.capacity.maxBatch,
      recordsPerSecond: pf.recordsPerSecond,
      theoreticalRecordsPerSecond: tf.recordsPerSecond,
      naiveRecordsPerSecond: nf.recordsPerSecond,
      capacityUsed: pf.capacityUsed,
      throttledShare: pf.throttledShare,
      callsPerChangeCapacity: pf.callsPerChange,
      writesPerChangeFloorCapacity: r.floors[0],
      callsPerChangeHourlySync: r.drain.callsPerChange,
      writesPerChangeFloorHourlySync: r.floors[1],
      ...(r.problem ? { problem: r.problem } : {}),
    };
    goals.push(
      goal(`${r.crm.kind}: capacity used`, pf.capacityUsed, GOALS.capacityUsed, 'min'),
      goal(`${r.crm.kind}: throttled share`, Math.max(pf.throttledShare, r.drain.throttledShare), GOALS.throttledShare),
      goal(`${r.crm.kind}: hourly-sync calls per change`, r.drain.callsPerChange ?? 1, GOALS.callsPerChange),
    );
  }
  return { figures, goals };
}

// ---------------------------------------------------------------- main
const results: CrmResult[] = [];
const realResults: RealResult[] = [];
try {
  const chosen = REAL_WINDOWS
    ? sinkBenchCrms.flatMap((c) => ((wanted ? wanted.has(c.kind) : true) ? [realWindowCrm(c) ?? c] : []))
    : sinkBenchCrms.filter((c) => !wanted || wanted.has(c.kind));
  const runnable: [SinkBenchCrm, StartSimulator][] = [];
  for (const crm of chosen) {
    const start = await simulatorOf(crm);
    if (REAL_WINDOWS && !crm.real) console.log(`skipped: ${crm.kind}: its documented window is the bench's (no real window to run)`);
    else if (typeof start === 'string') console.log(`skipped: ${crm.kind}: ${start}`);
    else runnable.push([crm, start]);
  }
  if (runnable.length === 0) throw new Error('no CRM to measure: none of the chosen CRMs has an adapter and simulator yet');
  await wb.prepareWorkloads(sinkBenchCrms[0]!);
  if (REAL_WINDOWS) {
    for (const [crm, start] of runnable) {
      const r = await benchRealWindow(crm as SinkBenchCrm & { real: RealWindow }, start, capacityWl);
      if (r) realResults.push(r);
    }
    const goals = summaryReal(realResults);
    const figures = Object.fromEntries(
      realResults.map((r) => [
        r.crm.kind,
        {
          limit: `${r.crm.limit.requests}/${r.crm.limit.windowSeconds}s`,
          windows: WINDOWS,
          seconds: Number(r.interval.seconds.toFixed(1)),
          recordsPerSecond: r.pf.recordsPerSecond,
          theoreticalRecordsPerSecond: Number(r.theoretical.toFixed(2)),
          boundBy: r.bound,
          capacityUsed: r.pf.capacityUsed,
          throttledShare: r.pf.throttledShare,
          calls: r.interval.calls,
          throttled: r.interval.throttled,
          records: r.interval.records,
          backlogLeft: r.interval.backlogLeft ?? null,
        },
      ]),
    );
    printResult({ bench: 'windows', command: benchCommand('bench:sink'), figures, goals }, args['json-out']);
  } else {
    // Enough for the naive script's whole interval: it sends at most one group of 50 per 5 s sleep.
    const longest = Math.max(...runnable.map(([crm]) => intervalFor(crm)));
    const changes = await readChanges(capacityWl, (Math.floor(longest / (NAIVE_SLEEP_MS / 1000)) + 2) * NAIVE_GROUP);
    for (const [crm, start] of runnable) {
      const r = await benchCrm(crm, start, capacityWl, changes);
      if (r) results.push(r);
    }
    summary(results);
    printResult({ bench: 'sink', command: benchCommand('bench:sink'), ...sinkResult(results) }, args['json-out']);
  }
} finally {
  await wb.cleanup();
}
