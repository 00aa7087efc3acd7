import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { parseConfig } from '../../src/config.ts';
import { createAdapter } from '../../src/crm/create-adapter.ts';
import { ensureTopics } from '../../src/kafka/client.ts';
import type { CrmSimulator, SimStats } from '../../src/crm/sim-server.ts';
import { setLogLevel } from '../../src/logger.ts';
import { benchCommand } from './bench-command.ts';
import { type BenchGoal, goal, printResult } from './bench-result.ts';
import { type SinkBenchCrm, sinkBenchCrms } from './sink-bench-crms.ts';
import { type Capacity, GOALS, theoreticalRecordsPerSecond } from './sink-figures.ts';
import {
  delta,
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
} from './sink-workbench.ts';

/**
 * `npm run bench:scale [-- --crm hubspot --instances 1,2,4 --modes separate,shared --seconds 30]`:
 * sink scale-out. N `pg2crm run --role sink` child processes in ONE consumer group share the
 * capacity workload of bench:sink (Zipf 80/5 updates through the real source; a topic of
 * --partitions 4), each (mode, N) from the workload's start with a fresh group, fresh simulators
 * and fresh written-hash topics, measured for whole windows after every instance has joined and
 * the --warmup:
 *   separate  N credentials in N quota groups (`crm.credentials`, quotaGroup app-1..app-N), every
 *             instance with the same config. Each quota group is its own account in the CRM: one
 *             simulator per credential behind a router that forwards by the bearer token, so each
 *             token has its own limit, as each HubSpot private app has its own burst limit. Goal:
 *             records/s at N >= 0.9 × N × records/s at 1 (scaling ratio).
 *   shared    one credential (`crm.auth`) for every instance, one simulator: the instances split
 *             one quota through the budget share. Goals: >= 0.95 of the quota used in aggregate,
 *             <= 0.5% throttled calls, at every N.
 * HubSpot by default: its limits are documented per app (100 per rolling 10 s, Free/Starter), so
 * separate private apps are separate quota groups and one app's token shared by instances is one;
 * a batch call carries 100 records (each instance does real decode/compact/batch work); a
 * throttle is a 429 that costs only the call (a share mistake shows as throttled calls instead of
 * ending the run, as Zendesk Sell's 3600 s lockout would). The limit per quota group is scaled to
 * 20 per 10 s (--limit): at the documented 100, four groups write 4,000 records/s and drain the
 * capacity workload's ~66,000 compacted writes within one run's warm-up, and need more CPU than
 * the 2-core machine has for four sinks; the window (10 s) is HubSpot's own.
 * Options: --crm kind (hubspot), --instances 1,2,4, --modes separate,shared, --seconds N (30,
 * rounded up to whole windows), --warmup S (20: a raised share applies one window after it is
 * granted), --records N (200,000), --changes M (400,000), --seed n (1), --partitions P (4),
 * --limit R/W (20/10 for HubSpot; otherwise the CRM's bench:sink limit), --json-out <file>.
 */
const { values: args } = parseArgs({
  options: {
    crm: { type: 'string', default: 'hubspot' },
    instances: { type: 'string', default: '1,2,4' },
    modes: { type: 'string', default: 'separate,shared' },
    seconds: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '20' },
    records: { type: 'string', default: '200000' },
    changes: { type: 'string', default: '400000' },
    seed: { type: 'string', default: '1' },
    partitions: { type: 'string', default: '4' },
    limit: { type: 'string' },
    'json-out': { type: 'string' },
  },
});
const fail = (message: string): never => {
  console.error(message);
  process.exit(2);
};
const INSTANCES = (args.instances ?? '').split(',').map(Number);
if (!INSTANCES.length || INSTANCES.some((n) => !Number.isInteger(n) || n < 1)) fail('--instances must list positive integers, e.g. 1,2,4');
const MODES = (args.modes ?? '').split(',').map((s) => s.trim());
if (MODES.some((m) => m !== 'separate' && m !== 'shared')) fail('--modes takes separate and/or shared');
const SECONDS = Number(args.seconds);
const WARMUP_SECONDS = Number(args.warmup);
const RECORDS = Number(args.records);
const UPDATES = Number(args.changes);
const SEED = Number(args.seed);
const PARTITIONS = Number(args.partitions);
for (const [name, v] of Object.entries({
  seconds: SECONDS,
  warmup: WARMUP_SECONDS,
  records: RECORDS,
  changes: UPDATES,
  partitions: PARTITIONS,
})) {
  if (!Number.isFinite(v) || v < 0 || (name !== 'warmup' && v === 0)) fail(`--${name} must be a positive number`);
}
if (PARTITIONS < Math.max(...INSTANCES)) fail(`--partitions ${PARTITIONS} leaves instances idle: use at least ${Math.max(...INSTANCES)}`);
const base =
  sinkBenchCrms.find((c) => c.kind === args.crm) ??
  fail(`unknown --crm ${args.crm}; choose from ${sinkBenchCrms.map((c) => c.kind).join(', ')}`);
