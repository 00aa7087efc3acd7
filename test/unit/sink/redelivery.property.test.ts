import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CrmWrite } from '../../../src/crm/crm-adapter.ts';
import { compact, type KeyedChange } from '../../../src/sink/compactor.ts';
import { hashSkippable, recordKey, writeHash } from '../../../src/sink/written-hashes.ts';

/**
 * At-least-once, tested the way the world runs the sink (pitfalls.md, "At-least-once means every
 * window can be seen again"): one partition's change log, a model of the sink's onBatch that
 * takes windows cut at random places from the committed offset, compacts them, applies the
 * written-hash no-op skip, sends the writes to a CRM model whose answers may be lost, crashes at
 * random, commits only up to the first unfinished offset and starts again from there. At the
 * end the CRM must equal the table, whatever the cuts, crashes and lost answers were.
 */

const OBJECT = 'contacts';
const ID_FIELD = 'custom_fields.erp_id';
const KEYS = ['k0', 'k1', 'k2', 'k3'] as const;
/** Writes of this key may be rejected by the CRM (when the case says so); its CRM state is not compared. */
const REJECTABLE = 'k3';
const TARGETS = ['A', 'B', null] as const;
/** Mapped fields a, b: a write carrying both carries every field (hash-skip eligible). */
const ALL_FIELDS = 2;

type Target = (typeof TARGETS)[number];
interface Row {
  a: number;
  b: number;
  company: Target;
}
interface Message {
  offset: bigint;
  key: string;
  op: 'c' | 'u' | 'd' | 'r';
  write: CrmWrite | null;
  /** A delete's old row (REPLICA IDENTITY FULL): the lookup target the record had. */
  held?: Record<string, string>;
}
interface Step {
  key: number;
  kind: 'write' | 'revert' | 'partial' | 'delete' | 'snapshot' | 'noop';
  a: number;
  b: number;
  target: number;
}

function upsertOf(key: string, fields: Record<string, unknown>, company: Target, previous?: Target): CrmWrite {
  const lookup = { object: 'companies', externalIdField: 'erp_company_id', externalId: company };
  return {
    op: 'upsert',
    object: OBJECT,
    externalIdField: ID_FIELD,
    externalId: key,
    fields,
    // As field-mapper.ts: every lookup in every upsert; the previous target only when the old row says it moved.
    lookups: { company: typeof previous === 'string' && previous !== company ? { ...lookup, previousExternalId: previous } : lookup },
  };
}

/** The table's history as the change log of one partition, and the table's final state. */
function buildLog(steps: Step[], wipeAt: number | null): { log: Message[]; table: Map<string, Row>; wipeOffset: number | null } {
  const log: Message[] = [];
  const table = new Map<string, Row>();
  const previous = new Map<string, Row>();
  let wipeOffset: number | null = null;
  const push = (key: string, op: Message['op'], write: CrmWrite | null, held?: Record<string, string>): void => {
    log.push({ offset: BigInt(log.length), key, op, write, ...(held ? { held } : {}) });
  };
  steps.forEach((s, i) => {
    if (wipeAt === i) {
      // The CRM is wiped, then a snapshot re-reads every row: its purpose is to restore the CRM.
      wipeOffset = log.length;
      for (const [key, row] of table) push(key, 'r', upsertOf(key, { a: row.a, b: row.b }, row.company));
    }
    const key = KEYS[s.key]!;
    const row = table.get(key);
    const target = TARGETS[s.target]!;
    if (!row) {
      if (s.kind === 'write' || s.kind === 'revert' || s.kind === 'partial') {
        // Insert (also after a delete: key reuse).
        table.set(key, { a: s.a, b: s.b, company: target });
        push(key, 'c', upsertOf(key, { a: s.a, b: s.b }, target));
      }
      return;
    }
    switch (s.kind) {
      case 'write':
      case 'revert': {
        // revert: back to the row's state before its last update (values that toggle are common,
        // and a window folding back to a state the CRM held earlier is what a stale hash skips).
        const next = s.kind === 'revert' ? (previous.get(key) ?? row) : { a: s.a, b: s.b, company: target };
        previous.set(key, row);
        table.set(key, next);
        push(key, 'u', upsertOf(key, { a: next.a, b: next.b }, next.company, row.company));
        break;
      }
      case 'partial':
        // Column b is TOASTed and unchanged: the write carries a only.
        previous.set(key, row);
        table.set(key, { ...row, a: s.a, company: target });
        push(key, 'u', upsertOf(key, { a: s.a }, target, row.company));
        break;
      case 'delete':
        previous.delete(key);
        table.delete(key);
        push(
          key,
          'd',
          { op: 'delete', object: OBJECT, externalIdField: ID_FIELD, externalId: key, fields: {} },
          row.company === null ? undefined : { company: row.company },
        );
        break;
      case 'snapshot':
        // A re-snapshot of the current row (no old row: no previous target).
        push(key, 'r', upsertOf(key, { a: row.a, b: row.b }, row.company));
        break;
      case 'noop':
        // An update of columns the CRM does not get.
        push(key, 'u', null);
        break;
    }
  });
  return { log, table, wipeOffset };
}

