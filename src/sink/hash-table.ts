/**
 * A map from 64-bit keys to 64-bit values in one typed array, for the written-hash store: 16
 * bytes a slot where a `Map<string, string>` costs V8 ~125 bytes an entry. Keys and values are
 * passed as two unsigned 32-bit halves (high, low) so that no call allocates (no BigInt, no
 * string).
 *
 * Open addressing with linear probing: slot i holds words 4i..4i+3 (key high, key low, value
 * high, value low), so a probe reads one cache line. Key 0 marks an empty slot; the one entry
 * whose key is 0 lives outside the array. Deletion shifts the following entries of the run back
 * (no tombstones), so a table that sees many deletes never needs a rebuild and lookups stay as
 * short as the load allows. The table doubles when it would be fuller than 0.7 (between 0.35 and
 * 0.7 full, 23-46 bytes an entry); it never shrinks. While it doubles, the old and the new array
 * are both alive for a moment (3x the old array).
 */
const INITIAL_BITS = 4;
const MAX_LOAD = 0.7;
/** Largest table: 2^28 slots (4 GiB), far beyond any store a process holds. */
const MAX_BITS = 28;

/**
 * The slot a key is looked for first, for a table of 2^bits slots: Fibonacci hashing of both
 * halves, taking the product's top bits, so keys that are not uniformly spread (tests, or a
 * caller's weak hash) still spread over the table. `bits`: 1..31.
 */
export function homeSlot(keyHi: number, keyLo: number, bits: number): number {
  return Math.imul((keyHi ^ Math.imul(keyLo, 0x85ebca6b)) >>> 0, 0x9e3779b1) >>> (32 - bits);
}

export class Hash64Table {
  private words: Uint32Array;
  private bits: number;
  private mask: number;
  /** Entries in `words` (the zero key's entry is not counted here). */
  private used = 0;
  private growAt: number;
  private zeroHeld = false;
  private zeroValueHi = 0;
  private zeroValueLo = 0;

  /** `bits`: 2^bits slots to start with. */
  constructor(bits = INITIAL_BITS) {
    if (!Number.isInteger(bits) || bits < 1 || bits > MAX_BITS) throw new RangeError(`bits must be 1..${MAX_BITS}, not ${bits}`);
    this.bits = bits;
    this.mask = (1 << bits) - 1;
    this.words = new Uint32Array(4 << bits);
    this.growAt = Math.floor(MAX_LOAD * (1 << bits));
  }

  get size(): number {
    return this.used + (this.zeroHeld ? 1 : 0);
  }

  /** Slots in the array (for tests and the bench). */
  get capacity(): number {
    return this.mask + 1;
  }

  /** Bytes of the typed array (outside the V8 heap, inside the process's RSS). */
  get bytes(): number {
    return this.words.byteLength;
  }

  has(keyHi: number, keyLo: number): boolean {
    if (keyHi === 0 && keyLo === 0) return this.zeroHeld;
    return this.find(keyHi >>> 0, keyLo >>> 0) >= 0;
  }

  /** Whether the table holds exactly this value for the key. */
  holds(keyHi: number, keyLo: number, valueHi: number, valueLo: number): boolean {
    if (keyHi === 0 && keyLo === 0) return this.zeroHeld && this.zeroValueHi === valueHi >>> 0 && this.zeroValueLo === valueLo >>> 0;
    const slot = this.find(keyHi >>> 0, keyLo >>> 0);
    return slot >= 0 && this.words[4 * slot + 2] === valueHi >>> 0 && this.words[4 * slot + 3] === valueLo >>> 0;
  }

  /** The value as one 64-bit number (allocates: for tests and tools, not the hot path). */
  get(keyHi: number, keyLo: number): bigint | undefined {
    if (keyHi === 0 && keyLo === 0) return this.zeroHeld ? join(this.zeroValueHi, this.zeroValueLo) : undefined;
    const slot = this.find(keyHi >>> 0, keyLo >>> 0);
    return slot < 0 ? undefined : join(this.words[4 * slot + 2]!, this.words[4 * slot + 3]!);
  }