const limitText = args.limit ?? (base.kind === 'hubspot' ? '20/10' : undefined);
const limitArg = limitText?.match(/^(\d+)\/(\d+)$/);
if (limitText && !limitArg) fail('--limit takes <requests>/<windowSeconds>, e.g. 100/10');
const crm: SinkBenchCrm = limitArg
  ? {
      ...base,
      limit: { requests: Number(limitArg[1]), windowSeconds: Number(limitArg[2]) },
      scaling: `${base.scaling}; scale bench: ${limitText} per quota group`,
    }
  : base;
const WINDOW = crm.limit.windowSeconds;
const INTERVAL = Math.ceil(SECONDS / WINDOW) * WINDOW;
setLogLevel('warn');

const started = await simulatorOf(crm);
const startSim: StartSimulator = typeof started === 'string' ? fail(`${crm.kind}: ${started}`) : started;

const wb = await sinkWorkbench({
  name: 'bench-scale',
  records: RECORDS,
  updates: UPDATES,
  hourlyRecords: 10,
  hourlyUpdates: 10,
  seed: SEED,
  partitions: PARTITIONS,
});
const { admin, capacityWl: w } = wb;

/** One account per quota group: a token router in front of one simulator per credential. */
interface Crm {
  url: string;
  sims: CrmSimulator[];
  close(): Promise<void>;
}

const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' ? (v as Record<string, unknown>) : {});
const tokenOf = (i: number): string => `${crm.token}-${i + 1}`;

/** An HTTP front that forwards each request to the simulator of its bearer token (the first one for any other). */
async function tokenRouter(sims: CrmSimulator[]): Promise<{ url: string; close(): Promise<void> }> {
  const byToken = new Map(sims.map((s, i) => [tokenOf(i), new URL(s.url)]));
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const server = createServer((req, res) => {
    const token = (req.headers.authorization ?? '').replace(/^Bearer\s+/i, '');
    const target = byToken.get(token) ?? new URL(sims[0]!.url);
    const up = request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
        agent,
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`router: ${err.message}`);
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        agent.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function startCrm(accounts: number): Promise<Crm> {
  const sims: CrmSimulator[] = [];
  for (let i = 0; i < accounts; i++)
    sims.push(await startSim({ port: 0, control: true, limit: crm.limit, tokens: [tokenOf(i)], ...crm.simulator }));
  const router = accounts > 1 ? await tokenRouter(sims) : undefined;
  return {
    url: router?.url ?? sims[0]!.url,
    sims,
    async close() {
      await router?.close();
      for (const s of sims) await s.close();
    },
  };
}

async function stats(c: Crm): Promise<SimStats> {
  const all = await Promise.all(c.sims.map((s) => simStats(s)));
  const sum = (k: 'requests' | 'throttled' | 'recordsWritten' | 'recordsDeleted'): number => all.reduce((n, x) => n + x[k], 0);
  return {
    ...all[0]!,
    requests: sum('requests'),
    throttled: sum('throttled'),
    recordsWritten: sum('recordsWritten'),
    recordsDeleted: sum('recordsDeleted'),
  };
}

/** Waits until the group is Stable with `n` members that all hold partitions (up to 90 s). */
async function joined(groupId: string, n: number, sinks: SinkProcess[]): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    for (const s of sinks) s.check('while the group formed');
    const { groups } = await admin.describeGroups([groupId]);
    const g = groups[0];
    if (g?.state === 'Stable' && g.members.length === n && g.members.every((m) => m.memberAssignment.length > 0)) return;
    if (Date.now() > deadline)
      throw new Error(
        `group ${groupId} did not become Stable with ${n} members within 90 s (state ${g?.state}, ${g?.members.length} members)`,
      );
    await sleep(250);
  }
}

