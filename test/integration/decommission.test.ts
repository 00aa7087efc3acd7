import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { beforeAll, describe, expect, it } from 'vitest';
import { type Connector, useHarness } from '../helpers/connector-harness.ts';
import { runCli, type TestConnector, uniqueName, waitSlotActive, withPg } from '../helpers/fixtures.ts';

/**
 * `pg2crm slot drop`: decommissioning drops the slot and the publication, refuses while a
 * connector streams, and drops nothing without --yes.
 */
const h = useHarness();
const env = h.env;

async function exists(c: TestConnector): Promise<{ slot: boolean; publication: boolean }> {
  return withPg(env.PG_URL, async (db) => ({
    slot: (await db.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [c.slot])).rowCount === 1,
    publication: (await db.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [c.publication])).rowCount === 1,
  }));
}

describe('pg2crm slot drop', () => {
  const schema = uniqueName('dec');
  let connector: Connector;

  beforeAll(async () => {
    connector = await h.connector(schema, 'http://127.0.0.1:1', { snapshot: 'never' });
  });

  it('--help explains --yes and the exit codes', async () => {
    const { code, output } = await runCli(['slot', 'drop', '--help']);
    expect(code).toBe(0);
    expect(output).toContain('--yes');
    expect(output).toMatch(/Exit codes: 0 dropped or nothing to drop, 1 refused/);
  });

  it('refuses while the connector streams, prints the plan without --yes, drops with --yes', async () => {
    const run = connector.run('--role', 'source');
    try {
      await waitSlotActive(env.PG_URL, connector.slot);
      const refused = await runCli(['slot', 'drop', '--config', connector.configFile, '--yes']);
      expect(refused.code).toBe(1);
      expect(refused.output).toMatch(
        new RegExp(`refusing to drop replication slot ${connector.slot}: a connector is streaming from it \\(pid \\d+\\)`),
      );
      expect(refused.output).toMatch(/Stop that connector first/);
      expect(await exists(connector)).toEqual({ slot: true, publication: true });
    } finally {
      expect(await run.stop()).toBe(0);
    }

    const dry = await runCli(['slot', 'drop', '--config', connector.configFile]);
    expect(dry.code).toBe(2);
    expect(dry.output).toMatch(
      new RegExp(`will drop replication slot ${connector.slot} \\(confirmed LSN [0-9A-F]+/[0-9A-F]+, holding [\\d.]+ MiB of WAL\\)`),
    );
    expect(dry.output).toContain(`will drop publication ${connector.publication} (tables: ${schema}.customers, ${schema}.orders)`);
    expect(dry.output).toContain('nothing dropped: add --yes');
    expect(await exists(connector)).toEqual({ slot: true, publication: true });

    const dropped = await runCli(['slot', 'drop', '--config', connector.configFile, '--yes']);
    expect(dropped.code).toBe(0);
    expect(dropped.output).toContain(`dropped replication slot ${connector.slot}`);
    expect(dropped.output).toContain(`dropped publication ${connector.publication}`);
    expect(await exists(connector)).toEqual({ slot: false, publication: false });

    const again = await runCli(['slot', 'drop', '--config', connector.configFile, '--yes']);
    expect(again.code).toBe(0);
    expect(again.output).toContain(`nothing to drop: no replication slot ${connector.slot} and no publication ${connector.publication}`);
  });

  it('a missing config exits 2', async () => {
    const { code, output } = await runCli(['slot', 'drop', '--config', join(tmpdir(), 'nope-pg2crm.yaml'), '--yes']);
    expect(code).toBe(2);
    expect(output).toMatch(/cannot read config file/);
  });
});
