import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config.ts';
import { OpsServer } from '../../../src/ops/ops-server.ts';
import { statusPageHtml } from '../../../src/ops/status-page.ts';
import { TimeseriesSampler } from '../../../src/ops/timeseries.ts';
import { registry } from '../../../src/metrics.ts';

/** The ops port's safe defaults: loopback unless opened, and a bearer token for the data it serves. */
const TOKEN = 'ops-token-0123456789abcdef';

let server: OpsServer | undefined;
afterEach(async () => {
  await server?.stop();
  server = undefined;
});

async function start(options: ConstructorParameters<typeof OpsServer>[3] = {}): Promise<string> {
  const sampler = new TimeseriesSampler({ name: 'unit', registry, details: () => ({}) });
  server = new OpsServer(0, () => true, sampler, options);
  await server.start();
  return `http://127.0.0.1:${server.address()!.port}`;
}

const minimal = {
  name: 'c',
  postgres: { url: 'postgresql://u:p@127.0.0.1:5432/db', tables: ['t'] },
  kafka: { brokers: '127.0.0.1:9092', topicPrefix: 'x', schemaRegistry: { url: 'http://127.0.0.1:8081' } },
  crm: { kind: 'zendesk-sell', baseUrl: 'http://127.0.0.1:8089', auth: { token: 't' }, limits: { requests: 1, windowSeconds: 1 } },
  mappings: [{ table: 't', object: 'contacts', externalId: { column: 'id', field: 'e' }, fields: { a: 'a' } }],
};

describe('ops server', () => {
  it('listens on loopback by default (config default and server default)', async () => {
    expect(parseConfig(minimal, {}).ops.host).toBe('127.0.0.1');
    expect(parseConfig({ ...minimal, ops: { port: 9464 } }, {}).ops.host).toBe('127.0.0.1');
    await start();
    expect(server!.address()!.address).toBe('127.0.0.1');
  });

  it('listens where ops.host says', async () => {
    await start({ host: '0.0.0.0' });
    expect(server!.address()!.address).toBe('0.0.0.0');
  });

  it('an address that is not this machine, or a port in use, is an error naming ops.host and ops.port', async () => {
    const first = new OpsServer(0, () => true, new TimeseriesSampler({ name: 'unit', registry, details: () => ({}) }), {});
    await first.start();
    try {
      const taken = new OpsServer(
        first.address()!.port,
        () => true,
        new TimeseriesSampler({ name: 'unit', registry, details: () => ({}) }),
        {},
      );
      await expect(taken.start()).rejects.toMatchObject({
        code: 'OPS_LISTEN',
        message: expect.stringMatching(/cannot listen on 127\.0\.0\.1:\d+ .*EADDRINUSE.*set ops\.host .*ops\.port/),
      });
      const elsewhere = new OpsServer(0, () => true, new TimeseriesSampler({ name: 'unit', registry, details: () => ({}) }), {
        host: '192.0.2.1',
      });
      await expect(elsewhere.start()).rejects.toMatchObject({ code: 'OPS_LISTEN', message: expect.stringMatching(/EADDRNOTAVAIL/) });
    } finally {
      await first.stop();
    }
  });

  it('with a token: /metrics and /api/* answer 401 without it and 200 with it; probes and the page shell stay open', async () => {
    const base = await start({ token: TOKEN });
    for (const path of ['/metrics', '/api/timeseries', '/api/anything']) {
      const res = await fetch(`${base}${path}`);
      expect(res.status, path).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect((await fetch(`${base}${path}`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, path).toBe(401);
      expect((await fetch(`${base}${path}`, { headers: { authorization: TOKEN } })).status, path).toBe(401);
    }
    const metrics = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('pg2crm_');
    const api = await fetch(`${base}/api/timeseries`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(api.status).toBe(200);
    expect(((await api.json()) as { name: string }).name).toBe('unit');
    expect((await fetch(`${base}/api/nope`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(404);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    // The page is a static shell (no data); its script sends the token it reads from #token=.
    const page = await fetch(`${base}/status`);
    expect(page.status).toBe(200);
    expect(await page.text()).not.toContain(TOKEN);
  });

  it('without a token everything is served as before', async () => {
    const base = await start();
    expect((await fetch(`${base}/metrics`)).status).toBe(200);
    expect((await fetch(`${base}/api/timeseries`)).status).toBe(200);
  });

  it("the status page's script sends the fragment's token with its fetches", () => {
    const html = statusPageHtml();
    expect(html).toContain("authorization: 'Bearer ' + opsToken");
    expect(html).toMatch(/location\.hash/);
  });

  it('ops.token: empty means none, short is refused, token_FILE and ${VAR} with VAR_FILE are read', async () => {
    expect(parseConfig({ ...minimal, ops: { token: '' } }, {}).ops.token).toBeUndefined();
    expect(() => parseConfig({ ...minimal, ops: { token: 'short' } }, {})).toThrow(
      /ops\.token: use an ops token of at least 16 characters/,
    );
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const file = join(mkdtempSync(join(tmpdir(), 'ops-token-')), 'token');
    writeFileSync(file, `${TOKEN}\n`);
    expect(parseConfig({ ...minimal, ops: { token_FILE: file } }, {}).ops.token).toBe(TOKEN);
    expect(parseConfig({ ...minimal, ops: { token: '${PG2CRM_OPS_TOKEN:-}' } }, { PG2CRM_OPS_TOKEN_FILE: file }).ops.token).toBe(TOKEN);
    expect(parseConfig({ ...minimal, ops: { token: '${PG2CRM_OPS_TOKEN:-}' } }, {}).ops.token).toBeUndefined();
    expect(() => parseConfig({ ...minimal, ops: { token: '${PG2CRM_OPS_TOKEN}' } }, { PG2CRM_OPS_TOKEN_FILE: '/nonexistent/t' })).toThrow(
      /cannot read PG2CRM_OPS_TOKEN_FILE \/nonexistent\/t/,
    );
  });
});
