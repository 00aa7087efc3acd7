import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/events/change-event.ts';
import { type Connector, useHarness } from '../helpers/connector-harness.ts';
import { type CliProcess, readAllEvents, runCli, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * Snapshots against the real services, the connector running as a process: (a) an initial
 * snapshot killed with SIGKILL resumes after the last acknowledged chunk; (b) `pg2crm snapshot
 * --table` re-reads a table while a writer keeps changing it, without any snapshot row
 * overtaking a newer change of its key. Every update increments `v`, so per key the values in
 * Kafka order must never go down, and the last event per key must equal the table.
 */
const h = useHarness();
const env = h.env;

async function setUp(
  prefix: string,
  rows: number,
  snapshot: string,
  chunkRows: number,
): Promise<{ conn: Connector; schema: string; topic: string }> {
  const schema = uniqueName(prefix);
  await withPg(env.PG_URL, (c) =>
    c.query(`CREATE SCHEMA ${schema};
      CREATE TABLE ${schema}.customers (id int PRIMARY KEY, v int NOT NULL, pad text);
      CREATE TABLE ${schema}.orders (id int PRIMARY KEY, customer_id int);
      INSERT INTO ${schema}.customers SELECT g, 0, repeat('x', 200) FROM generate_series(1, ${rows}) g;
      ANALYZE ${schema}.customers;`),
  );
  const conn = await h.connector(schema, 'http://127.0.0.1:1', { snapshot, erp: false });
  conn.editConfig((config) => {
    config.postgres.snapshotChunkRows = chunkRows;
    config.mappings[0]!.fields = { last_name: 'v' }; // the sink does not run; the mapping only has to be valid
  });
  return { conn, schema, topic: conn.topic() };
}

function start(conn: Connector): CliProcess {
  return conn.run('--role', 'source');
}

/** The connector's JSON log lines with message `msg`. */
function logLines(p: CliProcess, msg: string): Record<string, unknown>[] {
  return p.output
    .split('\n')
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Final state per key in Kafka: `id=v` for live rows, deleted keys absent. */
function lastPerKey(events: ChangeEvent[]): Map<string, string> {
  const last = new Map<string, ChangeEvent>();
  for (const e of events) last.set(String(e.key.id), e);
  const state = new Map<string, string>();
  for (const [id, e] of last) if (e.op !== 'd') state.set(id, String(e.after?.v));
  return state;
}

async function tableState(schema: string): Promise<Map<string, string>> {
  const rows = await withPg(
    env.PG_URL,
    async (c) => (await c.query<{ id: number; v: number }>(`SELECT id, v FROM ${schema}.customers`)).rows,
  );
  return new Map(rows.map((r) => [String(r.id), String(r.v)]));
}

/** Every event of `topic`, once the last event per key equals `expected` (the table). */
function kafkaEqualTo(expected: Map<string, string>, topic: string): Promise<ChangeEvent[]> {
  return waitFor(
    'Kafka equal to the table',
    async () => {
      const all = await readAllEvents(env, topic);
      const state = lastPerKey(all);
      return [...expected].every(([id, v]) => state.get(id) === v) && state.size === expected.size ? all : undefined;
    },
    30_000,
    1000,
  );
}

/** Per key in Kafka order: `v` never goes down, and no snapshot row follows a delete. Returns the violations. */
function orderViolations(events: ChangeEvent[]): string[] {
  const seen = new Map<string, { v: number; deleted: boolean }>();
  const bad: string[] = [];
  for (const e of events) {
    const id = String(e.key.id);
    const prev = seen.get(id);
    if (e.op === 'd') {
      seen.set(id, { v: prev?.v ?? -1, deleted: true });
      continue;
    }
    const v = Number(e.after?.v);
    if (prev && e.op === 'r' && prev.deleted) bad.push(`${id}: r(v=${v}) after a delete`);
    if (prev && !prev.deleted && v < prev.v) bad.push(`${id}: ${e.op}(v=${v}) after v=${prev.v}`);
    seen.set(id, { v, deleted: false });
  }
  return bad;
}

describe('snapshots', () => {
  it('resumes an initial snapshot killed mid-way after the last acknowledged chunk', async () => {
    const ROWS = 40_000;
    const { conn, schema, topic } = await setUp('snapres', ROWS, 'initial', 500);
    let proc = start(conn);
    const first = proc;
    h.printOnFailure({ chars: 3000, all: true });
    await waitFor('a few snapshot chunks', async () => logLines(first, 'snapshot progress').length >= 3, 60_000, 20);
    first.kill('SIGKILL');
    await first.exited;
    const progress = logLines(first, 'snapshot progress');
    const lastLogged = Number((progress.at(-1)!.lastKey as string[])[0]);
    expect(lastLogged).toBeLessThan(ROWS); // killed mid-snapshot
    expect(first.output).not.toContain('initial snapshot finished');

    // Changes while the connector is down, on both sides of the resume point.
    await withPg(env.PG_URL, (c) =>
      c.query(`UPDATE ${schema}.customers SET v = v + 1 WHERE id % 97 = 0;
        DELETE FROM ${schema}.customers WHERE id % 1001 = 0;
        INSERT INTO ${schema}.customers SELECT g, 5, 'new' FROM generate_series(${ROWS + 1}, ${ROWS + 50}) g;`),
    );
    proc = start(conn);
    await conn.slotActive();
    // And while it resumes.
    await withPg(env.PG_URL, (c) => c.query(`UPDATE ${schema}.customers SET v = v + 10 WHERE id % 89 = 0`));
    const second = proc;
    await waitFor('resumed snapshot finished', async () => second.output.includes('"msg":"initial snapshot finished"'), 60_000, 200);

    expect(second.output).toContain('initial snapshot did not finish; resuming it after the last acknowledged chunk');
    const chunks = logLines(second, 'incremental snapshot chunk').filter((l) => l.table === `${schema}.customers`);
    expect(chunks.length).toBeGreaterThan(0);
    // The first chunk is not read again: the resumed run starts at (or after) the last key the killed run logged.
    expect(chunks.some((l) => l.fromKey === null)).toBe(false);
    expect(Number((chunks[0]!.fromKey as string[])[0])).toBeGreaterThanOrEqual(lastLogged);
    expect(logLines(second, 'snapshot progress')).toEqual([]); // no exported-snapshot re-read from zero

    const expected = await tableState(schema);
    const events = await kafkaEqualTo(expected, topic);
    const ids = new Set(events.map((e) => String(e.key.id)));
    const missing = Array.from({ length: ROWS + 50 }, (_, i) => String(i + 1)).filter((id) => !ids.has(id));
    expect(missing).toEqual([]);
    expect(orderViolations(events)).toEqual([]);
    expect(await second.stop()).toBe(0);
  });

  it('pg2crm snapshot --table re-reads a table while a writer changes it, without stale snapshot rows', async () => {
    const ROWS = 5_000;
    const { conn, schema, topic } = await setUp('snapinc', ROWS, 'never', 250);
    h.printOnFailure({ chars: 4000 });
    const proc = start(conn);
    await conn.slotActive();

    let stop = false;
    let changes = 0;
    const writer = withPg(env.PG_URL, async (c) => {
      let next = ROWS + 1;
      while (!stop) {
        const ids = Array.from({ length: 5 }, () => 1 + Math.floor(Math.random() * ROWS));
        await c.query(`UPDATE ${schema}.customers SET v = v + 1 WHERE id = ANY ($1)`, [ids]);
        if (changes % 10 === 0) {
          await c.query(`DELETE FROM ${schema}.customers WHERE id = $1`, [ids[0]]);
          await c.query(`INSERT INTO ${schema}.customers VALUES ($1, 0, 'new')`, [next++]);
        }
        changes++;
        await new Promise((r) => setTimeout(r, 3));
      }
    });
    const result = await runCli(['snapshot', '--config', conn.configFile, '--table', `${schema}.customers`], 50_000);
    stop = true;
    await writer;
    expect(result.output).toMatch(/snapshot of .*customers finished: \d+ rows/);
    expect(result.output).toMatch(/rows \(\d+%\), \d+ rows\/s, ETA/);
    expect(result.code).toBe(0);
    expect(changes).toBeGreaterThan(50);

    const expected = await tableState(schema);
    const events = await kafkaEqualTo(expected, topic);
    expect(orderViolations(events)).toEqual([]);
    const snapshotRows = events.filter((e) => e.op === 'r');
    expect(snapshotRows.length).toBeGreaterThan(ROWS / 2);
    expect(snapshotRows.every((e) => e.source.snapshot)).toBe(true);
    const chunks = logLines(proc, 'incremental snapshot chunk');
    console.log(
      `incremental snapshot: ${chunks.length} chunks, ${snapshotRows.length} snapshot rows, ${chunks.reduce((n, l) => n + Number(l.dropped), 0)} dropped as changed in their window, ${changes} writer transactions`,
    );
    expect(await proc.stop()).toBe(0);
  });

  it('pg2crm snapshot exits 2 for a table the connector does not capture, 1 when there is no slot yet', async () => {
    const conn = await h.connector(uniqueName('snapcli'), 'http://127.0.0.1:1', { snapshot: 'never', erp: false });
    const wrong = await runCli(['snapshot', '--config', conn.configFile, '--table', 'public.not_captured']);
    expect(wrong.code).toBe(2);
    expect(wrong.output).toContain('not captured by this connector; use one of postgres.tables');
    const noSlot = await runCli(['snapshot', '--config', conn.configFile, '--table', `${conn.schema}.customers`]);
    expect(noSlot.code).toBe(1);
    expect(noSlot.output).toContain(`replication slot ${conn.slot} does not exist`);
    const help = await runCli(['snapshot', '--help']);
    expect(help.code).toBe(0);
    expect(help.output).toContain('--table <schema.table>');
    expect(help.output).toContain('--timeout <seconds>');
  });

  it('pg2crm snapshot --timeout stops waiting for a connector that is not running and says the request stays queued', async () => {
    const conn = await h.connector(uniqueName('snapwait'), 'http://127.0.0.1:1', { snapshot: 'never', erp: false });
    // A slot nobody streams from: the connector is down (or runs only sink processes).
    await withPg(env.PG_URL, (c) => c.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [conn.slot]));
    const started = Date.now();
    const result = await runCli(['snapshot', '--config', conn.configFile, '--table', `${conn.schema}.customers`, '--timeout', '2'], 30_000);
    expect(result.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(result.output).toContain(`slot ${conn.slot} is not streaming`);
    expect(result.output).toMatch(/stopped waiting after --timeout 2 s; the request [0-9a-f-]+ for \S+ stays queued/);
    const bad = await runCli(['snapshot', '--config', conn.configFile, '--table', `${conn.schema}.customers`, '--timeout', '0']);
    expect(bad.code).toBe(2);
    expect(bad.output).toContain('greater than 0');
  });
});
