import { getHeapStatistics } from 'node:v8';
import type { Consumer, EachBatchPayload } from 'kafkajs';
import type { Config, CrmCredential, MappingConfig } from '../config.ts';
import type { CrmAdapter } from '../crm/crm-adapter.ts';
import { AvroCodec } from '../events/avro-codec.ts';
import { topicFor } from '../events/topic-router.ts';
import type { InstanceReport } from '../kafka/instance-report.ts';
import { createKafka, ensureTopics, topicMaxMessageBytes } from '../kafka/client.ts';
import { Publisher } from '../kafka/publisher.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { fetchHeapProblem } from './batch-decoder.ts';
import { BatchSizer } from './batch-sizer.ts';
import { BatchWorker } from './batch-worker.ts';
import { BudgetShare } from './budget-share.ts';
import { CircuitBreaker } from './circuit-breaker.ts';
import { sendDeadLetters } from './dead-letter.ts';
import { InstanceStatus } from './instance-status.ts';
import { CHECKPOINT_MS } from './offset-tracker.ts';
import { QuotaLanes } from './quota-lanes.ts';
import { WrittenHashes } from './written-hashes.ts';

/**
 * The sink half: Kafka change topics -> compaction -> CRM writes under the rate budget. This
 * file wires the parts and runs the consumer's life (topics, group, status, stop); the story of
 * one batch is batch-worker.ts, and the parts it uses live next to it:
 * - batch-decoder.ts: messages -> changes (and poison messages -> dead letters);
 * - offset-tracker.ts: the guarantee — an offset is committed only after the CRM accepted the
 *   write covering it or it was dead-lettered, and only in order (at-least-once);
 * - call-planner.ts: compacted writes -> calls under the budget and the in-flight slots;
 * - call-writer.ts: one call, its failures turned into per-record retry outcomes;
 * - outcome-policy.ts: done / retry / throttle / pending / reject / server failure -> what
 *   happens to the record and its partition;
 * - partition-pauser.ts: pauses and the timers that resume them.
 *
 * Waiting: budget waits of up to SHORT_WAIT_MS (5 s, batch-worker.ts), waits for a free
 * in-flight slot and long calls (Bulk API jobs, polled until they end) happen inside eachBatch,
 * heartbeating. Longer waits — a Retry-After, an open circuit, a budget that frees later, a
 * record to retry — pause the partition and a timer resumes it (a paused consumer keeps
 * heartbeating and stays in the group). Memory stays bounded by what one fetch returns.
 *
 * Budget: one RateBudget per quota group and process, its share of the credential's quota set
 * by BudgetShare from the group's assignment and lag (see budget-share.ts); mapping priorities
 * order who gets scarce budget. A CircuitBreaker stops all calls while the CRM keeps failing.
 */
type SinkSlices = Pick<Config, 'kafka' | 'crm' | 'mappings' | 'sink'>;

export class SinkRunner {
  private readonly log = componentLogger('sink.runner');
  private readonly config: SinkSlices;
  private readonly codec: AvroCodec;
  private readonly kafka;
  private readonly consumer: Consumer;
  private readonly dlq: Publisher;
  private readonly budget: QuotaLanes;
  private readonly share: BudgetShare;
  private readonly breaker = new CircuitBreaker();
  private readonly worker: BatchWorker;
  private readonly hashes: WrittenHashes | undefined;
  private hashPartitions = 1;
  /** Largest letter the dead-letter topic accepts (its max.message.bytes). */
  private deadLetterBytes = 1024 * 1024;
  private readonly status: InstanceStatus;
  private memberId: string | null = null;
  private readonly mappingByTopic = new Map<string, MappingConfig>();
  private readonly onFatal: ((err: Error) => void) | undefined;
  private started = false;
  private stopped = false;
  private joined = false;

  constructor(config: SinkSlices, adapterFor: (credential: CrmCredential) => CrmAdapter, onFatal?: (err: Error) => void) {
    this.config = config;
    this.budget = new QuotaLanes(config.crm, adapterFor);
    // Any of the credentials' adapters, for batch sizes and costs.
    const adapter = this.budget.adapter;
    this.onFatal = onFatal;
    this.codec = new AvroCodec(config.kafka.schemaRegistry);
    this.kafka = createKafka(config.kafka, 'sink');
    this.consumer = this.kafka.consumer({
      groupId: config.kafka.groupId,
      sessionTimeout: 30_000,
      heartbeatInterval: 3_000,
      // A partition resumed after a pause is fetched only with the next fetch request; with
      // kafkajs' default 5 s wait, an idle partition elsewhere would hold it back that long.
      maxWaitTimeInMs: 250,
      // A fetch is held whole while its batches are worked on: its size bounds the sink's memory
      // (up to 4 partitions are worked on at once, partitionsConsumedConcurrently below).
      maxBytesPerPartition: config.sink.fetchMaxBytesPerPartition,
      maxBytes: 4 * config.sink.fetchMaxBytesPerPartition,
      allowAutoTopicCreation: false,
    });
    this.dlq = new Publisher(this.kafka);
    for (const m of config.mappings) {
      const [schema, table] = m.table.split('.') as [string, string];
      this.mappingByTopic.set(topicFor(config.kafka.topicPrefix, schema, table), m);
    }
    this.share = new BudgetShare(this.kafka, this.budget, {
      groupId: config.kafka.groupId,
      topics: [...this.mappingByTopic.keys()],
      priority: (topic) => this.mappingByTopic.get(topic)?.priority ?? 5,
      // Well under the window, so views of different instances agree within one window.
      intervalMs: Math.min(5_000, Math.max(500, (config.crm.limits.windowSeconds * 1000) / 5)),
    });
    const hashes = config.sink.noopSkip ? new WrittenHashes(this.kafka, config.sink.hashTopic, config.kafka.groupId) : undefined;
    this.hashes = hashes;
    this.worker = new BatchWorker({
      sink: config.sink,
      concurrency: config.crm.limits.concurrency,
      budget: this.budget,
      breaker: this.breaker,
      sizer: new BatchSizer((object) => adapter.maxBatchSize(object), config.crm.timeoutMs / 3),
      adapter,
      codec: this.codec,
      mappingFor: (topic) => this.mappingByTopic.get(topic),
      hashes,
      hashPartitions: () => this.hashPartitions,
      sendDeadLetters: (letters) => sendDeadLetters(this.dlq, config.sink.deadLetterTopic, letters, this.deadLetterBytes),
      log: this.log,
      onFatal,
    });
    metrics.budgetLimit.set({ scope: 'quota' }, this.budget.quota);
    this.status = new InstanceStatus(this.kafka, config.sink.statusTopic, () => this.report());
  }

