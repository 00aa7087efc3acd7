import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, inject, onTestFailed } from 'vitest';
import type { StackEnv } from '../../scripts/stack.ts';
import { type Config, loadConfig } from '../../src/config.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import type { DeadLetter } from '../../src/sink/dead-letter.ts';
import {
  CliProcess,
  createErpSchema,
  crmDifferences,
  dropCapture,
  groupLag,
  readDeadLetters,
  runCli,
  simRecords,
  type TestConnector,
  uniqueName,
  waitFor,
  waitSlotActive,
  withPg,
  writeConnectorConfig,
} from './fixtures.ts';

/**
 * One connector harness for the integration tests: what every test set up by hand before
 * (a simulator on a loopback port, a schema of its own with the demo ERP tables, a connector
 * config built from the stack's addresses, `pg2crm` processes, and the cleanup of all of it)
 * in one place. Names come from uniqueName, so files never share a schema, slot, publication,
 * topic prefix or consumer group and could run in parallel.
 *
 *   const h = useHarness();                       // cleanup registered in the enclosing afterAll
 *   const sim = await h.simulator();              // Zendesk Sell, control endpoints on
 *   const conn = await h.connector(uniqueName('x'), sim.url, { snapshot: 'never' });
 *   const proc = await conn.running();            // `pg2crm run`, once its slot streams
 *   await conn.lagZero();
 */

/** The Zendesk Sell limit the integration tests give their simulator: high enough never to throttle. */
export const SELL_LIMIT = { requests: 100_000, windowSeconds: 60 };

type Mapping = Config['mappings'][number];
export type ConfigOverrides = Parameters<typeof writeConnectorConfig>[3] & {
  /** Create the demo ERP tables in the schema (default true); false where the test makes its own. */
  erp?: boolean;
};

/** A connector config over a schema of its own, with the waits and reads the tests share. */
export class Connector implements TestConnector {
  readonly name: string;
  readonly schema: string;
  readonly topicPrefix: string;
  readonly groupId: string;
  readonly slot: string;
  readonly publication: string;
  readonly configFile: string;

  private readonly harness: ConnectorHarness;

  constructor(harness: ConnectorHarness, t: TestConnector) {
    this.harness = harness;
    this.name = t.name;
    this.schema = t.schema;
    this.topicPrefix = t.topicPrefix;
    this.groupId = t.groupId;
    this.slot = t.slot;
    this.publication = t.publication;
    this.configFile = t.configFile;
  }

  private get env(): StackEnv {
    return this.harness.env;
  }

  /** The change topic of a table of the schema. */
  topic(table = 'customers'): string {
    return `${this.topicPrefix}.${this.schema}.${table}`;
  }

  /** The change topics of the demo tables: customers, orders. */
  get topics(): string[] {
    return [this.topic('customers'), this.topic('orders')];
  }

  get dlq(): string {
    return `${this.topicPrefix}.dlq`;
  }

  /** The written config, as JSON. */
  config(): Record<string, any> {
    return JSON.parse(readFileSync(this.configFile, 'utf8')) as Record<string, any>;
  }

  /** Changes the written config in place (before a process reads it). */
  editConfig(change: (config: Record<string, any>) => void, indent?: number): void {
    const config = this.config();
    change(config);
    writeFileSync(this.configFile, JSON.stringify(config, null, indent));
  }

  /** `pg2crm run --config <file> ...args` (e.g. '--role', 'source'), stopped at cleanup. */
  run(...args: string[]): CliProcess {
    return this.harness.process(['run', '--config', this.configFile, ...args]);
  }

  /** run(), resolved once the connector streams from its slot. */
  async running(...args: string[]): Promise<CliProcess> {
    const proc = this.run(...args);
    await this.slotActive();
    return proc;
  }

  slotActive(): Promise<void> {
    return waitSlotActive(this.env.PG_URL, this.slot);
  }

  /** `pg2crm <args> --config <file>` to its end. */
  cli(args: string[], timeoutMs?: number): Promise<{ code: number | null; output: string }> {
    return runCli([...args, '--config', this.configFile], timeoutMs);
  }

  /** The sink group's lag over `topics` (default: both demo tables). */
  lag(topics: string[] = this.topics): Promise<number> {
    return groupLag(this.env.KAFKA_BROKERS, this.groupId, topics);
  }

