import { Pool } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import type { RateSignal } from '../../../src/crm/crm-adapter.ts';
import { retryOutcomeOf } from '../../../src/crm/crm-adapter.ts';
import {
  parseRetryAfter,
  RETRY_AFTER_CAP_SECONDS,
  send,
  ThrottledCall,
  throttled,
  untrustedCertificate,
  USER_AGENT,
} from '../../../src/crm/http.ts';
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

describe('throttled: one wait for the budget and the records', () => {
  const now = Date.UTC(2026, 0, 1, 12, 0, 0);
  it.each([
    ['Retry-After seconds, over the vendor default', { 'retry-after': '7' }, 300, 7],
    ['Retry-After HTTP-date', { 'retry-after': 'Thu, 01 Jan 2026 12:02:00 GMT' }, 300, 120],
    ['no header: the vendor default', {}, 300, 300],
    ['an unreadable header: the vendor default', { 'retry-after': 'soon' }, 5, 5],
    ['neither: no wait at all', {}, undefined, undefined],
  ] as const)('%s', (_name, headers, defaultSeconds, wait) => {
    const signals: RateSignal[] = [];
    const out = throttled(headers, { message: 'm', defaultSeconds, signal: { remaining: 0 }, onSignal: (s) => signals.push(s), now });
    expect(out).toEqual({
      status: 'retry',
      code: 'RATE_LIMITED',
      kind: 'throttle',
      message: 'm',
      ...(wait !== undefined ? { retryAfterSeconds: wait } : {}),
    });
    expect(signals).toEqual([{ remaining: 0, throttled: true, ...(wait !== undefined ? { retryAfterSeconds: wait } : {}) }]);
  });

  it('a ThrottledCall carries that outcome, and its error says the same wait', () => {
    const outcome = throttled({}, { message: 'HubSpot rate limit reached (DAILY)', defaultSeconds: 60, onSignal: () => undefined });
    const err = new ThrottledCall(outcome);
    expect(err).toMatchObject({ code: 'RATE_LIMITED', kind: 'throttle', retriable: true, retryAfterSeconds: 60 });
    expect(retryOutcomeOf(err)).toEqual(outcome);
  });
});

describe('retryOutcomeOf: a whole-call failure as a record outcome, its kind from the error kind', () => {
  it.each([
    [new ConnectorError('CRM_UNREACHABLE', 'x', { retriable: true }), 'unreachable'],
    [new ConnectorError('CRM_TIMEOUT', 'x', { retriable: true }), 'timeout'],
    [new ConnectorError('CRM_BULK_TIMEOUT', 'x', { retriable: true }), 'timeout'],
    [new ConnectorError('CRM_BAD_RESPONSE', 'x', { retriable: true }), 'bad-response'],
    [new ConnectorError('CRM_HTTP_503', 'x', { retriable: true, status: 503 }), 'server'],
    [new ConnectorError('HTTP_500', 'x', { retriable: true, status: 500 }), 'server'],
    [new ConnectorError('CRM_UNAVAILABLE', 'x', { retriable: true }), 'server'],
    [new ConnectorError('CRM_TLS', 'x', { retriable: true }), undefined],
  ] as const)('%s -> %s', (err, kind) => {
    expect(retryOutcomeOf(err)).toEqual({ status: 'retry', code: err.code, message: 'x', ...(kind ? { kind } : {}) });
  });

  it('is undefined for what fails the call: a permanent error, or not a ConnectorError', () => {
    expect(retryOutcomeOf(new ConnectorError('CRM_AUTH', 'x'))).toBeUndefined();
    expect(retryOutcomeOf(new Error('x'))).toBeUndefined();
  });
});

describe('untrustedCertificate', () => {
  it('names the code of a certificate Node did not trust, in the error or its cause; other failures are not TLS trust', () => {
    expect(untrustedCertificate(Object.assign(new Error('x'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }))).toBe('SELF_SIGNED_CERT_IN_CHAIN');
    expect(
      untrustedCertificate(new Error('fetch failed', { cause: Object.assign(new Error('y'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }) })),
    ).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(untrustedCertificate(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBeUndefined();
    expect(untrustedCertificate(Object.assign(new Error('x'), { code: 'OUT_OF_MEM' }))).toBeUndefined();
  });
});

describe('USER_AGENT', () => {
  it('names pg2crm and the version of package.json', async () => {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(USER_AGENT).toBe(`pg2crm/${pkg.version}`);
  });
});