  set(keyHi: number, keyLo: number, valueHi: number, valueLo: number): void {
    const kh = keyHi >>> 0;
    const kl = keyLo >>> 0;
    if (kh === 0 && kl === 0) {
      this.zeroHeld = true;
      this.zeroValueHi = valueHi >>> 0;
      this.zeroValueLo = valueLo >>> 0;
      return;
    }
    const words = this.words;
    let slot = homeSlot(kh, kl, this.bits);
    for (;;) {
      const at = 4 * slot;
      const h = words[at]!;
      const l = words[at + 1]!;
      if (h === kh && l === kl) {
        words[at + 2] = valueHi;
        words[at + 3] = valueLo;
        return;
      }
      if (h === 0 && l === 0) break;
      slot = (slot + 1) & this.mask;
    }
    if (this.used + 1 > this.growAt) {
      this.grow();
      this.set(kh, kl, valueHi, valueLo);
      return;
    }
    const at = 4 * slot;
    words[at] = kh;
    words[at + 1] = kl;
    words[at + 2] = valueHi;
    words[at + 3] = valueLo;
    this.used++;
  }

  delete(keyHi: number, keyLo: number): boolean {
    const kh = keyHi >>> 0;
    const kl = keyLo >>> 0;
    if (kh === 0 && kl === 0) {
      const held = this.zeroHeld;
      this.zeroHeld = false;
      return held;
    }
    let hole = this.find(kh, kl);
    if (hole < 0) return false;
    const words = this.words;
    // Backward shift: walk the rest of the run; an entry whose home slot is not cyclically in
    // (hole, slot] would no longer be found past the hole, so it moves into the hole.
    let slot = hole;
    for (;;) {
      slot = (slot + 1) & this.mask;
      const at = 4 * slot;
      const h = words[at]!;
      const l = words[at + 1]!;
      if (h === 0 && l === 0) break;
      const home = homeSlot(h, l, this.bits);
      const stays = hole <= slot ? hole < home && home <= slot : hole < home || home <= slot;
      if (stays) continue;
      words.copyWithin(4 * hole, at, at + 4);
      hole = slot;
    }
    words.fill(0, 4 * hole, 4 * hole + 4);
    this.used--;
    return true;
  }

  /** Calls `f` for every entry (for tests). */
  forEach(f: (keyHi: number, keyLo: number, valueHi: number, valueLo: number) => void): void {
    if (this.zeroHeld) f(0, 0, this.zeroValueHi, this.zeroValueLo);
    const words = this.words;
    for (let at = 0; at < words.length; at += 4) {
      if (words[at] !== 0 || words[at + 1] !== 0) f(words[at]!, words[at + 1]!, words[at + 2]!, words[at + 3]!);
    }
  }

  /** The slot holding the key (not 0), or -1. */
  private find(kh: number, kl: number): number {
    const words = this.words;
    let slot = homeSlot(kh, kl, this.bits);
    for (;;) {
      const at = 4 * slot;
      const h = words[at]!;
      const l = words[at + 1]!;
      if (h === kh && l === kl) return slot;
      if (h === 0 && l === 0) return -1;
      slot = (slot + 1) & this.mask;
    }
  }

  private grow(): void {
    if (this.bits >= MAX_BITS) throw new Error(`hash table full at ${this.growAt} entries; set sink.noopSkip: false`);
    const old = this.words;
    this.bits++;
    this.mask = (1 << this.bits) - 1;
    this.words = new Uint32Array(4 << this.bits);
    this.growAt = Math.floor(MAX_LOAD * (1 << this.bits));
    const words = this.words;
    for (let at = 0; at < old.length; at += 4) {
      const kh = old[at]!;
      const kl = old[at + 1]!;
      if (kh === 0 && kl === 0) continue;
      let slot = homeSlot(kh, kl, this.bits);
      while (words[4 * slot] !== 0 || words[4 * slot + 1] !== 0) slot = (slot + 1) & this.mask;
      words.set(old.subarray(at, at + 4), 4 * slot);
    }
  }
}

function join(hi: number, lo: number): bigint {
  return (BigInt(hi) << 32n) | BigInt(lo);
}
