/**
 * The job runner's tests, on the library's in-memory containerd: processes are
 * scripted through the `ContainerdMemory` handle, and their durations pass on
 * the TestClock.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Clock, Duration, Effect, Fiber, Layer, Option, TestClock } from "effect"
import { Backend, LibcontainerdLive } from "effect-containerd"
import * as ContainerdMemory from "effect-containerd/layers/ContainerdMemory"
import { Containerd } from "effect-containerd/services/Containerd"
import * as JobRunner from "./JobRunner.js"

const namespace = "jobs"

/** A runner over a fresh in-memory containerd, with a state dir of its own. */
const TestLayer = Layer.unwrapScoped(
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "job-runner-"))),
      (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })),
    ),
    (stateDir) =>
      JobRunner.layer({ rootfsPath: "/srv/rootfs", namespace }).pipe(
        Layer.provideMerge(LibcontainerdLive.layer({ stateDir, namespace })),
        Layer.provideMerge(Backend.layerNoop),
        Layer.provideMerge(ContainerdMemory.layerWithProcessIO({ namespace })),
      ),
  ),
)

/**
 * Runs a test body against `TestLayer` once the client's event subscription
 * is open (containerd keeps no backlog of events) and has settled (the client
 * reconciles when it has; 200 ms), and checks afterwards that no container
 * and no task is left in containerd.
 */
const withRunner = <A, E>(
  body: Effect.Effect<A, E, JobRunner.JobRunner | ContainerdMemory.ContainerdMemory>,
) =>
  Effect.gen(function* () {
    const memory = yield* ContainerdMemory.ContainerdMemory
    yield* Effect.repeat(Effect.zipRight(Effect.yieldNow(), memory.subscribers), { until: (n) => n > 0 })
    yield* TestClock.adjust("200 millis")
    const result = yield* body
    const containerd = yield* Containerd
    assert.deepStrictEqual(yield* containerd.containers.list(), [])
    assert.deepStrictEqual(yield* containerd.tasks.list(), [])
    return result
  }).pipe(Effect.provide(TestLayer))

const run = (job: JobRunner.Job) => Effect.flatMap(JobRunner.JobRunner, (runner) => runner.run(job))

const script = (args: ReadonlyArray<string>, source: ContainerdMemory.ScriptSource) =>
  Effect.flatMap(ContainerdMemory.ContainerdMemory, (memory) => memory.script({ args }, source))

/** Waits until some fiber sleeps for `duration` from now on the TestClock (as `Effect.timeout` does). */
const untilSleeping = (duration: Duration.DurationInput) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.repeat(Effect.zipRight(Effect.yieldNow(), TestClock.sleeps()), {
      until: Chunk.some((wake) => wake === now + Duration.toMillis(duration)),
    }),
  )

describe("JobRunner", () => {
  it.effect("a job that succeeds: exit code 0, stdout and stderr", () =>
    withRunner(
      Effect.gen(function* () {
        yield* script(["make", "all"], { stdout: "compiling\ndone\n", stderr: "warning: unused x\n" })
        const result = yield* run({ id: "build-1", args: ["make", "all"], env: { CI: "1" } })
        assert.deepStrictEqual(result, {
          exitCode: 0,
          stdout: "compiling\ndone\n",
          stderr: "warning: unused x\n",
          oomKilled: false,
          timedOut: false,
        })
      }),
    ),
  )

  it.effect("a job that fails: its exit code is the result, not an error", () =>
    withRunner(
      Effect.gen(function* () {
        yield* script(["make", "test"], { stderr: "1 test failed\n", exitCode: 2, duration: "3 seconds" })
        const running = yield* Effect.fork(run({ id: "test-1", args: ["make", "test"] }))
        yield* untilSleeping("3 seconds")
        yield* TestClock.adjust("3 seconds")
        const result = yield* Fiber.join(running)
        assert.strictEqual(result.exitCode, 2)
        assert.strictEqual(result.stdout, "")
        assert.strictEqual(result.stderr, "1 test failed\n")
        assert.isFalse(result.timedOut)
        assert.isFalse(result.oomKilled)
      }),
    ),
  )

  it.effect("a job past its timeout is killed: exit 137, timedOut, output so far", () =>
    withRunner(
      Effect.gen(function* () {
        yield* script(["serve"], { stdout: "listening\n", duration: Duration.infinity })
        const running = yield* Effect.fork(run({ id: "hang-1", args: ["serve"], timeout: "30 seconds" }))
        yield* untilSleeping("30 seconds")
        yield* TestClock.adjust("29 seconds")
        assert.isTrue(Option.isNone(yield* Fiber.poll(running)))
        yield* TestClock.adjust("1 second")
        const result = yield* Fiber.join(running)
        assert.deepStrictEqual(result, {
          exitCode: 137,
          stdout: "listening\n",
          stderr: "",
          oomKilled: false,
          timedOut: true,
        })
      }),
    ),
  )

  it.effect("a job that ends within its timeout is not killed", () =>
    withRunner(
      Effect.gen(function* () {
        yield* script(["sleep", "10"], { duration: "10 seconds" })
        const running = yield* Effect.fork(
          run({ id: "quick-1", args: ["sleep", "10"], timeout: Duration.minutes(1) }),
        )
        yield* untilSleeping("10 seconds")
        yield* TestClock.adjust("10 seconds")
        const result = yield* Fiber.join(running)
        assert.strictEqual(result.exitCode, 0)
        assert.isFalse(result.timedOut)
      }),
    ),
  )

  it.effect("a job that hits its memory limit is reported as OOM-killed", () =>
    withRunner(
      Effect.gen(function* () {
        yield* script(["hog"], { stdout: "allocating\n", oom: true })
        const result = yield* run({ id: "hog-1", args: ["hog"], memoryLimit: 16 * 1024 * 1024 })
        assert.strictEqual(result.exitCode, 137)
        assert.isTrue(result.oomKilled)
        assert.isFalse(result.timedOut)
        assert.strictEqual(result.stdout, "allocating\n")
      }),
    ),
  )

  it.effect("nothing is left behind when the job cannot start, or when run is interrupted", () =>
    withRunner(
      Effect.gen(function* () {
        const memory = yield* ContainerdMemory.ContainerdMemory
        yield* script(["missing-binary"], {
          startError: 'exec: "missing-binary": executable file not found in $PATH',
        })
        const error = yield* Effect.flip(run({ id: "broken-1", args: ["missing-binary"] }))
        assert.instanceOf(error, JobRunner.JobError)
        assert.strictEqual(error.operation, "start")
        assert.strictEqual(error.jobId, "broken-1")
        assert.include(error.message, "executable file not found")

        yield* script(["serve"], { duration: Duration.infinity })
        const running = yield* Effect.fork(run({ id: "serve-1", args: ["serve"] }))
        yield* Effect.repeat(
          Effect.zipRight(Effect.yieldNow(), memory.inspect({ containerId: "serve-1" }).pipe(Effect.option)),
          { until: (view) => view._tag === "Some" && view.value.status === "RUNNING" },
        )
        yield* Fiber.interrupt(running)
        // withRunner asserts that containerd has no container and no task left
      }),
    ),
  )

  it.effect("a job id containerd would refuse is a JobError of create", () =>
    withRunner(
      Effect.gen(function* () {
        const error = yield* Effect.flip(run({ id: "no spaces allowed", args: ["true"] }))
        assert.strictEqual(error.operation, "create")
        assert.strictEqual(error.cause._tag, "InvalidParameter")
      }),
    ),
  )
})
