import type pg from 'pg';
import { LogicalReplicationService } from 'pg-logical-replication';
import type { KafkaConfig, PostgresConfig } from '../config.ts';
import { ConnectorError } from '../errors.ts';
import type { ChangeEvent } from '../events/change-event.ts';
import { qualifiedName, topicFor } from '../events/topic-router.ts';
import { createKafka, ensureTopics } from '../kafka/client.ts';
import { EventEncoder, type SchemaSource } from '../kafka/event-encoder.ts';
import { Publisher } from '../kafka/publisher.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { buildDelete, buildInsert, buildUpdate, type TxContext } from './change-builder.ts';
import { formatLsn, parseLsn } from './lsn.ts';
import { MessageSequencer } from './message-sequencer.ts';
import { OffsetContext, type PendingTransaction } from './offset-context.ts';
import { type PgoutputMessage, PgoutputPlugin, type Relation } from './pgoutput-decoder.ts';
import { INITIAL, IncrementalSnapshot, newTask } from './incremental-snapshot.ts';
import { openPg, pgClientConfig } from './pg-connect.ts';
import { createSlotWithSnapshot, dropSlot, ensurePublication, preflight, slotInfo } from './slot-admin.ts';
import { readSnapshot, type SnapshotProgress } from './snapshot-reader.ts';
import { SourceStateStore } from './source-state-store.ts';
import { describeTables, type TableInfo } from './table-catalog.ts';
import { DomainResolver } from './type-resolver.ts';

/**
 * The source half: PostgreSQL slot -> change events -> Kafka.
 *
 * No-loss rule: the slot's confirmed LSN only moves to the end LSN of a transaction whose every
 * event Kafka has acknowledged (acks=all); the position and that rule live in OffsetContext
 * (offset-context.ts). pg-logical-replication's own acknowledgement is off
 * (`auto: false, timeoutSeconds: 0`): its timer would confirm the last *received* LSN.
 * Streaming always starts at 0/0, which the server reads as "from the slot's confirmed_flush_lsn".
 *
 * Snapshot modes (postgres.snapshot), decided when the source starts:
 * - a new slot is created when there is none (or, under `when_needed`, when the old one lost WAL
 *   it needed); `initial` and `when_needed` then read every table inside the slot's exported
 *   snapshot, `never` streams only;
 * - an existing slot whose state says the initial snapshot did not finish (a crash) resumes it
 *   after the last chunk Kafka acknowledged, as an incremental snapshot (incremental-snapshot.ts);
 * - requests of `pg2crm snapshot --table` run as incremental snapshots whatever the mode.
 */

/**
 * A queued item: an event to publish, the commit of a transaction that may be acknowledged (and
 * its LSN confirmed) once all before it is acked, or a callback to run once all before it is acked.
 */
type Pending = { event: ChangeEvent; relation: SchemaSource } | { commit: PendingTransaction } | { acked: () => void };

/**
 * Queue items (events and commits) per Kafka send. kafkajs groups a send's messages by partition
 * by copying each partition's list once per message (producer/groupMessagesPerPartition.js), so
 * its cost per message grows with the send; 1024 keeps that small
 * while one request still carries hundreds of events.
 */
const MAX_SEND_BATCH = 1024;

