/**
 * Group "contract": how long the `Libcontainerd` contract suite takes on the
 * in-memory layers — `npx vitest run test/contract/memory.test.ts
 * --reporter=json`, spawned `runs` times after one warm-up run. Each row is
 * ms per 100 tests that ran (skipped ones excluded), median and p90 over the
 * runs: the whole spawn (npx and vitest start-up, transform, collection
 * included); the suite's own run (the file's run as vitest times it: the
 * layer's build and release in the suite's hooks and every test, without
 * the process start-up and the imports); and the tests alone (the sum of
 * vitest's per-test durations).
 */
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { performance } from "node:perf_hooks"
import { type Group, summarize } from "./harness.js"

const runs = 5
// the package root: `npm run bench` runs there (the compiled benchmark itself lives in .bench-build/)
const root = process.cwd()
const suite = "test/contract/memory.test.ts"

interface Report {
  readonly success: boolean
  readonly numPassedTests: number
  readonly numFailedTests: number
  readonly testResults: ReadonlyArray<{
    readonly startTime: number
    readonly endTime: number
    readonly assertionResults: ReadonlyArray<{ readonly duration?: number | null }>
  }>
}

/** One spawned run: its wall time, the suite's run, the tests' own time, and how many tests ran. */
const once = (
  n: number,
): Promise<{
  readonly wallMs: number
  readonly suiteMs: number
  readonly testsMs: number
  readonly ran: number
}> =>
  new Promise((resolve, reject) => {
    const outputFile = Path.join(Os.tmpdir(), `contract-bench-${process.pid}-${n}.json`)
    const start = performance.now()
    const child = spawn("npx", ["vitest", "run", suite, "--reporter=json", `--outputFile=${outputFile}`], {
      cwd: root,
      stdio: ["ignore", "ignore", "inherit"],
    })
    child.on("error", reject)
    child.on("exit", (code) => {
      const wallMs = performance.now() - start
      try {
        const report = JSON.parse(Fs.readFileSync(outputFile, "utf8")) as Report
        if (code !== 0 || !report.success) {
          return reject(new Error(`${suite} failed (exit code ${code}): the benchmark needs a passing suite`))
        }
        const testsMs = report.testResults
          .flatMap((file) => file.assertionResults)
          .reduce((total, test) => total + (test.duration ?? 0), 0)
        const suiteMs = report.testResults.reduce((total, file) => total + (file.endTime - file.startTime), 0)
        resolve({ wallMs, suiteMs, testsMs, ran: report.numPassedTests + report.numFailedTests })
      } catch (error) {
        reject(error)
      } finally {
        Fs.rmSync(outputFile, { force: true })
      }
    })
  })

export const contract: Group = {
  name: "contract",
  description: `the in-memory contract suite (${suite}), ${runs} spawned runs, ms per 100 tests`,
  run: async () => {
    await once(0)
    const wall: number[] = []
    const suite: number[] = []
    const tests: number[] = []
    let ran = 0
    for (let i = 1; i <= runs; i++) {
      const result = await once(i)
      ran = result.ran
      wall.push((result.wallMs / result.ran) * 100)
      suite.push((result.suiteMs / result.ran) * 100)
      tests.push((result.testsMs / result.ran) * 100)
    }
    return [
      summarize(
        "contract",
        `in-memory suite, whole run (${ran} tests, vitest start-up included)`,
        "ms/100 tests",
        wall,
      ),
      summarize(
        "contract",
        `in-memory suite, the file's run (${ran} tests, hooks included, start-up and imports not)`,
        "ms/100 tests",
        suite,
      ),
      summarize("contract", `in-memory suite, tests only (${ran} tests)`, "ms/100 tests", tests),
    ]
  },
}
