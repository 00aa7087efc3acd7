import { spawn } from 'node:child_process';
import { logLevel } from 'kafkajs';
import pg from 'pg';
import { readFileSync } from 'node:fs';
import { startZendeskSellSimulator } from '../src/crm/zendesk-sell/simulator.ts';
import { createKafka } from '../src/kafka/client.ts';
import { dropKafkajsTimerWarning } from '../src/kafka/timer-warning.ts';
import { stackUp } from './stack.ts';

/**
 * `npm run demo`: the main job end to end on the local stack. Starts PostgreSQL, Kafka and the
 * registry, seeds the demo ERP (customers, orders), runs the connector from
 * connectors/zendesk-sell.yaml against the Zendesk Sell simulator while changes keep coming,
 * shows progress, and stops when the CRM holds exactly what PostgreSQL holds and lag is 0.
 * `npm run demo -- --keep` keeps everything running until Ctrl-C.
 */
const CUSTOMERS = 300;
const ORDERS = 600;
const CHANGE_SECONDS = 15;
const SIM_PORT = 8089;
const REQUESTS_PER_MINUTE = 3000;
const CONNECTOR = 'erp_to_zendesk_sell';
const PREFIX = 'erp';
const keep = process.argv.includes('--keep');
const root = new URL('../', import.meta.url).pathname;
const say = (line: string): void => void process.stdout.write(`${line}\n`);

// Before stackUp: its round-trip checks are the first kafkajs clients of this process.
dropKafkajsTimerWarning();
const env = await stackUp();
say(`stack up: ${env.PG_URL.replace(/:[^:@/]*@/, ':***@')}  kafka ${env.KAFKA_BROKERS}  registry ${env.SCHEMA_REGISTRY_URL}`);

const db = new pg.Client({ connectionString: env.PG_URL });
await db.connect();
// Through createKafka like the connector's clients; the demo's own admin client logs nothing.
const kafka = createKafka({ brokers: env.KAFKA_BROKERS.split(','), clientId: 'pg2crm' }, 'demo');
kafka.logger().setLogLevel(logLevel.NOTHING);
const admin = kafka.admin();
await admin.connect();
const topics = [`${PREFIX}.erp.customers`, `${PREFIX}.erp.orders`];

