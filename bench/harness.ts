/**
 * A small benchmark harness: runs a function a number of times after a warm-up,
 * records each duration, and reports median, p90 and p99. Groups register
 * themselves in `bench/index.ts`; every run prints a table and writes
 * `bench/results.json`.
 */
import { performance } from "node:perf_hooks"

/** One row of `bench/results.json`. */
export interface Result {
  readonly group: string
  readonly name: string
  readonly unit: string
  readonly median: number
  readonly p90: number
  readonly p99?: number
  readonly n: number
  /** The name of the row this one is compared with. */
  readonly baseline?: string
  /** median / baseline's median. */
  readonly ratio?: number
}

/** A group: a name and a function producing rows. */
export interface Group {
  readonly name: string
  readonly description: string
  readonly run: () => Promise<ReadonlyArray<Result>>
}

/** The quantile q (0..1) of sorted values, interpolated. */
export const quantile = (sorted: ReadonlyArray<number>, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  const a = sorted[lo] ?? Number.NaN
  const b = sorted[hi] ?? Number.NaN
  return a + (b - a) * (pos - lo)
}

/** Summary of samples in the given unit. */
export const summarize = (
  group: string,
  name: string,
  unit: string,
  samples: ReadonlyArray<number>,
): Result => {
  const sorted = [...samples].sort((a, b) => a - b)
  return {
    group,
    name,
    unit,
    median: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    n: sorted.length,
  }
}

/** Times `fn` n times (after `warmup` untimed runs); durations in ms. */
export const timeIt = async (
  fn: () => Promise<unknown>,
  n: number,
  warmup = Math.min(20, n),
): Promise<number[]> => {
  for (let i = 0; i < warmup; i++) await fn()
  const samples: number[] = []
  for (let i = 0; i < n; i++) {
    const start = performance.now()
    await fn()
    samples.push(performance.now() - start)
  }
  return samples
}

/**
 * Times two functions interleaved (a, b, a, b, …) so that drift of the
 * machine affects both alike; durations in ms.
 */
export const timePair = async (
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
  n: number,
  warmup = Math.min(20, n),
): Promise<[number[], number[]]> => {
  for (let i = 0; i < warmup; i++) {
    await a()
    await b()
  }
  const sa: number[] = []
  const sb: number[] = []
  for (let i = 0; i < n; i++) {
    let start = performance.now()
    await a()
    sa.push(performance.now() - start)
    start = performance.now()
    await b()
    sb.push(performance.now() - start)
  }
  return [sa, sb]
}

/** Marks `row` as compared with `baseline`. */
export const against = (row: Result, baseline: Result): Result => ({
  ...row,
  baseline: baseline.name,
  ratio: row.median / baseline.median,
})

/** Prints rows as a table. */
export const print = (rows: ReadonlyArray<Result>): void => {
  const fmt = (v: number | undefined) => (v === undefined ? "" : v >= 100 ? v.toFixed(1) : v.toPrecision(4))
  console.table(
    rows.map((r) => ({
      group: r.group,
      name: r.name,
      unit: r.unit,
      median: fmt(r.median),
      p90: fmt(r.p90),
      p99: fmt(r.p99),
      n: r.n,
      ratio: r.ratio === undefined ? "" : `${r.ratio.toFixed(3)}× ${r.baseline}`,
    })),
  )
}