  /** This instance as `pg2crm status` shows it (published on the status topic). */
  private report(): Omit<InstanceReport, 'instance' | 'host' | 'pid' | 'at'> {
    return {
      memberId: this.memberId,
      paused: this.pausedPartitions(),
      stalled: this.stalledPartitions(),
      budget: {
        quota: this.budget.quota,
        windowSeconds: this.budget.windowSeconds,
        share: Number(this.budget.fraction.toFixed(4)),
        limit: this.budget.limit(),
        used: this.budget.used(),
        dailyQuota: this.budget.dailyQuota ?? null,
      },
      circuit: this.breaker.state,
      inFlight: this.worker.inFlight.count,
    };
  }

  /** `topic/partition` of every partition paused by backpressure right now (status page). */
  pausedPartitions(): string[] {
    return this.worker.pausedPartitions();
  }

  /** `topic/partition` -> seconds its committed offset has stood still with messages waiting behind it. */
  stalledPartitions(now = Date.now()): Record<string, number> {
    return this.worker.stalledPartitions(now);
  }

  /** True once the consumer joined its group (readiness). */
  isJoined(): boolean {
    return this.joined;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const topics = [...this.mappingByTopic.keys()];
    await this.ensureSinkTopics(topics);
    await this.dlq.start();
    await this.share.start();
    await this.status.start();
    await this.consumer.connect();
    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      this.joined = true;
      this.memberId = e.payload.memberId;
      this.share.joined(e.payload.memberId);
      // Partitions may have moved here from another instance, which wrote meanwhile: what this
      // process remembers of those records (hashes, CRM ids, links) may be stale.
      this.hashes?.reload();
      this.worker.rebalanced();
      for (const lane of this.budget.lanes) for (const a of lane.adapters) a.forget?.();
    });
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      if (!e.payload.restart) this.onFatal?.(e.payload.error);
    });
    const concurrently = Math.max(1, Math.min(4, this.config.crm.limits.concurrency));
    const heapProblem = fetchHeapProblem(this.config.sink.fetchMaxBytesPerPartition, concurrently, getHeapStatistics().heap_size_limit);
    // A warning, not a refusal: a backlog this large may never come, and the heap limit is a guess of V8's.
    if (heapProblem) this.log.warn({ problem: heapProblem }, 'fetches may not fit in the heap');
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      eachBatchAutoResolve: false,
      autoCommit: true,
      // commitOffsetsIfNecessary() commits only when an interval is set; a long batch commits as it goes.
      autoCommitInterval: CHECKPOINT_MS,
      partitionsConsumedConcurrently: concurrently,
      eachBatch: (payload: EachBatchPayload) => this.worker.onBatch(payload),
    });
  }

  /** Creates the change, dead-letter, hash and status topics when missing; starts the hash store. */
  private async ensureSinkTopics(topics: string[]): Promise<void> {
    const { partitions, replicationFactor, maxMessageBytes } = this.config.kafka;
    await ensureTopics(this.kafka, topics, { partitions, replicationFactor, maxMessageBytes });
    // A dead letter carries the original value base64-encoded (4/3 of its size) plus the error.
    const dlqBytes = Math.ceil(maxMessageBytes * 1.4);
    await ensureTopics(this.kafka, [this.config.sink.deadLetterTopic], { partitions: 1, replicationFactor, maxMessageBytes: dlqBytes });
    // The topic may predate this config: letters must fit what the broker really accepts.
    this.deadLetterBytes = Math.min(dlqBytes, (await topicMaxMessageBytes(this.kafka, this.config.sink.deadLetterTopic)) ?? dlqBytes);
    if (this.hashes) {
      await ensureTopics(this.kafka, [this.config.sink.hashTopic], { partitions, replicationFactor, compacted: true });
      await this.hashes.start();
      const admin = this.kafka.admin();
      await admin.connect();
      this.hashPartitions = (await admin.fetchTopicOffsets(this.config.sink.hashTopic)).length;
      await admin.disconnect();
    }
    await ensureTopics(this.kafka, [this.config.sink.statusTopic], { partitions: 1, replicationFactor, compacted: true });
  }

  /** Lets the batch in progress finish, commits what is done, leaves the group. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.worker.stop();
    await this.consumer.disconnect().catch((err: unknown) => this.log.warn({ err }, 'consumer disconnect failed'));
    await this.share.stop();
    await this.status.stop();
    await this.hashes?.stop();
    await this.dlq.stop().catch(() => undefined);
    await this.budget.close();
  }
}
