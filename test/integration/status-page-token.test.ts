import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpsServer } from '../../src/ops/ops-server.ts';
import { registry } from '../../src/metrics.ts';
import { TimeseriesSampler } from '../../src/ops/timeseries.ts';
import { bundledChromium, CHROMIUM_ARGS } from '../helpers/browser.ts';

/**
 * The status page of a connector with an ops token, in a real headless Chromium: the token given
 * in the URL fragment (or typed when the page asks) goes with every fetch of /api/timeseries and
 * the page goes live; the fragment leaves the address bar; without the token the data stays shut.
 * The ops server runs in-process with a sampler (no pipeline: the token path is what is tested;
 * status-page.test.ts covers the plots).
 */
const TOKEN = 'page-token-0123456789abcdef';

describe('status page with ops.token', () => {
  let server: OpsServer;
  let sampler: TimeseriesSampler;
  let browser: Browser;
  let base: string;

  beforeAll(async () => {
    const executablePath = await bundledChromium();
    sampler = new TimeseriesSampler({ name: 'token_page', registry, intervalMs: 200, details: () => ({}) });
    sampler.start();
    server = new OpsServer(0, () => true, sampler, { token: TOKEN });
    await server.start();
    base = `http://127.0.0.1:${server.address()!.port}`;
    browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await sampler?.stop();
  });

  async function open(url: string, onDialog?: (message: string) => string | undefined) {
    const page = await browser.newPage();
    const auth: (string | undefined)[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/timeseries')) auth.push(r.headers().authorization);
    });
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      const answer = onDialog?.(d.message());
      void (answer === undefined ? d.dismiss() : d.accept(answer));
    });
    await page.goto(url);
    return { page, auth, dialogs };
  }

  it('takes the token from #token=, sends it with each fetch and goes live; the fragment leaves the URL', async () => {
    const { page, auth, dialogs } = await open(`${base}/status#token=${TOKEN}`);
    await page.waitForFunction(`document.getElementById('conn')?.textContent === 'live'`, undefined, { timeout: 15_000 });
    expect(await page.textContent('#name')).toBe('token_page');
    expect(auth.length).toBeGreaterThan(0);
    expect(auth.every((a) => a === `Bearer ${TOKEN}`)).toBe(true);
    expect(page.url()).toBe(`${base}/status`);
    expect(dialogs).toEqual([]);
    await page.close();
  });

  it('asks for the token when it has none, and uses what is typed', async () => {
    const { page, dialogs } = await open(`${base}/status`, () => TOKEN);
    await page.waitForFunction(`document.getElementById('conn')?.textContent === 'live'`, undefined, { timeout: 15_000 });
    expect(dialogs).toHaveLength(1);
    expect(dialogs[0]).toMatch(/ops token/);
    await page.close();
  });

  it('without the token the data stays shut: asked once, then no data', async () => {
    const { page, dialogs } = await open(`${base}/status`, () => undefined);
    await page.waitForFunction(`document.getElementById('conn')?.textContent === 'connection lost: retrying'`, undefined, {
      timeout: 15_000,
    });
    await page.waitForTimeout(4_500);
    expect(dialogs).toHaveLength(1);
    expect(await page.textContent('#name')).toBe('…');
    await page.close();
  });
});
