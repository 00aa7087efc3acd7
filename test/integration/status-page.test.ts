import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import type { TimeseriesResponse } from '../../src/ops/timeseries.ts';
import { bundledChromium, CHROMIUM_ARGS } from '../helpers/browser.ts';
import { type Connector, useHarness } from '../helpers/connector-harness.ts';
import { type CliProcess, freePort, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * The status page in a real headless Chromium, fed by a real pipeline (PostgreSQL -> Kafka ->
 * connector -> Zendesk Sell simulator): every plot fills with data, the numbers it shows agree
 * with /metrics, and a full-page screenshot lands in test-artifacts/ for people to look at.
 * The browser is the one the @sparticuz/chromium devDependency carries (test/helpers/browser.ts),
 * so `npm ci && npm test` needs no system Chromium.
 */
const h = useHarness();
const env = h.env;
const repoRoot = new URL('../../', import.meta.url).pathname;
const artifacts = join(repoRoot, 'test-artifacts');

type Sim = CrmSimulator;

/** Sum of a metric's samples in a Prometheus text exposition, by metric name (all labels). */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('status page', () => {
  let sim: Sim;
  let conn: Connector;
  let proc: CliProcess | undefined;
  let browser: Browser | undefined;
  let executablePath: string;
  const schema = uniqueName('page');
  let opsPort: number;
  let base: string;
  // A quota small enough that the budget plot's used line and quota line share a scale.
  const limit = { requests: 600, windowSeconds: 10 };

  beforeAll(async () => {
    // Unpacked once into node_modules/.cache (a few seconds the first time), before the clock of the test starts.
    executablePath = await bundledChromium();
    sim = await h.simulator(startZendeskSellSimulator, { control: true, limit });
    opsPort = await freePort();
    base = `http://127.0.0.1:${opsPort}`;
    conn = await h.connector(schema, sim.url, { limits: limit, extra: { ops: { port: opsPort, lagIntervalSeconds: 1 } } });
  });

  afterAll(async () => {
    await browser?.close();
    await proc?.stop();
    // The connector's log beside the screenshot, to explain what the plots show.
    if (proc) {
      mkdirSync(artifacts, { recursive: true });
      writeFileSync(join(artifacts, 'status-page-connector.log'), proc.output);
    }
  });

  it('plots live throughput, budget, lag, throttles and dead letters that match /metrics', async () => {
    h.printOnFailure({ chars: 6000 });
    proc = conn.run();
    await waitFor('connector ready', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200, 90_000);

    // ~10 s of ERP activity: new customers, updates of earlier ones, orders for them.
    let customers = 0;
    await withPg(env.PG_URL, async (c) => {
      const until = Date.now() + 10_000;
      while (Date.now() < until) {
        await c.query(
          `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'F' || g, 'L' || g, 'p' || g || '@example.com' FROM generate_series(1, 8) g`,
        );
        customers += 8;
        await c.query(
          `UPDATE ${schema}.customers SET email = 'u' || id || '-' || floor(random() * 1e6) || '@example.com' WHERE id IN (SELECT id FROM ${schema}.customers ORDER BY random() LIMIT 4)`,
        );
        await c.query(
          `INSERT INTO ${schema}.orders (customer_id, title, amount) SELECT id, 'Order ' || id, 10 FROM ${schema}.customers ORDER BY random() LIMIT 2`,
        );
        await new Promise((r) => setTimeout(r, 250));
      }
    });

    const html = await fetch(`${base}/status`);
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toMatch(/^text\/html/);
    const api = (await (await fetch(`${base}/api/timeseries`)).json()) as TimeseriesResponse;
    // Opened after the writes: the page still gets the history since the connector started.
    expect(api.points.length).toBeGreaterThanOrEqual(5);
    expect(api.quota).toEqual(limit);

    browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(`${base}/`);

    // Every plot has data: each chart's paths have >= 3 points, the lag plot one line per partition.
    const points = (chart: string) =>
      page.$$eval(`svg[data-chart="${chart}"] path[data-series]`, (ps) =>
        ps.map((p) => ({
          name: p.getAttribute('data-series'),
          n: Number(p.getAttribute('data-points')),
          max: Number(p.getAttribute('data-max')),
        })),
      );
    await waitFor(
      'every plot with data',
      async () => {
        for (const chart of ['throughput', 'budget', 'lag', 'throttles', 'dlq']) {
          const ps = await points(chart);
          if (ps.length === 0 || ps.some((p) => p.n < 3)) return false;
        }
        return (await points('lag')).length === 6;
      },
      60_000,
      500,
    ).catch(async (err: unknown) => {
      // Say which plot stayed empty, and keep a picture of it.
      const state = Object.fromEntries(
        await Promise.all(['throughput', 'budget', 'lag', 'throttles', 'dlq'].map(async (c) => [c, await points(c)])),
      );
      console.log('plots', JSON.stringify(state), 'page errors', pageErrors);
      mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: join(artifacts, 'status-page-failed.png'), fullPage: true });
      throw err;
    });
    expect((await points('budget')).map((p) => p.name).sort()).toEqual([
      'quota (all instances)',
      "this instance's share",
      'used by this instance',
    ]);
    const lagLegend = await page.$$eval('#lag-legend [data-series]', (items) => items.map((i) => i.getAttribute('data-series')));
    expect(lagLegend.sort()).toEqual(['customers/0', 'customers/1', 'customers/2', 'orders/0', 'orders/1', 'orders/2']);
    expect(await page.locator('.empty').count()).toBe(0);

    // The plotted throughput is real: captured events and written records both rose above 0/s.
    const throughput = Object.fromEntries((await points('throughput')).map((p) => [p.name, p.max]));
    expect(throughput['events captured/s']).toBeGreaterThan(0);
    expect(throughput['records written/s']).toBeGreaterThan(0);
    const budgetMax = Object.fromEntries((await points('budget')).map((p) => [p.name, p.max]));
    expect(budgetMax['used by this instance']).toBeGreaterThan(0);
    expect(budgetMax['used by this instance']).toBeLessThanOrEqual(limit.requests);
    expect(budgetMax['quota (all instances)']).toBe(limit.requests);

    // Once the CRM holds every customer, the page's totals and lag agree with /metrics.
    await waitFor('every customer in the CRM', async () => (await simRecords(sim.url, 'contacts')).length === customers, 120_000, 500);
    const metricsText = await waitFor(
      'consumer lag 0 in /metrics',
      async () => {
        const text = await (await fetch(`${base}/metrics`)).text();
        return metricSum(text, 'pg2crm_consumer_lag') === 0 && text.includes('pg2crm_consumer_lag{') ? text : undefined;
      },
      60_000,
      500,
    );
    const written = metricSum(metricsText, 'pg2crm_records_written_total');
    expect(written).toBeGreaterThanOrEqual(customers);
    const shown = await waitFor(
      'page totals caught up',
      async () => {
        const v = Number(await page.getAttribute('#t-written-total', 'data-value'));
        const lagLast = await page.$$eval('svg[data-chart="lag"] path[data-series]', (ps) =>
          ps.map((p) => Number(p.getAttribute('data-last'))),
        );
        return v >= written && lagLast.every((l) => l === 0) ? v : undefined;
      },
      20_000,
      500,
    );
    // Roughly equal: a few straggler writes (order lookups) may land between the two reads.
    expect(Math.abs(shown - written)).toBeLessThanOrEqual(Math.max(3, written * 0.02));
    expect(await page.textContent('#t-lag')).toBe('0');
    const rows = await page.$$eval('#partitions tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
    expect(rows).toHaveLength(6);
    // committed == end and lag 0 on every partition, and something was committed on each topic.
    for (const r of rows) expect(r[2]).toBe(r[3]);
    expect(rows.map((r) => r[4])).toEqual(['0', '0', '0', '0', '0', '0']);
    expect(await page.textContent('#f-slot')).toContain('(streaming)');
    expect(await page.textContent('#updated')).toMatch(/last updated \d\d:\d\d:\d\d/);

    // Self-contained: the page fetched nothing but itself and its own API.
    expect(requested.filter((u) => !u.startsWith(base))).toEqual([]);
    expect(pageErrors).toEqual([]);

    mkdirSync(artifacts, { recursive: true });
    const shot = join(artifacts, 'status-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(10 * 1024);

    expect(await proc.stop()).toBe(0);
  });
});
