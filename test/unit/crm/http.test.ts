import { Pool } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { parseRetryAfter, RETRY_AFTER_CAP_SECONDS, send, USER_AGENT } from '../../../src/crm/http.ts';
import type { CrmSimulator } from '../../../src/crm/sim-server.ts';
import { startZendeskSellSimulator } from '../../../src/crm/zendesk-sell/simulator.ts';
import { ConnectorError } from '../../../src/errors.ts';

let sim: CrmSimulator | undefined;
let pool: Pool | undefined;
afterEach(async () => {
  await pool?.destroy();
  await sim?.close();
  pool = undefined;
  sim = undefined;
});

const self = (timeoutMs: number) => ({
  method: 'GET',
  path: '/v2/users/self',
  headers: { authorization: 'Bearer sim-token', accept: 'application/json' },
  timeoutMs,
  what: 'GET /v2/users/self',
});

describe('send', () => {
  it('bounds the whole call by timeoutMs, not the gap between bytes', async () => {
    sim = await startZendeskSellSimulator({ port: 0, control: true });
    pool = new Pool(sim.url);
    // The real answer (~90 bytes), one byte every 200 ms: each gap is well under the timeout,
    // the whole body takes ~18 s.
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ trickle: { requests: 1, intervalMs: 200 } }) });
    const started = Date.now();
    const err = await send(pool, self(1000)).then(
      () => undefined,
      (e: unknown) => e,
    );
    const elapsed = Date.now() - started;
    expect(err).toBeInstanceOf(ConnectorError);
    expect(err).toMatchObject({ code: 'CRM_TIMEOUT', retriable: true });
    expect((err as Error).message).toContain('GET /v2/users/self');
    expect((err as Error).message).toContain('crm.timeoutMs');
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(1500);

    // The pool stays usable: the next call (no fault left) answers normally.
    const ok = await send(pool, self(1000));
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.text)).toMatchObject({ data: { id: 1 } });
  }, 30_000);

  it('ends a call at once when the caller aborts it (a stop), as retriable, not as a timeout', async () => {
    sim = await startZendeskSellSimulator({ port: 0, control: true });
    pool = new Pool(sim.url);
    await fetch(`${sim.url}/__sim/faults`, { method: 'POST', body: JSON.stringify({ trickle: { requests: 1, intervalMs: 200 } }) });
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 300);
    const started = Date.now();
    const err = await send(pool, { ...self(10_000), signal: stop.signal }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(Date.now() - started).toBeLessThan(1000);
    expect(err).toMatchObject({ code: 'CRM_UNREACHABLE', retriable: true });
    expect((err as Error).message).toContain('stopping');
  });

  it('still answers a call that completes within timeoutMs; its deadline passing later disturbs nothing', async () => {
    sim = await startZendeskSellSimulator({ port: 0, control: true });
    pool = new Pool(sim.url);
    const res = await send(pool, self(200));
    expect(res.status).toBe(200);
    await new Promise((r) => setTimeout(r, 400)); // the first call's deadline has fired by now
    const again = await send(pool, self(200));
    expect(again.status).toBe(200);
    expect(JSON.parse(again.text)).toMatchObject({ data: { id: 1 } });
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-12-01T12:00:00Z');
  it('reads delay-seconds and HTTP-dates, finite and capped', () => {
    expect(parseRetryAfter('120', now)).toBe(120);
    expect(parseRetryAfter(3600, now)).toBe(3600);
    expect(parseRetryAfter('Tue, 01 Dec 2026 12:01:30 GMT', now)).toBe(90);
    expect(parseRetryAfter('Tue, 01 Dec 2026 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('99999999', now)).toBe(RETRY_AFTER_CAP_SECONDS);
  });
  it('ignores what is absent or unreadable', () => {
    for (const v of [undefined, null, '', 'soon', 'NaN', 'Infinity', '-5', '1e9']) expect(parseRetryAfter(v, now)).toBeUndefined();
  });
});

describe('USER_AGENT', () => {
  it('names pg2crm and the version of package.json', async () => {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(USER_AGENT).toBe(`pg2crm/${pkg.version}`);
  });
});
