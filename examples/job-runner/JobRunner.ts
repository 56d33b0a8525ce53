/**
 * A job runner on effect-containerd, written the way an application would:
 * each job is one container whose init process is the job. `run` creates the
 * container over a prepared root filesystem, starts it with its output
 * captured, waits for its exit through `Libcontainerd.events`, kills it with
 * SIGKILL when it outlives its timeout, and always removes the task and the
 * container afterwards — when the job fails, and when `run` is interrupted.
 *
 * ```ts
 * const result = yield* JobRunner.pipe(
 *   Effect.flatMap((runner) => runner.run({ id: "build-42", args: ["make"], timeout: "10 minutes" })),
 * )
 * ```
 */
import { Context, Deferred, Duration, Effect, Fiber, Layer, Option, Ref, Schema, Stream, pipe } from "effect"
import { ContainerdError, Spec, System } from "effect-containerd"
import { Libcontainerd } from "effect-containerd/services/Libcontainerd"

/** One job: a command line run as the init process of a container of its own. */
export interface Job {
  /** The job's id, used as the container id: unique among running jobs, and a valid containerd identifier. */
  readonly id: string
  /** The command line, resolved inside the root filesystem. */
  readonly args: ReadonlyArray<string>
  /** Environment variables on top of the default `PATH`. */
  readonly env?: Readonly<Record<string, string>>
  /** How long the job may run before it is killed with SIGKILL (default: no limit). */
  readonly timeout?: Duration.DurationInput
  /** The container's memory limit in bytes (default: none). */
  readonly memoryLimit?: number
}

/** How a job ended. */
export interface JobResult {
  /** The job's exit status: 137 when it was killed (timeout, OOM). */
  readonly exitCode: number
  /** Everything the job wrote to stdout, decoded as UTF-8. */
  readonly stdout: string
  /** Everything the job wrote to stderr, decoded as UTF-8. */
  readonly stderr: string
  /** Whether the container hit its memory limit. */
  readonly oomKilled: boolean
  /** Whether the job was killed because it outlived its timeout. */
  readonly timedOut: boolean
}

/** A job could not be run or cleaned up: what the runner was doing, and containerd's error. */
export class JobError extends Schema.TaggedError<JobError>("job-runner/JobError")("JobError", {
  jobId: Schema.String,
  operation: Schema.Literal("create", "start", "wait", "kill", "cleanup"),
  cause: ContainerdError,
}) {
  override get message(): string {
    return `job ${this.jobId}: ${this.operation} failed: ${this.cause._tag}: ${this.cause.message}`
  }
}

/** The runner's interface. */
export declare namespace JobRunner {
  /** Runs jobs. */
  export interface Service {
    /** Runs a job to its end and returns its exit status and output; nothing of the job is left afterwards. */
    readonly run: (job: Job) => Effect.Effect<JobResult, JobError>
  }
}

/** The job runner's tag. */
export class JobRunner extends Context.Tag("job-runner/JobRunner")<JobRunner, JobRunner.Service>() {}

/** Options of the runner. */
export interface Options {
  /** Absolute path of the root filesystem every job runs in (shared, writable). */
  readonly rootfsPath: string
  /** The containerd namespace the `Libcontainerd` client works in (the first element of the cgroups path). */
  readonly namespace: string
}

/** How long a killed job gets to report its exit before the runner goes on removing it. */
const killGrace = Duration.seconds(10)

/**
 * Waits until `fiber` is suspended. For a fiber reading `Libcontainerd.events`
 * this means it has subscribed and waits for events: the stream subscribes
 * when it first runs, and each subscriber sees only the events after that.
 * (A fiber that yields for fairness reads as suspended too; subscribing takes
 * far fewer steps than the runtime's yield budget of 2048.)
 */
const untilSuspended = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Effect.Effect<void> =>
  Effect.asVoid(
    Effect.repeat(Effect.zipRight(Effect.yieldNow(), Fiber.status(fiber)), {
      until: (status) => status._tag !== "Running",
    }),
  )

/** Decodes a process output to a string, into `into`. */
const collect = (
  output: Stream.Stream<Uint8Array, ContainerdError> | undefined,
  into: Deferred.Deferred<string, ContainerdError>,
) =>
  Deferred.complete(
    into,
    output === undefined ? Effect.succeed("") : Stream.mkString(Stream.decodeText(output)),
  )