interface Run {
  /** Why the run has no figures (a sink exited, no CRM call). */
  problem?: string;
  mode: 'separate' | 'shared';
  instances: number;
  quotaGroups: number;
  recordsPerSecond: number;
  /** records/s if every quota group's budget is spent on full calls. */
  theoreticalRecordsPerSecond: number;
  capacityUsed: number;
  throttledShare: number;
  calls: number;
  throttled: number;
  records: number;
  changes: number;
  seconds: number;
  backlogLeft: number;
}

function emptyRun(mode: 'separate' | 'shared', n: number): Run {
  const groups = mode === 'separate' ? n : 1;
  const zero = {
    recordsPerSecond: 0,
    capacityUsed: 0,
    throttledShare: 0,
    calls: 0,
    throttled: 0,
    records: 0,
    changes: 0,
    seconds: 0,
    backlogLeft: 0,
  };
  return { mode, instances: n, quotaGroups: groups, theoreticalRecordsPerSecond: Number((perGroup * groups).toFixed(2)), ...zero };
}

let perGroup = 0;
let costOfFullBatch = 1;
let maxBatch = 1;

async function measure(mode: 'separate' | 'shared', n: number): Promise<Run> {
  const groups = mode === 'separate' ? n : 1;
  const target = await startCrm(groups);
  const sinks: SinkProcess[] = [];
  try {
    if (perGroup === 0) {
      const adapter = createAdapter(parseConfig(wb.connectorConfig(crm, target.url, 'unused')).crm);
      maxBatch = adapter.maxBatchSize(crm.mapping.object);
      costOfFullBatch = adapter.cost(sampleWrites(crm, maxBatch));
      await adapter.close().catch(() => undefined);
      const capacity: Capacity = { ...crm.limit, maxBatch, costOfFullBatch };
      perGroup = theoreticalRecordsPerSecond(capacity);
    }
    for (const s of target.sims) await simReset(s);
    const crmKeys =
      mode === 'separate'
        ? { credentials: Array.from({ length: n }, (_, i) => ({ token: tokenOf(i), quotaGroup: `app-${i + 1}` })) }
        : { auth: { token: tokenOf(0) } };
    const tag = `${crm.kind}.${mode}.${n}`;
    const groupId = await wb.freshGroup(crm.kind, `${mode}-${n}`, w);
    // The sink's own topics made here, leaders elected, before N sinks start at once: a sink that
    // creates its written-hash topic and lists its offsets straight away can meet a broker that
    // is not the leader yet (KafkaJSProtocolError NOT_LEADER, fatal at start: seen on this stack).
    const sinkTopics = obj(wb.connectorConfig(crm, target.url, groupId, w, crmKeys, tag).sink);
    await ensureTopics(wb.kafka, [String(sinkTopics.hashTopic)], { partitions: PARTITIONS, replicationFactor: 1, compacted: true });
    await ensureTopics(wb.kafka, [String(sinkTopics.deadLetterTopic)], { partitions: 1, replicationFactor: 1 });
    await ensureTopics(wb.kafka, [String(sinkTopics.statusTopic)], { partitions: 1, replicationFactor: 1, compacted: true });
    await sleep(1000);
    note(
      `${crm.kind} ${mode}: ${n} instance(s), ${groups} quota group(s); ${WARMUP_SECONDS} s warm-up after the group formed + ${INTERVAL} s`,
    );
    for (let i = 0; i < n; i++) sinks.push(await wb.startSink(crm, target.url, w, { groupId, instance: i, crm: crmKeys, tag }));
    await joined(groupId, n, sinks);
    // Instances that join a running group start with no share (it applies one window after it
    // is granted), so the first call may take a few windows: up to 60 s after the group formed.
    const deadline = Date.now() + 60_000;
    while ((await stats(target)).requests === 0) {
      for (const s of sinks) s.check('before the first CRM call');
      if (Date.now() > deadline) {
        const outputs = sinks.map((s, i) => `instance ${i}:\n${s.output().slice(-1500)}`).join('\n');
        throw new Error(`no CRM call within 60 s of the group forming with ${n} members; the sinks' last output:\n${outputs}`);
      }
      await sleep(200);
    }
    await sleep(WARMUP_SECONDS * 1000);
    const [s0, c0] = await Promise.all([stats(target), wb.committed(groupId, w)]);
    const t0 = performance.now();
    await sleep(INTERVAL * 1000);
    const [s1, c1] = await Promise.all([stats(target), wb.committed(groupId, w)]);
    const seconds = (performance.now() - t0) / 1000;
    for (const s of sinks) s.check('during the interval');
    const d = delta(s0, s1);
    const rps = d.records / seconds;
    const theoretical = perGroup * groups;
    const run: Run = {
      mode,
      instances: n,
      quotaGroups: groups,
      recordsPerSecond: Number(rps.toFixed(2)),
      theoreticalRecordsPerSecond: Number(theoretical.toFixed(2)),
      capacityUsed: Number((rps / theoretical).toFixed(4)),
      throttledShare: d.calls > 0 ? Number((d.throttled / d.calls).toFixed(4)) : 0,
      calls: d.calls,
      throttled: d.throttled,
      records: d.records,
      changes: total(c1) - total(c0),
      seconds: Number(seconds.toFixed(1)),
      backlogLeft: total(w.ends) - total(c1),
    };
    console.log(
      JSON.stringify({ crm: crm.kind, limitPerQuotaGroup: `${crm.limit.requests}/${crm.limit.windowSeconds}s`, maxBatch, ...run }),
    );
    if (run.backlogLeft === 0)
      note(`${crm.kind} ${mode} x${n}: backlog drained: the sinks ran out of work, not at the limit (raise --changes)`);
    return run;
  } finally {
    await Promise.all(sinks.map((s) => s.stop()));
    await target.close();
  }
}