export class CaptureSource {
  private readonly log = componentLogger('capture.source');
  private readonly pgConfig: PostgresConfig;
  private readonly kafkaConfig: KafkaConfig;
  private readonly encoder: EventEncoder;
  private readonly domains: DomainResolver;
  private readonly publisher: Publisher;
  private readonly kafka;
  private service: LogicalReplicationService | undefined;
  private tables = new Map<string, TableInfo>();
  private readonly keysByRelation = new WeakMap<Relation, string[]>();
  private readonly queue: Pending[] = [];
  private queueWaiters: (() => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  private readonly offsets = new OffsetContext();
  private flushing: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatClient: pg.Client | undefined;
  private stopped = false;
  private started = false;
  private fatal: ((err: Error) => void) | undefined;
  private streaming = false;
  private store: SourceStateStore | undefined;
  private incremental: IncrementalSnapshot | undefined;

  constructor(pgConfig: PostgresConfig, kafkaConfig: KafkaConfig, onFatal?: (err: Error) => void) {
    this.pgConfig = pgConfig;
    this.kafkaConfig = kafkaConfig;
    this.encoder = new EventEncoder(kafkaConfig);
    this.domains = new DomainResolver(pgConfig);
    this.kafka = createKafka(kafkaConfig, 'source');
    this.publisher = new Publisher(this.kafka);
    this.fatal = onFatal;
  }

  /** True once the slot is streaming (readiness). */
  isStreaming(): boolean {
    return this.streaming;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const { tables, publication } = this.pgConfig;
    const admin = await openPg(this.pgConfig);
    try {
      await preflight(admin);
      this.tables = await describeTables(admin, tables);
      await ensureTopics(
        this.kafka,
        tables.map((t) => this.topicOf(t)),
        {
          partitions: this.kafkaConfig.partitions,
          replicationFactor: this.kafkaConfig.replicationFactor,
          maxMessageBytes: this.kafkaConfig.maxMessageBytes,
        },
      );
      await this.publisher.start();
      await ensurePublication(admin, publication, tables, this.pgConfig.publish);
      this.store = await SourceStateStore.open(this.pgConfig, publication);
      await this.prepareSlot(admin, this.store);
    } finally {
      await admin.end();
    }
    this.incremental = new IncrementalSnapshot({
      url: this.pgConfig,
      slot: this.pgConfig.slot,
      chunkRows: this.pgConfig.snapshotChunkRows,
      tables,
      store: this.store,
    });
    this.flushing = this.flushLoop();
    await this.stream();
    this.startHeartbeats();
    this.incremental.start((err) => this.fail(err));
  }

  private topicOf(qualified: string): string {
    const [schema, table] = qualified.split('.') as [string, string];
    return topicFor(this.kafkaConfig.topicPrefix, schema, table);
  }

  /** Creates the slot (snapshotting when the mode asks) or reuses it (resuming an unfinished snapshot). */
  private async prepareSlot(admin: pg.Client, store: SourceStateStore): Promise<void> {
    const { slot, snapshot } = this.pgConfig;
    let info = await slotInfo(admin, slot);
    if (info.exists && info.walStatus === 'lost') {
      // https://www.postgresql.org/docs/15/view-pg-replication-slots.html: 'lost' = required WAL
      // was removed (max_slot_wal_keep_size). Streaming from it would silently skip changes.
      if (snapshot !== 'when_needed') {
        throw new ConnectorError(
          'SLOT_LOST',
          `replication slot ${slot} lost WAL it still needed (wal_status = lost), so changes are missing; set postgres.snapshot: when_needed to recreate it and snapshot again, or drop it (SELECT pg_drop_replication_slot('${slot}')) and restart`,
        );
      }
      this.log.warn({ slot }, 'replication slot lost WAL it needed; recreating it and snapshotting again (snapshot: when_needed)');
      await this.waitSlotFree(admin);
      await dropSlot(admin, slot);
      info = await slotInfo(admin, slot);
    }
    if (info.exists) {
      await this.waitSlotFree(admin);
      this.offsets.startAt(info.confirmedFlush ?? 0n);
      this.log.info({ slot, confirmedLsn: formatLsn(this.offsets.confirmed) }, 'resuming replication slot');
      await this.resumeSnapshotTasks(store);
      return;
    }
    await this.createSlot(store);
  }

  /** On a reused slot: drops the initial snapshot under `never`, or resumes one that did not finish. */
  private async resumeSnapshotTasks(store: SourceStateStore): Promise<void> {
    const { slot, snapshot } = this.pgConfig;
    const state = store.get();
    const onDemand = (state.tasks ?? []).filter((t) => t.id !== INITIAL);
    if (snapshot === 'never') {
      if (state.tasks?.some((t) => t.id === INITIAL)) await store.update((s) => (s.tasks = onDemand));
    } else if (!state.snapshotDone) {
      // The exported snapshot died with the crashed process: finish as an incremental snapshot
      // (see incremental-snapshot.ts for why that is exact), from the last acked chunk.
      let initial = (state.tasks ?? []).filter((t) => t.id === INITIAL);
      if (initial.length === 0) initial = this.pgConfig.tables.map((t) => newTask(INITIAL, t));
      await store.update((s) => (s.tasks = [...initial, ...onDemand]));
      this.log.warn(
        { slot, table: initial[0]?.table, fromKey: initial[0]?.lastKey ?? null },
        'initial snapshot did not finish; resuming it after the last acknowledged chunk',
      );
    }
  }

  /** A new slot, and under `initial` / `when_needed` the snapshot of every table in its exported snapshot. */
  private async createSlot(store: SourceStateStore): Promise<void> {
    const { slot, snapshot } = this.pgConfig;
    const configured = this.pgConfig.tables;
    const created = await createSlotWithSnapshot(this.pgConfig, slot);
    try {
      this.offsets.startAt(parseLsn(created.consistentPoint));
      this.log.info({ slot, consistentPoint: created.consistentPoint }, 'created replication slot');
      // A new slot starts a new history: earlier unfinished tasks are void (a full snapshot follows, or `never`).
      if (snapshot === 'never') {
        await store.update((s) => {
          s.snapshotDone = true;
          s.snapshotLsn = created.consistentPoint;
          s.tasks = [];
        });
        return;
      }
      await store.update((s) => {
        s.snapshotDone = false;
        s.snapshotLsn = created.consistentPoint;
        s.tasks = configured.map((t) => newTask(INITIAL, t));
      });
      const tables = configured.map((t) => this.tables.get(t)!);
      const started = Date.now();
      const rows = await readSnapshot(
        this.pgConfig,
        created.snapshotName,
        created.consistentPoint,
        tables,
        this.pgConfig.snapshotChunkRows,
        (events, p) => this.onSnapshotChunk(store, started, events, p),
      );
      await store.update((s) => {
        s.snapshotDone = true;
        s.tasks = [];
      });
      this.log.info({ rows }, 'initial snapshot finished');
    } finally {
      await created.close();
    }
  }

  /** One chunk of the initial snapshot: published, then recorded as durable progress. */
  private async onSnapshotChunk(store: SourceStateStore, started: number, events: ChangeEvent[], p: SnapshotProgress): Promise<void> {
    await this.publishNow(events, p.table);
    // Durable progress after Kafka acked the chunk: a crash resumes after it (tables before
    // the current one are complete, so they leave the task list).
    const name = qualifiedName(p.table.schema, p.table.table);
    metrics.snapshotRows.inc({ table: name, kind: 'initial' }, p.rows);
    await store.update((s) => {
      const tasks = s.tasks ?? [];
      const at = tasks.findIndex((t) => t.id === INITIAL && t.table === name);
      s.tasks = at >= 0 ? tasks.slice(at) : tasks;
      const task = s.tasks[0];
      if (task && at >= 0) {
        task.lastKey = p.lastKey;
        task.rows += p.rows;
        task.startedAt ||= started;
      }
    });
    const elapsed = (Date.now() - started) / 1000;
    const etaSeconds = p.done > 0 ? Math.round((elapsed / p.done) * (p.estimatedTotal - p.done)) : null;
    this.log.info(
      {
        table: name,
        lastKey: p.lastKey,
        rows: p.done,
        estimatedTotal: p.estimatedTotal,
        rowsPerSecond: Math.round(p.done / Math.max(elapsed, 0.001)),
        etaSeconds,
      },
      'snapshot progress',
    );
  }

  /** After a crash the old walsender may hold the slot for a moment; wait for it, then fail clearly. */
  private async waitSlotFree(admin: pg.Client): Promise<void> {
    const { slot } = this.pgConfig;
    for (let i = 0; i < 60; i++) {
      const info = await slotInfo(admin, slot);
      if (!info.active) return;
      await new Promise((r) => setTimeout(r, 500));
    }
    const info = await slotInfo(admin, slot);
    throw new ConnectorError(
      'SLOT_IN_USE',
      `replication slot ${slot} is in use by another process (pid ${info.activePid}); stop the other connector or set postgres.slot to another name`,
    );
  }

  private async publishNow(events: ChangeEvent[], table: SchemaSource): Promise<void> {
    const messages = await Promise.all(events.map((e) => this.encoder.encode(e, table)));
    await this.publisher.send(messages.flat());
    metrics.eventsProduced.inc(events.length);
  }

  private async stream(): Promise<void> {
    const service = new LogicalReplicationService(
      // Connect timeout and keepalive, no query timeout: the stream lasts as long as the connector.
      pgClientConfig(this.pgConfig, 'replication'),
      // Flow control is the sequencer's (message-sequencer.ts): messages are emitted as they are parsed.
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    this.service = service;
    // The socket is the library's; it pauses and resumes the same one for its own flow control.
    const socket = () => (service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })._connection?.stream;
    const sequencer = new MessageSequencer<PgoutputMessage>((msg) => this.onMessage(msg), {
      pause: () => socket()?.pause(),
      resume: () => socket()?.resume(),
      fail: (err) => this.fail(err),
    });
    service.on('data', (_lsn: string, msg: PgoutputMessage) => sequencer.push(msg));
    service.on('heartbeat', (_lsn: string, _ts: number, shouldRespond: boolean) => {
      // Answer with what is durably in Kafka, never with the received position.
      if (shouldRespond) void this.sendConfirmed();
    });
    service.on('error', (err: Error) => this.fail(err));
    service.on('start', () => {
      this.streaming = true;
      this.log.info({ slot: this.pgConfig.slot }, 'replication streaming');
    });
    service
      .subscribe(new PgoutputPlugin(this.pgConfig.publication) as never, this.pgConfig.slot, '0/00000000')
      .then(() => {
        if (!this.stopped)
          this.fail(new ConnectorError('REPLICATION_ENDED', 'the replication stream ended unexpectedly', { retriable: true }));
      })
      .catch((err: unknown) => {
        if (!this.stopped) this.fail(err as Error);
      });
  }

  /** One stream message; a promise when the next must wait for it (see MessageSequencer). */
  private onMessage(msg: PgoutputMessage): Promise<void> | undefined {
    switch (msg.tag) {
      case 'begin':
        this.offsets.begin(msg.finalLsn, msg.xid, msg.commitTimeMicros);
        return;
      case 'commit':
        this.enqueue({ commit: this.offsets.commit(msg.endLsn) });
        break;
      case 'relation':
        this.log.debug({ table: `${msg.relation.schema}.${msg.relation.table}` }, 'relation');
        // Domain columns take their base type's encoding; the next message waits for it.
        return this.domains.annotate(msg.relation.columns);
      case 'insert':
        this.enqueueChange(buildInsert(msg.relation, this.keyOf(msg.relation), msg.after, this.currentTx()), toSource(msg.relation));
        break;
      case 'update':
        for (const event of buildUpdate(
          msg.relation,
          this.keyOf(msg.relation),
          msg.before,
          msg.beforeIsKeyOnly,
          msg.after,
          this.currentTx(),
        )) {
          this.enqueueChange(event, toSource(msg.relation));
        }
        break;
      case 'delete':
        this.enqueueChange(
          buildDelete(msg.relation, this.keyOf(msg.relation), msg.before, msg.beforeIsKeyOnly, this.currentTx()),
          toSource(msg.relation),
        );
        break;
      case 'message': {
        // Watermarks and signals of incremental snapshots; heartbeats fall through unused.
        if (!msg.transactional || !this.incremental) return;
        return this.onSnapshotMessage(this.incremental, msg.prefix, msg.content);
      }
      case 'truncate':
        // A TRUNCATE carries no rows; replaying it as deletes in a CRM would be destructive, so
        // it is reported, not applied. Re-snapshot the table if the CRM must follow.
        this.log.warn({ tables: msg.relations.map((r) => `${r.schema}.${r.table}`) }, 'TRUNCATE captured and not applied to the CRM');
        return;
      default:
        return;
    }
    return this.queue.length >= this.pgConfig.maxBufferedEvents ? this.waitDrain() : undefined;
  }

  private async onSnapshotMessage(incremental: IncrementalSnapshot, prefix: string, content: Buffer): Promise<void> {
    const out = await incremental.onMessage(prefix, content, this.currentTx());
    if (!out) return;
    for (const event of out.events) this.enqueue({ event, relation: out.table });
    this.enqueue({ acked: out.onAcked });
    if (this.queue.length >= this.pgConfig.maxBufferedEvents) await this.waitDrain();
  }

  private currentTx(): TxContext {
    return this.offsets.currentTx();
  }

  private keyOf(relation: Relation): string[] {
    // Per Relation message (a new one comes after each ALTER TABLE), not a name lookup per row.
    const known = this.keysByRelation.get(relation);
    if (known) return known;
    const info = this.tables.get(qualifiedName(relation.schema, relation.table));
    if (info) {
      this.keysByRelation.set(relation, info.primaryKey);
      return info.primaryKey;
    }
    // Only published tables arrive; a miss means the publication holds more than the config says.
    throw new ConnectorError(
      'UNEXPECTED_TABLE',
      `change for ${relation.schema}.${relation.table}, which is not in postgres.tables; check the publication`,
    );
  }

  private enqueueChange(event: ChangeEvent, relation: SchemaSource): void {
    this.incremental?.onChange(event);
    this.enqueue({ event, relation });
  }

  private enqueue(item: Pending): void {
    this.queue.push(item);
    const waiters = this.queueWaiters;
    this.queueWaiters = [];
    for (const w of waiters) w();
  }

  private waitDrain(): Promise<void> {
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Sends what is queued (batching whatever arrived during the previous send), then confirms. */
  private async flushLoop(): Promise<void> {
    while (!this.stopped || this.queue.length > 0) {
      if (this.queue.length === 0) {
        if (this.stopped) break;
        await new Promise<void>((resolve) => this.queueWaiters.push(resolve));
        continue;
      }
      const chunk = this.queue.splice(0, MAX_SEND_BATCH);
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
      await this.sendChunk(chunk);
    }
  }

  private async sendChunk(chunk: Pending[]): Promise<void> {
    const commits: PendingTransaction[] = [];
    const toEncode: Extract<Pending, { event: unknown }>[] = [];
    const acked: (() => void)[] = [];
    for (const item of chunk) {
      if ('commit' in item) commits.push(item.commit);
      else if ('acked' in item) acked.push(item.acked);
      else toEncode.push(item);
    }
    const events = toEncode.length;
    for (let attempt = 1; ; attempt++) {
      try {
        // Encoded anew on every attempt: an encoding that failed (registry unreachable) is a
        // rejected promise, and awaiting it again would fail the same way after the registry is back.
        const messages = await Promise.all(toEncode.map((item) => this.encoder.encode(item.event, item.relation)));
        await this.publisher.send(messages.flat());
        break;
      } catch (err) {
        if (!(err instanceof ConnectorError && err.retriable) || attempt >= 10) {
          this.fail(err as Error);
          return new Promise(() => undefined); // never confirm past a failed send
        }
        this.log.warn({ err, attempt }, 'Kafka send failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** attempt)));
      }
    }
    metrics.eventsProduced.inc(events);
    for (const done of acked) done();
    // Every event of this chunk and of the chunks before it is acknowledged (they are sent one
    // after the other), so each commit in it is too.
    let moved = false;
    for (const tx of commits) moved = this.offsets.acknowledge(tx) || moved;
    if (moved) await this.sendConfirmed();
  }

  /**
   * Standby status update with flush = the end LSN of the last transaction fully in Kafka (see
   * OffsetContext.statusUpdateLsn for why pg-logical-replication is given that LSN minus one).
   * https://www.postgresql.org/docs/15/protocol-replication.html#PROTOCOL-REPLICATION-STANDBY-STATUS-UPDATE
   */
  private async sendConfirmed(): Promise<void> {
    const lsn = this.offsets.statusUpdateLsn();
    if (lsn === undefined) return;
    await this.service?.acknowledge(lsn);
  }

  /** A transactional logical message every few seconds gives an idle slot a commit to confirm. */
  private startHeartbeats(): void {
    const seconds = this.pgConfig.heartbeatSeconds;
    if (seconds <= 0) return;
    this.heartbeatTimer = setInterval(() => {
      void this.heartbeat().catch((err: unknown) => this.log.warn({ err }, 'heartbeat failed'));
    }, seconds * 1000);
    this.heartbeatTimer.unref();
  }

  private async heartbeat(): Promise<void> {
    if (!this.heartbeatClient) {
      const client = await openPg(this.pgConfig);
      client.on('error', () => {
        if (this.heartbeatClient === client) this.heartbeatClient = undefined;
      });
      this.heartbeatClient = client;
    }
    const client = this.heartbeatClient;
    await client.query("SELECT pg_logical_emit_message(true, 'pg2crm.heartbeat', '')").catch(async (err: unknown) => {
      // A timed-out query leaves the connection busy (or dead): the next heartbeat opens a new one.
      if (this.heartbeatClient === client) this.heartbeatClient = undefined;
      await client.end().catch(() => undefined);
      throw err;
    });
  }

  private fail(err: Error): void {
    this.log.error({ err }, 'source failed');
    this.fatal?.(err);
  }

  /** Publishes what was received, confirms it, then closes the stream. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.heartbeatTimer);
    await this.incremental?.stop();
    for (const w of this.queueWaiters) w();
    this.queueWaiters = [];
    await Promise.race([this.flushing, new Promise((r) => setTimeout(r, 15_000))]);
    this.streaming = false;
    await this.service?.stop().catch(() => undefined);
    await this.heartbeatClient?.end().catch(() => undefined);
    await this.publisher.stop().catch(() => undefined);
    await this.store?.close();
  }
}

const sources = new WeakMap<Relation, SchemaSource>();

/** One SchemaSource per Relation message, so a new Relation (ALTER TABLE) registers a new schema. */
function toSource(relation: Relation): SchemaSource {
  let s = sources.get(relation);
  if (!s) {
    s = { schema: relation.schema, table: relation.table, columns: relation.columns.map(({ isKey: _isKey, ...c }) => c) };
    sources.set(relation, s);
  }
  return s;
}
