/**
 * The skewed update workload of `bench:sink`: which record each update hits. Keys are drawn from
 * a Zipf distribution (P(rank r) ∝ 1/r^s) whose exponent is chosen so that the hottest
 * `hotKeyFraction` of the keys receive `hotUpdateShare` of the updates ("80% of updates on 5% of
 * keys"), the shape of ERP traffic where a few open orders and active accounts change all day.
 * Seeded, so every run (and every CRM in a run) replays the same sequence.
 */

/** mulberry32: a tiny seeded PRNG (uniform in [0, 1)); Math.random cannot be seeded. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Share of the probability mass on the `hot` lowest ranks of a Zipf(s) over `n` ranks. */
function topShare(n: number, hot: number, s: number): number {
  let top = 0;
  let all = 0;
  for (let r = 1; r <= n; r++) {
    const w = r ** -s;
    all += w;
    if (r <= hot) top += w;
  }
  return top / all;
}

/** The Zipf exponent that puts `hotUpdateShare` of the mass on the top `hotKeyFraction` of `n` keys. */
export function zipfExponentFor(n: number, hotKeyFraction: number, hotUpdateShare: number): number {
  const hot = Math.max(1, Math.round(n * hotKeyFraction));
  // topShare grows monotonically with s (s = 0 is uniform: share = hot / n): bisect.
  let lo = 0;
  let hi = 8;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (topShare(n, hot, mid) < hotUpdateShare) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * `m` keys in 1..n, Zipf(s)-distributed over a seeded random ranking of the keys (so the hot
 * keys are spread over the Kafka partitions instead of being ids 1, 2, 3...).
 */
export function zipfKeys(n: number, m: number, s: number, seed: number): Int32Array {
  const random = seededRandom(seed);
  const byRank = Int32Array.from({ length: n }, (_, i) => i + 1);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = byRank[i]!;
    byRank[i] = byRank[j]!;
    byRank[j] = t;
  }
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let r = 0; r < n; r++) cdf[r] = sum += (r + 1) ** -s;
  const out = new Int32Array(m);
  for (let i = 0; i < m; i++) {
    const u = random() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    out[i] = byRank[lo]!;
  }
  return out;
}

/** Measured share of `keys` that hit the most-hit `hotKeyFraction` of the `n` keys. */
export function hotShare(keys: Int32Array, n: number, hotKeyFraction: number): number {
  const counts = new Map<number, number>();
  for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1);
  const hot = Math.max(1, Math.round(n * hotKeyFraction));
  const top = [...counts.values()].sort((a, b) => b - a).slice(0, hot);
  return keys.length ? top.reduce((a, b) => a + b, 0) / keys.length : 0;
}

/** Distinct keys in `keys` (the fewest writes that can carry all updates, with unlimited compaction). */
export function distinctKeys(keys: Int32Array): number {
  return new Set(keys).size;
}
