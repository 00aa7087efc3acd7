import { openPg } from '../capture/pg-connect.ts';
import type { Config } from '../config.ts';
import { createAdapter } from '../crm/create-adapter.ts';
import { type Plan, buildPlan } from '../plan/build-plan.ts';
import type { Assumptions } from '../plan/estimate.ts';
import { readTableFigures } from '../plan/table-stats.ts';

/**
 * `pg2crm plan --config c.yaml [--json]`: how long the initial snapshot will take and whether the
 * quota keeps up with the change rate, before anything runs. Reads PostgreSQL only (sizes and
 * change counters of the mapped tables); the CRM is not called: its quota comes from crm.limits
 * and crm.credentials, its costs from the adapter's own cost functions.
 */
export interface PlanOptions {
  sampleSeconds: number;
  /** Assumed duration of one CRM call (the CRM is not called to measure it). */
  callSeconds: number;
}

/**
 * From `pg2crm run` to the first CRM call: slot and snapshot start, Kafka topics, the consumer
 * group's join and the budget's first share. Measured 2-14 s by test/integration/plan.test.ts on
 * a 2-core machine running the stack and five connectors; nothing beside a snapshot of hours.
 */
const STARTUP_SECONDS = 6;
/**
 * The paced quota a snapshot uses: 0.95–0.99 measured by the same test (bench:sink measures
 * 0.96–0.98 over whole windows of a steady backlog).
 */
const PACE_EFFICIENCY = 0.96;
/** Well below what the source reads and publishes (bench:source) and the sink decodes. */
const SOURCE_ROWS_PER_SECOND = 10_000;

/** Whether the CRM has a bulk API that the config leaves off (crm.bulkThreshold 0). */
function bulkUnused(config: Config): boolean {
  if (config.crm.bulkThreshold > 0) return false;
  const object = config.mappings[0]!.object;
  const withBulk = createAdapter({ ...config.crm, bulkThreshold: 2000 });
  const without = createAdapter(config.crm);
  const more = withBulk.maxBatchSize(object) > without.maxBatchSize(object);
  void withBulk.close();
  void without.close();
  return more;
}

export async function planFor(config: Config, options: PlanOptions): Promise<Plan> {
  const tables = [...new Set(config.mappings.map((m) => m.table))];
  const client = await openPg(config.postgres);
  let figures: Awaited<ReturnType<typeof readTableFigures>>;
  try {
    figures = await readTableFigures(client, tables, options.sampleSeconds);
  } finally {
    await client.end().catch(() => undefined);
  }
  const assumptions: Assumptions = {
    callSeconds: options.callSeconds,
    startupSeconds: STARTUP_SECONDS,
    sourceRowsPerSecond: SOURCE_ROWS_PER_SECOND,
    paceEfficiency: PACE_EFFICIENCY,
  };
  const adapter = createAdapter(config.crm);
  try {
    return buildPlan({ config, tables: figures, assumptions, adapter, bulkUnused: bulkUnused(config) });
  } finally {
    await adapter.close();
  }
}
