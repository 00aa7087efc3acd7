import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFailed } from 'vitest';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { secretsOf } from '../../src/secrets.ts';
import {
  CliProcess,
  createErpSchema,
  dropCapture,
  freePort,
  readDeadLetters,
  runCli,
  simRecords,
  uniqueName,
  waitFor,
  withPg,
} from '../helpers/fixtures.ts';
import { type RegistryAuthProxy, startRegistryAuthProxy } from '../helpers/registry-auth-proxy.ts';

/**
 * Secrets never leave the process. One run of the connector with known secret values (the CRM
 * token, a PostgreSQL password, the ops token, the Kafka SASL password of the stack's SASL_SSL
 * listener, a schema-registry password behind basic auth) against a CRM that echoes the request it
 * refuses, Authorization header included, into its error answer (as some CRMs and proxies do).
 * Then every place pg2crm writes to is grepped for every secret: its log (pino, stdout/stderr),
 * /metrics and /api/*, `pg2crm status --json`, `pg2crm check` and the dead-letter topic.
 */
const env = inject('stack');

const secret = (what: string) => `${what}-${randomBytes(12).toString('hex')}`;

/**
 * A Zendesk Sell in front of the simulator that answers 422 to an upsert whose email contains
 * `@echo.`, quoting the whole request (headers and body) in the error message.
 */
