import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { CrmWrite } from '../../../src/crm/crm-adapter.ts';
import type { ChangeEvent } from '../../../src/events/change-event.ts';
import type { Logger } from '../../../src/logger.ts';
import type { Pending } from '../../../src/sink/call-planner.ts';

/**
 * A fake kafkajs `EachBatchPayload` for unit tests of the sink's parts: no broker, only a
 * record of what the code under test asked of kafkajs, in order (`events`, shared with other
 * fakes of a test so their order can be checked together).
 */
export interface FakeBatch {
  payload: EachBatchPayload;
  /** Everything asked of the payload, in order: `resolve:<offset>`, `commit`, `heartbeat`, `pause`, `resume`. */
  events: string[];
  resolved: string[];
  pauses: number;
  resumes: number;
  /** Make isRunning() / isStale() answer otherwise (a stop, a rebalance). */
  running: boolean;
  stale: boolean;
}

export function message(offset: number | bigint, value: string | null = `v${offset}`, timestamp = Date.now()): KafkaMessage {
  return {
    offset: String(offset),
    key: Buffer.from(`k${offset}`),
    value: value === null ? null : Buffer.from(value),
    timestamp: String(timestamp),
    attributes: 0,
    headers: {},
  } as KafkaMessage;
}

/** A batch of `topic`/`partition` holding messages at these offsets. */
export function fakeBatch(
  opts: { topic?: string; partition?: number; offsets?: (number | bigint)[]; messages?: KafkaMessage[]; events?: string[] } = {},
): FakeBatch {
  const topic = opts.topic ?? 'pg2crm.public.customers';
  const partition = opts.partition ?? 0;
  const messages = opts.messages ?? (opts.offsets ?? [0, 1, 2]).map((o) => message(o));
  const fake: FakeBatch = {
    events: opts.events ?? [],
    resolved: [],
    pauses: 0,
    resumes: 0,
    running: true,
    stale: false,
    payload: undefined as unknown as EachBatchPayload,
  };
  const last = messages.at(-1)?.offset ?? '-1';
  const payload = {
    batch: {
      topic,
      partition,
      highWatermark: String(BigInt(last) + 1n),
      messages,
      isEmpty: () => messages.length === 0,
      firstOffset: () => messages[0]?.offset ?? null,
      lastOffset: () => last,
      offsetLag: () => '0',
      offsetLagLow: () => '0',
    },
    resolveOffset: (offset: string) => {
      fake.resolved.push(offset);
      fake.events.push(`resolve:${offset}`);
    },
    commitOffsetsIfNecessary: async () => {
      fake.events.push('commit');
    },
    heartbeat: async () => {
      fake.events.push('heartbeat');
    },
    pause: () => {
      fake.pauses++;
      fake.events.push('pause');
      return () => {
        fake.resumes++;
        fake.events.push('resume');
      };
    },
    uncommittedOffsets: () => ({ topics: [] }),
    isRunning: () => fake.running,
    isStale: () => fake.stale,
  };
  fake.payload = payload as unknown as EachBatchPayload;
  return fake;
}

/** A logger that keeps nothing (the parts log through pino in production). */
export const silentLog = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
} as unknown as Logger;

export function upsert(externalId: string, object = 'contacts', fields: Record<string, unknown> = { name: externalId }): CrmWrite {
  return { op: 'upsert', object, externalIdField: 'erp_id', externalId, fields };
}

/** A compacted write at `offsets` (the first is its place in the partition), ready for the planner or the policy. */
export function pending(write: CrmWrite, offsets: (number | bigint)[]): Pending {
  const os = offsets.map((o) => BigInt(o));
  return { group: { write, offsets: os, firstOffset: os[0]!, restore: false }, write };
}

/** A codec's decode for messages whose value is `<id>`: the event is an insert of that row of public.customers. */
export async function decode(value: Buffer): Promise<ChangeEvent> {
  const id = value.toString();
  return {
    op: 'c',
    key: { id },
    before: null,
    after: { id, name: `n${id}` },
    changed: null,
    unchanged: [],
    source: { lsn: '0/1', seq: 0, xid: 1, commitTsMicros: 0n, schema: 'public', table: 'customers', snapshot: false },
  };
}
