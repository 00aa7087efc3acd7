import type { Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { Config, CrmCredential, MappingConfig } from '../config.ts';
import type { CrmAdapter, CrmWrite, RetryKind, WriteOutcome } from '../crm/crm-adapter.ts';
import { ConnectorError, errorMessage } from '../errors.ts';
import { AvroCodec } from '../events/avro-codec.ts';
import type { ChangeEvent } from '../events/change-event.ts';
import { topicFor } from '../events/topic-router.ts';
import { createKafka, ensureTopics, topicMaxMessageBytes } from '../kafka/client.ts';
import { Publisher } from '../kafka/publisher.ts';
import { componentLogger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { compact, type CompactedWrite, type KeyedChange } from './compactor.ts';
import { type DeadLetter, deadLetterOf, sendDeadLetters } from './dead-letter.ts';
import { BatchSizer } from './batch-sizer.ts';
import { BudgetShare } from './budget-share.ts';
import { CircuitBreaker } from './circuit-breaker.ts';
import { InstanceStatus } from './instance-status.ts';
import { heldLookups, mapEvent, touchesMapping } from './field-mapper.ts';
import { type Lane, QuotaLanes } from './quota-lanes.ts';
import type { Spent } from './rate-budget.ts';
import { WrittenHashes } from './written-hashes.ts';

/**
 * The sink half: Kafka change topics -> compaction -> CRM writes under the rate budget.
 *
 * Offsets: `eachBatchAutoResolve` is off; an offset is resolved only when the write covering it
 * was accepted by the CRM or dead-lettered, and only in order (the lowest unfinished offset
 * stops resolution). kafkajs fetches again from the last resolved offset, so whatever was not
 * finished is delivered again: at-least-once, and a later change of a record never overtakes
 * an earlier one that is still being retried.
 *
 * Backpressure: a Retry-After, an open circuit or a budget that frees in more than SHORT_WAIT_MS
 * pauses the partition and a timer resumes it (a paused consumer keeps heartbeating and stays in
 * the group). Shorter budget waits, waits for a free in-flight slot and long calls (Bulk API
 * jobs) happen inside eachBatch, heartbeating. Memory stays bounded by what one fetch returns.
 *
 * Budget: one RateBudget per process, its share of the credential's quota set by BudgetShare
 * from the group's assignment and lag (see budget-share.ts); mapping priorities order who gets
 * scarce budget. A CircuitBreaker stops all calls while the CRM keeps failing.
 */
/**
 * A fetched batch is worked on while it has work, up to this long (the next fetch and decode
 * cost a pause in writing), committing what is done every CHECKPOINT_MS; a rebalance or stop
 * ends it at once.
 */
const MAX_BATCH_MILLIS = 120_000;
const CHECKPOINT_MS = 2_000;
/**
 * Budget waits up to this long happen inside eachBatch (heartbeating); longer ones pause the
 * partition. A rolling window frees calls one by one as old ones age out, often every few
 * milliseconds: a pause costs a resume, a fetch and a decode each time, which at full load is
 * the difference between using the quota and leaving a tenth of it unused.
 */
const SHORT_WAIT_MS = 5_000;
/** Longest sleep between heartbeats while waiting inside eachBatch (heartbeat interval is 3 s). */
const HEARTBEAT_SLICE_MS = 2_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 60_000;
/** Per-record retry codes that mean the CRM itself is failing (not a throttle, not the record). */
const SERVER_FAILURE = /^(CRM_)?HTTP_5\d\d$|UNREACHABLE|UNAVAILABLE|TIMEOUT|BAD_RESPONSE/;

/** The CRM itself is failing (5xx, no answer, an answer that is not its documented shape). */
function serverFailure(o: WriteOutcome): boolean {
  return o.status === 'retry' && (o.kind === 'server' || o.kind === 'timeout' || o.kind === 'bad-response' || SERVER_FAILURE.test(o.code));
}

type SinkSlices = Pick<Config, 'kafka' | 'crm' | 'mappings' | 'sink'>;

interface Pending {
  group: CompactedWrite;
  write: CrmWrite;
  event: ChangeEvent | undefined;
}

type Call = Pending[] & { spent?: Spent; lane?: Lane; adapter?: CrmAdapter };

export class SinkRunner {
  private readonly log = componentLogger('sink.runner');
  private readonly config: SinkSlices;
  /** Any of the credentials' adapters, for batch sizes and costs. */
  private readonly adapter: CrmAdapter;
  private readonly codec: AvroCodec;
  private readonly kafka;
  private readonly consumer: Consumer;
  private readonly dlq: Publisher;
  private readonly budget: QuotaLanes;
  private readonly share: BudgetShare;
  private readonly breaker = new CircuitBreaker();
  private readonly sizer: BatchSizer;
  private readonly hashes: WrittenHashes | undefined;
  private hashPartitions = 1;
  /** Largest letter the dead-letter topic accepts (its max.message.bytes). */
  private deadLetterBytes = 1024 * 1024;
  /**
   * `topic/partition` -> since when its committed offset has not moved although messages wait
   * behind it (a record retried without end, a poison message): `pg2crm status` shows it.
   */
  private readonly stuckSince = new Map<string, number>();
  private readonly status: InstanceStatus;
  private memberId: string | null = null;
  private inFlight = 0;
  private readonly slotWaiters = new Set<() => void>();
  private readonly mappingByTopic = new Map<string, MappingConfig>();
  private readonly attempts = new Map<string, number>();
  /** When a record's lookup was first found pending (`sink.lookupPendingSeconds` counts from there). */
  private readonly pendingSince = new Map<string, number>();
  private readonly resumeTimers = new Map<string, NodeJS.Timeout>();
  private readonly lingering = new Set<string>();
  private readonly onFatal: ((err: Error) => void) | undefined;
  private started = false;
  private stopped = false;
  private joined = false;

  constructor(config: SinkSlices, adapterFor: (credential: CrmCredential) => CrmAdapter, onFatal?: (err: Error) => void) {
    this.config = config;
    this.budget = new QuotaLanes(config.crm, adapterFor);
    const adapter = this.budget.adapter;
    this.adapter = adapter;
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
      // Larger fetches compact more changes per key into one write and fill calls.
      maxBytesPerPartition: config.sink.fetchMaxBytesPerPartition,
      maxBytes: Math.max(10 * 1024 * 1024, 4 * config.sink.fetchMaxBytesPerPartition),
      allowAutoTopicCreation: false,
    });
    this.dlq = new Publisher(this.kafka);
    this.sizer = new BatchSizer((object) => adapter.maxBatchSize(object), config.crm.timeoutMs / 3);
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
    this.hashes = config.sink.noopSkip ? new WrittenHashes(this.kafka, config.sink.hashTopic, config.kafka.groupId) : undefined;
    metrics.budgetLimit.set({ scope: 'quota' }, this.budget.quota);
    this.status = new InstanceStatus(this.kafka, config.sink.statusTopic, () => ({
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
      inFlight: this.inFlight,
    }));
  }

  /** `topic/partition` of every partition paused by backpressure right now (status page). */
  pausedPartitions(): string[] {
    return [...this.resumeTimers.keys()].filter((id) => !this.lingering.has(id));
  }

  /** `topic/partition` -> seconds its committed offset has stood still with messages waiting behind it. */
  stalledPartitions(now = Date.now()): Record<string, number> {
    return Object.fromEntries([...this.stuckSince].map(([id, since]) => [id, Math.round((now - since) / 1000)]));
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
      this.stuckSince.clear();
      for (const lane of this.budget.lanes) for (const a of lane.adapters) a.forget?.();
    });
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      if (!e.payload.restart) this.onFatal?.(e.payload.error);
    });
    await this.consumer.subscribe({ topics, fromBeginning: true });
    await this.consumer.run({
      eachBatchAutoResolve: false,
      autoCommit: true,
      // commitOffsetsIfNecessary() commits only when an interval is set; a long batch commits as it goes.
      autoCommitInterval: CHECKPOINT_MS,
      partitionsConsumedConcurrently: Math.max(1, Math.min(4, this.config.crm.limits.concurrency)),
      eachBatch: (payload) => this.onBatch(payload),
    });
  }

  private async onBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const mapping = this.mappingByTopic.get(batch.topic);
    if (!mapping || batch.messages.length === 0) return;
    const max = this.sizer.size(mapping.object);
    const age = Date.now() - Number(batch.messages[0]!.timestamp);
    if (max > 1 && batch.messages.length < max && age < this.config.sink.lingerMs) {
      // Linger: fewer changes than one call can carry, and the oldest is younger than lingerMs:
      // let more arrive so the call is fuller (quota is spent per call, not per record).
      this.pauseFor(payload, this.config.sink.lingerMs - age, 'linger');
      return;
    }
    if (this.hashes && !this.hashes.ready()) {
      // The written-hash store is (re)loading after a rebalance: skipping against stale hashes
      // could drop a needed write.
      this.pauseFor(payload, 200);
      return;
    }
    const started = Date.now();
    const letters: DeadLetter[] = [];
    const events = new Map<bigint, ChangeEvent>();
    const changes: KeyedChange[] = [];
    const messages = new Map<bigint, KafkaMessage>();
    for (const message of batch.messages) {
      const offset = BigInt(message.offset);
      messages.set(offset, message);
      if (!message.value) {
        changes.push({ offset, write: null, restore: false }); // tombstone: nothing to write
        continue;
      }
      try {
        const event = await this.codec.decode(message.value);
        events.set(offset, event);
        if (!touchesMapping(event, mapping)) {
          // An update of columns the CRM does not get (REPLICA IDENTITY FULL says which changed).
          metrics.noopSkipped.inc({ object: mapping.object });
          changes.push({ offset, write: null, restore: false });
          continue;
        }
        // A snapshot row may be there to restore a CRM that lost its records: never a no-op.
        const held = heldLookups(event, mapping);
        changes.push({ offset, write: mapEvent(event, mapping), restore: event.op === 'r', ...(held ? { held } : {}) });
      } catch (err) {
        if (err instanceof ConnectorError && err.retriable) {
          // Registry unreachable: not the message's fault. Stop here and try again later.
          this.log.warn({ topic: batch.topic, partition: batch.partition, err }, 'cannot decode yet; pausing');
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
        changes.push({ offset, write: null, restore: false });
      }
    }
    metrics.eventsConsumed.inc(events.size);

    const done = new Set<bigint>();
    const deadOffsets = new Set(letters.map((l) => BigInt(l.offset)));
    const queue: Pending[] = [];
    const allFields = Object.keys(mapping.fields).length;
    for (const group of compact(changes)) {
      if (group.write && !group.restore && this.hashes?.unchanged(group.write, allFields)) {
        // The CRM already holds exactly these values (written earlier by pg2crm). Not for a
        // snapshot row: `pg2crm snapshot` after a CRM wipe must write what the hashes say is there.
        metrics.noopSkipped.inc({ object: mapping.object }, group.offsets.length);
        for (const o of group.offsets) done.add(o);
      } else if (group.write) queue.push({ group, write: group.write, event: events.get(group.firstOffset) });
      else for (const o of group.offsets) if (!deadOffsets.has(o)) done.add(o);
    }

    const who = `${batch.topic}/${batch.partition}`;
    const written: { write: CrmWrite; full: boolean }[] = [];
    let resolvedUpTo = 0;
    let lastCheckpoint = Date.now();
    // Makes what is done durable and commits it: hashes and dead letters first, then offsets up
    // to the first unfinished message. Runs every few seconds of a long batch and at its end.
    const checkpoint = async (): Promise<void> => {
      lastCheckpoint = Date.now();
      // The hashes must be durable before the offsets that produced them are committed.
      if (this.hashes && written.length) await this.hashes.remember(batch.partition % this.hashPartitions, written.splice(0));
      if (letters.length) {
        const sent = letters.splice(0);
        await sendDeadLetters(this.dlq, this.config.sink.deadLetterTopic, sent, this.deadLetterBytes);
        for (const l of sent) {
          done.add(BigInt(l.offset));
          metrics.deadLettered.inc({ object: l.object ?? 'unknown' });
        }
        this.log.warn({ count: sent.length, topic: batch.topic, partition: batch.partition }, 'records dead-lettered');
      }
      const before = resolvedUpTo;
      for (; resolvedUpTo < batch.messages.length; resolvedUpTo++) {
        const message = batch.messages[resolvedUpTo]!;
        if (!done.has(BigInt(message.offset))) break;
        payload.resolveOffset(message.offset);
      }
      if (resolvedUpTo > before || resolvedUpTo === batch.messages.length) this.stuckSince.delete(who);
      else if (!this.stuckSince.has(who)) this.stuckSince.set(who, started);
      await payload.commitOffsetsIfNecessary();
    };
    let blocked = false;
    if (this.hashes && queue.length > 0) {
      try {
        await this.hashes.forgetBeforeWrite(batch.partition % this.hashPartitions, queue.map((p) => p.write));
      } catch (err) {
        // Nothing is sent while a stale hash could survive it; the partition tries again later.
        this.log.warn({ topic: batch.topic, partition: batch.partition, err }, 'cannot update the written-hash store; partition paused');
        this.pauseFor(payload, this.backoff(this.bump(batch.topic, batch.partition, queue[0]!.group.firstOffset, 'wait')));
        blocked = true;
      }
    }
    while (queue.length > 0 && !blocked) {
      if (!payload.isRunning() || payload.isStale() || Date.now() - started > MAX_BATCH_MILLIS) break;
      const circuitWait = this.breaker.waitMs();
      if (circuitWait > 0) {
        this.pauseFor(payload, circuitWait);
        break;
      }
      if (this.inFlight >= this.slots()) {
        // Every in-flight slot is taken by other partitions' calls, which take milliseconds to
        // seconds: wait for one here (heartbeating) rather than pause, which costs a fetch.
        await this.slotFreed(1_000);
        await payload.heartbeat();
        continue;
      }
      const calls = this.takeCalls(queue, mapping.priority, who);
      this.updateBudgetMetrics();
      if (calls.length === 0) {
        // Budget spent or circuit half-open with its probe out: wait for the window to free
        // enough for the next call — here when that is soon, else paused.
        const next = this.nextCall(queue).map((p) => p.write);
        const wait = Math.max(this.budget.waitMs(next), this.breaker.waitMs());
        if (wait <= SHORT_WAIT_MS && Date.now() - started + wait < MAX_BATCH_MILLIS) {
          const until = Date.now() + Math.max(5, wait);
          while (Date.now() < until && payload.isRunning() && !payload.isStale()) {
            await new Promise((r) => setTimeout(r, Math.min(HEARTBEAT_SLICE_MS, until - Date.now())));
            await payload.heartbeat();
          }
          continue;
        }
        this.pauseFor(payload, Math.max(50, wait));
        break;
      }
      // A call can last minutes (a Bulk API job is polled until it ends): every response it
      // gets keeps the consumer's session alive (kafkajs heartbeats only when asked).
      const beat = (): void => void payload.heartbeat().catch(() => undefined);
      const results = await Promise.all(calls.map((c) => this.writeCall(c, beat)));
      for (let i = 0; i < calls.length; i++) {
        const call = calls[i]!;
        const outcomes = results[i]!;
        call.forEach((p, j) => {
          const outcome = outcomes[j]!;
          if (outcome.status === 'done') written.push({ write: p.write, full: p.write.op === 'upsert' && Object.keys(p.write.fields).length >= allFields });
          if (this.settle(batch.topic, batch.partition, p, outcome, done, letters, messages)) return;
          blocked = true;
          // A throttle is the CRM's budget, never the record's fault: it is not an attempt (a
          // record meeting many 3600 s lockouts must not end in the dead-letter topic). Nor is a
          // lookup still pending: the linked record is written by another partition, later.
          const throttle = outcome.status === 'retry' && outcome.kind === 'throttle';
          const pending = outcome.status === 'retry' && outcome.kind === 'pending';
          const attempt = this.bump(batch.topic, batch.partition, p.group.firstOffset, throttle || pending ? 'wait' : 'attempt');
          const wait =
            outcome.status === 'retry' && outcome.retryAfterSeconds !== undefined
              ? outcome.retryAfterSeconds * 1000
              : throttle
                ? Math.max(this.budget.waitMs([p.write]), this.backoff(Math.min(attempt, 6)))
                : this.backoff(pending ? Math.min(attempt, 6) : attempt);
          if (!this.resumeTimers.has(`${batch.topic}/${batch.partition}`)) {
            this.log.info(
              { topic: batch.topic, partition: batch.partition, offset: String(p.group.firstOffset), attempt, code: outcome.status === 'retry' ? outcome.code : undefined, ms: Math.round(wait) },
              'record to be retried; partition paused',
            );
          }
          this.pauseFor(payload, wait);
        });
      }
      await payload.heartbeat();
      if (Date.now() - lastCheckpoint > CHECKPOINT_MS) await checkpoint();
    }
    if (queue.length === 0) this.budget.withdraw(who);
    this.updateBudgetMetrics();
    await checkpoint();
  }

  /**
   * Removes from the queue up to `concurrency` calls the budget can pay for now, each of
   * consecutive writes to one object and at most the API's batch size.
   */
  private takeCalls(queue: Pending[], priority: number, who: string): Call[] {
    const calls: Call[] = [];
    const slots = this.slots();
    while (queue.length > 0 && this.inFlight + calls.length < slots) {
      const call: Call = this.nextCall(queue);
      if (this.breaker.state !== 'closed' && this.breaker.waitMs() > 0) break;
      const taken = this.budget.take(call.map((p) => p.write), { priority, who });
      if (!taken) break;
      if (!this.breaker.tryAcquire()) {
        // Half-open with its probe out: the call is not sent.
        taken.lane.budget.refund(taken.spent);
        break;
      }
      call.spent = taken.spent;
      call.lane = taken.lane;
      call.adapter = taken.adapter;
      queue.splice(0, call.length);
      calls.push(call);
    }
    return calls;
  }

  /**
   * In-flight calls allowed for the whole process: this instance's share of the CRM's
   * concurrency limit, scaled down while the circuit breaker ramps back up.
   */
  private slots(): number {
    const share = Math.max(this.budget.fraction, 1 / this.config.crm.limits.concurrency);
    return Math.max(1, Math.floor(this.config.crm.limits.concurrency * share * this.breaker.restore()));
  }

  private slotFreed(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const waiters = this.slotWaiters;
      function done(): void {
        clearTimeout(timer);
        waiters.delete(done);
        resolve();
      }
      waiters.add(done);
    });
  }

  private updateBudgetMetrics(): void {
    metrics.budgetTokens.set(this.budget.available());
    metrics.budgetLimit.set({ scope: 'instance' }, this.budget.limit());
    metrics.budgetUsed.set({ scope: 'instance' }, this.budget.used());
    metrics.circuitState.set({ closed: 0, 'half-open': 1, open: 2 }[this.breaker.state]);
  }

  /** The writes at the head of the queue that one call can carry: same object, up to the API's batch size. */
  private nextCall(queue: Pending[]): Pending[] {
    const object = queue[0]!.write.object;
    const max = this.sizer.size(object);
    let call: Pending[] = [];
    for (let i = 0; i < queue.length && call.length < max && queue[i]!.write.object === object; i++) call.push(queue[i]!);
    // A call must fit what the budget can pay at once, or it could never be paid for (Zoho
    // charges per 10 records; a small share of a small quota is less than a full call).
    const limit = Math.floor(this.budget.maxCallCost());
    if (limit >= 1) {
      for (let cost = this.budget.cost(call.map((p) => p.write)).requests; call.length > 1 && cost > limit; ) {
        call = call.slice(0, Math.max(1, Math.floor((call.length * limit) / cost)));
        cost = this.budget.cost(call.map((p) => p.write)).requests;
      }
    }
    return call;
  }

  private async writeCall(call: Call, heartbeat: () => void): Promise<WriteOutcome[]> {
    const object = call[0]!.write.object;
    const t0 = Date.now();
    this.inFlight++;
    metrics.inFlight.set(this.inFlight);
    metrics.batchSize.observe({ object }, call.length);
    let throttled = false;
    try {
      const outcomes = await (call.adapter ?? this.adapter).write(
        call.map((p) => p.write),
        (signal) => {
          if (signal.throttled) {
            throttled = true;
            metrics.throttles.inc();
          }
          call.lane?.budget.observe(signal);
          heartbeat();
        },
      );
      metrics.crmRequests.inc({ object, outcome: 'ok' });
      // A throttle is not the CRM failing: the budget handles it; the breaker only sees health.
      // Single-record APIs report a server error per record: all records failing so counts as
      // the call failing.
      if (!throttled) {
        if (outcomes.length > 0 && outcomes.every(serverFailure)) {
          if (this.breaker.onFailure(outcomes.some((o) => o.status === 'retry' && (o.kind === 'timeout' || /TIMEOUT/.test(o.code))) ? 'timeout' : 'error')) {
            this.log.warn({ object, code: (outcomes[0] as { code: string }).code, retryTokens: this.breaker.retryTokens }, 'CRM failing; circuit open, all partitions pause');
          }
        } else this.breaker.onSuccess();
      }
      this.sizer.observe(object, call.length, Date.now() - t0, false);
      // Records of a throttled call that must be retried were throttled, whatever the adapter called them.
      return throttled ? outcomes.map((o) => (o.status === 'retry' && o.kind === undefined ? { ...o, kind: 'throttle' } : o)) : outcomes;
    } catch (err) {
      metrics.crmRequests.inc({ object, outcome: 'error' });
      const code = err instanceof ConnectorError ? err.code : '';
      const tooLarge = /TOO_LARGE|413/.test(code);
      this.sizer.observe(object, call.length, Date.now() - t0, tooLarge);
      if (!throttled && err instanceof ConnectorError && err.retriable && !tooLarge) {
        if (this.breaker.onFailure(/TIMEOUT/.test(code) ? 'timeout' : 'error')) {
          this.log.warn({ object, err, retryTokens: this.breaker.retryTokens }, 'CRM failing; circuit open, all partitions pause');
        }
      }
      if (err instanceof ConnectorError && !err.retriable) {
        // Bad credentials and the like: no retry can fix them; stop with a clear message.
        this.onFatal?.(err);
      }
      const e = err instanceof ConnectorError ? err : new ConnectorError('CRM_CALL', errorMessage(err), { retriable: true });
      const kind: RetryKind = throttled ? 'throttle' : /TIMEOUT/.test(e.code) ? 'timeout' : e.code === 'CRM_BAD_RESPONSE' ? 'bad-response' : 'server';
      return call.map(() => ({ status: 'retry', code: e.code, message: e.message, kind, ...(e.retryAfterSeconds !== undefined ? { retryAfterSeconds: e.retryAfterSeconds } : {}) }));
    } finally {
      if (call.spent) call.lane?.budget.complete(call.spent);
      this.inFlight--;
      metrics.inFlight.set(this.inFlight);
      for (const wake of [...this.slotWaiters]) wake();
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
      this.forget(attemptKey);
      metrics.recordsWritten.inc({ object: p.write.object, op: p.write.op });
      if (p.event) metrics.endToEndSeconds.observe(Math.max(0, Date.now() - Number(p.event.source.commitTsMicros / 1000n)) / 1000);
      return true;
    }
    if (outcome.status === 'retry' && outcome.kind === 'throttle') return false;
    const attempts = (this.attempts.get(attemptKey) ?? 0) + 1;
    if (outcome.status === 'retry' && outcome.kind === 'pending') {
      const since = this.pendingSince.get(attemptKey) ?? Date.now();
      this.pendingSince.set(attemptKey, since);
      if (Date.now() - since < this.config.sink.lookupPendingSeconds * 1000) return false;
    } else if (outcome.status === 'retry' && attempts < this.config.sink.maxAttempts) return false;
    // During an outage (circuit not closed) a server failure is not the record's fault: keep it
    // until the CRM is back rather than dead-letter everything in flight. A record that keeps
    // failing while other calls succeed is dead-lettered as usual.
    if (serverFailure(outcome) && this.breaker.state !== 'closed') return false;
    this.forget(attemptKey);
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

  private forget(attemptKey: string): void {
    this.attempts.delete(attemptKey);
    this.attempts.delete(`${attemptKey}/wait`);
    this.pendingSince.delete(attemptKey);
  }

  /** Counts a failed attempt at a record, or apart (`wait`: a throttle, a store that failed) what only lengthens the backoff. */
  private bump(topic: string, partition: number, offset: bigint, what: 'attempt' | 'wait' = 'attempt'): number {
    const key = what === 'attempt' ? `${topic}/${partition}/${offset}` : `${topic}/${partition}/${offset}/wait`;
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return n;
  }

  /** Exponential backoff with full jitter (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). */
  private backoff(attempt: number): number {
    return Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  }

  /** Pauses the partition for `ms`; a linger pause (waiting for fuller calls) is not backpressure and is not reported as paused. */
  private pauseFor(payload: EachBatchPayload, ms: number, why: 'backpressure' | 'linger' = 'backpressure'): void {
    const id = `${payload.batch.topic}/${payload.batch.partition}`;
    if (this.resumeTimers.has(id)) return;
    const resume = payload.pause();
    const counted = why === 'backpressure';
    if (counted) {
      metrics.pausedPartitions.inc();
      this.log.debug({ topic: payload.batch.topic, partition: payload.batch.partition, ms: Math.round(ms) }, 'partition paused');
    } else this.lingering.add(id);
    const timer = setTimeout(() => {
      this.resumeTimers.delete(id);
      if (counted) metrics.pausedPartitions.dec();
      else this.lingering.delete(id);
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
    await this.consumer.disconnect().catch((err: unknown) => this.log.warn({ err }, 'consumer disconnect failed'));
    await this.share.stop();
    await this.status.stop();
    await this.hashes?.stop();
    await this.dlq.stop().catch(() => undefined);
    await this.budget.close();
  }
}
