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
  /** 95% bootstrap interval of `ratio` (each side's samples resampled independently). */
  readonly ratioLow?: number
  readonly ratioHigh?: number
  /** The samples (in memory only: not written to `bench/results.json`). */
  readonly samples?: ReadonlyArray<number>
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
    samples: sorted,
  }
}

/** A small seeded PRNG (mulberry32), so that an interval is the same for the same samples. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const resampledMedian = (samples: ReadonlyArray<number>, random: () => number): number => {
  const draw = new Float64Array(samples.length)
  for (let i = 0; i < draw.length; i++) draw[i] = samples[Math.floor(random() * samples.length)]!
  draw.sort()
  return quantile(Array.from(draw), 0.5)
}

/**
 * The 95% percentile-bootstrap interval of median(a) / median(b): how far the ratio of two medians moves with
 * the samples drawn, which is what decides whether a row's ratio is a property of the code or of this run.
 */
export const ratioInterval = (
  a: ReadonlyArray<number>,
  b: ReadonlyArray<number>,
  resamples = 2000,
): readonly [number, number] => {
  const random = prng(0x5eed)
  const ratios: number[] = []
  for (let i = 0; i < resamples; i++) ratios.push(resampledMedian(a, random) / resampledMedian(b, random))
  ratios.sort((x, y) => x - y)
  return [quantile(ratios, 0.025), quantile(ratios, 0.975)]
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
 * Times two functions interleaved so that drift of the machine affects both
 * alike, the first of each pair alternating (a b, b a, a b, …) so that
 * neither always runs in the wake of the other; durations in ms.
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
  const time = async (fn: () => Promise<unknown>, into: number[]) => {
    const start = performance.now()
    await fn()
    into.push(performance.now() - start)
  }
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      await time(a, sa)
      await time(b, sb)
    } else {
      await time(b, sb)
      await time(a, sa)
    }
  }
  return [sa, sb]
}

/** Marks `row` as compared with `baseline`, with the ratio's bootstrap interval when both have their samples. */
export const against = (row: Result, baseline: Result): Result => {
  const interval =
    row.samples !== undefined && baseline.samples !== undefined
      ? ratioInterval(row.samples, baseline.samples)
      : undefined
  return {
    ...row,
    baseline: baseline.name,
    ratio: row.median / baseline.median,
    ...(interval === undefined ? {} : { ratioLow: interval[0], ratioHigh: interval[1] }),
  }
}

/** A row as `bench/results.json` keeps it: without its samples. */
export const withoutSamples = ({ samples: _, ...row }: Result): Result => row

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
      ratio:
        r.ratio === undefined
          ? ""
          : `${r.ratio.toFixed(3)}×${r.ratioLow === undefined ? "" : ` [${r.ratioLow.toFixed(3)}–${r.ratioHigh?.toFixed(3)}]`} ${r.baseline}`,
    })),
  )
}