// A fresh run: the previous demo's slot, tables, topics and consumer group go first.
await db.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'pg2crm_${CONNECTOR}'`);
await db.query(`DROP PUBLICATION IF EXISTS pg2crm_${CONNECTOR}`);
await db.query('DROP SCHEMA IF EXISTS erp CASCADE');
const existing = new Set(await admin.listTopics());
const stale = [...topics, `${PREFIX}.dlq`].filter((t) => existing.has(t));
if (stale.length) await admin.deleteTopics({ topics: stale });
await admin.deleteGroups([`pg2crm-${CONNECTOR}-sink`]).catch(() => undefined);

await db.query(readFileSync(`${root}scripts/demo/erp-schema.sql`, 'utf8'));
await db.query(
  `INSERT INTO erp.customers (first_name, last_name, email, company)
   SELECT 'Ada' || g, 'Lovelace' || g, 'ada' || g || '@example.com', 'Company ' || (g % 40) FROM generate_series(1, $1::int) g`,
  [CUSTOMERS],
);
await db.query(
  `INSERT INTO erp.orders (customer_id, title, amount, status)
   SELECT 1 + (g * 7919) % $1::int, 'Order ' || g, round((random() * 10000)::numeric, 2), 'open' FROM generate_series(1, $2::int) g`,
  [CUSTOMERS, ORDERS],
);
say(`seeded erp.customers (${CUSTOMERS}) and erp.orders (${ORDERS})`);

const sim = await startZendeskSellSimulator({ port: SIM_PORT, control: true, limit: { requests: REQUESTS_PER_MINUTE, windowSeconds: 60 } });
say(`Zendesk Sell simulator on ${sim.url} (${REQUESTS_PER_MINUTE} requests/min)`);

const connector = spawn(process.execPath, [`${root}bin/pg2crm.js`, 'run', '--config', `${root}connectors/zendesk-sell.yaml`], {
  env: {
    ...process.env,
    ...env,
    ZENDESK_SELL_URL: sim.url,
    ZENDESK_SELL_REQUESTS_PER_MINUTE: String(REQUESTS_PER_MINUTE),
    PG2CRM_OPS_PORT: '9464',
    LOG_LEVEL: 'warn',
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
say('connector started: pg2crm run --config connectors/zendesk-sell.yaml (metrics on http://127.0.0.1:9464/metrics)');

async function lag(): Promise<number> {
  const committed = await admin.fetchOffsets({ groupId: `pg2crm-${CONNECTOR}-sink`, topics });
  let total = 0;
  for (const { topic, partitions } of committed) {
    for (const end of await admin.fetchTopicOffsets(topic)) {
      const c = Number(partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
      total += Number(end.high) - Math.max(0, c);
    }
  }
  return total;
}

async function simCount(object: string): Promise<number> {
  return ((await (await fetch(`${sim.url}/__sim/records/${object}`)).json()) as unknown[]).length;
}

/** Every customer's e-mail in the CRM equals PostgreSQL's (updates arrived, in order). */
async function emailsMatch(): Promise<boolean> {
  const crm = (await (await fetch(`${sim.url}/__sim/records/contacts`)).json()) as {
    email: string | null;
    custom_fields: { erp_id: string };
  }[];
  const byId = new Map(crm.map((c) => [String(c.custom_fields.erp_id), c.email ?? null]));
  const rows = (await db.query<{ id: string; email: string | null }>('SELECT id::text, email FROM erp.customers')).rows;
  return rows.every((r) => byId.get(r.id) === r.email);
}

const started = Date.now();
let changes = 0;
const changer = (async () => {
  while (Date.now() - started < CHANGE_SECONDS * 1000) {
    await db.query('BEGIN');
    await db.query(`INSERT INTO erp.customers (first_name, last_name, email) VALUES ('Grace', 'Hopper' || floor(random() * 1e6), NULL)`);
    await db.query(
      `UPDATE erp.customers SET email = 'moved' || floor(random() * 1e6) || '@example.com' WHERE id IN (SELECT id FROM erp.customers ORDER BY random() LIMIT 5)`,
    );
    await db.query(
      `INSERT INTO erp.orders (customer_id, title, amount) SELECT id, 'Upsell', 99.90 FROM erp.customers ORDER BY random() LIMIT 2`,
    );
    await db.query(`DELETE FROM erp.orders WHERE id = (SELECT min(id) FROM erp.orders WHERE status = 'open' AND title = 'Upsell')`);
    await db.query('COMMIT');
    changes += 9;
    await new Promise((r) => setTimeout(r, 500));
  }
})();

let done = false;
while (!done) {
  await new Promise((r) => setTimeout(r, 2000));
  const [contacts, deals, currentLag, stats] = await Promise.all([
    simCount('contacts'),
    simCount('deals'),
    lag().catch(() => NaN),
    fetch(`${sim.url}/__sim/stats`).then((r) => r.json() as Promise<{ requests: number; throttled: number }>),
  ]);
  const want = await db.query<{ c: number; o: number }>(
    'SELECT (SELECT count(*) FROM erp.customers)::int AS c, (SELECT count(*) FROM erp.orders)::int AS o',
  );
  const w = want.rows[0]!;
  const secs = Math.round((Date.now() - started) / 1000);
  say(
    `[${String(secs).padStart(3)}s] contacts ${contacts}/${w.c}  deals ${deals}/${w.o}  CRM requests ${stats.requests} (throttled ${stats.throttled})  lag ${currentLag}  changes made ${changes}`,
  );
  done = Date.now() - started > CHANGE_SECONDS * 1000 && contacts === w.c && deals === w.o && currentLag === 0 && (await emailsMatch());
  if (Date.now() - started > 600_000) {
    say('demo did not converge within 10 minutes; see the connector output above');
    process.exitCode = 1;
    break;
  }
}
await changer;

say('');
say('Done: the CRM simulator holds exactly the ERP rows, and consumer lag is 0. Where to look');
say(
  keep
    ? '(everything keeps running until Ctrl-C):'
    : '(the simulator and connector stop now; `npm run demo -- --keep` keeps them running):',
);
say(`  records     curl ${sim.url}/__sim/records/contacts   (and /deals)`);
say(`  CRM stats   curl ${sim.url}/__sim/stats`);
say(`  Kafka       topics ${topics.join(', ')} on ${env.KAFKA_BROKERS} (Avro, schemas in ${env.SCHEMA_REGISTRY_URL})`);
say(`  PostgreSQL  psql ${env.PG_URL} -c 'SELECT * FROM pg_replication_slots'`);
say('  stop stack  npm run stack -- down');

if (keep) {
  say('still running (--keep); Ctrl-C to stop');
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
}
connector.kill('SIGTERM');
await new Promise((r) => connector.once('exit', r));
await sim.close();
await admin.disconnect();
await db.end();