interface CrmRecord {
  fields: Record<string, unknown>;
  lookups: Record<string, string | null>;
}

/** Draws decisions from a tape; an exhausted tape answers 0 (whole windows, every write done), so a run always ends. */
class Tape {
  private i = 0;
  private readonly values: number[];
  constructor(values: number[]) {
    this.values = values;
  }
  next(): number {
    return this.i < this.values.length ? this.values[this.i++]! : 0;
  }
}

type Outcome = 'done' | 'retry' | 'throttle' | 'lost' | 'crash' | 'reject';
const OUTCOMES: Outcome[] = ['done', 'done', 'done', 'retry', 'throttle', 'lost', 'crash', 'reject', 'done', 'lost'];

interface Run {
  crm: Map<string, CrmRecord>;
  /**
   * The same CRM's links as a many-to-many CRM holds them (HubSpot associations): a write adds
   * its target's link and removes only the links it names as previous or stale.
   */
  links: Map<string, Set<string>>;
  deadLetters: bigint[];
  /** Offsets folded into a write the CRM rejected. */
  rejected: Set<bigint>;
  /** Offsets folded into a write the CRM accepted (and the sink saw it), or skipped as unchanged. */
  accepted: Set<bigint>;
  committed: number;
  trace: string[];
}

/** The sink's onBatch, reduced to what decides what the CRM ends up with. */
function runSink(log: Message[], wipeOffset: number | null, rejectable: boolean, tape: Tape, invalidateBeforeSend = true): Run {
  const crm = new Map<string, CrmRecord>();
  const links = new Map<string, Set<string>>();
  /** The written-hash store as Kafka holds it (what survives a crash). */
  const hashes = new Map<string, string>();
  const deadLetters: bigint[] = [];
  const rejected = new Set<bigint>();
  const accepted = new Set<bigint>();
  const trace: string[] = [];
  let committed = 0;
  let visibleEnd = wipeOffset ?? log.length;
  let wipePending = wipeOffset !== null;

  const apply = (w: CrmWrite): void => {
    const key = recordKey(w.object, w.externalId);
    if (w.op === 'delete') {
      crm.delete(key);
      links.delete(key);
      return;
    }
    const rec = crm.get(key) ?? { fields: {}, lookups: {} };
    rec.fields = { ...rec.fields, ...w.fields };
    const linked = links.get(key) ?? new Set<string>();
    for (const [f, l] of Object.entries(w.lookups ?? {})) {
      rec.lookups[f] = l.externalId;
      for (const old of [l.previousExternalId, ...(l.staleExternalIds ?? [])]) if (old !== undefined) linked.delete(old);
      if (l.externalId !== null) linked.add(l.externalId);
    }
    crm.set(key, rec);
    links.set(key, linked);
  };

  for (let round = 0; round < 10_000; round++) {
    // The wipe (and the snapshot after it) happens at some point while the sink is still
    // working on changes older than the snapshot.
    if (wipePending && (committed >= visibleEnd || tape.next() % 4 === 1)) {
      trace.push(`wipe CRM (committed ${committed})`);
      crm.clear();
      links.clear();
      wipePending = false;
      visibleEnd = log.length;
    }
    if (committed >= visibleEnd) break;
    // A fetch cut at a random place (0: everything there is).
    const avail = visibleEnd - committed;
    const cut = tape.next() % (avail + 1);
    const start = committed;
    const window = log.slice(start, start + (cut === 0 ? avail : cut));
    trace.push(`window ${committed}..${committed + window.length - 1}`);

    const changes: KeyedChange[] = window.map((m) => ({
      offset: m.offset,
      write: m.write,
      restore: m.op === 'r',
      ...(m.held ? { held: m.held } : {}),
    }));
    const done = new Set<bigint>();
    const letters: bigint[] = [];
    const written: CrmWrite[] = [];
    const queue = [];
    for (const group of compact(changes)) {
      const w = group.write;
      const unchanged =
        w !== null && !group.restore && hashSkippable(w, ALL_FIELDS) && hashes.get(recordKey(w.object, w.externalId)) === writeHash(w);
      if (w && unchanged) {
        trace.push(`  skip ${w.externalId} [${group.offsets.join(',')}] (hash)`);
        for (const o of group.offsets) {
          done.add(o);
          accepted.add(o);
        }
      } else if (w) queue.push(group);
      else for (const o of group.offsets) done.add(o);
    }

    const checkpoint = (): void => {
      // Hashes and dead letters are durable before the offsets are committed.
      for (const w of written.splice(0)) {
        const key = recordKey(w.object, w.externalId);
        if (w.op === 'upsert' && Object.keys(w.fields).length >= ALL_FIELDS) hashes.set(key, writeHash(w));
        else hashes.delete(key);
      }
      for (const o of letters.splice(0)) {
        deadLetters.push(o);
        done.add(o);
      }
      while (committed < start + window.length && done.has(window[committed - start]!.offset)) committed++;
    };

    const forced = round >= 200;
    let blocked = false;
    let crashed = false;
    while (queue.length > 0 && !blocked && !crashed) {
      const call = queue.splice(0, 1 + (tape.next() % 3));
      if (invalidateBeforeSend) {
        // Write-ahead: a write that changes a record away from its stored hash drops the hash,
        // durably, before the call. Once sent, the write may reach the CRM while the sink sees a
        // timeout or dies before its checkpoint; a stored hash would then name a state the CRM no
        // longer holds, and a redelivered window folding back to it would be skipped.
        for (const group of call) {
          const w = group.write!;
          const key = recordKey(w.object, w.externalId);
          const full = w.op === 'upsert' && Object.keys(w.fields).length >= ALL_FIELDS;
          if (hashes.has(key) && (!full || hashes.get(key) !== writeHash(w))) hashes.delete(key);
        }
      }
      for (const group of call) {
        const w = group.write!;
        let outcome = forced ? 'done' : OUTCOMES[tape.next() % OUTCOMES.length]!;
        if (outcome === 'reject' && !(rejectable && w.externalId === REJECTABLE)) outcome = 'done';
        trace.push(
          `  ${w.op} ${w.externalId} ${w.op === 'upsert' ? JSON.stringify(w.fields) + (w.lookups?.company?.externalId ?? 'null') : ''} [${group.offsets.join(',')}]${group.restore ? ' restore' : ''} -> ${outcome}`,
        );
        if (outcome === 'crash') {
          // The process dies: nothing of this window's memory survives, nothing more is committed.
          crashed = true;
          break;
        }
        if (outcome === 'done' || outcome === 'lost') apply(w);
        if (outcome === 'done') {
          written.push(w);
          for (const o of group.offsets) {
            done.add(o);
            accepted.add(o);
          }
        } else if (outcome === 'reject') {
          for (const o of group.offsets) {
            letters.push(o);
            rejected.add(o);
          }
        } else blocked = true; // retry / throttle / answer lost: the partition stops at this write
      }
      if (!crashed && tape.next() % 2 === 1) checkpoint();
    }
    if (crashed) continue;
    checkpoint();
  }
  return { crm, links, deadLetters, rejected, accepted, committed, trace };
}