  /** Waits until the sink group's lag over `topics` is 0. */
  async lagZero(timeoutMs?: number, topics: string[] = this.topics): Promise<void> {
    await waitFor('lag 0', async () => (await this.lag(topics)) === 0, timeoutMs);
  }

  /** Every dead letter in the connector's dead-letter topic. */
  deadLetters(): Promise<DeadLetter[]> {
    return readDeadLetters(this.env.KAFKA_BROKERS, this.dlq);
  }

  /**
   * Waits until the sink's lag over the customers topic is 0 and the simulator's records of
   * `mapping.object` equal the table on every mapped field (crmDifferences; ids in `skip` must
   * be absent), then hands the last differences to `check` (the test's assertion), also when
   * the wait timed out. Returns the records last read.
   */
  async crmMatchesTable(
    sim: { url: string },
    mapping: Mapping,
    check: (differences: string[]) => void,
    {
      skip = new Set<string>(),
      timeoutMs = 60_000,
      everyMs = 250,
      what = 'the CRM equal to the table',
    }: { skip?: Set<string>; timeoutMs?: number; everyMs?: number; what?: string } = {},
  ): Promise<Record<string, unknown>[]> {
    let last: string[] = ['not compared yet'];
    let records: Record<string, unknown>[] = [];
    try {
      await waitFor(
        what,
        async () => {
          if ((await this.lag([this.topic()])) !== 0) return false;
          records = await simRecords(sim.url, mapping.object);
          last = crmDifferences(records, await this.rows(), mapping, skip);
          return last.length === 0;
        },
        timeoutMs,
        everyMs,
      );
    } finally {
      check(last);
    }
    return records;
  }

  /** Every row of a table of the schema, by id. */
  rows(table = 'customers'): Promise<Record<string, unknown>[]> {
    return withPg(
      this.env.PG_URL,
      async (c) => (await c.query(`SELECT * FROM ${this.schema}.${table} ORDER BY id`)).rows as Record<string, unknown>[],
    );
  }
}

export class ConnectorHarness {
  readonly procs: CliProcess[] = [];
  private readonly sims: { close(): Promise<void> }[] = [];
  private readonly connectors: TestConnector[] = [];
  private readonly later: (() => Promise<unknown>)[] = [];
  private dir: string | undefined;

  readonly env: StackEnv;

  constructor(env: StackEnv) {
    this.env = env;
  }

  /**
   * A CRM simulator on a loopback port the OS picks, closed at cleanup. Without arguments:
   * Zendesk Sell with its control endpoints and SELL_LIMIT.
   */
  simulator(): Promise<CrmSimulator>;
  simulator<O extends { port: number }, S extends CrmSimulator>(start: (opts: O) => Promise<S>, opts: Omit<O, 'port'>): Promise<S>;
  async simulator(start?: (opts: { port: number }) => Promise<CrmSimulator>, opts?: object): Promise<CrmSimulator> {
    const sim = start ? await start({ port: 0, ...opts }) : await startZendeskSellSimulator({ port: 0, control: true, limit: SELL_LIMIT });
    this.sims.push(sim);
    return sim;
  }

  /**
   * A connector over `schema` (made with the demo ERP tables unless `erp: false`) writing to
   * `crmUrl`, its config built from the stack's addresses; its slot and publication are dropped
   * at cleanup.
   */
  async connector(schema: string, crmUrl: string, overrides: ConfigOverrides = {}, env: StackEnv = this.env): Promise<Connector> {
    const { erp = true, ...config } = overrides;
    if (erp) await createErpSchema(env.PG_URL, schema);
    const conn = new Connector(this, writeConnectorConfig(env, schema, crmUrl, config));
    this.connectors.push(conn);
    return conn;
  }

  /**
   * A valid config over the demo tables in `schema`, as JSON, for tests that vary it and expect
   * `check` or `run` to name what is wrong: its CRM a Zendesk Sell simulator that takes `sim-token`.
   */
  async validConfig(schema: string): Promise<Record<string, any>> {
    const sim = await this.simulator(startZendeskSellSimulator, { tokens: ['sim-token'] });
    return (await this.connector(schema, sim.url)).config();
  }

  /** `pg2crm <args>` as a process, stopped at cleanup. */
  process(args: string[], env?: Record<string, string>): CliProcess {
    const proc = new CliProcess(args, env);
    this.procs.push(proc);
    return proc;
  }

