/**
 * Records per call, per CRM object. Starts at the API's maximum (fewest calls per record is
 * what the quota rewards); halves when the CRM says the payload is too large (HTTP 413 or the
 * CRM's own limit error) or a call takes longer than `slowMs` (big batches near the CRM's
 * execution-time limits time out first), and grows back by a quarter on each fast success.
 */
export class BatchSizer {
  private readonly max: (object: string) => number;
  private readonly slowMs: number;
  private readonly sizes = new Map<string, number>();

  constructor(max: (object: string) => number, slowMs: number) {
    this.max = max;
    this.slowMs = slowMs;
  }

  size(object: string): number {
    return this.sizes.get(object) ?? this.max(object);
  }

  /** A call of `records` records finished after `ms` milliseconds. */
  observe(object: string, records: number, ms: number, tooLarge: boolean): void {
    const current = this.size(object);
    if (tooLarge || ms > this.slowMs) {
      this.sizes.set(object, Math.max(1, Math.floor(Math.min(current, records) / 2)));
    } else if (records >= current && current < this.max(object)) {
      this.sizes.set(object, Math.min(this.max(object), Math.ceil(current * 1.25)));
    }
  }
}
