import type { Client } from 'pg';
import type { ColumnShape } from '../events/row-codec.ts';
import { type Lsn, readLsn } from './lsn.ts';

/**
 * Decoder for the pgoutput logical replication protocol, version 1:
 * https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 *
 * Values are kept as the text PostgreSQL's type output functions produced (pgoutput sends
 * text unless `binary` is asked for), never passed through node-postgres' global type
 * parsers: those turn timestamps into Date (microseconds lost) and are process-wide. Typed
 * conversion happens once, in events/row-codec.ts, the same way for snapshot and stream rows.
 */

/** Marks a TOASTed column the update did not touch: its value was not sent, it is NOT null. */
export const UNCHANGED_TOAST: unique symbol = Symbol('unchanged-toast');
export type ColumnValue = string | null | typeof UNCHANGED_TOAST;
export type Tuple = ColumnValue[];

/** A column as the Relation message describes it (domains: see capture/type-resolver.ts). */
export interface RelationColumn extends ColumnShape {
  /** Part of the replica identity (primary key, or every column under REPLICA IDENTITY FULL). */
  isKey: boolean;
  typeMod: number;
}

export interface Relation {
  oid: number;
  schema: string;
  table: string;
  /** d = default (primary key), n = nothing, f = full, i = index. */
  replicaIdentity: 'd' | 'n' | 'f' | 'i';
  columns: RelationColumn[];
}

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: Lsn; commitTimeMicros: bigint; xid: number }
  | { tag: 'commit'; commitLsn: Lsn; endLsn: Lsn; commitTimeMicros: bigint }
  | { tag: 'relation'; relation: Relation }
  | { tag: 'type'; oid: number; schema: string; name: string }
  | { tag: 'origin'; lsn: Lsn; name: string }
  | { tag: 'insert'; relation: Relation; after: Tuple }
  | { tag: 'update'; relation: Relation; before: Tuple | null; beforeIsKeyOnly: boolean; after: Tuple }
  | { tag: 'delete'; relation: Relation; before: Tuple; beforeIsKeyOnly: boolean }
  | { tag: 'truncate'; relations: Relation[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; transactional: boolean; lsn: Lsn; prefix: string; content: Buffer };

/**
 * The first byte (Byte1) of each pgoutput message, and what follows it on the wire in protocol
 * version 1 (the Int32 xid that versions 2+ put after the tag in streamed transactions is absent).
 * LSNs are Int64 (XLogRecPtr); timestamps Int64 microseconds since 2000-01-01; String is
 * NUL-terminated.
 */
export const MessageType = {
  /** Begin: Int64 final LSN of the transaction, Int64 commit timestamp, Int32 xid. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  BEGIN: 'B',
  /** Commit: Int8 flags (unused, 0), Int64 LSN of the commit, Int64 end LSN of the transaction, Int64 commit timestamp. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  COMMIT: 'C',
  /** Relation: Int32 relation OID, String namespace, String name, Int8 replica identity, Int16 columns, then per column Int8 flags (1 = key), String name, Int32 type OID, Int32 atttypmod. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  RELATION: 'R',
  /** Insert: Int32 relation OID, Byte1 'N' (TupleMarker.NEW), TupleData of the new row. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  INSERT: 'I',
  /** Update: Int32 relation OID, optionally Byte1 'K' or 'O' and the old TupleData, then Byte1 'N' and the new TupleData. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  UPDATE: 'U',
  /** Delete: Int32 relation OID, Byte1 'K' or 'O', TupleData of the old key or row. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  DELETE: 'D',
  /** Truncate: Int32 number of relations, Int8 options (1 = CASCADE, 2 = RESTART IDENTITY), Int32 OID per relation. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  TRUNCATE: 'T',
  /** Type: Int32 type OID, String namespace, String type name (sent before a Relation using a non-built-in type). https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  TYPE: 'Y',
  /** Origin: Int64 commit LSN on the origin server, String origin name. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  ORIGIN: 'O',
  /** Message (pg_logical_emit_message): Int8 flags (1 = transactional), Int64 LSN, String prefix, Int32 length, Byten content. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  LOGICAL_MESSAGE: 'M',
} as const;

/**
 * The Byte1 before each TupleData in Insert, Update and Delete messages, saying which row it is.
 * https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 */
export const TupleMarker = {
  /** The old values of the replica identity's key columns (the key changed, or a delete under REPLICA IDENTITY DEFAULT/INDEX). https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  OLD_KEY: 'K',
  /** The whole old row (REPLICA IDENTITY FULL). https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  OLD_ROW: 'O',
  /** The new row. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  NEW: 'N',
} as const;

/**
 * TupleData is Int16 number of columns, then per column one of these Byte1 kinds; 't' and 'b'
 * are followed by Int32 length and Byten value. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 */
export const TupleValueKind = {
  /** NULL, no value follows. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  NULL: 'n',
  /** An unchanged TOASTed value: the value is not sent (it is not NULL). https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  UNCHANGED_TOAST: 'u',
  /** Text output of the column's type: Int32 length, Byten text. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  TEXT: 't',
  /** Binary send format: only when the `binary` option is asked for, which pg2crm never does. https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html */
  BINARY: 'b',
} as const;

/** Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01). */
const PG_EPOCH_MICROS = 946_684_800_000_000n;

class Reader {
  private pos = 0;
  private readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  u8(): number {
    return this.buf.readUInt8(this.pos++);
  }
  i16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  lsn(): Lsn {
    const v = readLsn(this.buf, this.pos);
    this.pos += 8;
    return v;
  }
  /** Int64 microseconds since 2000-01-01 -> microseconds since 1970-01-01. */
  timestamp(): bigint {
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v + PG_EPOCH_MICROS;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new Error('pgoutput: unterminated string');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
}

export class PgoutputDecoder {
  private readonly relations = new Map<number, Relation>();

  relation(oid: number): Relation {
    const r = this.relations.get(oid);
    // The server sends a Relation message before the first change of a relation on every
    // connection, so a miss is a protocol violation, not a race.
    if (!r) throw new Error(`pgoutput: change for relation ${oid} before its Relation message`);
    return r;
  }

  decode(buf: Buffer): PgoutputMessage {
    const r = new Reader(buf);
    const tag = String.fromCharCode(r.u8());
    switch (tag) {
      case MessageType.BEGIN:
        return { tag: 'begin', finalLsn: r.lsn(), commitTimeMicros: r.timestamp(), xid: r.u32() };
      case MessageType.COMMIT: {
        r.u8(); // flags, unused in v1
        return { tag: 'commit', commitLsn: r.lsn(), endLsn: r.lsn(), commitTimeMicros: r.timestamp() };
      }
      case MessageType.ORIGIN:
        return { tag: 'origin', lsn: r.lsn(), name: r.cstring() };
      case MessageType.TYPE:
        return { tag: 'type', oid: r.u32(), schema: r.cstring(), name: r.cstring() };
      case MessageType.RELATION: {
        const oid = r.u32();
        const schema = r.cstring();
        const table = r.cstring();
        const replicaIdentity = String.fromCharCode(r.u8()) as Relation['replicaIdentity'];
        const n = r.i16();
        const columns: RelationColumn[] = [];
        for (let i = 0; i < n; i++) {
          const flags = r.u8();
          columns.push({ isKey: (flags & 1) === 1, name: r.cstring(), typeOid: r.u32(), typeMod: r.i32() });
        }
        const relation: Relation = { oid, schema, table, replicaIdentity, columns };
        this.relations.set(oid, relation);
        return { tag: 'relation', relation };
      }
      case MessageType.INSERT: {
        const relation = this.relation(r.u32());
        expectByte(r, TupleMarker.NEW);
        return { tag: 'insert', relation, after: readTuple(r) };
      }
      case MessageType.UPDATE: {
        const relation = this.relation(r.u32());
        let kind = String.fromCharCode(r.u8());
        let before: Tuple | null = null;
        let beforeIsKeyOnly = false;
        // 'K': the key changed (old key follows); 'O': REPLICA IDENTITY FULL (old row follows).
        if (kind === TupleMarker.OLD_KEY || kind === TupleMarker.OLD_ROW) {
          before = readTuple(r);
          beforeIsKeyOnly = kind === TupleMarker.OLD_KEY;
          kind = String.fromCharCode(r.u8());
        }
        if (kind !== TupleMarker.NEW) throw new Error(`pgoutput: unexpected update submessage ${kind}`);
        return { tag: 'update', relation, before, beforeIsKeyOnly, after: readTuple(r) };
      }
      case MessageType.DELETE: {
        const relation = this.relation(r.u32());
        const kind = String.fromCharCode(r.u8());
        if (kind !== TupleMarker.OLD_KEY && kind !== TupleMarker.OLD_ROW) throw new Error(`pgoutput: unexpected delete submessage ${kind}`);
        return { tag: 'delete', relation, before: readTuple(r), beforeIsKeyOnly: kind === TupleMarker.OLD_KEY };
      }
      case MessageType.TRUNCATE: {
        const n = r.i32();
        const options = r.u8();
        const relations: Relation[] = [];
        for (let i = 0; i < n; i++) relations.push(this.relation(r.u32()));
        return { tag: 'truncate', relations, cascade: (options & 1) === 1, restartIdentity: (options & 2) === 2 };
      }
      case MessageType.LOGICAL_MESSAGE: {
        const flags = r.u8();
        const lsn = r.lsn();
        const prefix = r.cstring();
        const content = Buffer.from(r.bytes(r.i32()));
        return { tag: 'message', transactional: (flags & 1) === 1, lsn, prefix, content };
      }
      default:
        throw new Error(`pgoutput: unknown message type ${JSON.stringify(tag)}`);
    }
  }
}

function expectByte(r: Reader, c: string): void {
  const got = String.fromCharCode(r.u8());
  if (got !== c) throw new Error(`pgoutput: expected ${c}, got ${got}`);
}

function readTuple(r: Reader): Tuple {
  const n = r.i16();
  const values: Tuple = new Array(n);
  for (let i = 0; i < n; i++) {
    const kind = String.fromCharCode(r.u8());
    if (kind === TupleValueKind.NULL) values[i] = null;
    else if (kind === TupleValueKind.UNCHANGED_TOAST) values[i] = UNCHANGED_TOAST;
    else if (kind === TupleValueKind.TEXT) values[i] = r.bytes(r.i32()).toString('utf8');
    // TupleValueKind.BINARY among them: pg2crm never asks for binary.
    else throw new Error(`pgoutput: unsupported tuple value kind ${kind} (binary mode is not requested)`);
  }
  return values;
}

/**
 * Adapts the decoder to pg-logical-replication's plugin interface (structurally: the library
 * does not export its abstract base): it issues START_REPLICATION
 * and hands each XLogData payload to `parse`.
 */
export class PgoutputPlugin {
  private readonly decoder = new PgoutputDecoder();
  private readonly publication: string;

  constructor(publication: string) {
    this.publication = publication;
  }

  get name(): string {
    return 'pgoutput';
  }

  parse(buffer: Buffer): PgoutputMessage {
    return this.decoder.decode(buffer);
  }

  start(client: Client, slotName: string, lastLsn: string): Promise<unknown> {
    // `messages` makes pgoutput forward pg_logical_emit_message() records: our heartbeats.
    const sql = `START_REPLICATION SLOT "${slotName}" LOGICAL ${lastLsn} (proto_version '1', publication_names '${this.publication}', messages 'true')`;
    return client.query(sql);
  }
}
