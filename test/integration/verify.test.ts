import { describe, expect, it } from 'vitest';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import type { SimStats } from '../../src/crm/sim-server.ts';
import { formatReport, type VerifyReport } from '../../src/verify/report.ts';
import { useHarness } from '../helpers/connector-harness.ts';
import { recordField, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * `pg2crm verify` against a Zendesk Sell simulator while the connector that wrote it keeps
 * running: drift made in the simulator by hand (records deleted, fields changed, extras added)
 * is found exactly, `--repair` re-drives it through the connector, and verify then finds none.
 * Verify's reads stay within its share of the quota the writers use too: the simulator
 * throttles nothing and counts the calls verify says it made.
 */
const h = useHarness();
const env = h.env;

/** The quota of the simulator and of the connector's config: low enough for a share to matter. */
const LIMIT = { requests: 300, windowSeconds: 60 };
const CUSTOMERS = 40;
const ORDERS = 10;

async function stats(url: string): Promise<SimStats> {
  return (await (await fetch(`${url}/__sim/stats`)).json()) as SimStats;
}

async function control(url: string, method: string, path: string, body?: unknown): Promise<void> {
  const res = await fetch(`${url}/__sim/records/${path}`, { method, ...(body ? { body: JSON.stringify(body) } : {}) });
  expect(res.status, `${method} ${path}`).toBeLessThan(300);
}

/** The simulator's contacts by their external id (custom_fields.erp_id). */
async function contactsById(url: string, object = 'contacts', field = 'custom_fields.erp_id'): Promise<Map<string, Record<string, any>>> {
  return new Map((await simRecords(url, object)).map((r) => [String(recordField(r, field)), r as Record<string, any>]));
}

function reportOf(output: string): VerifyReport {
  const line = output.split('\n').find((l) => l.startsWith('{"sample"'));
  if (!line) throw new Error(`no JSON report in the output:\n${output}`);
  return JSON.parse(line) as VerifyReport;
}

describe('pg2crm verify', () => {
  it('finds drift made in the CRM exactly, repairs it with the writers running, within its share of the quota', async () => {
    h.printOnFailure();
    const schema = uniqueName('verify');
    h.onCleanup(() => withPg(env.PG_URL, (c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)));
    const sim = await h.simulator(startZendeskSellSimulator, { control: true, limit: LIMIT });
    const conn = await h.connector(schema, sim.url, { limits: { ...LIMIT, concurrency: 2 } });
    await withPg(env.PG_URL, async (c) => {
      await c.query(
        `INSERT INTO ${schema}.customers (id, first_name, last_name, email, company)
           SELECT i, 'First' || i, 'Last' || i, 'c' || i || '@example.com', 'Co ' || (i % 7) FROM generate_series(1, ${CUSTOMERS}) i`,
      );
      await c.query(
        `INSERT INTO ${schema}.orders (id, customer_id, title, amount, status)
           SELECT i, i, 'Order ' || i, (i * 10.25)::numeric(12,2), 'open' FROM generate_series(1, ${ORDERS}) i`,
      );
    });
    await conn.running();
    await waitFor('every row in the CRM', async () => {
      const [contacts, deals] = [await simRecords(sim.url, 'contacts'), await simRecords(sim.url, 'deals')];
      return contacts.length === CUSTOMERS && deals.length === ORDERS && (await conn.lag()) === 0;
    });
    const clean = await conn.cli(['verify', '--json'], 60_000);
    expect(clean.code, clean.output).toBe(0);

    // The writers keep writing while verify runs: a new customer every 400 ms, through the
    // connector to the CRM. Rows in flight are not drift (verify looks at candidates twice).
    let next = 1001;
    let writing = Promise.resolve();
    const writeErrors: unknown[] = [];
    const writer = setInterval(() => {
      const id = next++;
      writing = writing
        .then(() =>
          withPg(env.PG_URL, (c) =>
            c.query(`INSERT INTO ${schema}.customers (id, first_name, last_name) VALUES ($1, 'New', $2)`, [id, `Row${id}`]),
          ),
        )
        .then(
          () => undefined,
          (err: unknown) => void writeErrors.push(err),
        );
    }, 400);
    h.onCleanup(async () => clearInterval(writer));

    // The drift, made by hand in the CRM: 3 contacts deleted, 4 changed, 2 added; 2 deals changed.
    const contacts = await contactsById(sim.url);
    for (const id of ['3', '11', '29']) await control(sim.url, 'DELETE', `contacts/${contacts.get(id)!.id}`);
    for (const id of ['5', '17']) await control(sim.url, 'PATCH', `contacts/${contacts.get(id)!.id}`, { last_name: 'Changed' });
    for (const id of ['8', '23']) {
      const r = contacts.get(id)!;
      await control(sim.url, 'PATCH', `contacts/${r.id}`, { custom_fields: { ...r.custom_fields, company: 'Elsewhere Ltd' } });
    }
    for (const id of ['900001', '900002']) {
      await control(sim.url, 'POST', 'contacts', { first_name: 'Ex', last_name: 'Tra', custom_fields: { erp_id: id } });
    }
    const deals = await contactsById(sim.url, 'deals', 'custom_fields.erp_order_id');
    for (const id of ['2', '7']) await control(sim.url, 'PATCH', `deals/${deals.get(id)!.id}`, { value: 1 });

    const before = await stats(sim.url);
    const found = await conn.cli(['verify', '--json'], 60_000);
    expect(found.code, found.output).toBe(3);
    const report = reportOf(found.output);
    console.log(formatReport(report).join('\n'));
    const [c, d] = report.mappings;
    console.log(
      `verify found: contacts missing ${c!.missing.count}/3, stale ${c!.stale.count}/4, extra ${c!.extra?.count}/2; ` +
        `deals stale ${d!.stale.count}/2, missing ${d!.missing.count}/0, extra ${d!.extra?.count}/0`,
    );
    expect(c!.checked).toBeGreaterThan(CUSTOMERS); // and the rows inserted meanwhile
    expect([...c!.missing.examples].sort()).toEqual(['11', '29', '3']);
    expect(Object.fromEntries(c!.stale.examples.map((s) => [s.externalId, s.fields]))).toEqual({
      '5': ['last_name'],
      '17': ['last_name'],
      '8': ['custom_fields.company'],
      '23': ['custom_fields.company'],
    });
    expect(c!.extra).toMatchObject({ count: 2, policy: 'delete' });
    expect([...c!.extra!.examples].sort()).toEqual(['900001', '900002']);
    expect(d).toMatchObject({ checked: ORDERS, missing: { count: 0 }, extra: { count: 0 } });
    expect(d!.stale.examples.map((s) => [s.externalId, s.fields]).sort()).toEqual([
      ['2', ['value']],
      ['7', ['value']],
    ]);
    const after = await stats(sim.url);
    const listed = (after.byEndpoint['GET /v2/contacts'] ?? 0) - (before.byEndpoint['GET /v2/contacts'] ?? 0);
    const listedDeals = (after.byEndpoint['GET /v2/deals'] ?? 0) - (before.byEndpoint['GET /v2/deals'] ?? 0);
    expect(listed + listedDeals).toBe(report.reads.calls);
    expect(report.reads.quota).toBe(LIMIT.requests / 4);
    console.log(
      `full check: ${report.reads.calls} read calls (simulator: ${listed + listedDeals}), budget ${report.reads.quota}/${report.reads.windowSeconds} s`,
    );

    // A sample reads record by record: 15 reads, paced within 75 per minute (a burst of 7).
    const sampleStart = await stats(sim.url);
    const startedAt = Date.now();
    const sampled = await conn.cli(['verify', '--json', '--table', `${schema}.customers`, '--sample', '15'], 90_000);
    const sampleMs = Date.now() - startedAt;
    const sample = reportOf(sampled.output);
    expect(sample.mappings).toHaveLength(1);
    expect(sample.mappings[0]).toMatchObject({ sample: true, checked: 15, extra: null });
    // 15, and the second look at the drifted rows the sample happened to draw.
    expect(sample.reads.calls).toBeGreaterThanOrEqual(15);
    expect((await stats(sim.url)).byEndpoint['GET /v2/contacts']! - (sampleStart.byEndpoint['GET /v2/contacts'] ?? 0)).toBe(
      sample.reads.calls,
    );
    console.log(
      `sample: ${sample.reads.calls} reads in ${(sampleMs / 1000).toFixed(1)} s (budget ${sample.reads.quota}/${sample.reads.windowSeconds} s), throttled ${sample.reads.throttled}`,
    );
    // Pacing: a bucket of 10% of 75 (7.5) refilled at 1.25/s: 15 reads cannot take under 6 s.
    expect(sampleMs).toBeGreaterThan(6_000);
    expect((await stats(sim.url)).throttled - sampleStart.throttled).toBe(0);

    const repaired = await conn.cli(['verify', '--json', '--repair', '--delete-extras'], 90_000);
    const repair = reportOf(repaired.output);
    expect(repair.mappings[0]!.repair).toEqual({ upserts: 7, deletes: 2, left: [] });
    expect(repair.mappings[1]!.repair).toEqual({ upserts: 2, deletes: 0, left: [] });

    // The running sink writes the repair; verify then finds nothing.
    let last = '';
    await waitFor(
      'verify to find no drift after the repair',
      async () => {
        if ((await conn.lag()) !== 0) return false;
        const again = await conn.cli(['verify'], 60_000);
        last = again.output;
        return again.code === 0;
      },
      90_000,
      1000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${last}`);
    });
    clearInterval(writer);
    await writing;
    expect(writeErrors).toEqual([]);
    const end = await stats(sim.url);
    console.log(`writers: ${next - 1001} customers inserted while verify ran, ${end.recordsWritten} CRM writes in all`);
    console.log(`simulator: ${end.requests} requests, ${end.throttled} throttled (limit ${LIMIT.requests}/${LIMIT.windowSeconds} s)`);
    expect(end.throttled).toBe(0);
    expect((await contactsById(sim.url)).has('900001')).toBe(false);
  }, 180_000);
});