/** Builds the runner over the `Libcontainerd` client in context. */
export const make = (options: Options): Effect.Effect<JobRunner.Service, never, Libcontainerd> =>
  Effect.map(Libcontainerd, (client) => {
    const specOf = (job: Job): Spec.Spec =>
      pipe(
        Spec.defaultLinux({
          id: job.id,
          namespace: options.namespace,
          rootPath: options.rootfsPath,
          args: job.args,
        }),
        (spec) => (job.env === undefined ? spec : Spec.withEnv(spec, job.env)),
        (spec) => (job.memoryLimit === undefined ? spec : Spec.withMemoryLimit(spec, job.memoryLimit)),
      )

    const failWith =
      (jobId: string, operation: JobError["operation"]) =>
      <A, R>(effect: Effect.Effect<A, ContainerdError, R>): Effect.Effect<A, JobError, R> =>
        Effect.mapError(effect, (cause) => new JobError({ jobId, operation, cause }))

    /** Starts the job's task and waits for its end; the task is deleted whatever happens. */
    const runTask = (
      job: Job,
      cleanupFailed: (error: JobError) => Effect.Effect<void>,
    ): Effect.Effect<JobResult, JobError> =>
      Effect.gen(function* () {
        const id = job.id
        // subscribe before the start: the exit cannot come before the subscription
        const exited = yield* client.events.pipe(
          Stream.filter((e) => e.type === "exit" && e.containerId === id && e.info.processId === id),
          Stream.runHead,
          Effect.forkScoped,
        )
        yield* untilSuspended(exited)
        const stdout = yield* Deferred.make<string, ContainerdError>()
        const stderr = yield* Deferred.make<string, ContainerdError>()

        const awaitExit = Effect.flatMap(
          Fiber.join(exited),
          Option.match({
            onNone: () =>
              Effect.fail(
                new JobError({
                  jobId: id,
                  operation: "wait",
                  cause: new System({ message: "the client's event stream ended before the job exited" }),
                }),
              ),
            onSome: (event) => Effect.succeed(event.info),
          }),
        )

        /** Waits for the exit; past the timeout, kills the job and waits for the exit of the kill. */
        const waitOrKill = Effect.gen(function* () {
          if (job.timeout === undefined) return { info: yield* awaitExit, timedOut: false }
          const inTime = yield* Effect.timeout(awaitExit, job.timeout).pipe(
            Effect.catchTag("TimeoutException", () => Effect.succeed(undefined)),
          )
          if (inTime !== undefined) return { info: inTime, timedOut: false }
          const killed = yield* client.signalProcess(id, "init", "SIGKILL").pipe(
            Effect.as(true),
            // it exited on its own in the meantime
            Effect.catchTag("NotFound", () => Effect.succeed(false)),
            failWith(id, "kill"),
          )
          return { info: yield* awaitExit, timedOut: killed }
        })

        return yield* Effect.acquireUseRelease(
          client
            .start(id, {
              attachStdio: (io) =>
                Effect.gen(function* () {
                  yield* Effect.forkScoped(collect(io.stdout, stdout))
                  yield* Effect.forkScoped(collect(io.stderr, stderr))
                }),
            })
            .pipe(failWith(id, "start")),
          () =>
            Effect.gen(function* () {
              const { info, timedOut } = yield* waitOrKill
              // the outputs end once the process and its children are gone (bounded by the ProcessIO layer)
              const output = yield* Effect.all([Deferred.await(stdout), Deferred.await(stderr)]).pipe(
                failWith(id, "wait"),
              )
              return {
                exitCode: info.exitCode,
                stdout: output[0],
                stderr: output[1],
                oomKilled: info.oomKilled,
                timedOut,
              }
            }),
          () =>
            Effect.gen(function* () {
              // interrupted or failed while the job runs: kill it and give it time to exit
              if (Option.isNone(yield* Fiber.poll(exited))) {
                yield* client.signalProcess(id, "init", "SIGKILL").pipe(
                  Effect.catchTag("NotFound", () => Effect.void),
                  failWith(id, "kill"),
                )
                yield* Effect.ignore(Effect.timeout(Fiber.await(exited), killGrace))
              }
              yield* client.deleteTask(id).pipe(failWith(id, "cleanup"))
            }).pipe(Effect.catchAll(cleanupFailed)),
        )
      }).pipe(Effect.scoped)

    const run = (job: Job): Effect.Effect<JobResult, JobError> =>
      Effect.gen(function* () {
        // a release cannot fail: a cleanup failure is kept here, and is the result when the job itself succeeded
        const cleanupError = yield* Ref.make(Option.none<JobError>())
        const cleanupFailed = (error: JobError) =>
          Effect.zipRight(
            Effect.logWarning("job cleanup failed", error),
            Ref.update(
              cleanupError,
              Option.orElse(() => Option.some(error)),
            ),
          )
        const result = yield* Effect.acquireUseRelease(
          client.create(job.id, specOf(job)).pipe(failWith(job.id, "create")),
          () => runTask(job, cleanupFailed),
          () => client.delete(job.id).pipe(failWith(job.id, "cleanup"), Effect.catchAll(cleanupFailed)),
        )
        const failed = yield* Ref.get(cleanupError)
        return Option.isSome(failed) ? yield* failed.value : result
      }).pipe(Effect.withSpan("JobRunner.run", { attributes: { "job.id": job.id } }))

    return { run }
  })

/** The runner as a layer over a `Libcontainerd` client. */
export const layer = (options: Options): Layer.Layer<JobRunner, never, Libcontainerd> =>
  Layer.effect(JobRunner, make(options))
