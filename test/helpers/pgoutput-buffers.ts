/**
 * Builders of pgoutput protocol v1 messages, byte for byte as the server sends them
 * (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html), for decoder tests.
 */
class Writer {
  private parts: Buffer[] = [];
  byte(c: string | number): this {
    return this.raw(Buffer.from([typeof c === 'string' ? c.charCodeAt(0) : c]));
  }
  /** Network byte order, as every pgoutput integer. */
  i16(n: number): this {
    return this.fixed(2, (b) => b.writeInt16BE(n));
  }
  i32(n: number): this {
    return this.fixed(4, (b) => b.writeInt32BE(n));
  }
  i64(n: bigint): this {
    return this.fixed(8, (b) => b.writeBigInt64BE(n));
  }
  cstr(s: string): this {
    return this.raw(Buffer.from(`${s}\0`, 'utf8'));
  }
  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  private fixed(size: number, write: (b: Buffer) => unknown): this {
    const b = Buffer.alloc(size);
    write(b);
    return this.raw(b);
  }
  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export type TupleValue = string | null | 'UNCHANGED_TOAST';

function tuple(w: Writer, values: TupleValue[]): Writer {
  w.i16(values.length);
  for (const v of values) {
    if (v === null) w.byte('n');
    else if (v === 'UNCHANGED_TOAST') w.byte('u');
    else {
      const b = Buffer.from(v, 'utf8');
      w.byte('t').i32(b.length).raw(b);
    }
  }
  return w;
}

export const pgoutput = {
  begin: (finalLsn: bigint, commitTsPgMicros: bigint, xid: number) =>
    new Writer().byte('B').i64(finalLsn).i64(commitTsPgMicros).i32(xid).build(),
  commit: (commitLsn: bigint, endLsn: bigint, commitTsPgMicros: bigint) =>
    new Writer().byte('C').byte(0).i64(commitLsn).i64(endLsn).i64(commitTsPgMicros).build(),
  relation: (oid: number, schema: string, table: string, identity: string, columns: { name: string; key?: boolean; typeOid: number }[]) => {
    const w = new Writer().byte('R').i32(oid).cstr(schema).cstr(table).byte(identity).i16(columns.length);
    for (const c of columns)
      w.byte(c.key ? 1 : 0)
        .cstr(c.name)
        .i32(c.typeOid)
        .i32(-1);
    return w.build();
  },
  insert: (oid: number, values: TupleValue[]) => tuple(new Writer().byte('I').i32(oid).byte('N'), values).build(),
  update: (oid: number, values: TupleValue[], old?: { kind: 'K' | 'O'; values: TupleValue[] }) => {
    const w = new Writer().byte('U').i32(oid);
    if (old) tuple(w.byte(old.kind), old.values);
    return tuple(w.byte('N'), values).build();
  },
  delete: (oid: number, kind: 'K' | 'O', values: TupleValue[]) => tuple(new Writer().byte('D').i32(oid).byte(kind), values).build(),
  message: (lsn: bigint, prefix: string, content: string) => {
    const b = Buffer.from(content);
    return new Writer().byte('M').byte(1).i64(lsn).cstr(prefix).i32(b.length).raw(b).build();
  },
};
