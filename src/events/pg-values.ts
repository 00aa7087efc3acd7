/**
 * Exact JavaScript values for the PostgreSQL types JavaScript has no exact type for: numeric,
 * date, timestamp[tz] and time. Each keeps every digit PostgreSQL printed (microseconds, numeric
 * scale) and works without `Date`, whose range (±275,760 years, milliseconds) is smaller than
 * PostgreSQL's (4713 BC to 294276 AD for timestamps, 5874897 AD for dates, microseconds).
 *
 * Parsing expects DateStyle ISO (PostgreSQL's default): https://www.postgresql.org/docs/15/datatype-datetime.html#DATATYPE-DATETIME-OUTPUT
 * `toString()` prints text PostgreSQL reads back to the same value (`toJSON()` too, so the
 * Kafka key of a row keyed by such a column stays usable in SQL); `toIso()` is the ISO 8601
 * form for CRMs.
 */

/** A finite numeric: `unscaled × 10^-scale`, exact. NaN and ±Infinity stay strings (see row-codec.ts). */
export class PgDecimal {
  readonly unscaled: bigint;
  readonly scale: number;

  constructor(unscaled: bigint, scale: number) {
    this.unscaled = unscaled;
    this.scale = scale;
  }

  /** `-123.4500` -> (-1234500n, 4): numeric's output keeps trailing zeros, and so do we. */
  static parse(text: string): PgDecimal {
    const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
    if (!m) throw new Error(`not a finite numeric: ${JSON.stringify(text)}`);
    const fraction = m[3] ?? '';
    return new PgDecimal(BigInt(`${m[1]}${m[2]}${fraction}`), fraction.length);
  }

  /** The same value with `scale` digits after the point; throws rather than round. */
  withScale(scale: number): PgDecimal {
    if (scale === this.scale) return this;
    if (scale > this.scale) return new PgDecimal(this.unscaled * 10n ** BigInt(scale - this.scale), scale);
    const factor = 10n ** BigInt(this.scale - scale);
    if (this.unscaled % factor !== 0n) throw new Error(`${this.toString()} has more than ${scale} decimal places`);
    return new PgDecimal(this.unscaled / factor, scale);
  }

  /** Significant digits (leading and trailing zeros not counted). */
  significantDigits(): number {
    const digits = (this.unscaled < 0n ? -this.unscaled : this.unscaled).toString().replace(/0+$/, '');
    return digits === '' ? 0 : digits.length;
  }

  toString(): string {
    const negative = this.unscaled < 0n;
    let digits = (negative ? -this.unscaled : this.unscaled).toString();
    if (this.scale > 0) {
      digits = digits.padStart(this.scale + 1, '0');
      digits = `${digits.slice(0, -this.scale)}.${digits.slice(-this.scale)}`;
    }
    return negative ? `-${digits}` : digits;
  }

  toJSON(): string {
    return this.toString();
  }
}

// Proleptic Gregorian calendar <-> days since 1970-01-01 (H. Hinnant, "chrono-compatible
// low-level date algorithms", http://howardhinnant.github.io/date_algorithms.html), in plain
// numbers: exact far beyond PostgreSQL's range. Years are astronomical (0 = 1 BC).
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

