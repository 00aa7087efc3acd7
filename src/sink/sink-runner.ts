import type { Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { Config, MappingConfig } from '../config.ts';
import type { CrmAdapter, CrmWrite, WriteOutcome } from '../crm/crm-adapter.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import { AvroCodec } from '../events/avro-codec.ts';
import type { ChangeEvent } from '../events/change-event.ts';
import { topicFor } from '../events/topic-router.ts';
import { createKafka, ensureTopics } from '../kafka/client.ts';
import { Publisher } from '../kafka/publisher.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../ops/metrics.ts';
import { compact, type CompactedWrite, type KeyedChange } from './compactor.ts';
import { type DeadLetter, deadLetterOf, sendDeadLetters } from './dead-letter.ts';
import { mapEvent } from './field-mapper.ts';
import { RateBudget } from './rate-budget.ts';

/**
 * The sink half: Kafka change topics -> compaction -> CRM writes under the rate budget.
 *
 * Offsets: `eachBatchAutoResolve` is off; an offset is resolved only when the write covering it
 * was accepted by the CRM or dead-lettered, and only in order (the lowest unfinished offset
 * stops resolution). kafkajs fetches again from the last resolved offset, so whatever was not
 * finished is delivered again: at-least-once, and a later change of a record never overtakes
 * an earlier one that is still being retried.
 *
 * Backpressure: nothing waits inside eachBatch for budget or Retry-After; the partition is
 * paused and a timer resumes it (a paused consumer keeps heartbeating and stays in the group).
 */
const MAX_BATCH_MILLIS = 10_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 60_000;

type SinkSlices = Pick<Config, 'kafka' | 'crm' | 'mappings' | 'sink'>;

interface Pending {
  group: CompactedWrite;
  write: CrmWrite;
  event: ChangeEvent | undefined;
}

export class SinkRunner {
  private readonly log = componentLogger('sink.runner');
  private readonly config: SinkSlices;
  private readonly adapter: CrmAdapter;
  private readonly codec: AvroCodec;
  private readonly kafka;
  private readonly consumer: Consumer;
  private readonly dlq: Publisher;
  private readonly budget: RateBudget;
  private readonly mappingByTopic = new Map<string, MappingConfig>();
  private readonly attempts = new Map<string, number>();
  private readonly resumeTimers = new Map<string, NodeJS.Timeout>();
  private readonly onFatal: ((err: Error) => void) | undefined;
  private started = false;
  private stopped = false;
  private joined = false;

  constructor(config: SinkSlices, adapter: CrmAdapter, onFatal?: (err: Error) => void) {
    this.config = config;
    this.adapter = adapter;
    this.onFatal = onFatal;
    this.codec = new AvroCodec(config.kafka.schemaRegistry);
    this.kafka = createKafka(config.kafka, 'sink');
    this.consumer = this.kafka.consumer({
      groupId: config.kafka.groupId,
      sessionTimeout: 30_000,
      heartbeatInterval: 3_000,
      allowAutoTopicCreation: false,
    });
    this.dlq = new Publisher(this.kafka);
    this.budget = new RateBudget(config.crm.limits);
    for (const m of config.mappings) {
      const [schema, table] = m.table.split('.') as [string, string];
      this.mappingByTopic.set(topicFor(config.kafka.topicPrefix, schema, table), m);
    }
  }

  /** True once the consumer joined its group (readiness). */
  isJoined(): boolean {
    return this.joined;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const topics = [...this.mappingByTopic.keys()];
    const { partitions, replicationFactor, maxMessageBytes } = this.config.kafka;
    await ensureTopics(this.kafka, topics, { partitions, replicationFactor, maxMessageBytes });
    // A dead letter carries the original value base64-encoded (4/3 of its size) plus the error.
    await ensureTopics(this.kafka, [this.config.sink.deadLetterTopic], { partitions: 1, replicationFactor, maxMessageBytes: Math.ceil(maxMessageBytes * 1.4) });
    await this.dlq.start();
    await this.consumer.connect();
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => {
      this.joined = true;
    });
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      if (!e.payload.restart) this.onFatal?.(e.payload.error);
    });
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      eachBatchAutoResolve: false,
      autoCommit: true,
      partitionsConsumedConcurrently: Math.max(1, Math.min(4, this.config.crm.limits.concurrency)),
      eachBatch: (payload) => this.onBatch(payload),
    });
  }

  private async onBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const mapping = this.mappingByTopic.get(batch.topic);
    if (!mapping || batch.messages.length === 0) return;
    const started = Date.now();
    const letters: DeadLetter[] = [];
    const events = new Map<bigint, ChangeEvent>();
    const changes: KeyedChange[] = [];
    const messages = new Map<bigint, KafkaMessage>();
    for (const message of batch.messages) {
      const offset = BigInt(message.offset);
      messages.set(offset, message);
      if (!message.value) {
        changes.push({ offset, write: null, creates: false }); // tombstone: nothing to write
        continue;
      }
      try {
        const event = await this.codec.decode(message.value);
        events.set(offset, event);
        changes.push({ offset, write: mapEvent(event, mapping), creates: event.op === 'c' || event.op === 'r' });
      } catch (err) {
        if (err instanceof ConnectorError && err.retriable) {
          // Registry unreachable: not the message's fault. Stop here and try again later.
          this.log.warn({ topic: batch.topic, partition: batch.partition, err: errorMessage(err) }, 'cannot decode yet; pausing');
          this.pauseFor(payload, this.backoff(this.bump(batch.topic, batch.partition, offset)));
          break;
        }
        // A poison message: it will never decode or map. Dead-letter it with the reason.
        const e = err instanceof ConnectorError ? err : new ConnectorError('DECODE', errorMessage(err));
        letters.push(
          deadLetterOf(batch.topic, batch.partition, message, {
            object: mapping.object,
            externalId: null,
            error: { code: e.code, message: e.message },
            attempts: 1,
          }),
        );
        changes.push({ offset, write: null, creates: false });
      }
    }
    metrics.eventsConsumed.inc(events.size);

    const done = new Set<bigint>();
    const deadOffsets = new Set(letters.map((l) => BigInt(l.offset)));
    const queue: Pending[] = [];
    for (const group of compact(changes)) {
      if (group.write) queue.push({ group, write: group.write, event: events.get(group.firstOffset) });
      else for (const o of group.offsets) if (!deadOffsets.has(o)) done.add(o);
    }

    let blocked = false;
    while (queue.length > 0 && !blocked) {
      if (!payload.isRunning() || payload.isStale() || Date.now() - started > MAX_BATCH_MILLIS) break;
      const calls = this.takeCalls(queue);
      metrics.budgetTokens.set(this.budget.available());
      if (calls.length === 0) {
        // Budget spent: pause until the window frees enough for the next call.
        this.pauseFor(payload, Math.max(50, this.budget.waitMs(this.adapter.cost(this.nextCall(queue).map((p) => p.write)))));
        break;
      }
      const results = await Promise.all(calls.map((c) => this.writeCall(c)));
      for (let i = 0; i < calls.length; i++) {
        const call = calls[i]!;
        const outcomes = results[i]!;
        call.forEach((p, j) => {
          const outcome = outcomes[j]!;
          if (this.settle(batch.topic, batch.partition, p, outcome, done, letters, messages)) return;
          blocked = true;
          const attempt = this.bump(batch.topic, batch.partition, p.group.firstOffset);
          const wait = outcome.status === 'retry' && outcome.retryAfterSeconds !== undefined ? outcome.retryAfterSeconds * 1000 : this.backoff(attempt);
          this.pauseFor(payload, wait);
        });
      }
      await payload.heartbeat();
    }

    if (letters.length) {
      await sendDeadLetters(this.dlq, this.config.sink.deadLetterTopic, letters);
      for (const l of letters) {
        done.add(BigInt(l.offset));
        metrics.deadLettered.inc({ object: l.object ?? 'unknown' });
      }
      this.log.warn({ count: letters.length, topic: batch.topic, partition: batch.partition }, 'records dead-lettered');
    }
    for (const message of batch.messages) {
      if (!done.has(BigInt(message.offset))) break;
      payload.resolveOffset(message.offset);
    }
    await payload.commitOffsetsIfNecessary();
  }

  /**
   * Removes from the queue up to `concurrency` calls the budget can pay for now, each of
   * consecutive writes to one object and at most the API's batch size.
   */
  private takeCalls(queue: Pending[]): Pending[][] {
    const calls: Pending[][] = [];
    while (queue.length > 0 && calls.length < this.config.crm.limits.concurrency) {
      const call = this.nextCall(queue);
      if (!this.budget.tryTake(this.adapter.cost(call.map((p) => p.write)))) break;
      queue.splice(0, call.length);
      calls.push(call);
    }
    return calls;
  }

  /** The writes at the head of the queue that one call can carry: same object, up to the API's batch size. */
  private nextCall(queue: Pending[]): Pending[] {
    const object = queue[0]!.write.object;
    const max = this.adapter.maxBatchSize(object);
    const call: Pending[] = [];
    for (let i = 0; i < queue.length && call.length < max && queue[i]!.write.object === object; i++) call.push(queue[i]!);
    return call;
  }

  private async writeCall(call: Pending[]): Promise<WriteOutcome[]> {
    const object = call[0]!.write.object;
    try {
      const outcomes = await this.adapter.write(
        call.map((p) => p.write),
        (signal) => {
          if (signal.throttled) metrics.throttles.inc();
          this.budget.observe(signal);
        },
      );
      metrics.crmRequests.inc({ object, outcome: 'ok' });
      return outcomes;
    } catch (err) {
      metrics.crmRequests.inc({ object, outcome: 'error' });
      if (err instanceof ConnectorError && !err.retriable) {
        // Bad credentials and the like: no retry can fix them; stop with a clear message.
        this.onFatal?.(err);
      }
      const e = err instanceof ConnectorError ? err : new ConnectorError('CRM_CALL', errorMessage(err), { retriable: true });
      return call.map(() => ({ status: 'retry', code: e.code, message: e.message, ...(e.retryAfterSeconds !== undefined ? { retryAfterSeconds: e.retryAfterSeconds } : {}) }));
    }
  }

  /** Applies a final outcome; returns false when the record must be retried (partition blocks there). */
  private settle(
    topic: string,
    partition: number,
    p: Pending,
    outcome: WriteOutcome,
    done: Set<bigint>,
    letters: DeadLetter[],
    messages: Map<bigint, KafkaMessage>,
  ): boolean {
    const attemptKey = `${topic}/${partition}/${p.group.firstOffset}`;
    if (outcome.status === 'done') {
      for (const o of p.group.offsets) done.add(o);
      this.attempts.delete(attemptKey);
      metrics.recordsWritten.inc({ object: p.write.object, op: p.write.op });
      if (p.event) metrics.endToEndSeconds.observe(Math.max(0, Date.now() - Number(p.event.source.commitTsMicros / 1000n)) / 1000);
      return true;
    }
    const attempts = (this.attempts.get(attemptKey) ?? 0) + 1;
    if (outcome.status === 'retry' && attempts < this.config.sink.maxAttempts) return false;
    this.attempts.delete(attemptKey);
    // Rejected by the CRM (or out of attempts): every message folded into this write goes to
    // the dead-letter topic, so a replay re-drives each original change.
    for (const o of p.group.offsets) {
      letters.push(
        deadLetterOf(topic, partition, messages.get(o)!, {
          object: p.write.object,
          externalId: p.write.externalId,
          error: { code: outcome.code, message: outcome.message, ...(outcome.status === 'rejected' && outcome.field ? { field: outcome.field } : {}) },
          attempts,
        }),
      );
    }
    return true;
  }

  private bump(topic: string, partition: number, offset: bigint): number {
    const key = `${topic}/${partition}/${offset}`;
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return n;
  }

  /** Exponential backoff with full jitter (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). */
  private backoff(attempt: number): number {
    return Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  }

  private pauseFor(payload: EachBatchPayload, ms: number): void {
    const id = `${payload.batch.topic}/${payload.batch.partition}`;
    if (this.resumeTimers.has(id)) return;
    const resume = payload.pause();
    metrics.pausedPartitions.inc();
    this.log.info({ topic: payload.batch.topic, partition: payload.batch.partition, ms: Math.round(ms) }, 'partition paused');
    const timer = setTimeout(() => {
      this.resumeTimers.delete(id);
      metrics.pausedPartitions.dec();
      if (!this.stopped) resume();
    }, Math.max(10, ms));
    this.resumeTimers.set(id, timer);
  }

  /** Lets the batch in progress finish, commits what is done, leaves the group. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.resumeTimers.values()) clearTimeout(t);
    this.resumeTimers.clear();
    await this.consumer.disconnect().catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'consumer disconnect failed'));
    await this.dlq.stop().catch(() => undefined);
    await this.adapter.close().catch(() => undefined);
  }
}
