import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { type StackEnv, type StackOptions, stackDown, stackPorts, stackServices, stackUp } from '../../scripts/stack.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import { seededRandom } from '../bench/zipf-workload.ts';
import {
  createErpSchema,
  groupLag,
  readDeadLetters,
  recordField,
  simRecords,
  waitSlotActive,
  withPg,
  writeConnectorConfig,
} from '../helpers/fixtures.ts';

/**
 * "Prove it" under chaos (issue 10): a workload of inserts, skewed updates, deletes, lookup moves
 * and multi-row transactions goes through the real stack (PostgreSQL -> `pg2crm run --role
 * source` -> Kafka -> two or more `pg2crm run --role sink`) into the Zendesk Sell simulator while
 * faults are injected, one kind at a time and then mixed: SIGKILL of the source and of sinks,
 * broker kill + restart, PostgreSQL restart (fast, immediate), registry restart, scaling the sinks
 * 2 -> 3 -> 1 (-> 2), CRM lockouts (429 for 30-60 s), 5xx bursts, timeouts, connection resets
 * (also after the write), 200 with garbage, scattered per-record failures, trickled answers and
 * real validation rejects. At the end the CRM is compared with the tables.
 *
 * The stack is the suite's own (own directory, own ports): it kills its services, which must
 * never happen to the shared stack other tests run against. The simulator runs in this process;
 * only connector processes and the suite's own services are ever killed.
 *
 * Ground truth is what the tables hold at the end, so the writer never has to know whether a
 * commit cut by a PostgreSQL restart went through. Rejected rows are customers whose last_name
 * carries REJECT_MARKER: never updated, never given orders, never deleted, counted from the table.
 * Customers that ever had an order are never deleted: a deal write still queued for a contact
 * deleted meanwhile cannot resolve its lookup (a separate question from crash safety).
 */
export const REJECT_MARKER = 'REJECT-';

export interface ChaosOptions {
  seed: number;
  /** Changes to commit in total (rows changed, snapshot rows included). */
  changes: number;
  /** Pace of the workload; it goes on past `changes` until the fault plan is done. */
  changesPerSecond: number;
  /** Customers before the connector starts (read by the initial snapshot). */
  records: number;
  /** Validation rejects (customers inserted with the reject marker). */
  rejects: number;
  /** SIGKILLs of the source and of sinks in the one-kind-at-a-time phase (besides one each in every mixed round). */
  sourceKills: number;
  sinkKills: number;
  /** Rounds of the mixed phase (2-3 faults at once). */
  mixedRounds: number;
  /** Quiet time between two faults, seconds [min, max]. */
  gapSeconds: [number, number];
  /** Length of a CRM lockout (429), seconds [min, max]. */
  lockoutSeconds: [number, number];
  /** Longest wait for the sinks to call the CRM before a CRM fault is injected anyway. */
  trafficWaitSeconds: number;
  /** Connector log level (the logs go to files in `dir`). */
  logLevel?: 'debug' | 'info' | 'warn';
  /** How long the end may wait for the CRM to converge. */
  settleSeconds: number;
  portBase: number;
  dir: string;
  log: (line: string) => void;
}

export interface ChaosFigures {
  lost: number;
  stale: number;
  extra: number;
  duplicates: number;
  dead_lettered: number;
}

export interface ChaosResult {
  figures: ChaosFigures;
  faults: Record<string, number>;
  /** Rows rejected by design (the dead letters expected). */
  rejects: number;
  /** Dead letters in the topic (a record may be dead-lettered more than once on redelivery). */
  letters: number;
  changes: number;
  crashes: number;
  seconds: number;
  /** Empty when the run passes; else why not, with examples. */
  problems: string[];
  summary: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- connector processes

const repoRoot = new URL('../../', import.meta.url).pathname;

/**
 * Every connector process alive, so that a harness that is itself killed (Ctrl-C, SIGTERM) takes
 * them along: a connector left running keeps its consumer group membership, and the next run on
 * the same ports would share its group with it (a stale sink holding partitions it cannot write).
 */
const alive = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of alive) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

class Connector {
  child!: ChildProcess;
  exited!: Promise<number | null>;
  private expectExit = false;
  private stopped = false;
  private readonly logFile: string;
  readonly name: string;
  private readonly args: string[];
  private readonly onCrash: (name: string, code: number | null, tail: string) => void;

  constructor(name: string, args: string[], dir: string, onCrash: (name: string, code: number | null, tail: string) => void) {
    this.name = name;
    this.args = args;
    this.logFile = join(dir, `${name}.log`);
    this.onCrash = onCrash;
    this.start();
  }

