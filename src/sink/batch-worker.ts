import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { Config, MappingConfig } from '../config.ts';
import type { CrmAdapter, WriteOutcome } from '../crm/crm-adapter.ts';
import type { AvroCodec } from '../events/avro-codec.ts';
import type { Logger } from '../logger.ts';
import { metrics } from '../metrics.ts';
import { type DecodedBatch, decodeBatch, messageAt } from './batch-decoder.ts';
import type { BatchSizer } from './batch-sizer.ts';
import { type Call, CallPlanner, InFlight, type Pending } from './call-planner.ts';
import { CallWriter } from './call-writer.ts';
import { HashLoadWait } from './hash-load-wait.ts';
import type { CircuitBreaker } from './circuit-breaker.ts';
import type { DeadLetter } from './dead-letter.ts';
import { OffsetTracker, StallWatch } from './offset-tracker.ts';
import { OutcomePolicy } from './outcome-policy.ts';
import { PartitionPauser } from './partition-pauser.ts';
import type { QuotaLanes } from './quota-lanes.ts';
import type { WrittenHashes } from './written-hashes.ts';

/**
 * A fetched batch is worked on while it has work, up to this long (the next fetch and decode cost
 * a pause in writing), committing what is done every CHECKPOINT_MS; a rebalance or stop ends it.
 */
const MAX_BATCH_MILLIS = 120_000;
/**
 * Budget waits up to this long happen inside eachBatch (heartbeating); longer ones pause the
 * partition. A rolling window frees calls one by one as old ones age out, often every few ms: a
 * pause costs a resume, a fetch and a decode each time, a tenth of the quota at full load.
 */
const SHORT_WAIT_MS = 5_000;
/** Longest sleep between heartbeats while waiting inside eachBatch (heartbeat interval is 3 s). */
const HEARTBEAT_SLICE_MS = 2_000;

export interface BatchWorkerDeps {
  sink: Pick<Config['sink'], 'lingerMs' | 'maxAttempts' | 'lookupPendingSeconds'>;
  /** The CRM's concurrency limit (crm.limits.concurrency), for all instances together. */
  concurrency: number;
  budget: QuotaLanes;
  breaker: CircuitBreaker;
  sizer: BatchSizer;
  /** Any of the credentials' adapters, for a call that holds none. */
  adapter: CrmAdapter;
  codec: Pick<AvroCodec, 'decode'>;
  mappingFor: (topic: string) => MappingConfig | undefined;
  hashes: WrittenHashes | undefined;
  /** Partitions of the hash topic (known once it exists). */
  hashPartitions: () => number;
  sendDeadLetters: (letters: DeadLetter[]) => Promise<void>;
  log: Logger;
  onFatal?: ((err: Error) => void) | undefined;
}

/** One batch being worked on. */
interface BatchRun {
  payload: EachBatchPayload;
  mapping: MappingConfig;
  /** `topic/partition`: the caller's name in the budget's demand records. */
  who: string;
  started: number;
  tracker: OffsetTracker;
  /** The batch's messages, ascending offsets (for dead letters). */
  messages: KafkaMessage[];
  /** Mapped fields of the mapping: a write carrying them all may be skipped by its hash later. */
  allFields: number;
}

/**
 * The story of one fetched batch (kafkajs' eachBatch): decode, compact, send calls under the
 * budget, apply each record's outcome, commit what is done. The parts it uses each own one
 * concern; see sink-runner.ts for the whole.
 */
export class BatchWorker {
  readonly inFlight = new InFlight();
  private readonly deps: BatchWorkerDeps;
  private readonly log: Logger;
  private readonly pauser: PartitionPauser;
  private readonly planner: CallPlanner;
  private readonly writer: CallWriter;
  private readonly policy: OutcomePolicy;
  private readonly stalls = new StallWatch();
  private readonly hashLoad = new HashLoadWait();

  constructor(deps: BatchWorkerDeps) {
    this.deps = deps;
    this.log = deps.log;
    this.pauser = new PartitionPauser(deps.log);
    const { budget, breaker, sizer, adapter, log, onFatal, concurrency } = deps;
    const inFlight = this.inFlight;
    this.planner = new CallPlanner({ budget, breaker, sizer, inFlight, concurrency });
    this.writer = new CallWriter({ adapter, breaker, sizer, inFlight, log, onFatal });
    const { maxAttempts, lookupPendingSeconds } = deps.sink;
    this.policy = new OutcomePolicy({ maxAttempts, lookupPendingSeconds, breaker, budgetWaitMs: (writes) => budget.waitMs(writes) });
  }

  /** `topic/partition` of every partition paused by backpressure right now (status page). */
  pausedPartitions(): string[] {
    return this.pauser.paused();
  }

  /** `topic/partition` -> seconds its committed offset has stood still with messages waiting behind it. */
  stalledPartitions(now = Date.now()): Record<string, number> {
    return this.stalls.stalled(now);
  }

