import { describe, expect, it } from 'vitest';
import { type AccessToken, TokenProvider, withToken } from '../../../src/crm/auth/token-provider.ts';
import { ConnectorError } from '../../../src/errors.ts';

/**
 * The token provider: cached, refreshed ahead of expiry, one refresh in flight per credential,
 * refresh once after a 401, stop (CRM_AUTH naming the credential) only when a fresh token is
 * refused too; a token endpoint that fails transiently is retriable, never fatal.
 */
function fakeFlow(lifetimeSeconds: number, clock: { now: number }) {
  let n = 0;
  const calls: number[] = [];
  const flow = {
    flow: 'client_credentials' as const,
    failNext: [] as ConnectorError[],
    delayMs: 0,
    async fetch(): Promise<AccessToken> {
      calls.push(clock.now);
      if (flow.delayMs) await new Promise((r) => setTimeout(r, flow.delayMs));
      const err = flow.failNext.shift();
      if (err) throw err;
      n++;
      return { value: `tok-${n}`, expiresAt: clock.now + lifetimeSeconds * 1000 };
    },
  };
  return { flow, calls };
}

describe('TokenProvider', () => {
  it('caches the token and refreshes it ahead of expiry (within max(60 s, 10 %) of it, at most a quarter of the lifetime)', async () => {
    const clock = { now: 1_000_000 };
    const { flow, calls } = fakeFlow(3600, clock);
    const p = new TokenProvider('crm.auth', flow, { now: () => clock.now });
    expect((await p.token()).value).toBe('tok-1');
    clock.now += 3600_000 - 361_000; // 6 min 1 s before expiry: still the cached one
    expect((await p.token()).value).toBe('tok-1');
    clock.now += 2000; // 5 min 59 s before expiry: refreshed ahead
    expect((await p.token()).value).toBe('tok-2');
    expect(calls).toHaveLength(2);
    // A short lifetime (a simulator's 8 s) is still used for three quarters of it.
    const short = fakeFlow(8, clock);
    const q = new TokenProvider('crm.auth', short.flow, { now: () => clock.now });
    await q.token();
    clock.now += 5900;
    expect((await q.token()).value).toBe('tok-1');
    clock.now += 200;
    expect((await q.token()).value).toBe('tok-2');
  });

  it('runs one refresh at a time: 20 concurrent callers, one token request', async () => {
    const clock = { now: 0 };
    const { flow, calls } = fakeFlow(3600, clock);
    flow.delayMs = 30;
    const p = new TokenProvider('crm.auth', flow, { now: () => clock.now });
    const got = await Promise.all(Array.from({ length: 20 }, () => p.token()));
    expect(new Set(got.map((t) => t.value))).toEqual(new Set(['tok-1']));
    expect(calls).toHaveLength(1);
  });

  it('after a 401: several callers refused the same token cause one refresh; a token already replaced is not refreshed again', async () => {
    const clock = { now: 0 };
    const { flow, calls } = fakeFlow(3600, clock);
    flow.delayMs = 20;
    const p = new TokenProvider('crm.auth', flow, { now: () => clock.now });
    const first = await p.token();
    const fresh = await Promise.all(Array.from({ length: 5 }, () => p.refreshAfterRejection(first.value)));
    expect(new Set(fresh.map((t) => t.value))).toEqual(new Set(['tok-2']));
    expect(calls).toHaveLength(2);
    expect((await p.refreshAfterRejection('tok-1')).value).toBe('tok-2');
    expect(calls).toHaveLength(2);
  });

  it('withToken: a 401 refreshes once and retries once with the new token', async () => {
    const clock = { now: 0 };
    const { flow, calls } = fakeFlow(3600, clock);
    const p = new TokenProvider('crm.credentials[1]', flow, { now: () => clock.now });
    const accepted = new Set(['tok-2']);
    const used: string[] = [];
    const answer = await withToken(
      p,
      'Dynamics 365',
      async (t) => {
        used.push(t.value);
        return { status: accepted.has(t.value) ? 200 : 401 };
      },
      (a) => a.status === 401,
    );
    expect(answer.status).toBe(200);
    expect(used).toEqual(['tok-1', 'tok-2']);
    expect(calls).toHaveLength(2);
  });

  it('withToken: a freshly issued token refused too stops with CRM_AUTH naming the credential and flow, no secret', async () => {
    const clock = { now: 0 };
    const { flow } = fakeFlow(3600, clock);
    const p = new TokenProvider('crm.credentials[1]', flow, { now: () => clock.now });
    const err = await withToken(
      p,
      'Dynamics 365',
      async () => ({ status: 401 }),
      (a) => a.status === 401,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectorError);
    expect((err as ConnectorError).code).toBe('CRM_AUTH');
    expect((err as ConnectorError).retriable).toBe(false);
    expect((err as Error).message).toMatch(
      /Dynamics 365 refused a token just issued for crm\.credentials\[1\] \(client_credentials, HTTP 401\)/,
    );
    expect((err as Error).message).not.toMatch(/tok-/);
  });

  it('a static token refused stops at once with CRM_AUTH naming the credential (nothing to refresh)', async () => {
    const p = TokenProvider.static('crm.auth', 'plain-secret');
    const err = await withToken(
      p,
      'HubSpot',
      async () => ({ status: 401 }),
      (a) => a.status === 401,
    ).catch((e: unknown) => e);
    expect((err as ConnectorError).code).toBe('CRM_AUTH');
    expect((err as Error).message).toMatch(/^HubSpot rejected the token \(HTTP 401\); check crm\.auth\.token$/);
    expect((err as Error).message).not.toMatch(/plain-secret/);
  });

  it('a token endpoint failing transiently is retriable and the still-valid token keeps being used', async () => {
    const clock = { now: 0 };
    const { flow } = fakeFlow(100, clock);
    const p = new TokenProvider('crm.auth', flow, { now: () => clock.now });
    await p.token();
    clock.now += 80_000; // inside the refresh margin, 20 s before expiry
    flow.failNext.push(new ConnectorError('CRM_TOKEN_UNAVAILABLE', 'token endpoint answered 503', { retriable: true }));
    expect((await p.token()).value).toBe('tok-1');
    clock.now += 21_000; // expired now: the failure surfaces, retriable
    flow.failNext.push(new ConnectorError('CRM_TOKEN_UNAVAILABLE', 'token endpoint answered 503', { retriable: true }));
    const err = await p.token().catch((e: unknown) => e);
    expect((err as ConnectorError).retriable).toBe(true);
    expect((await p.token()).value).toBe('tok-2');
  });

  it('describe() names the flow and the expiry', async () => {
    const clock = { now: 0 };
    const { flow } = fakeFlow(7140, clock);
    const p = new TokenProvider('crm.auth', flow, { now: () => clock.now });
    await p.token();
    expect(p.describe()).toBe('client_credentials token, expires in 1h59m');
    expect(TokenProvider.static('crm.auth', 'x').describe()).toBe('static token');
  });
});

describe('token requests', () => {
  it('an error page echoing the request never carries the secret into the error', async () => {
    const { createServer } = await import('node:http');
    const { requestToken } = await import('../../../src/crm/auth/oauth-flows.ts');
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`bad request: ${decodeURIComponent(body)}`);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const err = await requestToken({
      vendor: 'Test',
      credential: 'crm.auth',
      flow: 'refresh_token',
      tokenUrl: `http://127.0.0.1:${port}/token`,
      params: () => ({
        grant_type: 'refresh_token',
        client_id: 'cid',
        client_secret: 'top-secret-value',
        refresh_token: 'refresh-secret-value',
      }),
      timeoutMs: 5000,
      fix: 'check crm.auth',
    }).catch((e: unknown) => e);
    server.close();
    expect(err).toMatchObject({ code: 'CRM_AUTH', retriable: false });
    expect((err as Error).message).toMatch(/HTTP 400/);
    expect((err as Error).message).not.toMatch(/top-secret-value|refresh-secret-value/);
  });
});