const stepArb: fc.Arbitrary<Step> = fc.record({
  key: fc.integer({ min: 0, max: KEYS.length - 1 }),
  kind: fc.constantFrom('write', 'write', 'revert', 'partial', 'delete', 'delete', 'snapshot', 'noop'),
  a: fc.integer({ min: 0, max: 1 }),
  b: fc.integer({ min: 0, max: 1 }),
  target: fc.integer({ min: 0, max: TARGETS.length - 1 }),
});

const caseArb = fc
  .record({
    // Few keys make histories of one record long; more keys interleave them.
    keys: fc.integer({ min: 1, max: KEYS.length }),
    steps: fc.array(stepArb, { minLength: 1, maxLength: 24, size: 'medium' }),
    wipe: fc.option(fc.nat(), { nil: null }),
    rejectable: fc.boolean(),
    tape: fc.array(fc.nat({ max: 99 }), { maxLength: 300, size: 'medium' }),
  })
  .map(({ keys, ...c }) => ({
    ...c,
    steps: c.steps.map((s) => ({ ...s, key: s.key % keys })),
    wipe: c.wipe === null ? null : c.wipe % c.steps.length,
  }));

function check(c: { steps: Step[]; wipe: number | null; rejectable: boolean; tape: number[] }): void {
  const { log, table, wipeOffset } = buildLog(c.steps, c.wipe);
  const run = runSink(log, wipeOffset, c.rejectable, new Tape(c.tape));
  const context = () =>
    [
      'log:',
      ...log.map(
        (m) =>
          `  ${m.offset} ${m.op} ${m.key} ${m.write ? JSON.stringify(m.write.fields) + (m.write.lookups?.company?.externalId ?? '') : '-'}`,
      ),
      'sink:',
      ...run.trace,
    ].join('\n');
  expect(run.committed, context()).toBe(log.length);
  for (const key of KEYS) {
    if (c.rejectable && key === REJECTABLE) continue;
    const row = table.get(key);
    const held = run.crm.get(recordKey(OBJECT, key));
    const expected = row ? { fields: { a: row.a, b: row.b }, lookups: { company: row.company } } : undefined;
    expect(held, `${key}\n${context()}`).toEqual(expected);
    const linked = [...(run.links.get(recordKey(OBJECT, key)) ?? [])].sort();
    expect(linked, `links of ${key}\n${context()}`).toEqual(row?.company ? [row.company] : []);
  }
  // Dead letters are exactly the offsets of rejected writes (a redelivery may send one twice):
  // nothing the CRM did not reject, and every rejected offset unless a crash lost its dead letter
  // and a later delivery was accepted.
  for (const o of run.deadLetters) {
    expect(run.rejected.has(o), `dead letter ${o} not rejected\n${context()}`).toBe(true);
    expect(log[Number(o)]!.key, context()).toBe(REJECTABLE);
  }
  const dead = new Set(run.deadLetters);
  for (const o of run.rejected)
    expect(dead.has(o) || run.accepted.has(o), `rejected ${o} neither dead-lettered nor written\n${context()}`).toBe(true);
}

