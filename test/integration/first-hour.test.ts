import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { logLevel, Partitioners } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startHubSpotSimulator } from '../../src/crm/hubspot/simulator.ts';
import { startZendeskSellSimulator } from '../../src/crm/zendesk-sell/simulator.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { useHarness } from '../helpers/connector-harness.ts';
import { uniqueName, withPg } from '../helpers/fixtures.ts';

/**
 * An operator's first hour (issue 12, section 3): `pg2crm check` names what would break the
 * connector later (columns, publication rights, CRM id fields), and a fatal error of any command
 * is one `pg2crm: <what>; <fix>` line on stderr, quickly.
 */
const env = inject('stack');
const repoRoot = new URL('../../', import.meta.url).pathname;

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The CLI as operators run it, stdout and stderr apart, with its wall time. */
function cli(args: string[], timeoutMs = 90_000): Promise<CliRun> {
  const started = Date.now();
  const child = spawn(process.execPath, [join(repoRoot, 'bin/pg2crm.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    }),
  );
}

const lines = (text: string): string[] => text.split('\n').filter((l) => l.length > 0);

describe('pg2crm check: what would fail later', () => {
  const h = useHarness();
  let good: Record<string, unknown>;
  const schema = uniqueName('fh');
  const role = uniqueName('fh_role');
  const configFile = (config: unknown): string => h.configFile(config);

  beforeAll(async () => {
    good = await h.validConfig(schema);
    // A role that may log in, replicate and read the tables, but owns none of them (the stack's
    // PostgreSQL trusts local connections, so it needs no password).
    await withPg(env.PG_URL, async (c) => {
      await c.query(`CREATE ROLE ${role} LOGIN REPLICATION`);
      await c.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await c.query(`GRANT SELECT ON ALL TABLES IN SCHEMA ${schema} TO ${role}`);
    });
  });
  afterAll(async () => {
    await withPg(env.PG_URL, async (c) => {
      await c.query(`REVOKE CREATE ON DATABASE ${new URL(env.PG_URL).pathname.slice(1)} FROM ${role}`);
      await c.query(`DROP OWNED BY ${role}`);
      await c.query(`DROP ROLE IF EXISTS ${role}`);
    });
  });

  it('names a mapped column, an external-id column and a lookup column the table lacks', async () => {
    const [customers, orders] = good.mappings as Record<string, unknown>[];
    const broken = {
      ...good,
      mappings: [
        { ...customers, fields: { ...(customers!.fields as object), email: 'e_mail' } },
        {
          ...orders,
          externalId: { column: 'order_no', field: 'custom_fields.erp_order_id' },
          lookups: { contact_id: { object: 'contacts', column: 'client_id' } },
        },
      ],
    };
    const r = await cli(['check', '--config', configFile(broken)]);
    expect(r.stdout).toMatch(
      /FAIL {2}mapped columns: mappings\[0\]\.fields\.email: column e_mail does not exist in fh_\w+\.customers .*correct the column name/,
    );
    expect(r.stdout).toMatch(/mappings\[1\]\.externalId\.column: column order_no does not exist in fh_\w+\.orders/);
    expect(r.stdout).toMatch(/mappings\[1\]\.lookups\.contact_id\.column: column client_id does not exist/);
    expect(r.code).toBe(1);
  });

  it('names a role that cannot create the publication (owns no table, not superuser)', async () => {
    const url = env.PG_URL.replace(/\/\/[^@]*@/, `//${role}@`);
    const r = await cli(['check', '--config', configFile({ ...good, postgres: { ...(good.postgres as object), url } })]);
    expect(r.stdout).toMatch(/PASS {2}PostgreSQL ready for logical replication/);
    expect(r.stdout).toMatch(
      new RegExp(
        `FAIL {2}role may create and keep the publication: .*role ${role} does not own fh_\\w+\\.customers \\(owner pg2crm\\).*only a table's owner may add it to a publication; run ALTER TABLE`,
      ),
    );
    expect(r.stdout).toMatch(/lacks CREATE on the database.*GRANT CREATE ON DATABASE/);
    expect(r.code).toBe(1);
    // `run` as that role stops with one line that says the same, not PostgreSQL's bare "permission denied".
    const run = await cli(['run', '--config', configFile({ ...good, postgres: { ...(good.postgres as object), url } })]);
    expect(run.code).toBe(1);
    expect(lines(run.stderr)).toEqual([
      expect.stringMatching(
        /^pg2crm: postgres: the role of postgres\.url may not create or alter publication \w+ .*must own the tables .*run pg2crm check/,
      ),
    ]);
    // A superuser passes; so does the tables' owner with CREATE on the database.
    const ok = await cli(['check', '--config', configFile(good)]);
    expect(ok.stdout).toMatch(/PASS {2}role may create and keep the publication: pg2crm is a superuser/);
    expect(ok.stdout).toMatch(/PASS {2}mapped columns: all 10 mapped columns exist/);
    expect(ok.code).toBe(0);
    await withPg(env.PG_URL, async (c) => {
      await c.query(`ALTER TABLE ${schema}.customers OWNER TO ${role}`);
      await c.query(`ALTER TABLE ${schema}.orders OWNER TO ${role}`);
      await c.query(`GRANT CREATE ON DATABASE ${new URL(env.PG_URL).pathname.slice(1)} TO ${role}`);
    });
    const owner = await cli(['check', '--config', configFile({ ...good, postgres: { ...(good.postgres as object), url } })]);
    expect(owner.stdout).toMatch(new RegExp(`PASS {2}role may create and keep the publication: ${role} may create the publication`));
  });

  it('names a HubSpot idProperty without unique values', async () => {
    const hubspot = await startHubSpotSimulator({
      port: 0,
      tokens: ['sim-token'],
      properties: { deals: { erp_ref: { hasUniqueValue: false } } },
    });
    try {
      const [customers, orders] = good.mappings as Record<string, unknown>[];
      const config = {
        ...good,
        crm: { kind: 'hubspot', baseUrl: hubspot.url, auth: { token: 'sim-token' }, limits: { requests: 100, windowSeconds: 10 } },
        mappings: [
          { ...customers, externalId: { column: 'id', field: 'erp_id' }, fields: { firstname: 'first_name' } },
          {
            ...orders,
            externalId: { column: 'id', field: 'erp_ref' },
            fields: { dealname: 'title' },
            lookups: { contact: { object: 'contacts', column: 'customer_id' } },
          },
        ],
      };
      const r = await cli(['check', '--config', configFile(config)]);
      expect(r.stdout).toMatch(/PASS {2}HubSpot idProperty contacts\.erp_id/);
      expect(r.stdout).toMatch(/FAIL {2}HubSpot idProperty deals\.erp_ref: erp_ref has hasUniqueValue false.*Require unique values/);
      expect(r.code).toBe(1);
    } finally {
      await hubspot.close();
    }
  });

  it('names a Zendesk Sell external-id field whose filter Sell ignores (not Filterable)', async () => {
    const unfilterable = await startZendeskSellSimulator({ port: 0, tokens: ['sim-token'], unfilterable: { contacts: ['erp_id'] } });
    try {
      // One contact, so an ignored filter shows (a probe answering a record that does not hold the value).
      const res = await fetch(`${unfilterable.url}/v2/contacts/upsert?${encodeURIComponent('custom_fields[erp_id]')}=42`, {
        method: 'POST',
        headers: { authorization: 'Bearer sim-token', 'content-type': 'application/json', 'user-agent': 'pg2crm-test' },
        body: JSON.stringify({ data: { last_name: 'Lovelace', custom_fields: { erp_id: '42' } } }),
      });
      expect(res.status).toBeLessThan(300);
      const r = await cli(['check', '--config', configFile({ ...good, crm: { ...(good.crm as object), baseUrl: unfilterable.url } })]);
      expect(r.stdout).toMatch(/FAIL {2}Zendesk Sell contacts searchable by custom_fields\.erp_id: .*Sell ignored the filter.*Filterable/);
      expect(r.stdout).toMatch(/PASS {2}Zendesk Sell deals searchable by custom_fields\.erp_order_id/);
      expect(r.code).toBe(1);
    } finally {
      await unfilterable.close();
    }
  });

  it('check with Kafka unreachable: only PASS/FAIL lines, the Kafka check within its 10 s', async () => {
    const r = await cli(['check', '--config', configFile({ ...good, kafka: { ...(good.kafka as object), brokers: '127.0.0.1:1' } })]);
    expect(r.stdout).toMatch(/FAIL {2}Kafka reachable: .*check kafka\.brokers/);
    // Nothing but the checklist: no kafkajs log lines (JSON) on either stream.
    for (const l of lines(r.stdout)) expect(l).toMatch(/^(PASS|FAIL) {2}|^\d+ check\(s\) failed$|^all checks passed$/);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    // PostgreSQL, registry and CRM answer at once here: the whole run is the Kafka check's 10 s and start-up.
    expect(r.ms).toBeLessThan(16_000);
  });
});

/** A TCP server that accepts connections and never answers: a broker that hangs. */
async function silentServer(): Promise<{ address: string; close(): void }> {
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('fatal errors: one stderr line, quickly', () => {
  const h = useHarness();
  let good: Record<string, unknown>;
  const schema = uniqueName('fatal');
  const configFile = (config: unknown): string => h.configFile(config);

  beforeAll(async () => {
    good = await h.validConfig(schema);
  });

  it('run with Kafka unreachable exits 1 within ~10 s with one stderr line naming kafka.brokers', async () => {
    const r = await cli(['run', '--config', configFile({ ...good, kafka: { ...(good.kafka as object), brokers: '127.0.0.1:1' } })]);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([expect.stringMatching(/^pg2crm: Kafka at 127\.0\.0\.1:1 .*; check kafka\.brokers/)]);
    expect(r.ms).toBeLessThan(15_000);
    // No kafkajs retry noise or stack traces in the log.
    expect(r.stdout).not.toContain('"stack"');
    expect(lines(r.stdout).filter((l) => l.includes('"component":"kafka.client"'))).toEqual([]);
  });

  it('a broker that accepts and never answers: run and check each give up after their 10 s', async () => {
    const hung = await silentServer();
    try {
      const file = configFile({ ...good, kafka: { ...(good.kafka as object), brokers: hung.address } });
      const run = await cli(['run', '--config', file]);
      expect(run.code).toBe(1);
      expect(lines(run.stderr)).toEqual([
        expect.stringMatching(new RegExp(`^pg2crm: Kafka at ${hung.address} did not answer within 10 s; check kafka\\.brokers`)),
      ]);
      expect(run.ms).toBeLessThan(15_000);
      const check = await cli(['check', '--config', file]);
      expect(check.stdout).toMatch(/FAIL {2}Kafka reachable: .*within 10 s; check kafka\.brokers/);
      expect(check.stderr).toBe('');
      expect(check.ms).toBeLessThan(16_000);
    } finally {
      hung.close();
    }
  });

  it('dlq replay and status with Kafka unreachable: one stderr line within ~10 s', async () => {
    const file = configFile({ ...good, kafka: { ...(good.kafka as object), brokers: '127.0.0.1:1' } });
    for (const args of [['dlq', 'replay'], ['status']]) {
      const r = await cli([...args, '--config', file]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(lines(r.stderr), args.join(' ')).toEqual([
        expect.stringMatching(/^pg2crm: .*ECONNREFUSED 127\.0\.0\.1:1.*; check kafka\.brokers/),
      ]);
      expect(r.ms, args.join(' ')).toBeLessThan(15_000);
    }
  });

  it('run with PostgreSQL unreachable: one stderr line naming postgres.url', async () => {
    const r = await cli([
      'run',
      '--config',
      configFile({ ...good, postgres: { ...(good.postgres as object), url: 'postgresql://pg2crm@127.0.0.1:1/pg2crm' } }),
    ]);
    expect(r.code).toBe(1);
    expect(lines(r.stderr)).toEqual([expect.stringMatching(/^pg2crm: .*; .*postgres\.url/)]);
  });

  it('status and check with a bad config: one stderr line, exit 2', async () => {
    for (const cmd of ['status', 'check', 'run']) {
      const r = await cli([cmd, '--config', h.tempPath('nope.yaml')]);
      expect(r.code).toBe(2);
      expect(lines(r.stderr)).toEqual([expect.stringMatching(/^pg2crm: cannot read config file .*nope\.yaml/)]);
    }
  });
});

describe('kafka clients made by createKafka', () => {
  it('producers that name no partitioner still partition keys as kafkajs 2 did (DefaultPartitioner, murmur2)', async () => {
    const kafka = createKafka({ brokers: env.KAFKA_BROKERS.split(','), clientId: 'pg2crm' }, 'partitioner-test');
    kafka.logger().setLogLevel(logLevel.NOTHING);
    const topic = uniqueName('t.partitioner');
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    try {
      await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: 3, replicationFactor: 1 }] });
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
      const partitionMetadata = topics[0]!.partitions;
      const expected = Partitioners.DefaultPartitioner();
      for (let i = 0; i < 30; i++) {
        const message = { key: `customer-${i}`, value: 'x' };
        const [meta] = await producer.send({ topic, messages: [message] });
        expect(meta!.partition, message.key).toBe(expected({ topic, partitionMetadata, message }));
      }
    } finally {
      await producer.disconnect();
      await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
      await admin.disconnect();
    }
  });
});
