import type { Client } from 'pg';
import { describe, expect, it } from 'vitest';
import { ConnectorError } from '../../../src/errors.ts';
import { readTableFigures } from '../../../src/plan/table-stats.ts';

/** A pg client answering the counters query from `rounds` (one per read) and count(*) with `counts`. */
function fakeClient(rounds: { table: string; reltuples: number; changes: number }[][], counts: Record<string, number> = {}) {
  const queries: string[] = [];
  let round = 0;
  const client = {
    async query(sql: string) {
      queries.push(sql);
      if (sql.includes('pg_stat_user_tables')) {
        const rows = rounds[Math.min(round++, rounds.length - 1)]!;
        return { rows: rows.map((r) => ({ ...r, changes: String(r.changes) })) };
      }
      const counted = /FROM "([^"]+)"\."([^"]+)"/.exec(sql);
      if (counted) return { rows: [{ n: String(counts[`${counted[1]}.${counted[2]}`] ?? 0) }] };
      return { rows: [] };
    },
  };
  return { client: client as unknown as Client, queries };
}

const noSleep = async (): Promise<void> => undefined;

describe('readTableFigures', () => {
  it('takes reltuples of an analyzed table and counts one never analyzed', async () => {
    const { client, queries } = fakeClient(
      [
        [
          { table: 'erp.customers', reltuples: 1_200_000, changes: 10 },
          { table: 'erp.orders', reltuples: -1, changes: 0 },
        ],
      ],
      { 'erp.orders': 42 },
    );
    const [customers, orders] = await readTableFigures(client, ['erp.customers', 'erp.orders'], 0, noSleep);
    expect(customers).toMatchObject({ rows: 1_200_000, rowsSource: 'pg_class.reltuples' });
    expect(orders).toMatchObject({ rows: 42, rowsSource: 'count(*)' });
    expect(queries.filter((q) => q.includes('count(*)'))).toHaveLength(1);
  });

  it('counts a table analyzed while empty (reltuples 0)', async () => {
    const { client } = fakeClient([[{ table: 'erp.orders', reltuples: 0, changes: 0 }]], { 'erp.orders': 7 });
    const [orders] = await readTableFigures(client, ['erp.orders'], 0, noSleep);
    expect(orders).toMatchObject({ rows: 7, rowsSource: 'count(*)' });
  });

  it('takes the change rate from the counters read before and after the sample', async () => {
    const { client } = fakeClient([
      [{ table: 'erp.customers', reltuples: 100, changes: 1000 }],
      [{ table: 'erp.customers', reltuples: 100, changes: 1600 }],
    ]);
    const started = performance.now();
    const [t] = await readTableFigures(client, ['erp.customers'], 0.2, (ms) => new Promise((r) => setTimeout(r, ms)));
    const seconds = (performance.now() - started) / 1000;
    // 600 changes over about 0.2 s: about 3,000 a second.
    expect(t!.changesPerSecond).toBeGreaterThan(600 / seconds - 1);
    // Timers may fire a little early.
    expect(t!.changesPerSecond).toBeLessThanOrEqual(600 / 0.19);
    expect(t!.changesSource).toMatch(/^pg_stat_user_tables n_tup_ins\+n_tup_upd\+n_tup_del over 0\.2 s$/);
  });

  it('names a table that does not exist and the fix', async () => {
    const { client } = fakeClient([[{ table: 'erp.customers', reltuples: 100, changes: 0 }]]);
    const err = await readTableFigures(client, ['erp.customers', 'erp.ghosts'], 0, noSleep).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectorError);
    expect((err as ConnectorError).code).toBe('PLAN_TABLE_MISSING');
    expect((err as ConnectorError).message).toBe(
      'table erp.ghosts does not exist in PostgreSQL at postgres.url; create it, or remove it from postgres.tables and mappings',
    );
  });
});