const runs: Run[] = [];
try {
  await wb.prepareWorkloads(crm);
  const problems: string[] = [];
  for (const mode of MODES as ('separate' | 'shared')[]) {
    for (const n of INSTANCES) {
      // One failed run is a result (printed and in the goals), not the end of the bench.
      try {
        runs.push(await measure(mode, n));
      } catch (err) {
        const problem = `${mode} x${n}: ${err instanceof Error ? err.message : String(err)}`;
        note(`${crm.kind} ${problem}`);
        problems.push(problem.split('\n')[0]!);
        runs.push({ ...emptyRun(mode, n), problem: problem.split('\n')[0]! });
      }
    }
  }

  const goals: BenchGoal[] = [];
  console.log('');
  console.log(
    `${'mode'.padEnd(10)}${'instances'.padEnd(11)}${'groups'.padEnd(8)}${'records/s'.padEnd(12)}${'theoretical'.padEnd(13)}${'capacity'.padEnd(10)}${'throttled'.padEnd(11)}scaling`,
  );
  const one = runs.find((r) => r.mode === 'separate' && r.instances === 1);
  for (const r of runs) {
    const scaling = r.mode === 'separate' && one && r.instances > 1 ? r.recordsPerSecond / (r.instances * one.recordsPerSecond) : undefined;
    console.log(
      `${r.mode.padEnd(10)}${String(r.instances).padEnd(11)}${String(r.quotaGroups).padEnd(8)}${r.recordsPerSecond.toFixed(2).padEnd(12)}${r.theoreticalRecordsPerSecond.toFixed(2).padEnd(13)}` +
        `${r.capacityUsed.toFixed(3).padEnd(10)}${r.throttledShare.toFixed(4).padEnd(11)}${scaling === undefined ? '-' : scaling.toFixed(3)}`,
    );
    // In percent: goal() rounds to 2 decimals, and 0.896 would print as 0.9 beside a 0.9 bound.
    if (scaling !== undefined)
      goals.push(goal(`separate quota groups: records/s at ${r.instances} / (${r.instances} × at 1) (%)`, scaling * 100, 90, 'min'));
    if (r.mode === 'shared') {
      goals.push(
        goal(`one shared credential, ${r.instances} instance(s): quota used (%)`, r.capacityUsed * 100, GOALS.capacityUsed * 100, 'min'),
        goal(`one shared credential, ${r.instances} instance(s): throttled calls (%)`, r.throttledShare * 100, GOALS.throttledShare * 100),
      );
    }
  }
  console.log('');
  for (const g of goals) console.log(`${g.met ? 'MET' : 'MISSED'} ${g.name}: ${g.value} (${g.kind === 'min' ? '>=' : '<='} ${g.limit})`);
  printResult(
    {
      bench: 'scale',
      command: benchCommand('bench:scale'),
      figures: {
        crm: crm.kind,
        limitPerQuotaGroup: `${crm.limit.requests}/${crm.limit.windowSeconds}s`,
        maxBatch,
        costOfFullBatch,
        partitions: PARTITIONS,
        intervalSeconds: INTERVAL,
        warmupSeconds: WARMUP_SECONDS,
        runs,
        ...(problems.length ? { problems } : {}),
      },
      goals,
    },
    args['json-out'],
  );
} finally {
  await wb.cleanup();
}