  /** The group rebalanced: partitions may have moved, their stall times start anew, and so does the wait for the hash store. */
  rebalanced(): void {
    this.stalls.clear();
    this.hashLoad.reset();
  }

  /** The consumer is leaving: no paused partition is resumed. */
  stop(): void {
    this.pauser.stop();
  }

  /** One fetched batch: decode, compact, write under the budget, commit what is done. */
  async onBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const mapping = this.deps.mappingFor(batch.topic);
    if (!mapping || batch.messages.length === 0 || this.holdBack(payload, mapping)) return;
    const started = Date.now();
    const tracker = this.trackerFor(payload);
    const decoded = await decodeBatch(batch, mapping, (value) => this.deps.codec.decode(value));
    if (decoded.stoppedAt) {
      // Registry unreachable: not the message's fault. Stop there and try again later.
      const { offset, err } = decoded.stoppedAt;
      this.log.warn({ topic: batch.topic, partition: batch.partition, err }, 'cannot decode yet; pausing');
      this.pauser.pause(payload, this.policy.backoff(this.policy.bump(batch.topic, batch.partition, offset)));
    }
    metrics.eventsConsumed.inc(decoded.events);
    tracker.deadLetter(decoded.letters);
    const queue = this.queueOf(decoded, mapping, tracker);
    const who = `${batch.topic}/${batch.partition}`;
    const allFields = Object.keys(mapping.fields).length;
    const run: BatchRun = { payload, mapping, who, started, tracker, messages: batch.messages, allFields };
    if (await this.forgetHashes(run, queue)) await this.drain(run, queue);
    if (queue.length === 0) this.deps.budget.withdraw(who);
    this.updateBudgetMetrics();
    await tracker.checkpoint();
  }

  /** True when the batch is left for later: too small to fill a call yet (linger), or the hash store is loading. */
  private holdBack(payload: EachBatchPayload, mapping: MappingConfig): boolean {
    const { messages } = payload.batch;
    const { lingerMs } = this.deps.sink;
    const max = this.deps.sizer.size(mapping.object);
    const age = Date.now() - Number(messages[0]!.timestamp);
    if (max > 1 && messages.length < max && age < lingerMs) {
      // Linger: fewer changes than one call can carry, and the oldest is younger than lingerMs:
      // let more arrive so the call is fuller (quota is spent per call, not per record).
      this.pauser.pause(payload, lingerMs - age, 'linger');
      return true;
    }
    // A written-hash store (re)loading after a rebalance: wait for its skips, not long (hash-load-wait.ts).
    if (this.hashLoad.waitMore(this.deps.hashes !== undefined && !this.deps.hashes.ready(), this.log)) {
      this.pauser.pause(payload, 200);
      return true;
    }
    return false;
  }

  private trackerFor(payload: EachBatchPayload): OffsetTracker {
    const { hashes } = this.deps;
    const hashPartition = payload.batch.partition % this.deps.hashPartitions();
    return new OffsetTracker(payload, {
      rememberHashes: hashes && ((written) => hashes.remember(hashPartition, written)),
      sendDeadLetters: this.deps.sendDeadLetters,
      stalls: this.stalls,
      log: this.log,
    });
  }

  /** The compacted writes to send; what needs no call (no-ops, tombstones) is done at once. */
  private queueOf(decoded: DecodedBatch, mapping: MappingConfig, tracker: OffsetTracker): Pending[] {
    const queue: Pending[] = [];
    const allFields = Object.keys(mapping.fields).length;
    for (const group of decoded.writes) {
      if (group.write && !group.restore && this.deps.hashes?.unchanged(group.write, allFields)) {
        // The CRM already holds exactly these values (written earlier by pg2crm). Not for a
        // snapshot row: `pg2crm snapshot` after a CRM wipe must write what the hashes say is there.
        metrics.noopSkipped.inc({ object: mapping.object }, group.offsets.length);
        tracker.finish(group.offsets);
      } else if (group.write) queue.push({ group, write: group.write });
      else tracker.finish(group.offsets.filter((o) => !tracker.awaitsDeadLetter(o)));
    }
    return queue;
  }

  /** Drops the stored hashes of the records about to be written; false (partition paused) when the store failed. */
  private async forgetHashes(run: BatchRun, queue: Pending[]): Promise<boolean> {
    const { hashes } = this.deps;
    if (!hashes || queue.length === 0) return true;
    const { topic, partition } = run.payload.batch;
    const writes = queue.map((p) => p.write);
    try {
      await hashes.forgetBeforeWrite(partition % this.deps.hashPartitions(), writes);
      return true;
    } catch (err) {
      // Nothing is sent while a stale hash could survive it; the partition tries again later.
      this.log.warn({ topic, partition, err }, 'cannot update the written-hash store; partition paused');
      this.pauser.pause(run.payload, this.policy.backoff(this.policy.bump(topic, partition, queue[0]!.group.firstOffset, 'wait')));
      return false;
    }
  }

  /** Sends the queue in calls as budget, slots and circuit allow, until it is empty, blocked or the batch must end. */
  private async drain(run: BatchRun, queue: Pending[]): Promise<void> {
    const { payload } = run;
    while (queue.length > 0) {
      if (!payload.isRunning() || payload.isStale() || Date.now() - run.started > MAX_BATCH_MILLIS) return;
      const circuitWait = this.deps.breaker.waitMs();
      if (circuitWait > 0) {
        this.pauser.pause(payload, circuitWait);
        return;
      }
      if (this.planner.full()) {
        // Every in-flight slot is taken by other partitions' calls, which take milliseconds to
        // seconds: wait for one here (heartbeating) rather than pause, which costs a fetch.
        await this.inFlight.freed(1_000);
        await payload.heartbeat();
        continue;
      }
      const calls = this.planner.takeCalls(queue, run.mapping.priority, run.who);
      this.updateBudgetMetrics();
      if (calls.length === 0) {
        if (await this.waitForBudget(run, queue)) continue;
        return;
      }
      const blocked = await this.send(run, calls);
      await payload.heartbeat();
      await run.tracker.checkpointIfDue();
      if (blocked) return;
    }
  }

  /**
   * Budget spent or circuit half-open with its probe out: waits for the window to free enough
   * for the next call — here when that is soon (true), else the partition pauses (false).
   */
  private async waitForBudget(run: BatchRun, queue: Pending[]): Promise<boolean> {
    const { payload } = run;
    const next = this.planner.nextCall(queue).map((p) => p.write);
    const wait = Math.max(this.deps.budget.waitMs(next), this.deps.breaker.waitMs());
    if (wait > SHORT_WAIT_MS || Date.now() - run.started + wait >= MAX_BATCH_MILLIS) {
      this.pauser.pause(payload, Math.max(50, wait));
      return false;
    }
    const until = Date.now() + Math.max(5, wait);
    while (Date.now() < until && payload.isRunning() && !payload.isStale()) {
      await new Promise((r) => setTimeout(r, Math.min(HEARTBEAT_SLICE_MS, until - Date.now())));
      await payload.heartbeat();
    }
    return true;
  }

  /** Sends the calls at once and applies every record's outcome; true when a record blocks the partition. */
  private async send(run: BatchRun, calls: Call[]): Promise<boolean> {
    // A call can last minutes (a Bulk API job is polled until it ends): every response it
    // gets keeps the consumer's session alive (kafkajs heartbeats only when asked).
    const beat = (): void => void run.payload.heartbeat().catch(() => undefined);
    const results = await Promise.all(calls.map((c) => this.writer.write(c, beat)));
    // Every record's outcome is applied (map, not some): one blocked record must not hide the others' results.
    const applied = calls.flatMap((call, i) => call.map((p, j) => this.apply(run, p, results[i]![j]!)));
    return applied.includes(false);
  }

  /** Applies the policy's decision for one record; false when it is to be retried (the partition pauses there). */
  private apply(run: BatchRun, p: Pending, outcome: WriteOutcome): boolean {
    const { topic, partition } = run.payload.batch;
    const decision = this.policy.decide(topic, partition, p, outcome, (offset) => messageAt(run.messages, offset)!);
    if (decision.action === 'done') {
      run.tracker.wrote({ write: p.write, full: p.write.op === 'upsert' && Object.keys(p.write.fields).length >= run.allFields });
      run.tracker.finish(p.group.offsets);
      metrics.recordsWritten.inc({ object: p.write.object, op: p.write.op });
      const { commitMs } = p.group;
      if (commitMs !== undefined) metrics.endToEndSeconds.observe(Math.max(0, Date.now() - commitMs) / 1000);
      return true;
    }
    if (decision.action === 'dead-letter') {
      run.tracker.deadLetter(decision.letters);
      return true;
    }
    if (!this.pauser.isPaused(topic, partition)) {
      const { attempt, code, waitMs } = decision;
      const offset = String(p.group.firstOffset);
      this.log.info({ topic, partition, offset, attempt, code, ms: Math.round(waitMs) }, 'record to be retried; partition paused');
    }
    this.pauser.pause(run.payload, decision.waitMs);
    return false;
  }

  private updateBudgetMetrics(): void {
    const { budget, breaker } = this.deps;
    metrics.budgetTokens.set(budget.available());
    metrics.budgetLimit.set({ scope: 'instance' }, budget.limit());
    metrics.budgetUsed.set({ scope: 'instance' }, budget.used());
    metrics.circuitState.set({ closed: 0, 'half-open': 1, open: 2 }[breaker.state]);
  }
}