  /** A path in the harness's own temp directory (made on first use). */
  tempPath(name: string): string {
    this.dir ??= mkdtempSync(join(tmpdir(), 'pg2crm-harness-'));
    return join(this.dir, name);
  }

  /** A config file (JSON) in the harness's temp directory, a new name each call. */
  configFile(config: unknown): string {
    const file = this.tempPath(`${uniqueName('c')}.json`);
    writeFileSync(file, JSON.stringify(config));
    return file;
  }

  /** Something else to undo at cleanup (after the processes, simulators and captures). */
  onCleanup(fn: () => Promise<unknown>): void {
    this.later.push(fn);
  }

  /**
   * When the current test fails, prints the tail (`chars`) of every process the harness starts
   * from now on (`all`: of every process it started) and, where given, `more` (e.g. simulator stats).
   */
  printOnFailure({ chars = 5000, all = false, more }: { chars?: number; all?: boolean; more?: () => Promise<unknown> } = {}): void {
    const from = all ? 0 : this.procs.length;
    onTestFailed(async () => {
      for (const [i, p] of this.procs.slice(from).entries()) console.log(`--- connector process ${i} (tail):\n${p.output.slice(-chars)}`);
      if (more) console.log(await more());
    });
  }

  /**
   * Stops the processes (together), closes the simulators, drops the slots and publications,
   * then runs onCleanup's functions; every step runs, the first failure is thrown at the end.
   */
  async cleanup(): Promise<void> {
    const failures: unknown[] = [];
    const step = async (fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        failures.push(err);
      }
    };
    await Promise.all(this.procs.map((p) => step(() => p.stop())));
    for (const s of this.sims) await step(() => s.close());
    for (const c of this.connectors) await step(() => dropCapture(this.env.PG_URL, c.slot, c.publication));
    for (const fn of this.later) await step(fn);
    if (failures.length) throw failures[0];
  }
}

/** A harness over the run's stack whose cleanup runs in the enclosing suite's (or file's) afterAll. */
export function useHarness(): ConnectorHarness {
  const harness = new ConnectorHarness(inject('stack'));
  afterAll(() => harness.cleanup());
  return harness;
}

/** A CRM's ready config (connectors/<kind>.yaml) and what tests take from it. */
export interface ReadyConfig {
  config: Config;
  customers: Mapping;
  orders: Mapping | undefined;
  /**
   * The ready `crm` section against a simulator: no credentials, a test token unless `auth`,
   * `limit` merged over the ready limits (`limits` replaces them), other keys added.
   */
  crm(
    simUrl: string,
    overrides?: { auth?: Record<string, unknown>; limit?: object; limits?: object; [key: string]: unknown },
  ): Record<string, unknown>;
  /** The ready customers mapping moved to `schema`'s table, without lookups, deletes deleting. */
  customersIn(schema: string): Mapping;
}

export function readyConfig(kind: string): ReadyConfig {
  const config = loadConfig(new URL(`../../connectors/${kind}.yaml`, import.meta.url).pathname, {});
  const customers = config.mappings.find((m) => m.table === 'erp.customers');
  if (!customers) throw new Error(`connectors/${kind}.yaml maps no erp.customers`);
  return {
    config,
    customers,
    orders: config.mappings.find((m) => m.table === 'erp.orders'),
    crm: (simUrl, { auth = { token: 'sim-token' }, limit = {}, limits, ...rest } = {}) => ({
      ...config.crm,
      credentials: undefined,
      baseUrl: simUrl,
      auth,
      limits: limits ?? { ...config.crm.limits, ...limit },
      ...rest,
    }),
    customersIn: (schema) => ({ ...customers, table: `${schema}.customers`, lookups: {}, onDelete: 'delete' }),
  };
}

/** The simulator's request counters (`/__sim/stats`). */
export async function simStats<
  T = { requests: number; throttled: number; byEndpoint: Record<string, number>; byStatus: Record<string, number>; recordsWritten: number },
>(sim: { url: string }): Promise<T> {
  return (await (await fetch(`${sim.url}/__sim/stats`)).json()) as T;
}

/** Sets the simulator's faults (`/__sim/faults`); `{ clear: true }` clears them. */
export async function simFaults(sim: { url: string }, faults: unknown): Promise<void> {
  await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify(faults) });
}