function civilFromDays(days: number): { year: number; month: number; day: number } {
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: yoe + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

const pad = (n: number | bigint, width: number): string => String(n).padStart(width, '0');

/** PostgreSQL text: 4+ digit year, ` BC` suffix for year <= 0 (there is no year 0 in SQL). */
function pgYmd(days: number): { ymd: string; bc: boolean } {
  const { year, month, day } = civilFromDays(days);
  const bc = year <= 0;
  return { ymd: `${pad(bc ? 1 - year : year, 4)}-${pad(month, 2)}-${pad(day, 2)}`, bc };
}

/** ISO 8601: astronomical year, expanded `±YYYYYY` form outside 0000-9999 (ISO 8601-1:2019 §4.3.2). */
function isoYmd(days: number): string {
  const { year, month, day } = civilFromDays(days);
  const y = year >= 0 && year <= 9999 ? pad(year, 4) : `${year < 0 ? '-' : '+'}${pad(Math.abs(year), 6)}`;
  return `${y}-${pad(month, 2)}-${pad(day, 2)}`;
}

const DATE_RE = /^(\d{4,})-(\d\d)-(\d\d)( BC)?$/;

function parseYmd(year: string, month: string, day: string, bc: string | undefined): number {
  const y = Number(year);
  return daysFromCivil(bc ? 1 - y : y, Number(month), Number(day));
}

/** A date as days since 1970-01-01; `±Infinity` for PostgreSQL's 'infinity' / '-infinity'. */
export class PgDate {
  readonly days: number;

  constructor(days: number) {
    this.days = days;
  }

  static parse(text: string): PgDate {
    if (text === 'infinity') return new PgDate(Infinity);
    if (text === '-infinity') return new PgDate(-Infinity);
    const m = DATE_RE.exec(text);
    if (!m) throw new Error(`not an ISO date: ${JSON.stringify(text)}; pg2crm needs DateStyle = ISO`);
    return new PgDate(parseYmd(m[1]!, m[2]!, m[3]!, m[4]));
  }

  toString(): string {
    if (!Number.isFinite(this.days)) return this.days > 0 ? 'infinity' : '-infinity';
    const { ymd, bc } = pgYmd(this.days);
    return bc ? `${ymd} BC` : ymd;
  }

  toJSON(): string {
    return this.toString();
  }

  /** `YYYY-MM-DD`; null for ±infinity, which ISO 8601 cannot write. */
  toIso(): string | null {
    return Number.isFinite(this.days) ? isoYmd(this.days) : null;
  }
}

const MICROS_PER_SECOND = 1_000_000n;
const MICROS_PER_DAY = 86_400_000_000n;

/** ±infinity: beyond every finite PostgreSQL timestamp (-2.1e17 to 9.3e18 µs), and beyond int64. */
export const TIMESTAMP_MINUS_INFINITY = -(2n ** 64n);
export const TIMESTAMP_INFINITY = 2n ** 64n;

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

/** `HH:MM:SS[.ffffff]`, fraction without trailing zeros (as PostgreSQL prints it) or always 6 digits. */
function clock(micros: bigint, fullFraction: boolean): string {
  const seconds = micros / MICROS_PER_SECOND;
  const fraction = micros % MICROS_PER_SECOND;
  const hms = `${pad(seconds / 3600n, 2)}:${pad((seconds / 60n) % 60n, 2)}:${pad(seconds % 60n, 2)}`;
  if (fullFraction) return `${hms}.${pad(fraction, 6)}`;
  return fraction === 0n ? hms : `${hms}.${pad(fraction, 6).replace(/0+$/, '')}`;
}

function parseClock(h: string, m: string, s: string, fraction: string | undefined): bigint {
  return ((BigInt(h) * 60n + BigInt(m)) * 60n + BigInt(s)) * MICROS_PER_SECOND + BigInt((fraction ?? '').padEnd(6, '0'));
}

const TIMESTAMP_RE = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?$/;

/**
 * timestamp (`zoned` false: wall-clock time, no zone) or timestamptz (`zoned` true: an instant),
 * as microseconds since 1970-01-01 00:00 (UTC for timestamptz). PostgreSQL's last timestamps
 * (after 292277 AD) do not fit an int64 of microseconds since 1970; a bigint holds them.
 */
export class PgTimestamp {
  readonly micros: bigint;
  readonly zoned: boolean;

  constructor(micros: bigint, zoned: boolean) {
    this.micros = micros;
    this.zoned = zoned;
  }

  /** timestamptz text carries the session's offset (`+02`, `+05:30`, `-00:25:21` for LMT): applied exactly. */
  static parse(text: string, zoned: boolean): PgTimestamp {
    if (text === 'infinity') return new PgTimestamp(TIMESTAMP_INFINITY, zoned);
    if (text === '-infinity') return new PgTimestamp(TIMESTAMP_MINUS_INFINITY, zoned);
    const m = TIMESTAMP_RE.exec(text);
    if (!m || (zoned && !m[8])) throw new Error(`not an ISO timestamp: ${JSON.stringify(text)}; pg2crm needs DateStyle = ISO`);
    const days = parseYmd(m[1]!, m[2]!, m[3]!, m[12]);
    let micros = BigInt(days) * MICROS_PER_DAY + parseClock(m[4]!, m[5]!, m[6]!, m[7]);
    if (m[8]) {
      const offset = (BigInt(m[9]!) * 3600n + BigInt(m[10] ?? '0') * 60n + BigInt(m[11] ?? '0')) * MICROS_PER_SECOND;
      micros -= m[8] === '+' ? offset : -offset;
    }
    return new PgTimestamp(micros, zoned);
  }

  isFinite(): boolean {
    return this.micros !== TIMESTAMP_INFINITY && this.micros !== TIMESTAMP_MINUS_INFINITY;
  }

  /** PostgreSQL's ISO output (timestamptz as with TimeZone = UTC). */
  toString(): string {
    if (!this.isFinite()) return this.micros > 0n ? 'infinity' : '-infinity';
    const days = floorDiv(this.micros, MICROS_PER_DAY);
    const { ymd, bc } = pgYmd(Number(days));
    return `${ymd} ${clock(this.micros - days * MICROS_PER_DAY, false)}${this.zoned ? '+00' : ''}${bc ? ' BC' : ''}`;
  }

  toJSON(): string {
    return this.toString();
  }

  /** `YYYY-MM-DDTHH:MM:SS.ffffff`, `Z` added for timestamptz; null for ±infinity. */
  toIso(): string | null {
    if (!this.isFinite()) return null;
    const days = floorDiv(this.micros, MICROS_PER_DAY);
    return `${isoYmd(Number(days))}T${clock(this.micros - days * MICROS_PER_DAY, true)}${this.zoned ? 'Z' : ''}`;
  }
}

/** time without time zone: microseconds after midnight, 0 to 86,400,000,000 (PostgreSQL allows 24:00:00). */
export class PgTime {
  readonly micros: bigint;

  constructor(micros: bigint) {
    this.micros = micros;
  }

  static parse(text: string): PgTime {
    const m = /^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$/.exec(text);
    if (!m) throw new Error(`not a time: ${JSON.stringify(text)}`);
    return new PgTime(parseClock(m[1]!, m[2]!, m[3]!, m[4]));
  }

  toString(): string {
    return clock(this.micros, false);
  }

  toJSON(): string {
    return this.toString();
  }

  toIso(): string {
    return clock(this.micros, true);
  }
}

/** Value equality for column values (change detection): bytes by content, the classes above by value. */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (a instanceof PgDecimal && b instanceof PgDecimal) return a.unscaled === b.unscaled && a.scale === b.scale;
  if ((a instanceof PgDate && b instanceof PgDate) || (a instanceof PgTime && b instanceof PgTime)) return a.toString() === b.toString();
  if (a instanceof PgTimestamp && b instanceof PgTimestamp) return a.micros === b.micros && a.zoned === b.zoned;
  return Object.is(a, b) || a === b;
}
