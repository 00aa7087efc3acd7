import { beforeAll, describe, expect, it } from 'vitest';
import type { CrmSimulator } from '../../src/crm/sim-server.ts';
import { type Connector, simStats, useHarness } from '../helpers/connector-harness.ts';
import { type CliProcess, readAllEvents, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * At-least-once under SIGKILL: the connector is killed while a stream of changes is being
 * written, restarted, and afterwards every committed change is in Kafka and the CRM holds the
 * final PostgreSQL state. Each update stamps a version into `notes`, so a lost change shows as
 * a missing (id, version) pair in Kafka.
 */
const h = useHarness();
const env = h.env;

describe('crash recovery', () => {
  let sim: CrmSimulator;
  let conn: Connector;
  const schema = uniqueName('crash');

  beforeAll(async () => {
    sim = await h.simulator();
    conn = await h.connector(schema, sim.url, { snapshot: 'never' });
  });

  it('SIGKILL mid-stream loses nothing', async () => {
    const start = (): CliProcess => conn.run();
    h.printOnFailure({ chars: 4000, more: async () => `simulator stats ${JSON.stringify(await simStats(sim))}` });
    let proc = start();
    await conn.slotActive();

    const customers = 100;
    const rounds = 30;
    let written = 0;
    const writer = (async () => {
      await withPg(env.PG_URL, async (c) => {
        await c.query(
          `INSERT INTO ${schema}.customers (first_name, last_name, notes) SELECT 'F' || g, 'L' || g, 'v0' FROM generate_series(1, ${customers}) g`,
        );
        for (let v = 1; v <= rounds; v++) {
          // One multi-row transaction per round: all its rows share a commit LSN.
          await c.query(`UPDATE ${schema}.customers SET notes = 'v${v}', last_name = 'L' || id || '-v${v}'`);
          written = v;
          await new Promise((r) => setTimeout(r, 100));
        }
      });
    })();

    await waitFor('some rounds written', async () => written >= 8);
    proc.kill('SIGKILL');
    expect(await proc.exited).toBeNull();
    await waitFor('more rounds written while down', async () => written >= 14);
    proc = start();
    await writer;

    const expected = await withPg(
      env.PG_URL,
      async (c) =>
        (await c.query<{ id: string; last_name: string }>(`SELECT id::text, last_name FROM ${schema}.customers ORDER BY id`)).rows,
    );
    const crmState = async (): Promise<string[]> =>
      (await simRecords(sim.url, 'contacts'))
        .map((r) => `${String((r.custom_fields as Record<string, unknown>).erp_id)}=${String(r.last_name)}`)
        .sort();
    const pgState = expected.map((r) => `${r.id}=${r.last_name}`).sort();
    await waitFor('CRM equal to PostgreSQL after the restart', async () => (await crmState()).join() === pgState.join(), 120_000).catch(
      () => undefined,
    );
    expect(await crmState()).toEqual(pgState);

    const events = await readAllEvents(env, `${conn.topicPrefix}.${schema}.customers`);
    const seen = new Set(events.map((e) => `${String(e.key.id)}:${String(e.after?.notes)}`));
    const missing: string[] = [];
    for (let id = 1; id <= customers; id++) {
      for (let v = 0; v <= rounds; v++) if (!seen.has(`${id}:v${v}`)) missing.push(`${id}:v${v}`);
    }
    expect(missing).toEqual([]);
    expect(await proc.stop()).toBe(0);
  });
});
