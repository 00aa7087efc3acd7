import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { postgresUrl, startPostgres, stopPostgres } from '../../scripts/stack/postgres.ts';
import { useHarness } from '../helpers/connector-harness.ts';
import { createErpSchema, runCli, uniqueName } from '../helpers/fixtures.ts';

/** Bad input exits non-zero with a message naming the problem; a good setup passes `check`. */
describe('pg2crm CLI', () => {
  const h = useHarness();
  let good: Record<string, unknown>;
  const schema = uniqueName('cli');
  const configFile = (config: unknown): string => h.configFile(config);

  beforeAll(async () => {
    good = await h.validConfig(schema);
  });

  it('check passes on a good setup', async () => {
    const { code, output } = await runCli(['check', '--config', configFile(good)]);
    expect(output).toContain('all checks passed');
    expect(output).toMatch(/PASS {2}replication slot pg2crm_cli_\w+: will be created \(\d+ of 50 slots free\)/);
    expect(output).toMatch(/PASS {2}publication pg2crm_cli_\w+: will be created for /);
    expect(output).toMatch(/PASS {2}Kafka topics: .* will be created with 3 partitions/);
    expect(code).toBe(0);
  });

  it('a missing config file exits 2 and names the file', async () => {
    const { code, output } = await runCli(['run', '--config', h.tempPath('nope.yaml')]);
    expect(code).toBe(2);
    expect(output).toMatch(/cannot read config file .*nope\.yaml/);
  });

  it('a missing key, a wrong type and an unknown CRM kind are each named', async () => {
    const { crm, ...noCrm } = good as { crm: Record<string, unknown> };
    const bad = { ...noCrm, kafka: { ...(good.kafka as object), partitions: 'three' }, crm: undefined };
    let r = await runCli(['run', '--config', configFile(bad)]);
    expect(r.code).toBe(2);
    expect(r.output).toMatch(/crm: missing required key/);
    expect(r.output).toMatch(/kafka\.partitions: .*number/);
    r = await runCli(['run', '--config', configFile({ ...good, crm: { ...crm, kind: 'sugarcrm' } })]);
    expect(r.code).toBe(2);
    expect(r.output).toMatch(/crm\.kind: unknown CRM kind; supported: zendesk-sell/);
  });

  it('an unreachable broker, a missing table and a bad token fail check with the fix', async () => {
    const broken = {
      ...good,
      postgres: { ...(good.postgres as object), tables: [`${schema}.customers`, `${schema}.orders`, `${schema}.missing`] },
      kafka: { ...(good.kafka as object), brokers: '127.0.0.1:1' },
      crm: { ...(good.crm as object), auth: { token: 'wrong-token' } },
    };
    const { code, output } = await runCli(['check', '--config', configFile(broken)], 120_000);
    expect(code).toBe(1);
    expect(output).toMatch(/FAIL {2}Kafka reachable: .*check kafka\.brokers/);
    expect(output).toMatch(/FAIL {2}captured tables: table .*missing does not exist; create it or remove it from postgres\.tables/);
    expect(output).toMatch(/FAIL {2}CRM credentials \(zendesk-sell\): .*check crm\.auth\.token/);
    expect(output).toMatch(/PASS {2}PostgreSQL ready for logical replication/);
    expect(output).not.toContain('wrong-token');
  });

  it('check names wal_level=replica with its fix, on a real cluster so configured', async () => {
    // A second, throwaway PostgreSQL 15 with the server's default wal_level.
    const pgDir = mkdtempSync(join(tmpdir(), 'pg2crm-replica-'));
    const port = 54_330 + Math.floor(Math.random() * 500);
    await startPostgres(pgDir, port, { walLevel: 'replica' });
    try {
      await createErpSchema(postgresUrl(port), schema);
      const onReplica = { ...good, postgres: { ...(good.postgres as object), url: postgresUrl(port) } };
      const { code, output } = await runCli(['check', '--config', configFile(onReplica)]);
      expect(code).toBe(1);
      expect(output).toMatch(
        /FAIL {2}PostgreSQL ready for logical replication: wal_level is replica; set wal_level = logical in postgresql\.conf and restart PostgreSQL/,
      );
      expect(output).toMatch(/PASS {2}captured tables/);
    } finally {
      await stopPostgres(pgDir);
      rmSync(pgDir, { recursive: true, force: true });
    }
  });

  it('run exits 1 when the broker cannot be reached', async () => {
    const unreachable = { ...good, kafka: { ...(good.kafka as object), brokers: '127.0.0.1:1' } };
    const { code, output } = await runCli(['run', '--config', configFile(unreachable)], 180_000);
    expect(code).toBe(1);
    expect(output).toMatch(/fatal error/);
    expect(output).toMatch(/127\.0\.0\.1:1|ECONNREFUSED|Connection/);
  });
});
