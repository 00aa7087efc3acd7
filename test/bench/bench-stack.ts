import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { type StackEnv, stackUp } from '../../scripts/stack.ts';

/** What a bench works against: the local stack (started if it is not running), a Kafka admin and a PostgreSQL session, connected. */
export interface BenchStack {
  env: StackEnv;
  kafka: Kafka;
  admin: ReturnType<Kafka['admin']>;
  db: pg.Client;
}

export async function benchStack(clientId: string): Promise<BenchStack> {
  const env = await stackUp();
  const kafka = new Kafka({ clientId, brokers: env.KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const db = new pg.Client({ connectionString: env.PG_URL });
  await db.connect();
  return { env, kafka, admin, db };
}
