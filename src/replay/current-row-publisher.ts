import type pg from 'pg';
import { openPg } from '../capture/pg-connect.ts';
import { buildSnapshotRow, type TxContext } from '../capture/change-builder.ts';
import { quoteIdent, selectAsText } from '../capture/sql-identifiers.ts';
import { describeTables, type TableInfo } from '../capture/table-catalog.ts';
import type { Config } from '../config.ts';
import type { ChangeEvent, Row } from '../events/change-event.ts';
import { avroName } from '../events/row-codec.ts';
import { topicFor } from '../events/topic-router.ts';
import { createKafka } from '../kafka/client.ts';
import { EventEncoder } from '../kafka/event-encoder.ts';
import { Publisher } from '../kafka/publisher.ts';

/**
 * Re-drives records from PostgreSQL's present state: the record's CURRENT row is read and
 * published as a snapshot event (op `r`), or a delete when the row is gone, so the CRM converges
 * on what PostgreSQL holds now, never on old bytes. `pg2crm dlq replay` and `pg2crm verify
 * --repair` both go through here. A snapshot row is a full upsert the sink never skips as a
 * no-op (compactor.ts `restore`): it is sent to restore the CRM.
 */
export class CurrentRowPublisher {
  readonly db: pg.Client;
  /** Captured tables by `schema.table`. */
  readonly tables: Map<string, TableInfo>;
  private readonly publisher: Publisher;
  private readonly encoder: EventEncoder;
  private readonly tx: TxContext;
  private readonly topicPrefix: string;

  private constructor(db: pg.Client, tables: Map<string, TableInfo>, publisher: Publisher, config: Config, tx: TxContext) {
    this.db = db;
    this.tables = tables;
    this.publisher = publisher;
    this.encoder = new EventEncoder(config.kafka);
    this.topicPrefix = config.kafka.topicPrefix;
    this.tx = tx;
  }

  /** Connects to PostgreSQL and Kafka (`client` names the Kafka client); close() when done. */
  static async open(config: Config, client: string): Promise<CurrentRowPublisher> {
    const db = await openPg(config.postgres);
    const publisher = new Publisher(createKafka(config.kafka, client));
    try {
      await publisher.start();
      const tables = await describeTables(db, config.postgres.tables);
      const lsn = (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
      const tx: TxContext = { lsn, xid: 0, commitTsMicros: BigInt(Date.now()) * 1000n, seq: 0 };
      return new CurrentRowPublisher(db, tables, publisher, config, tx);
    } catch (err) {
      await publisher.stop().catch(() => undefined);
      await db.end().catch(() => undefined);
      throw err;
    }
  }

  /** The captured table whose change topic is `topic`. */
  tableOfTopic(topic: string): TableInfo | undefined {
    for (const t of this.tables.values()) if (topicFor(this.topicPrefix, t.schema, t.table) === topic) return t;
    return undefined;
  }

  /**
   * Publishes the record's current row (`r`) or, when the row is gone, its deletion (`d`).
   * Throws PostgreSQL's error when the key does not fit the primary key (SQLSTATE class 22).
   */
  async publish(table: TableInfo, key: Row): Promise<'r' | 'd'> {
    const event = (await currentRow(this.db, table, key, this.tx)) ?? deletion(table, key, this.tx);
    await this.publisher.send(await this.encoder.encode(event, table));
    return event.op === 'd' ? 'd' : 'r';
  }

  async close(): Promise<void> {
    try {
      await this.publisher.stop();
    } finally {
      await this.db.end();
    }
  }
}

/** SQLSTATE class 22 (data exception, e.g. 22P02 invalid input syntax): the key's values, not the database. */
export function isDataException(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('22');
}

async function currentRow(db: pg.Client, table: TableInfo, key: Row, tx: TxContext): Promise<ChangeEvent | undefined> {
  const select = selectAsText(table.columns);
  const where = table.primaryKey
    .map((k, i) => `${quoteIdent(k)} = $${i + 1}::${table.columns.find((c) => c.name === k)?.typeName ?? 'text'}`)
    .join(' AND ');
  const res = await db.query<(string | null)[]>({
    text: `SELECT ${select} FROM ${quoteIdent(table.schema)}.${quoteIdent(table.table)} WHERE ${where}`,
    values: table.primaryKey.map((k) => String(key[avroName(k)])),
    rowMode: 'array',
  });
  const row = res.rows[0];
  return row ? buildSnapshotRow(table, row, tx) : undefined;
}

function deletion(table: TableInfo, key: Row, tx: TxContext): ChangeEvent {
  return {
    op: 'd',
    key,
    before: null,
    after: null,
    changed: null,
    unchanged: [],
    source: {
      lsn: tx.lsn,
      seq: tx.seq++,
      xid: 0,
      commitTsMicros: tx.commitTsMicros,
      schema: table.schema,
      table: table.table,
      snapshot: true,
    },
  };
}