async function startEchoingCrm(target: string): Promise<{ url: string; echoed: () => number; close: () => Promise<void> }> {
  let echoed = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks);
        if (req.method === 'POST' && body.toString().includes('@echo.')) {
          echoed++;
          const request = `${req.method} ${req.url} HTTP/1.1\n${Object.entries(req.headers)
            .map(([k, v]) => `${k}: ${String(v)}`)
            .join('\n')}\n\n${body.toString()}`;
          res.writeHead(422, { 'content-type': 'application/json' });
          res.end(
            JSON.stringify({
              errors: [{ error: { code: 'invalid', field: 'email', message: `email is invalid in request: ${request}` } }],
            }),
          );
          return;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers))
          if (typeof v === 'string' && !['host', 'content-length', 'connection'].includes(k)) headers[k] = v;
        const r = await fetch(`${target}${req.url}`, { method: req.method!, headers, ...(body.length ? { body } : {}) });
        const out: Record<string, string> = {};
        r.headers.forEach((v, k) => {
          if (!['content-length', 'transfer-encoding', 'connection', 'keep-alive'].includes(k)) out[k] = v;
        });
        res.writeHead(r.status, out);
        res.end(Buffer.from(await r.arrayBuffer()));
      })().catch((err: unknown) => {
        res.writeHead(599);
        res.end(String(err));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    echoed: () => echoed,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('secrets never leave the process', () => {
  const schema = uniqueName('sgrep');
  const role = schema;
  const secrets = {
    crmToken: secret('crm-token'),
    pgPassword: secret('pg-pass'),
    opsToken: secret('ops-token'),
    kafkaPassword: env.KAFKA_SASL_PASSWORD ?? '',
    registryPassword: secret('registry-pass'),
  };
  const topicPrefix = `t.${schema}`;
  let sim: CrmSimulator;
  let crm: Awaited<ReturnType<typeof startEchoingCrm>>;
  let configFile: string;
  let opsPort: number;
  let proc: CliProcess | undefined;
  let registry: RegistryAuthProxy;

  beforeAll(async () => {
    if (!env.KAFKA_SASL_SSL_BROKERS || !env.STACK_CA_FILE || !env.KAFKA_SASL_USERNAME || !env.KAFKA_SASL_PASSWORD) {
      throw new Error("this test needs the stack's SASL_SSL listener and CA: run `npm run stack -- up` once to bring the stack up to date");
    }
    const certDir = dirname(env.STACK_CA_FILE);
    registry = await startRegistryAuthProxy(env.SCHEMA_REGISTRY_URL, {
      cert: readFileSync(join(certDir, 'server.pem'), 'utf8'),
      key: readFileSync(join(certDir, 'server.key'), 'utf8'),
      username: 'registry-user',
      password: secrets.registryPassword,
    });
    sim = await startZendeskSellSimulator({ port: 0, tokens: [secrets.crmToken], control: true });
    crm = await startEchoingCrm(sim.url);
    await createErpSchema(env.PG_URL, schema);
    // A role of the test's own, so that its password is a value no other text contains.
    await withPg(env.PG_URL, (c) => c.query(`CREATE ROLE ${role} LOGIN SUPERUSER PASSWORD '${secrets.pgPassword}'`));
    const pgUrl = new URL(env.PG_URL);
    pgUrl.username = role;
    pgUrl.password = secrets.pgPassword;
    opsPort = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'pg2crm-sgrep-'));
    configFile = join(dir, 'connector.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        name: schema,
        postgres: { url: pgUrl.toString(), tables: [`${schema}.customers`, `${schema}.orders`], heartbeatSeconds: 2 },
        kafka: {
          brokers: env.KAFKA_SASL_SSL_BROKERS,
          ssl: { ca_FILE: env.STACK_CA_FILE },
          sasl: { mechanism: 'scram-sha-512', username: env.KAFKA_SASL_USERNAME, password: secrets.kafkaPassword },
          topicPrefix,
          partitions: 1,
          schemaRegistry: { url: registry.url, username: 'registry-user', password: secrets.registryPassword, ca_FILE: env.STACK_CA_FILE },
        },
        crm: {
          kind: 'zendesk-sell',
          baseUrl: crm.url,
          auth: { token: secrets.crmToken },
          limits: { requests: 100_000, windowSeconds: 60 },
        },
        mappings: [
          {
            table: `${schema}.customers`,
            object: 'contacts',
            externalId: { column: 'id', field: 'custom_fields.erp_id' },
            fields: { first_name: 'first_name', last_name: 'last_name', email: 'email' },
          },
        ],
        sink: { lingerMs: 50, maxAttempts: 3 },
        ops: { port: opsPort, token: secrets.opsToken, logLevel: 'debug', lagIntervalSeconds: 1 },
      }),
    );
  });

  afterAll(async () => {
    await proc?.stop();
    await crm?.close();
    await sim?.close();
    await registry?.close();
    await dropCapture(env.PG_URL, `pg2crm_${schema}`, `pg2crm_${schema}`).catch(() => undefined);
    await withPg(env.PG_URL, (c) => c.query(`DROP ROLE IF EXISTS ${role}`)).catch(() => undefined);
  });

  it('are in no log line, ops answer, status, check output or dead letter of a run', async () => {
    const found: Record<string, string> = {};
    proc = new CliProcess(['run', '--config', configFile]);
    onTestFailed(() => console.log(`connector output (tail):\n${proc?.output.slice(-4000)}`));
    const base = `http://127.0.0.1:${opsPort}`;
    const auth = { authorization: `Bearer ${secrets.opsToken}` };
    await waitFor('connector ready', async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200, 90_000);

    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) VALUES ('Ada', 'Lovelace', 'ada@example.com'), ('Eve', 'Echo', 'eve@echo.example.com'), ('Bob', 'Byte', 'bob@example.com')`,
      ),
    );
    await waitFor('2 contacts in the CRM', async () => (await simRecords(sim.url, 'contacts')).length === 2, 60_000);
    const letters = await waitFor(
      'the echoed record dead-lettered',
      async () => {
        const l = await readDeadLetters(env.KAFKA_BROKERS, `${topicPrefix}.dlq`);
        return l.length >= 1 ? l : undefined;
      },
      60_000,
    );
    expect(crm.echoed()).toBeGreaterThanOrEqual(1);
    found.dlq = JSON.stringify(letters);
    // The letter still says what was wrong and quotes the request: only the secrets are gone.
    expect(letters[0]!.error.message).toMatch(/email is invalid in request: POST \/v2\/contacts\/upsert/);
    expect(letters[0]!.error.message).toContain('eve@echo.example.com');
    expect(letters[0]!.error.message).toContain('authorization: Bearer ***');

    // The ops port: the token is needed, and what it opens holds no secret.
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/api/timeseries`)).status).toBe(401);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const metrics = await fetch(`${base}/metrics`, { headers: auth });
    expect(metrics.status).toBe(200);
    found.metrics = await metrics.text();
    expect(found.metrics).toContain('pg2crm_dead_lettered_total');
    await waitFor('status history', async () => {
      const api = (await (await fetch(`${base}/api/timeseries`, { headers: auth })).json()) as { points: unknown[] };
      return api.points.length > 0;
    });
    found.api = await (await fetch(`${base}/api/timeseries`, { headers: auth })).text();
    found.page = await (await fetch(`${base}/status`)).text();
    expect(found.api).toContain(schema);

    const status = await runCli(['status', '--json', '--config', configFile]);
    found.status = status.output;
    expect(status.output).toContain(`${topicPrefix}.dlq`);
    const check = await runCli(['check', '--config', configFile], 120_000);
    found.check = check.output;
    expect(check.output).toMatch(/PASS {2}CRM credentials/);

    await proc.stop();
    found.log = proc.output;
    expect(found.log).toContain('connector running');
    expect(found.log).toContain('records dead-lettered');

    // No secret anywhere; every leak is listed with where it is and what surrounds it.
    // Every credential the config holds is one of the values grepped for.
    const held = secretsOf(JSON.parse(readFileSync(configFile, 'utf8')));
    expect(held.length).toBeGreaterThanOrEqual(5);
    expect(held.filter((v) => !Object.values(secrets).includes(v))).toEqual([]);
    const leaks: string[] = [];
    for (const [where, text] of Object.entries(found)) {
      expect(text.length, `${where} is not empty`).toBeGreaterThan(0);
      for (const [name, value] of Object.entries(secrets)) {
        const at = text.indexOf(value);
        if (at >= 0) leaks.push(`${name} in ${where}: …${text.slice(Math.max(0, at - 100), at + value.length + 20)}…`);
      }
    }
    expect(leaks).toEqual([]);
  });
});