describe('sink under at-least-once redelivery (model)', () => {
  // Shrunk counterexamples, kept as fixed cases (tape: see runSink for what each draw decides).
  const w = (key: number, a = 0): Step => ({ key, kind: 'write', a, b: 0, target: 0 });
  it.each([
    {
      // Window 0..0: the insert reaches the CRM but its answer is lost; the redelivered window
      // 0..1 holds the insert and the delete: "created here, so nothing to write" left k0 in the CRM.
      name: 'a delete after a redelivered insert is sent',
      steps: [w(0), { ...w(0), kind: 'delete' as const }],
      wipe: null,
      tape: [1, 0, 5],
    },
    {
      // A snapshot row then a delete in one window: nothing was written for them, k0 stayed.
      name: 'a delete after a snapshot row is sent',
      steps: [w(0), { ...w(0), kind: 'snapshot' as const }, { ...w(0), kind: 'delete' as const }],
      wipe: null,
      tape: [1],
    },
    {
      // The CRM is wiped after k0 was written; the snapshot row that restores it equals the stored hash.
      name: 'a snapshot row after a CRM wipe is not skipped as unchanged',
      steps: [w(0), w(0)],
      wipe: 1,
      tape: [],
    },
    {
      // After a CRM wipe, snapshot row + delete + insert of k0 fold into one upsert equal to the
      // stale stored hash: the delete it replaces is why no skip may apply.
      name: 'an upsert folding a delete is not skipped as unchanged',
      steps: [w(0), { ...w(0), kind: 'delete' as const }, w(0)],
      wipe: 1,
      tape: [],
    },
    {
      // Window 1..1: a=1 reaches the CRM, answer lost; window 1..2 folds back to a=0, the stored hash.
      name: 'a write sent but not acknowledged drops the stored hash',
      steps: [w(0, 0), w(0, 1), { ...w(0), kind: 'revert' as const }],
      wipe: null,
      tape: [1, 0, 0, 0, 1, 0, 5],
    },
    {
      // k0 linked to A is deleted and re-inserted with B inside one window: the fold sends one
      // upsert; a many-to-many CRM kept the A link (the delete that removed it was never sent).
      name: 'a re-insert folded over a delete removes the links of the deleted record',
      steps: [w(0), { ...w(0), kind: 'delete' as const }, { ...w(0), target: 1 }],
      wipe: null,
      tape: [1],
    },
  ])('$name', ({ steps, wipe, tape }) => {
    check({ steps, wipe, rejectable: false, tape });
  });

  it('leaves the CRM equal to the table whatever the window cuts, crashes and lost answers', () => {
    // ~1 s here; finds each of the defects this test was written for within a few hundred runs.
    fc.assert(fc.property(caseArb, check), { numRuns: 3000 });
  }, 30_000);
});