  private start(): void {
    const fd = openSync(this.logFile, 'a');
    this.expectExit = false;
    const child = spawn(process.execPath, [join(repoRoot, 'bin/pg2crm.js'), ...this.args], { stdio: ['ignore', fd, fd] });
    this.child = child;
    alive.add(child);
    closeSync(fd);
    this.exited = new Promise((resolve) =>
      child.on('exit', (code) => {
        alive.delete(child);
        resolve(code);
        // A supervisor (Kubernetes, systemd) restarts a connector that exits on its own.
        if (!this.expectExit && !this.stopped) {
          this.onCrash(this.name, code, this.tail());
          setTimeout(() => !this.stopped && this.start(), 1000);
        }
      }),
    );
  }

  tail(chars = 3000): string {
    try {
      return readFileSync(this.logFile, 'utf8').slice(-chars);
    } catch {
      return '';
    }
  }

  /** SIGKILL, then the supervisor's restart. */
  async crash(): Promise<void> {
    this.expectExit = true;
    this.child.kill('SIGKILL');
    await this.exited;
    this.start();
  }

  /** Graceful stop (scale-in): SIGTERM, no restart. */
  async stop(): Promise<number | null> {
    this.stopped = true;
    this.expectExit = true;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 60_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

// ---------------------------------------------------------------- the workload

interface Model {
  customers: number[];
  rejected: Set<number>;
  /** Customers that ever had an order: never deleted (see the header). */
  pinned: Set<number>;
  orders: number[];
}

const STATUSES = ['open', 'won', 'lost', 'pending', 'on_hold'];

class Writer {
  changes = 0;
  errors = 0;
  rejectsInserted = 0;
  private client: pg.Client | undefined;
  private counter = 0;
  private readonly model: Model = { customers: [], rejected: new Set(), pinned: new Set(), orders: [] };
  private readonly url: string;
  private readonly schema: string;
  private readonly random: () => number;

  constructor(url: string, schema: string, random: () => number) {
    this.url = url;
    this.schema = schema;
    this.random = random;
  }

  private int(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** Skewed pick: the head of the list is hot (a cube of a uniform number leans to 0). */
  private skewed<T>(list: T[]): T | undefined {
    if (list.length === 0) return undefined;
    return list[Math.floor(list.length * this.random() ** 3)];
  }

  /** Set when the run ends early: no more transactions, no more reconnecting. */
  stopped = false;

  private async connect(): Promise<pg.Client> {
    for (;;) {
      if (this.stopped) throw new Error('writer stopped');
      const c = new pg.Client({ connectionString: this.url });
      c.on('error', () => undefined); // a restart ends the connection; the next query tells
      try {
        await c.connect();
        return c;
      } catch {
        await c.end().catch(() => undefined);
        await sleep(500);
      }
    }
  }

  /** The model from the tables (after a lost connection, a commit may or may not have happened). */
  private async reload(c: pg.Client): Promise<void> {
    const cs = await c.query<{ id: string; last_name: string }>(`SELECT id, last_name FROM ${this.schema}.customers ORDER BY id`);
    const os = await c.query<{ id: string; customer_id: string }>(`SELECT id, customer_id FROM ${this.schema}.orders ORDER BY id`);
    this.model.rejected = new Set(cs.rows.filter((r) => r.last_name.startsWith(REJECT_MARKER)).map((r) => Number(r.id)));
    this.model.customers = cs.rows.map((r) => Number(r.id)).filter((id) => !this.model.rejected.has(id));
    for (const o of os.rows) this.model.pinned.add(Number(o.customer_id));
    this.model.orders = os.rows.map((r) => Number(r.id));
    this.rejectsInserted = this.model.rejected.size;
  }

  async seed(customers: number, orders: number): Promise<void> {
    const c = await this.connect();
    try {
      const s = this.schema;
      const r1 = await c.query(
        `INSERT INTO ${s}.customers (first_name, last_name, email, company)
         SELECT 'F' || g, 'L' || g, 'c' || g || '@example.com', 'Co ' || (g % 97) FROM generate_series(1, ${customers}) g`,
      );
      const r2 = await c.query(
        `INSERT INTO ${s}.orders (customer_id, title, amount, status)
         SELECT c.id, 'Order ' || g, (g % 1000) + 0.5, 'open'
         FROM generate_series(1, ${orders}) g JOIN ${s}.customers c ON c.id = 1 + (g * 7919) % ${customers}`,
      );
      this.changes += (r1.rowCount ?? 0) + (r2.rowCount ?? 0);
      await this.reload(c);
    } finally {
      await c.end();
    }
  }

  /**
   * Commits transactions of 1-8 statements at about `perSecond` changes a second until at least
   * `target` changes and until `more()` says no (the fault plan runs on changes in flight,
   * whatever its faults cost in time). `rejects` rejected customers are spread over the target.
   */
  async run(target: number, rejects: number, perSecond: number, more: () => boolean): Promise<void> {
    const started = Date.now();
    const from = this.changes;
    const rejectEvery = Math.max(1, Math.floor((target - from) / (rejects + 1)));
    let nextReject = from + rejectEvery;
    this.client = await this.connect();
    while ((this.changes < target || more()) && !this.stopped) {
      const withReject = this.rejectsInserted < rejects && this.changes >= nextReject;
      try {
        const n = await this.transaction(withReject);
        this.changes += n;
        if (withReject) nextReject += rejectEvery;
      } catch {
        this.errors++;
        await this.client.end().catch(() => undefined);
        this.client = await this.connect();
        await this.reload(this.client).catch(() => undefined);
      }
      const due = started + ((this.changes - from) / perSecond) * 1000;
      if (due > Date.now()) await sleep(Math.min(1000, due - Date.now()));
    }
    await this.client.end().catch(() => undefined);
  }

  private async transaction(withReject: boolean): Promise<number> {
    const c = this.client!;
    const s = this.schema;
    const m = this.model;
    const after: (() => void)[] = [];
    let rows = 0;
    const exec = async (sql: string, params: unknown[] = []): Promise<pg.QueryResult> => {
      const r = await c.query(sql, params);
      rows += r.rowCount ?? 0;
      return r;
    };
    await c.query('BEGIN');
    try {
      if (withReject) {
        const v = ++this.counter;
        const r = await exec(`INSERT INTO ${s}.customers (first_name, last_name, email, company) VALUES ($1, $2, $3, $4) RETURNING id`, [
          `R${v}`,
          `${REJECT_MARKER}${v}`,
          `r${v}@example.com`,
          'Rejects Inc',
        ]);
        const id = Number(r.rows[0].id);
        after.push(() => {
          m.rejected.add(id);
          this.rejectsInserted++;
        });
      }
      const statements = 1 + this.int(8);
      for (let i = 0; i < statements; i++) {
        const v = ++this.counter;
        const roll = this.random();
        if (roll < 0.34) {
          const id = this.skewed(m.customers);
          if (id === undefined) continue;
          // Skewed updates of one or several columns: field-level changes.
          const which = this.int(3);
          if (which === 0) await exec(`UPDATE ${s}.customers SET last_name = $2, updated_at = now() WHERE id = $1`, [id, `L${v}`]);
          else if (which === 1)
            await exec(`UPDATE ${s}.customers SET email = $2, company = $3 WHERE id = $1`, [id, `e${v}@example.com`, `Co ${v % 500}`]);
          else
            await exec(`UPDATE ${s}.customers SET first_name = $2, last_name = $3, email = $4, company = $5 WHERE id = $1`, [
              id,
              `F${v}`,
              `L${v}`,
              `e${v}@example.com`,
              `Co ${v % 500}`,
            ]);
        } else if (roll < 0.54) {
          const id = this.skewed(m.orders);
          if (id === undefined) continue;
          await exec(`UPDATE ${s}.orders SET amount = $2, status = $3, title = CASE WHEN $4 THEN $5 ELSE title END WHERE id = $1`, [
            id,
            ((v % 100_000) / 100).toFixed(2),
            STATUSES[v % STATUSES.length],
            v % 3 === 0,
            `Order ${v}`,
          ]);
        } else if (roll < 0.6) {
          // One multi-row statement: its rows share one commit LSN.
          if (m.customers.length < 60) continue;
          const size = 5 + this.int(40);
          const start = this.int(m.customers.length - size);
          const ids = m.customers.slice(start, start + size);
          await exec(`UPDATE ${s}.customers SET company = $2 || '-' || id WHERE id = ANY($1::bigint[])`, [ids, `Bulk ${v}`]);
        } else if (roll < 0.68) {
          const r = await exec(`INSERT INTO ${s}.customers (first_name, last_name, email, company) VALUES ($1, $2, $3, $4) RETURNING id`, [
            `F${v}`,
            `L${v}`,
            `n${v}@example.com`,
            `Co ${v % 500}`,
          ]);
          const id = Number(r.rows[0].id);
          after.push(() => m.customers.push(id));
        } else if (roll < 0.76) {
          const customer = m.customers[this.int(m.customers.length)];
          if (customer === undefined) continue;
          m.pinned.add(customer); // before the commit: a lost answer must not free it for deletion
          const r = await exec(`INSERT INTO ${s}.orders (customer_id, title, amount, status) VALUES ($1, $2, $3, 'open') RETURNING id`, [
            customer,
            `Order ${v}`,
            ((v % 50_000) / 10).toFixed(2),
          ]);
          const id = Number(r.rows[0].id);
          after.push(() => m.orders.push(id));
        } else if (roll < 0.86) {
          // Lookup move: the deal follows its order to another contact.
          const order = this.skewed(m.orders);
          const customer = m.customers[this.int(m.customers.length)];
          if (order === undefined || customer === undefined) continue;
          m.pinned.add(customer);
          await exec(`UPDATE ${s}.orders SET customer_id = $2 WHERE id = $1`, [order, customer]);
        } else if (roll < 0.93) {
          if (m.orders.length < 50) continue;
          const idx = this.int(m.orders.length);
          const id = m.orders[idx]!;
          await exec(`DELETE FROM ${s}.orders WHERE id = $1`, [id]);
          after.push(() => {
            const at = m.orders.indexOf(id);
            if (at >= 0) m.orders.splice(at, 1);
          });
        } else {
          const free = m.customers.filter((id) => !m.pinned.has(id));
          if (free.length < 10) continue;
          const id = free[this.int(free.length)]!;
          await exec(`DELETE FROM ${s}.customers WHERE id = $1`, [id]);
          after.push(() => {
            const at = m.customers.indexOf(id);
            if (at >= 0) m.customers.splice(at, 1);
          });
        }
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    for (const f of after) f();
    return rows;
  }
}

// ---------------------------------------------------------------- comparison

interface Truth {
  customers: Map<string, { first_name: string; last_name: string; email: string | null; company: string | null }>;
  rejected: Set<string>;
  orders: Map<string, { customer_id: string; title: string; amount: string; status: string }>;
}

async function readTruth(url: string, schema: string): Promise<Truth> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const cs = await c.query(`SELECT id::text, first_name, last_name, email, company FROM ${schema}.customers`);
    const os = await c.query(`SELECT id::text, customer_id::text, title, amount::text, status FROM ${schema}.orders`);
    const truth: Truth = { customers: new Map(), rejected: new Set(), orders: new Map() };
    for (const r of cs.rows) {
      if (String(r.last_name).startsWith(REJECT_MARKER)) truth.rejected.add(r.id);
      else truth.customers.set(r.id, r);
    }
    for (const r of os.rows) truth.orders.set(r.id, r);
    return truth;
  } finally {
    await c.end();
  }
}

const text = (v: unknown): string => (v === null || v === undefined ? '' : String(v));

export function compareCrm(
  truth: Truth,
  contacts: Record<string, unknown>[],
  deals: Record<string, unknown>[],
): { figures: Omit<ChaosFigures, 'dead_lettered'>; examples: string[] } {
  const f = { lost: 0, stale: 0, extra: 0, duplicates: 0 };
  const examples: string[] = [];
  const note = (s: string): void => {
    if (examples.length < 30) examples.push(s);
  };
  const group = (records: Record<string, unknown>[], field: string): Map<string, Record<string, unknown>[]> => {
    const m = new Map<string, Record<string, unknown>[]>();
    for (const r of records) {
      const id = text(recordField(r, field));
      m.set(id, [...(m.get(id) ?? []), r]);
    }
    return m;
  };
  /**
   * One CRM object against its table: a row without a record is lost, more records than one
   * are duplicates, a first record that `diffs` finds different is stale, a record of no row extra.
   */
  const compare = <Row>(
    what: string,
    rows: Map<string, Row>,
    byId: Map<string, Record<string, unknown>[]>,
    diffs: (r: Record<string, unknown>, row: Row) => string[],
    extraNote: (id: string) => string,
  ): void => {
    for (const [id, row] of rows) {
      const recs = byId.get(id);
      if (!recs) {
        f.lost++;
        note(`${what} ${id}: lost`);
        continue;
      }
      if (recs.length > 1) {
        f.duplicates += recs.length - 1;
        note(`${what} ${id}: ${recs.length} records`);
      }
      const d = diffs(recs[0]!, row);
      if (d.length) {
        f.stale++;
        note(`${what} ${id}: stale ${d.join(', ')}`);
      }
    }
    for (const [id, recs] of byId) {
      if (rows.has(id)) continue;
      f.extra += recs.length;
      note(`${what} ${id}: extra${extraNote(id)}`);
    }
  };
  const byErp = group(contacts, 'custom_fields.erp_id');
  const byOrder = group(deals, 'custom_fields.erp_order_id');
  const contactIdOf = new Map<string, string>();
  for (const [erp, recs] of byErp) contactIdOf.set(erp, text(recs[0]!.id));

  compare(
    'contact',
    truth.customers,
    byErp,
    (r, row) => {
      const have: Record<string, string> = {
        first_name: text(r.first_name),
        last_name: text(r.last_name),
        email: text(r.email),
        company: text(recordField(r, 'custom_fields.company')),
      };
      return Object.entries(have)
        .filter(([k, v]) => v !== text(row[k as keyof typeof row]))
        .map(([k, v]) => `${k}=${v} (table ${text(row[k as keyof typeof row])})`);
    },
    (id) => (truth.rejected.has(id) ? ' (a rejected row)' : ''),
  );
  compare(
    'deal',
    truth.orders,
    byOrder,
    (r, row) => {
      const diffs: string[] = [];
      if (text(r.name) !== row.title) diffs.push(`name=${text(r.name)} (table ${row.title})`);
      if (Number(r.value) !== Number(row.amount)) diffs.push(`value=${text(r.value)} (table ${row.amount})`);
      if (text(recordField(r, 'custom_fields.status')) !== row.status)
        diffs.push(`status=${text(recordField(r, 'custom_fields.status'))} (table ${row.status})`);
      const want = contactIdOf.get(row.customer_id);
      if (text(r.contact_id) !== text(want))
        diffs.push(`contact_id=${text(r.contact_id)} (customer ${row.customer_id} is contact ${text(want)})`);
      return diffs;
    },
    () => '',
  );
  return { figures: f, examples };
}

// ---------------------------------------------------------------- faults

export const FAULT_KINDS = [
  'source-kill',
  'sink-kill',
  'kafka-kill',
  'postgres-restart-fast',
  'postgres-restart-immediate',
  'registry-restart',
  'scale-2-3',
  'scale-3-1',
  'scale-1-2',
  'crm-lockout-429',
  'crm-5xx-burst',
  'crm-timeouts',
  'crm-resets',
  'crm-resets-after-write',
  'crm-garbage-200',
  'crm-partial-failures',
  'crm-trickle',
  'crm-validation-reject',
] as const;

/** The kinds the run injects; a validation reject is part of the workload (rejected rows), not an action. */
type FaultKind = Exclude<(typeof FAULT_KINDS)[number], 'crm-validation-reject'>;

/** Kinds that never overlap with others in the mixed phase: scaling and lockouts stay sequential. */
const SEQUENTIAL: readonly (typeof FAULT_KINDS)[number][] = [
  'scale-2-3',
  'scale-3-1',
  'scale-1-2',
  'crm-lockout-429',
  'crm-validation-reject',
];
/** Fault kinds that can overlap with others in the mixed phase, in FAULT_KINDS order. */
const MIXABLE: FaultKind[] = FAULT_KINDS.filter((k): k is FaultKind => !SEQUENTIAL.includes(k));

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const started = Date.now();
  const random = seededRandom(o.seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const between = ([a, b]: [number, number]): number => a + random() * (b - a);
  const faults: Record<string, number> = {};
  const count = (kind: string, n = 1): void => {
    faults[kind] = (faults[kind] ?? 0) + n;
  };
  const log = (line: string): void => o.log(`[chaos +${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);
  mkdirSync(o.dir, { recursive: true });
  chmodSync(o.dir, 0o755); // PostgreSQL runs as its own user (as root) and must reach its directory below
  const stackOpts: StackOptions = { dir: join(o.dir, 'stack'), ports: stackPorts(o.portBase), persistentRegistry: true };

  log(`seed ${o.seed} (replay: CHAOS_SEED=${o.seed}); ${o.changes} changes over ${o.records}+ records; logs in ${o.dir}`);
  const services = stackServices(stackOpts);
  let sim: CrmSimulator | undefined;
  const connectors: Connector[] = [];
  let crashes = 0;
  let aborted: Error | undefined;
  let writer: Writer | undefined;
  let stopProgress = (): void => undefined;
  const crashTails: string[] = [];
  try {
    const env: StackEnv = await stackUp(stackOpts);
    sim = await startZendeskSellSimulator({ port: 0, control: true, limit: { requests: 10_000_000, windowSeconds: 60 } });
    const simUrl = sim.url;
    const fault = async (body: unknown): Promise<void> => {
      const res = await fetch(`${simUrl}/__sim/faults`, { method: 'POST', body: JSON.stringify(body) });
      if (!res.ok) throw new Error(`simulator refused fault ${JSON.stringify(body)}: HTTP ${res.status}`);
    };
    await fault({ rejectWhen: { field: 'last_name', contains: REJECT_MARKER } });

    const schema = 'chaos';
    await createErpSchema(env.PG_URL, schema);
    const conn = writeConnectorConfig(env, schema, simUrl, { limits: { requests: 1_000_000, windowSeconds: 60, concurrency: 4 } });
    const config = JSON.parse(readFileSync(conn.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    // A CRM call slower than this is a timeout (the latency fault goes above it).
    config.crm!.timeoutMs = 2000;
    // The product's default attempts: a storm must not dead-letter what the CRM would accept.
    config.sink = { lingerMs: 50 };
    config.ops = { logLevel: o.logLevel ?? 'info' }; // into one log file per process in o.dir
    writeFileSync(conn.configFile, JSON.stringify(config, null, 2));
    const topics = [`${conn.topicPrefix}.${schema}.customers`, `${conn.topicPrefix}.${schema}.orders`];
    const dlqTopic = `${conn.topicPrefix}.dlq`;

    writer = new Writer(env.PG_URL, schema, seededRandom(o.seed ^ 0x5eed));
    await writer.seed(o.records, Math.floor(o.records / 2));

    const recentExits: number[] = [];
    const onCrash = (name: string, code: number | null, tail: string): void => {
      crashes++;
      // A crash loop (e.g. a module that does not load) ends the run instead of the plan.
      recentExits.push(Date.now());
      while (recentExits[0]! < Date.now() - 60_000) recentExits.shift();
      if (recentExits.length >= 40) {
        if (!aborted) log(`connectors exited on their own 40 times within 60 s; last output:\n${tail}`);
        aborted = new Error(`connectors keep exiting on their own (40 times within 60 s); see the logs in ${o.dir}`);
        return;
      }
      count(`(exit on its own: ${name.replace(/-\d+$/, '')})`);
      log(`${name} exited on its own (code ${code}); restarting it`);
      if (crashTails.length < 6) crashTails.push(`--- ${name} (exit ${code}) ---\n${tail}`);
    };
    let sinkSeq = 0;
    const startSink = (): Connector => {
      const c = new Connector(`sink-${++sinkSeq}`, ['run', '--config', conn.configFile, '--role', 'sink'], o.dir, onCrash);
      connectors.push(c);
      return c;
    };
    const sinks: Connector[] = [startSink(), startSink()];
    const source = new Connector('source', ['run', '--config', conn.configFile, '--role', 'source'], o.dir, onCrash);
    connectors.push(source);
    await waitSlotActive(env.PG_URL, conn.slot);
    log('source streaming, 2 sinks started');

    // ---- the fault actions
    // CRM faults act on calls: each starts once the sinks are calling (a sink SIGKILL stalls the
    // group for its session timeout) and lasts a few seconds.
    const simStats = async (): Promise<{ requests: number; throttled: number }> =>
      (await (await fetch(`${simUrl}/__sim/stats`)).json()) as { requests: number; throttled: number };
    const whenCalling = async (what: string): Promise<void> => {
      const deadline = Date.now() + o.trafficWaitSeconds * 1000;
      while (Date.now() < deadline) {
        const before = (await simStats()).requests;
        await sleep(500);
        if ((await simStats()).requests > before) return;
      }
      log(`${what}: no CRM calls for ${o.trafficWaitSeconds} s; injecting anyway`);
      count('(fault injected while the sinks made no CRM calls)');
    };
    /**
     * A CRM fault for `seconds` from the moment the sinks call (an outage lasts a while, whatever
     * the client does: a count of faulty answers would instead stretch with the circuit breaker's
     * probes). Logs how many calls got a faulty answer.
     */
    const during = async (what: string, seconds: number, on: unknown, off: unknown): Promise<void> => {
      await whenCalling(what);
      const before = (await simStats()).requests;
      await fault(on);
      await sleep(seconds * 1000);
      await fault(off);
      log(`${what}: ${(await simStats()).requests - before} calls in ${seconds} s`);
    };
    const lockout = async (): Promise<void> => {
      await whenCalling('lockout');
      const seconds = Math.round(between(o.lockoutSeconds));
      const until = Date.now() + seconds * 1000;
      const before = (await simStats()).throttled;
      log(`CRM lockout: every call answers 429 for ${seconds} s`);
      // Retry-After counts down the way Sell's does during a lockout.
      while (Date.now() < until) {
        await fault({ throttle: { requests: 1_000_000_000, retryAfterSeconds: Math.max(1, Math.ceil((until - Date.now()) / 1000)) } });
        await sleep(Math.min(2000, until - Date.now()));
      }
      await fault({ throttle: { requests: 0, retryAfterSeconds: 0 } });
      log(`CRM lockout over: ${(await simStats()).throttled - before} calls answered 429`);
    };
    const actions: Record<FaultKind, () => Promise<void>> = {
      'source-kill': async () => {
        await sleep(random() * 1500);
        await source.crash();
      },
      'sink-kill': async () => {
        await sleep(random() * 1500);
        await pick(sinks).crash();
      },
      'kafka-kill': async () => {
        await services.stopKafka('SIGKILL');
        await sleep(2000 + random() * 3000);
        await services.startKafka();
      },
      'postgres-restart-fast': () => services.restartPostgres('fast'),
      'postgres-restart-immediate': () => services.restartPostgres('immediate'),
      'registry-restart': async () => {
        await services.stopRegistry('SIGTERM');
        await sleep(1000 + random() * 2000);
        await services.startRegistry();
      },
      'scale-2-3': async () => {
        sinks.push(startSink());
      },
      'scale-3-1': async () => {
        while (sinks.length > 1) await sinks.shift()!.stop();
      },
      'scale-1-2': async () => {
        sinks.push(startSink());
      },
      'crm-lockout-429': lockout,
      'crm-5xx-burst': () =>
        during(
          '5xx burst',
          5,
          { errors5xx: { requests: 1_000_000, status: pick([500, 502, 503, 504]) } },
          { errors5xx: { requests: 0, status: 500 } },
        ),
      'crm-timeouts': () => during('timeouts', 5, { latencyMs: 3000 }, { latencyMs: 0 }),
      'crm-resets': () => during('connection resets', 4, { resets: { requests: 1_000_000 } }, { resets: { requests: 0 } }),
      'crm-resets-after-write': () =>
        during('resets after the write', 4, { resets: { requests: 1_000_000, afterWrite: true } }, { resets: { requests: 0 } }),
      'crm-garbage-200': async () => {
        for (const kind of ['html', 'truncated', 'empty'] as const) {
          await during(`200 with ${kind} garbage`, 2, { garbage: { requests: 1_000_000, kind } }, { garbage: { requests: 0, kind } });
        }
      },
      'crm-partial-failures': async () => {
        // Single failures scattered among successes: some records of the moment fail, others pass.
        await whenCalling('partial failures');
        const until = Date.now() + 8000;
        while (Date.now() < until) {
          await fault(random() < 0.7 ? { errors5xx: { requests: 1, status: pick([500, 503]) } } : { resets: { requests: 1 } });
          await sleep(100 + random() * 200);
        }
        await fault({ errors5xx: { requests: 0, status: 500 }, resets: { requests: 0 } });
      },
      'crm-trickle': () =>
        during('trickled answers', 3, { trickle: { requests: 1_000_000, intervalMs: 50 } }, { trickle: { requests: 0, intervalMs: 0 } }),
    };
    const inject = async (kind: FaultKind): Promise<void> => {
      log(`fault: ${kind}`);
      const t = Date.now();
      await actions[kind]();
      count(kind);
      log(`fault done: ${kind} (${((Date.now() - t) / 1000).toFixed(1)} s)`);
    };

    // ---- schedule: one kind at a time (every kind, kills spread in between), then mixed rounds
    const single: FaultKind[] = Object.keys(actions).filter(
      (k) => !k.startsWith('scale') && k !== 'source-kill' && k !== 'sink-kill',
    ) as FaultKind[];
    for (let i = 1; i < o.sourceKills; i++) single.push('source-kill');
    for (let i = 1; i < o.sinkKills; i++) single.push('sink-kill');
    for (let i = single.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [single[i], single[j]] = [single[j]!, single[i]!];
    }
    // Scaling in order, with the first kills of each kind at fixed places: 2 sinks -> 3 -> 1 -> 2.
    const plan: FaultKind[][] = [['source-kill'], ['sink-kill']];
    const third = Math.floor(single.length / 3);
    single.forEach((k, i) => {
      plan.push([k]);
      if (i === third) plan.push(['scale-2-3']);
      if (i === 2 * third) plan.push(['scale-3-1']);
    });
    plan.push(['scale-1-2']);
    for (let r = 0; r < o.mixedRounds; r++) {
      const set = new Set<FaultKind>(['source-kill', 'sink-kill']);
      while (set.size < 3 + Math.floor(random() * 2)) set.add(pick(MIXABLE));
      plan.push([...set]);
    }
    log(`plan, ${plan.length} steps : ${plan.map((p) => p.join('+')).join(', ')}`);

    // Progress every 10 s: whether the sinks write while faults go on, and what the CRM answers.
    let lastRequests = 0;
    const progress = setInterval(() => {
      void (async () => {
        const st = (await (await fetch(`${simUrl}/__sim/stats`)).json()) as { requests: number; byStatus: Record<string, number> };
        const lag = await groupLag(env.KAFKA_BROKERS, conn.groupId, topics).catch(() => -1);
        log(
          `progress: ${writer!.changes} changes committed, consumer lag ${lag}, CRM calls +${st.requests - lastRequests} (by status so far ${JSON.stringify(st.byStatus)})`,
        );
        lastRequests = st.requests;
      })().catch(() => undefined);
    }, 10_000);
    stopProgress = () => clearInterval(progress);
    let planDone = false;
    const writing = writer.run(o.changes, o.rejects, o.changesPerSecond, () => !planDone);
    writing.catch(() => undefined); // awaited below; an early end must not leave it unhandled
    for (const [i, step] of plan.entries()) {
      await sleep(between(o.gapSeconds) * 1000);
      if (aborted) throw aborted;
      if (step.length > 1) log(`mixed round ${i}: ${step.join(' + ')}`);
      // One kind at a time: each lands while the sinks write (a sink SIGKILL stalls the group
      // for its session timeout, and kills in a row would otherwise hit an idle pipeline).
      else if (!step[0]!.startsWith('scale') && !step[0]!.startsWith('crm-')) await whenCalling(step[0]!);
      await Promise.all(step.map((k) => inject(k)));
    }
    planDone = true;
    await writing;
    log(
      `writer done: ${writer.changes} changes committed (${writer.errors} transactions cut by faults), ${writer.rejectsInserted} rejects`,
    );
    count('crm-validation-reject', writer.rejectsInserted);
    stopProgress();

    // ---- settle: the CRM converges or stops moving
    await waitSlotActive(env.PG_URL, conn.slot);
    const truth = await readTruth(env.PG_URL, schema);
    // Every change is in PostgreSQL's WAL below this point; the source has published them all
    // once the slot has confirmed it. Consumer lag 0 alone says nothing while the source is
    // still behind (e.g. retrying a registry that is not back yet).
    const walEnd = await withPg(
      env.PG_URL,
      async (c) => (await c.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn,
    );
    const slotBehind = (): Promise<number> =>
      withPg(env.PG_URL, async (c) =>
        Number(
          (
            await c.query<{ behind: string }>(
              'SELECT pg_wal_lsn_diff($1, confirmed_flush_lsn)::text AS behind FROM pg_replication_slots WHERE slot_name = $2',
              [walEnd, conn.slot],
            )
          ).rows[0]?.behind ?? '-1',
        ),
      ).catch(() => -1);
    const settleUntil = Date.now() + o.settleSeconds * 1000;
    let last = '';
    let stableSince = Date.now();
    let compared = compareCrm(truth, await simRecords(simUrl, 'contacts'), await simRecords(simUrl, 'deals'));
    for (;;) {
      const now = JSON.stringify(compared.figures);
      const lag = await groupLag(env.KAFKA_BROKERS, conn.groupId, topics).catch(() => -1);
      const behind = await slotBehind();
      if (now !== last) {
        last = now;
        stableSince = Date.now();
        log(`settling: ${now} lag=${lag} slot behind=${behind} bytes`);
      }
      const clean = Object.values(compared.figures).every((v) => v === 0);
      if (clean && lag === 0) break;
      if (lag === 0 && behind <= 0 && Date.now() - stableSince > 20_000) break;
      if (Date.now() > settleUntil) {
        log(`not settled within ${o.settleSeconds} s (lag ${lag}, slot ${behind} bytes behind the last change)`);
        break;
      }
      await sleep(2000);
      compared = compareCrm(truth, await simRecords(simUrl, 'contacts'), await simRecords(simUrl, 'deals'));
    }

    const letters = await readDeadLetters(env.KAFKA_BROKERS, dlqTopic);
    const lettered = new Set(letters.map((l) => `${l.object}/${l.externalId}`));
    const expected = new Set([...truth.rejected].map((id) => `contacts/${id}`));
    const problems: string[] = [];
    const figures: ChaosFigures = { ...compared.figures, dead_lettered: lettered.size };
    if (figures.lost || figures.stale || figures.extra) problems.push(`CRM differs from the tables: ${compared.examples.join('; ')}`);
    const behindAtEnd = await slotBehind();
    if (behindAtEnd > 0)
      problems.push(
        `the source had not published every change: its slot confirmed ${behindAtEnd} bytes less than the WAL held when the writer stopped (see source.log)`,
      );
    const unexpected = [...lettered].filter((k) => !expected.has(k));
    const missing = [...expected].filter((k) => !lettered.has(k));
    if (unexpected.length) {
      const codes = new Map<string, number>();
      for (const l of letters)
        if (!expected.has(`${l.object}/${l.externalId}`)) codes.set(l.error.code, (codes.get(l.error.code) ?? 0) + 1);
      problems.push(
        `${unexpected.length} records dead-lettered that the CRM did not reject by design (${[...codes].map(([c, n]) => `${c} x${n}`).join(', ')}), e.g. ${unexpected.slice(0, 10).join(', ')}`,
      );
    }
    if (missing.length) problems.push(`${missing.length} rejected records not dead-lettered, e.g. ${missing.slice(0, 10).join(', ')}`);
    if (truth.rejected.size !== writer.rejectsInserted)
      problems.push(`table holds ${truth.rejected.size} rejected rows, the writer counted ${writer.rejectsInserted}`);
    if (problems.length && crashTails.length) problems.push(`connector exits on their own:\n${crashTails.join('\n')}`);

    const stats = (await (await fetch(`${simUrl}/__sim/stats`)).json()) as { requests: number; byStatus: Record<string, number> };
    const width = Math.max(...Object.keys(faults).map((k) => k.length));
    const kills = (faults['source-kill'] ?? 0) + (faults['sink-kill'] ?? 0);
    const summary = [
      `chaos seed ${o.seed}: ${writer.changes} changes over ${truth.customers.size + truth.rejected.size} customers and ${truth.orders.size} orders at the end, ${((Date.now() - started) / 1000).toFixed(0)} s`,
      `CRM calls ${stats.requests}, by status ${JSON.stringify(stats.byStatus)}; ${letters.length} dead letters for ${lettered.size} records; ${crashes} connector exits on their own`,
      `faults injected by kind (${kills} SIGKILLs of connectors):`,
      ...Object.entries(faults)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, n]) => `  ${k.padEnd(width)}  ${n}`),
      ...(problems.length ? ['problems:', ...problems.map((p) => `  - ${p}`)] : []),
      `lost=${figures.lost} stale=${figures.stale} extra=${figures.extra} duplicates=${figures.duplicates} dead_lettered=${figures.dead_lettered}`,
    ].join('\n');
    return {
      figures,
      faults,
      rejects: truth.rejected.size,
      letters: letters.length,
      changes: writer.changes,
      crashes,
      seconds: (Date.now() - started) / 1000,
      problems,
      summary,
    };
  } finally {
    if (writer) writer.stopped = true;
    stopProgress();
    for (const c of connectors) await c.stop().catch(() => undefined);
    await sim?.close();
    await stackDown(stackOpts).catch((err: unknown) => log(`stack down failed: ${String(err)}`));
  }
}
