/**
 * PostgreSQL log sequence numbers. On the wire an LSN is a 64-bit integer; in SQL and in
 * pg-logical-replication it is the text form `XXXXXXXX/XXXXXXXX` (high/low 32 bits in hex).
 * Kept as bigint so comparisons are exact.
 */
export type Lsn = bigint;

export function parseLsn(text: string): Lsn {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  if (!m) throw new Error(`not an LSN: ${text}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: Lsn): string {
  const hi = (lsn >> 32n).toString(16).toUpperCase();
  const lo = (lsn & 0xffffffffn).toString(16).toUpperCase().padStart(8, '0');
  return `${hi}/${lo}`;
}

export function readLsn(buf: Buffer, offset: number): Lsn {
  return buf.readBigUInt64BE(offset);
}
