import { describe, expect, it } from 'vitest';
import { simFaults, simStats, useHarness } from '../helpers/connector-harness.ts';
import { freePort, simRecords, uniqueName, waitFor, withPg } from '../helpers/fixtures.ts';

/**
 * A CRM that answers 503 to everything: after a few failures the circuit opens and pg2crm stops
 * calling (one probe per cooldown, the cooldown doubling), instead of every partition retrying
 * on its own; /metrics shows the circuit open. When the CRM recovers, the probe closes the
 * circuit and every record arrives.
 */
const h = useHarness();
const env = h.env;

describe('circuit breaker', () => {
  const schema = uniqueName('circuit');

  it('opens on a failing CRM, probes, and closes when it recovers', async () => {
    h.printOnFailure();
    const sim = await h.simulator();
    const port = await freePort();
    const conn = await h.connector(schema, sim.url, { snapshot: 'never', extra: { ops: { port, lagIntervalSeconds: 1 } } });
    const proc = await conn.running();
    await simFaults(sim, { errors5xx: { requests: 1_000_000, status: 503 } });
    await withPg(env.PG_URL, (c) =>
      c.query(
        `INSERT INTO ${schema}.customers (first_name, last_name, email) SELECT 'F' || g, 'L' || g, 'c' || g || '@ok.example' FROM generate_series(1, 30) g`,
      ),
    );
    const circuit = async (): Promise<number | undefined> => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const m = /^pg2crm_circuit_state (\d+)/m.exec(text);
      return m ? Number(m[1]) : undefined;
    };
    await waitFor('the circuit open', async () => (await circuit()) === 2, 60_000, 200);
    const stats = () => simStats<{ requests: number }>(sim);
    const atOpen = (await stats()).requests;
    await new Promise((r) => setTimeout(r, 12_000));
    const during = (await stats()).requests - atOpen;
    // Open for 5 s, then one probe; it fails, open for 10 s: at most a couple of probes in 12 s.
    expect(during).toBeLessThanOrEqual(3);
    expect(proc.output).toMatch(/circuit open/);

    await simFaults(sim, { clear: true });
    await waitFor('all 30 contacts after recovery', async () => (await simRecords(sim.url, 'contacts')).length === 30, 90_000, 500);
    expect(await circuit()).toBe(0);
  });
});
