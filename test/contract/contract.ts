/**
 * The contract of `Libcontainerd`: one suite, registered once per backend —
 * against the real daemon (`test/integration/contract.test.ts`) and against
 * the in-memory layers (`test/contract/memory.test.ts`). Both runs must pass:
 * whatever a user of the client observes (results, typed errors, stdio,
 * events and their order) is the same on both.
 *
 * A case names its commands by their real args (busybox) and, where the
 * in-memory containerd has no built-in for them, by what they do
 * (`Behaviour`): the backend's `prepare` scripts the in-memory process from
 * that and is a no-op for the real daemon, where the args do it.
 *
 * What the in-memory layers cannot do is said once, in `Capabilities`; the
 * few cases that need it are skipped on a backend without it, the reason in
 * their name. A divergence found and not fixed yet is named once, in
 * `KnownBug`, and its case is an expected failure on the backend that shows
 * it. Both backends run on the live clock (in-memory processes take no time
 * unless a behaviour delays them).
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as NodeStream from "node:stream"
import { assert, describe, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as Spec from "../../src/domain/Spec.js"
import type { ContainerdError } from "../../src/errors/ContainerdError.js"
import * as LibcontainerdLive from "../../src/layers/LibcontainerdLive.js"
import {
  Backend as BackendTag,
  make as makeBackend,
  type Recorded,
  Recorder,
} from "../../src/services/Backend.js"
import type { Containerd } from "../../src/services/Containerd.js"
import { type AttachStdio, Libcontainerd } from "../../src/services/Libcontainerd.js"
import type { DirectIO, ProcessIO } from "../../src/services/ProcessIO.js"

/** What every backend's layer provides: the client, the recording Backend, and what a second client is built on. */
export type Services = Libcontainerd | Recorder | Containerd | ProcessIO

/** What a backend can do beyond the shared contract; each flag gates the few cases that need it. */
export interface Capabilities {
  /** CRIU runs: `createCheckpoint` writes a checkpoint and `start({ checkpointDir })` resumes it. */
  readonly criu: boolean
  /** A process in the container reads its cgroup's files (the limits it runs under) from `/sys/fs/cgroup`. */
  readonly cgroupFiles: boolean
}

/** What a command does, for a backend that cannot run its args (the in-memory containerd scripts it). */
export interface Behaviour {
  readonly stdout?: string
  readonly stderr?: string
  readonly exitCode?: number
  /** Waits this long before writing anything (`sleep N; …`). */
  readonly delayMillis?: number
  /** Prints its terminal's size as `stty size` does ("rows cols"), after the delay. */
  readonly printsTtySize?: boolean
  /** Outgrows the container's memory limit: OOM-killed (the in-memory containerd, which measures no memory, is told so). */
  readonly oom?: boolean
  /** Its binary does not exist: the task cannot start. */
  readonly cannotStart?: boolean
}

/** A command: real args, and what they do when the backend needs telling (built-ins like `cat`, `sleep N` need not). */
export interface Command {
  readonly args: ReadonlyArray<string>
  readonly behaves?: Behaviour
}

/** One backend the contract runs against. */
export interface Backend<R = never> {
  /** The client with a recording Backend, over the backend's containerd and ProcessIO; built once per suite. */
  readonly layer: Layer.Layer<Services | R>
  /** The client's state dir (bundle dirs `<stateDir>/<id>`). */
  readonly stateDir: string
  /** Where cases make their scratch dirs (checkpoint images and targets); the OS's temp dir by default. */
  readonly scratchDir?: string
  /** A container spec running `args`. */
  readonly spec: (id: string, args: ReadonlyArray<string>) => Spec.Spec
  /** Makes `command` do its behaviour in process `processId` ("init" or an exec id) of `containerId`. */
  readonly prepare: (
    containerId: string,
    processId: string,
    command: Command,
  ) => Effect.Effect<void, never, R>
  readonly capabilities: Capabilities
  /**
   * How long the client may take, at most, from handing a process's exit to the Backend to releasing the process
   * (deleting it in containerd, closing and removing its FIFOs): a case that must still be busy when that release
   * runs stays busy this long once the exit was handed over.
   */
  readonly releaseWithin: Duration.DurationInput
  /** Divergences of this backend's stack the contract found and that are not fixed yet (see `KnownBug`). */
  readonly knownBugs?: ReadonlyArray<KnownBug>
}

/**
 * Divergences the contract found and nobody has fixed yet. A case showing one
 * is registered as an expected failure (`fails`) on the backends that list
 * it: the run stays green, and turns red once the bug is fixed — then drop it
 * from the backend's `knownBugs`.
 */
export type KnownBug =
  /**
   * ProcessIOMemory (`src/layers/ProcessIOMemory.ts`, `InPipe`): bytes written to stdin and closed before the
   * process exists reach the process; with the live layer they are lost — the client's write end was the FIFO's
   * only opener, and the kernel drops a pipe's buffer with its last one (the documented limit of
   * `DirectIO.closeStdin`).
   */
  | "memory-keeps-stdin-closed-before-the-process-exists"
  /**
   * ContainerdMemory (`src/internal/memory/scripts.ts`, `resolve`): a built-in command running as the init (PID 1
   * of its pid namespace) dies of SIGTERM; a real PID 1 without a handler ignores every signal but SIGKILL.
   */
  | "memory-pid1-dies-of-sigterm"

// ---- commands used by the cases ----

/** Runs until killed (as an init, by SIGKILL only: a PID 1 without handlers ignores the rest). */
const sleeper: Command = { args: ["sleep", "60"] }
const cat: Command = { args: ["cat"] }
const noop: Command = { args: ["true"] }
const outErrExit3: Command = {
  args: ["sh", "-c", "echo out; echo err >&2; exit 3"],
  behaves: { stdout: "out\n", stderr: "err\n", exitCode: 3 },
}
const outErrExit7: Command = {
  args: ["sh", "-c", "echo from-exec; echo oops >&2; exit 7"],
  behaves: { stdout: "from-exec\n", stderr: "oops\n", exitCode: 7 },
}
const outErr: Command = {
  args: ["sh", "-c", "echo out; echo err >&2"],
  behaves: { stdout: "out\n", stderr: "err\n" },
}
const ttySize: Command = {
  args: ["sh", "-c", "sleep 0.3; stty size"],
  behaves: { delayMillis: 300, printsTtySize: true },
}
const memoryHog: Command = {
  args: ["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"],
  behaves: { oom: true },
}
const missingBinary: Command = { args: ["/no/such/binary"], behaves: { cannotStart: true } }
const exitWith = (code: number): Command => ({ args: ["sh", "-c", `exit ${code}`] })
const readLimit: Command = {
  args: [
    "sh",
    "-c",
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
  ],
}

const MiB = 1024 * 1024

// ---- helpers ----

/** How long a case waits for an event or an output before it fails with what it waited for (under the test timeout). */
const patience = "20 seconds"

/** Waits for `deferred`; fails the case naming `what` when it takes too long (no timer when it is done already). */
const awaitOr = <A>(deferred: Deferred.Deferred<A>, what: string) =>
  Effect.flatMap(
    Deferred.poll(deferred),
    Option.getOrElse(() =>
      Deferred.await(deferred).pipe(
        Effect.timeoutFail({
          duration: patience,
          onTimeout: () => new Error(`${what}: not within ${patience}`),
        }),
        Effect.orDie,
      ),
    ),
  )

/** What a process wrote, each complete once its stream ended; `stderr` is `undefined` without a stderr stream. */
interface Captured {
  readonly stdout: Effect.Effect<string>
  readonly stderr: Effect.Effect<string | undefined>
  readonly io: Effect.Effect<DirectIO>
}

/**
 * A stream's text once it ended ("<failed>" when it failed). The stream is pulled (`Stream.toPull`), not run
 * (`Stream.runFold`): the same chunks in the same order, for about 200 Effect steps per stream instead of 500.
 */
const collect = (stream: Stream.Stream<Uint8Array, ContainerdError>): Effect.Effect<string> =>
  Effect.scoped(
    Effect.flatMap(Stream.toPull(stream), (pull) => {
      const decoder = new TextDecoder()
      let text = ""
      const loop: Effect.Effect<string> = Effect.matchEffect(pull, {
        onFailure: (end) => Effect.succeed(Option.isNone(end) ? text : "<failed>"),
        onSuccess: (chunk) => {
          for (const bytes of chunk) text += decoder.decode(bytes, { stream: true })
          return loop
        },
      })
      return loop
    }),
  )

/** An attachStdio collecting stdout and stderr as text and handing out the DirectIO. */
const capture = Effect.gen(function* () {
  const stdout = yield* Deferred.make<string>()
  const stderr = yield* Deferred.make<string | undefined>()
  const io = yield* Deferred.make<DirectIO>()
  const captured: Captured = {
    stdout: awaitOr(stdout, "the end of stdout"),
    stderr: awaitOr(stderr, "the end of stderr"),
    io: awaitOr(io, "attachStdio"),
  }
  const attach: AttachStdio = (dio) =>
    Effect.gen(function* () {
      yield* Deferred.succeed(io, dio)
      yield* Effect.forkScoped(Effect.flatMap(collect(dio.stdout), (text) => Deferred.succeed(stdout, text)))
      if (dio.stderr === undefined) yield* Deferred.succeed(stderr, undefined)
      else
        yield* Effect.forkScoped(
          Effect.flatMap(collect(dio.stderr), (text) => Deferred.succeed(stderr, text)),
        )
    })
  return { captured, attach }
})

/** The events of one container among all recorded, oldest first. */
const ofContainer = (containerId: string) => (all: ReadonlyArray<Recorded>) =>
  all.filter((e) => e.containerId === containerId)

/** The Backend's events of one container, oldest first. */
const eventsOf = (containerId: string) =>
  Effect.map(
    Effect.flatMap(Recorder, (r) => r.events),
    ofContainer(containerId),
  )

/** Waits until the container's recorded events satisfy `done` (no timer when they do already); returns them. */
const awaitEvents = (containerId: string, what: string, done: (events: ReadonlyArray<Recorded>) => boolean) =>
  Effect.flatMap(Recorder, (r) =>
    Effect.flatMap(r.events, (all) => {
      const now = ofContainer(containerId)(all)
      return done(now)
        ? Effect.succeed(now)
        : r
            .waitFor((recorded) => done(ofContainer(containerId)(recorded)))
            .pipe(
              Effect.map(ofContainer(containerId)),
              Effect.timeoutFail({
                duration: patience,
                onTimeout: () => new Error(`${containerId}: no ${what} within ${patience}`),
              }),
              Effect.orDie,
            )
    }),
  )

/**
 * Waits until `fiber` is blocked (suspended) or done. A fiber running `Libcontainerd.events` blocks only in the
 * take from its subscription, which the stream makes as it starts: once blocked, it sees every later event.
 */
const untilBlocked = <A, E>(fiber: Fiber.RuntimeFiber<A, E>): Effect.Effect<void> =>
  Effect.flatMap(Fiber.status(fiber), (status) =>
    status._tag === "Running" ? untilBlocked(fiber) : Effect.void,
  )

const isExit = (processId: string) => (e: Recorded) => e.type === "exit" && e.info.processId === processId

/** The exit event of a process (the init's process id is the container id). */
const exitOf = (containerId: string, processId: string = containerId) =>
  Effect.map(
    awaitEvents(containerId, `exit of ${processId}`, (events) => events.some(isExit(processId))),
    (events) => events.find(isExit(processId)) as Recorded,
  )

/** Event types, the process named where it is not the container. */
const timeline = (events: ReadonlyArray<Recorded>) =>
  events.map((e) => (e.info.processId === e.containerId ? e.type : `${e.type} ${e.info.processId}`))

/** A named client operation, for the error tables. */
type Operation = readonly [string, Effect.Effect<unknown, ContainerdError>]

/** Every operation on a container's task and processes, named; each needs a running task. */
const taskOperations = (client: Libcontainerd.Service, id: string): ReadonlyArray<Operation> => [
  ["signalProcess", client.signalProcess(id, "init", "SIGTERM")],
  ["resizeTerminal", client.resizeTerminal(id, "init", 80, 24)],
  ["closeStdin", client.closeStdin(id, "init")],
  ["pause", client.pause(id)],
  ["resume", client.resume(id)],
  ["stats", client.stats(id)],
  ["listPids", client.listPids(id)],
  ["summary", client.summary(id)],
  ["deleteTask", client.deleteTask(id)],
  ["updateResources", client.updateResources(id, { memory: { limit: 64 * MiB } })],
  ["createCheckpoint", client.createCheckpoint(id, Path.join(Os.tmpdir(), `contract-${id}`), false)],
]

/** The failure of an effect that must fail, as `{ _tag, message }`. */
const failure = <A, R>(effect: Effect.Effect<A, ContainerdError, R>) =>
  Effect.map(Effect.flip(effect), (e) => ({ _tag: e._tag, message: e.message }))

/** Registers the contract's cases for one backend. */
export const contract = <R>(name: string, backend: Backend<R>): void => {
  const { capabilities: caps, stateDir } = backend
  const scratchDir = backend.scratchDir ?? Os.tmpdir()

  /** Scripts the command where needed and creates the container running it. */
  const create = (id: string, command: Command, edit: (spec: Spec.Spec) => Spec.Spec = (s) => s) =>
    Effect.gen(function* () {
      yield* backend.prepare(id, "init", command)
      yield* (yield* Libcontainerd).create(id, edit(backend.spec(id, command.args)))
    })

  /** Scripts the command where needed and execs it. */
  const exec = (
    containerId: string,
    processId: string,
    command: Command,
    options: {
      readonly terminal?: boolean
      readonly withStdin?: boolean
      readonly attachStdio?: AttachStdio<ContainerdError>
    } = {},
  ) =>
    Effect.gen(function* () {
      yield* backend.prepare(containerId, processId, command)
      const process = Spec.processFrom(backend.spec(containerId, command.args), {
        args: command.args,
        ...(options.terminal === true ? { terminal: true } : {}),
      })
      return yield* (yield* Libcontainerd).exec(containerId, processId, process, {
        ...(options.withStdin === undefined ? {} : { withStdin: options.withStdin }),
        ...(options.attachStdio === undefined ? {} : { attachStdio: options.attachStdio }),
      })
    })

  /** Ends and deletes a container whatever state it is in. */
  const remove = (id: string) =>
    Effect.gen(function* () {
      const client = yield* Libcontainerd
      const status = yield* Effect.option(client.status(id))
      if (Option.isSome(status)) {
        if (status.value !== "stopped") {
          yield* client.signalProcess(id, "init", "SIGKILL")
          yield* exitOf(id)
        }
        yield* client.deleteTask(id)
      }
      yield* client.delete(id)
    })

  /**
   * containerd keeps no backlog: the suite starts once the client's event
   * subscription is live, seen as the exit of a probe container (delivered
   * directly, or by the reconciliation that follows the subscription).
   */
  const ready = Layer.effectDiscard(
    Effect.gen(function* () {
      const client = yield* Libcontainerd
      yield* create("contract-probe", noop)
      yield* client.start("contract-probe")
      yield* exitOf("contract-probe")
      yield* remove("contract-probe")
    }),
  )

  describe(`Libcontainerd contract: ${name}`, () => {
    layer(Layer.provideMerge(ready, backend.layer), { excludeTestServices: true, timeout: "60 seconds" })(
      (it) => {
        /** How a case showing `bug` is registered: an expected failure where the backend lists it. */
        const effectShowing = (bug: KnownBug) =>
          backend.knownBugs?.includes(bug) ? it.effect.fails : it.effect

        // ---- operations ----

        it.effect("version: the daemon names its version", () =>
          Effect.gen(function* () {
            const version = yield* (yield* Libcontainerd).version
            assert.isString(version.version)
            assert.isAbove(version.version.length, 0)
          }),
        )

        it.effect(
          "lifecycle: create makes the bundle dir, start runs the init with stdout and stderr, its exit comes as an event and from deleteTask, delete removes the bundle dir",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              const { captured, attach } = yield* capture
              yield* create("life", outErrExit3)
              assert.isTrue(Fs.existsSync(Path.join(stateDir, "life")), "bundle dir made")
              assert.strictEqual((yield* failure(client.status("life")))._tag, "NotFound", "no task yet")
              const pid = yield* client.start("life", { attachStdio: attach })
              assert.isAbove(pid, 0)
              const exit = yield* exitOf("life")
              assert.deepInclude(exit.info, { processId: "life", pid, exitCode: 3, oomKilled: false })
              assert.isAbove(Number(exit.info.exitedAt?.seconds ?? 0n), 0, "exitedAt set")
              assert.strictEqual(yield* captured.stdout, "out\n")
              assert.strictEqual(yield* captured.stderr, "err\n")
              assert.strictEqual(yield* client.status("life"), "stopped")
              const deleted = yield* client.deleteTask("life")
              assert.strictEqual(deleted.exitCode, 3)
              assert.isAbove(Number(deleted.exitedAt.seconds), 0)
              const events = yield* eventsOf("life")
              assert.deepStrictEqual(timeline(events), ["create", "start", "exit"])
              assert.deepStrictEqual(
                events.map((e) => e.info.pid),
                [pid, pid, pid],
              )
              yield* client.delete("life")
              assert.isFalse(Fs.existsSync(Path.join(stateDir, "life")), "bundle dir removed")
              assert.deepStrictEqual(yield* failure(client.status("life")), {
                _tag: "NotFound",
                message: "no such container",
              })
            }),
        )

        it.effect(
          "events: create, start, exec-added, exec-started, exit of the exec, paused, resumed, exit of the init — in that order",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("order", sleeper)
              const pid = yield* client.start("order")
              const execPid = yield* exec("order", "probe", noop)
              yield* exitOf("order", "probe")
              yield* client.pause("order")
              yield* client.resume("order")
              yield* client.signalProcess("order", "init", "SIGKILL")
              yield* exitOf("order")
              const events = yield* eventsOf("order")
              assert.deepStrictEqual(timeline(events), [
                "create",
                "start",
                "exec-added probe",
                "exec-started probe",
                "exit probe",
                "paused",
                "resumed",
                "exit",
              ])
              assert.strictEqual(events[1]?.info.pid, pid)
              assert.strictEqual(events[3]?.info.pid, execPid, "exec-started carries the exec's pid")
              assert.deepInclude(events[4]?.info, { pid: execPid, exitCode: 0 })
              assert.deepInclude(events[7]?.info, { pid, exitCode: 137 })
              yield* remove("order")
            }),
        )

        it.effect("events: Libcontainerd.events streams what the Backend gets, in the same order", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            const streamed = yield* client.events.pipe(
              Stream.filter((e) => e.containerId === "streamed"),
              Stream.takeUntil((e) => e.type === "exit" && e.info.processId === "streamed"),
              Stream.runCollect,
              Effect.fork,
            )
            // the stream sees only what comes after it subscribed
            yield* untilBlocked(streamed)
            yield* create("streamed", exitWith(2))
            yield* client.start("streamed")
            yield* exitOf("streamed")
            const seen = Chunk.toReadonlyArray(yield* Fiber.join(streamed)).map(
              ({ containerId, info, type }) => ({ containerId, type, info }),
            )
            assert.deepStrictEqual(seen, [...(yield* eventsOf("streamed"))])
            assert.deepStrictEqual(timeline(seen), ["create", "start", "exit"])
            yield* remove("streamed")
          }),
        )

        it.effect("events: containers run concurrently, each one's events in order", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            const ids = [1, 2, 3, 4].map((n) => ({ id: `par-${n}`, code: n }))
            yield* Effect.forEach(
              ids,
              ({ code, id }) => Effect.zipRight(create(id, exitWith(code)), client.start(id)),
              { concurrency: "unbounded", discard: true },
            )
            for (const { code, id } of ids) {
              assert.strictEqual((yield* exitOf(id)).info.exitCode, code, id)
              assert.deepStrictEqual(timeline(yield* eventsOf(id)), ["create", "start", "exit"], id)
            }
            yield* Effect.forEach(ids, ({ id }) => remove(id), { concurrency: "unbounded", discard: true })
          }),
        )

        it.effect(
          "exec: stdout, stderr and exit code; after its exit the exec is gone and its id free again",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("ex", sleeper)
              yield* client.start("ex")
              const { captured, attach } = yield* capture
              const pid = yield* exec("ex", "job", outErrExit7, { attachStdio: attach })
              assert.isAbove(pid, 0)
              assert.deepInclude((yield* exitOf("ex", "job")).info, { pid, exitCode: 7 })
              assert.strictEqual(yield* captured.stdout, "from-exec\n")
              assert.strictEqual(yield* captured.stderr, "oops\n")
              assert.strictEqual(
                (yield* failure(client.signalProcess("ex", "job", "SIGTERM")))._tag,
                "NotFound",
              )
              // the client deletes the exec after handing its exit to the Backend: the id frees up just after
              yield* exec("ex", "job", noop).pipe(
                Effect.retry({
                  while: (e) => e._tag === "Conflict",
                  schedule: Schedule.spaced("2 millis"),
                  times: 500,
                }),
              )
              yield* remove("ex")
            }),
        )

        it.effect("exec: pipeStdout and pipeStderr write the output into Node Writables", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("pipes", sleeper)
            yield* client.start("pipes")
            const texts = { stdout: "", stderr: "" }
            const writable = (key: keyof typeof texts) =>
              new NodeStream.Writable({
                write(chunk: Buffer, _encoding, callback) {
                  texts[key] += chunk.toString()
                  setImmediate(callback)
                },
              })
            const piped = yield* Deferred.make<string>()
            yield* exec("pipes", "job", outErrExit7, {
              attachStdio: (io) =>
                Effect.asVoid(
                  Effect.forkScoped(
                    Effect.all([io.pipeStdout(writable("stdout")), io.pipeStderr!(writable("stderr"))], {
                      concurrency: 2,
                      discard: true,
                    }).pipe(
                      Effect.match({ onFailure: (e) => `failed: ${e.message}`, onSuccess: () => "ok" }),
                      Effect.flatMap((result) => Deferred.succeed(piped, result)),
                    ),
                  ),
                ),
            })
            assert.strictEqual(yield* awaitOr(piped, "the end of the pipes"), "ok")
            assert.deepStrictEqual(texts, { stdout: "from-exec\n", stderr: "oops\n" })
            assert.strictEqual((yield* exitOf("pipes", "job")).info.exitCode, 7)
            yield* remove("pipes")
          }),
        )

        it.effect(
          "exec: a reader attachStdio forked finishes its work after the output ended; the release waits for it",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("slowread", sleeper)
              yield* client.start("slowread")
              const result = yield* Deferred.make<string>()
              const recorder = yield* Recorder
              // still busy after its stream ended, until the client has handed the exit to the Backend and then for
              // as long as the client's release of the exec may take: closing the process's scope then would cut it
              const busy = Effect.zipRight(
                Effect.provideService(exitOf("slowread", "job"), Recorder, recorder),
                Effect.sleep(backend.releaseWithin),
              )
              const attach: AttachStdio = (io) =>
                Effect.asVoid(
                  Effect.forkScoped(
                    collect(io.stdout).pipe(
                      Effect.zipLeft(busy),
                      Effect.flatMap((text) => Deferred.succeed(result, text)),
                    ),
                  ),
                )
              yield* exec("slowread", "job", outErrExit7, { attachStdio: attach })
              assert.strictEqual((yield* exitOf("slowread", "job")).info.exitCode, 7)
              const text = yield* Deferred.await(result).pipe(
                Effect.timeoutFail({
                  duration: "5 seconds",
                  onTimeout: () => new Error("the reader was interrupted: its result never came"),
                }),
                Effect.orDie,
              )
              assert.strictEqual(text, "from-exec\n")
              yield* remove("slowread")
            }),
        )

        it.effect(
          "listPids and summary: the init and the execs, execs named; SIGTERM ends an exec with 143",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("pids", sleeper)
              const initPid = yield* client.start("pids")
              const execPid = yield* exec("pids", "napper", sleeper)
              const pids = yield* client.listPids("pids")
              assert.includeMembers([...pids], [initPid, execPid])
              const summary = yield* client.summary("pids")
              assert.deepInclude(summary, { pid: execPid, execId: "napper" })
              assert.isUndefined(summary.find((p) => p.pid === initPid)?.execId, "the init has no exec id")
              yield* client.signalProcess("pids", "napper", "SIGTERM")
              assert.strictEqual((yield* exitOf("pids", "napper")).info.exitCode, 143)
              assert.notInclude(yield* client.listPids("pids"), execPid)
              yield* client.signalProcess("pids", "init", 9)
              assert.strictEqual((yield* exitOf("pids")).info.exitCode, 137)
              assert.deepStrictEqual([...(yield* client.listPids("pids"))], [], "a stopped task has no pids")
              yield* remove("pids")
            }),
        )

        effectShowing("memory-pid1-dies-of-sigterm")(
          "signals: an init without handlers (PID 1) ignores SIGTERM; SIGKILL ends it (137)",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("pid1", sleeper)
              yield* client.start("pid1")
              yield* client.signalProcess("pid1", "init", "SIGTERM")
              // an exec's round trip gives a fatal signal ample time to show
              yield* exec("pid1", "later", noop)
              yield* exitOf("pid1", "later")
              assert.strictEqual(yield* client.status("pid1"), "running")
              yield* client.signalProcess("pid1", "init", "SIGKILL")
              assert.strictEqual((yield* exitOf("pid1")).info.exitCode, 137)
            }).pipe(Effect.ensuring(Effect.exit(remove("pid1")))),
        )

        it.effect("stdin: cat echoes what is written; closeStdin ends it with 0", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            const { captured, attach } = yield* capture
            yield* create("cat", cat)
            yield* client.start("cat", { withStdin: true, attachStdio: attach })
            const io = yield* captured.io
            assert.isDefined(io.stdin)
            yield* io.stdin!.write(new TextEncoder().encode("line one\nline two\n"))
            yield* client.closeStdin("cat", "init")
            assert.strictEqual((yield* exitOf("cat")).info.exitCode, 0)
            assert.strictEqual(yield* captured.stdout, "line one\nline two\n")
            yield* remove("cat")
          }),
        )

        it.effect(
          "stdin: bytes written before the exec exists reach it; a close after it started ends it",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("before", sleeper)
              yield* client.start("before")
              const { captured, attach } = yield* capture
              yield* exec("before", "reader", cat, {
                withStdin: true,
                attachStdio: (io, processId) =>
                  Effect.zipRight(
                    attach(io, processId),
                    io.stdin!.write(new TextEncoder().encode("early bird\n")),
                  ),
              })
              yield* client.closeStdin("before", "reader")
              assert.strictEqual((yield* exitOf("before", "reader")).info.exitCode, 0)
              assert.strictEqual(yield* captured.stdout, "early bird\n")
              yield* remove("before")
            }),
        )

        effectShowing("memory-keeps-stdin-closed-before-the-process-exists")(
          "stdin: bytes written and closed before the exec exists are lost (closeStdin's documented limit); the exec reads EOF",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("early", sleeper)
              yield* client.start("early")
              const { captured, attach } = yield* capture
              yield* exec("early", "reader", cat, {
                withStdin: true,
                attachStdio: (io, processId) =>
                  Effect.gen(function* () {
                    yield* attach(io, processId)
                    yield* io.stdin!.write(new TextEncoder().encode("early bird\n"))
                    yield* io.closeStdin
                  }),
              })
              assert.strictEqual((yield* exitOf("early", "reader")).info.exitCode, 0, "the close reached it")
              assert.strictEqual(yield* captured.stdout, "", "the bytes did not")
            }).pipe(Effect.ensuring(Effect.exit(remove("early")))),
        )

        it.effect("terminal: one output stream, stderr merged into it, no stderr stream", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("tty", sleeper)
            yield* client.start("tty")
            const { captured, attach } = yield* capture
            yield* exec("tty", "shell", outErr, { terminal: true, attachStdio: attach })
            assert.strictEqual((yield* exitOf("tty", "shell")).info.exitCode, 0)
            assert.strictEqual(yield* captured.stdout, "out\r\nerr\r\n", "a pty sends CR LF")
            assert.isUndefined(yield* captured.stderr, "no stderr stream with a terminal")
            yield* remove("tty")
          }),
        )

        it.effect("resizeTerminal: the process sees its terminal's new size", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("resize", sleeper)
            yield* client.start("resize")
            const { captured, attach } = yield* capture
            yield* exec("resize", "shell", ttySize, { terminal: true, attachStdio: attach })
            yield* client.resizeTerminal("resize", "shell", 120, 40)
            assert.strictEqual((yield* exitOf("resize", "shell")).info.exitCode, 0)
            assert.strictEqual((yield* captured.stdout).trim(), "40 120")
            yield* remove("resize")
          }),
        )

        it.effect(
          "pause and resume: status paused then running; a paused container refuses a second pause and an exec",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("frozen", sleeper)
              yield* client.start("frozen")
              assert.strictEqual(yield* client.status("frozen"), "running")
              yield* client.pause("frozen")
              assert.strictEqual(yield* client.status("frozen"), "paused")
              assert.strictEqual((yield* failure(client.pause("frozen")))._tag, "System")
              assert.strictEqual((yield* failure(exec("frozen", "late", noop)))._tag, "System")
              yield* client.resume("frozen")
              assert.strictEqual(yield* client.status("frozen"), "running")
              assert.strictEqual((yield* failure(client.resume("frozen")))._tag, "System")
              yield* exec("frozen", "late", noop)
              assert.strictEqual((yield* exitOf("frozen", "late")).info.exitCode, 0, "the exec id was free")
              assert.deepStrictEqual(
                timeline(yield* eventsOf("frozen")).filter((t) => t === "paused" || t === "resumed"),
                ["paused", "resumed"],
              )
              yield* remove("frozen")
            }),
        )

        it.effect("SIGKILL ends a paused container (137)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("stuck", sleeper)
            yield* client.start("stuck")
            yield* client.pause("stuck")
            yield* client.signalProcess("stuck", "init", "SIGKILL")
            assert.strictEqual((yield* exitOf("stuck")).info.exitCode, 137)
            assert.strictEqual(yield* client.status("stuck"), "stopped")
            assert.strictEqual((yield* client.deleteTask("stuck")).exitCode, 137)
            yield* client.delete("stuck")
          }),
        )

        it.effect("stats: the spec's memory limit, usage and pids; updateResources changes the limit", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("limits", sleeper, Spec.withMemoryLimit(64 * MiB))
            yield* client.start("limits")
            const stats = yield* client.stats("limits")
            assert.strictEqual(stats.memory.limit, BigInt(64 * MiB))
            assert.isTrue(stats.memory.usage > 0n, "memory usage reported")
            assert.isTrue(stats.pids.current >= 1n, "the init counted")
            yield* client.updateResources("limits", { memory: { limit: 96 * MiB } })
            assert.strictEqual((yield* client.stats("limits")).memory.limit, BigInt(96 * MiB))
            yield* remove("limits")
          }),
        )

        it.effect.skipIf(!caps.cgroupFiles)(
          "updateResources: the new limit shows in the container's cgroup files (needs capability cgroupFiles)",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("cgroup", sleeper, Spec.withMemoryLimit(64 * MiB))
              yield* client.start("cgroup")
              const limitNow = (processId: string) =>
                Effect.gen(function* () {
                  const { captured, attach } = yield* capture
                  yield* exec("cgroup", processId, readLimit, { attachStdio: attach })
                  yield* exitOf("cgroup", processId)
                  return Number((yield* captured.stdout).trim())
                })
              assert.strictEqual(yield* limitNow("before"), 64 * MiB)
              yield* client.updateResources("cgroup", { memory: { limit: 96 * MiB } })
              assert.strictEqual(yield* limitNow("after"), 96 * MiB)
              yield* remove("cgroup")
            }),
        )

        it.effect(
          "OOM: over its memory limit the container gets an oom event, then exits 137 marked oomKilled",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("hog", memoryHog, Spec.withMemoryLimit(16 * MiB))
              yield* client.start("hog")
              const exit = yield* exitOf("hog")
              const types = timeline(yield* eventsOf("hog"))
              assert.include(types, "oom")
              assert.isBelow(types.indexOf("oom"), types.indexOf("exit"), "oom before exit")
              assert.deepInclude(exit.info, { exitCode: 137, oomKilled: true })
              yield* remove("hog")
            }),
        )

        it.effect("deleteTask of a running task fails with System and changes nothing", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("busy", sleeper)
            const pid = yield* client.start("busy")
            assert.strictEqual((yield* failure(client.deleteTask("busy")))._tag, "System")
            assert.strictEqual(yield* client.status("busy"), "running")
            assert.include(yield* client.listPids("busy"), pid)
            yield* remove("busy")
          }),
        )

        it.effect(
          "a start that fails (missing binary) is System, leaves no task, and the container deletes",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("broken", missingBinary)
              assert.strictEqual((yield* failure(client.start("broken")))._tag, "System")
              assert.strictEqual((yield* failure(client.status("broken")))._tag, "NotFound")
              assert.deepStrictEqual(yield* failure(client.deleteTask("broken")), {
                _tag: "NotFound",
                message: "container is not running",
              })
              yield* client.delete("broken")
              assert.isFalse(Fs.existsSync(Path.join(stateDir, "broken")))
            }),
        )

        it.effect(
          "restore: a container another client started (that client closed) is restored with its stdio; its exit reaches this client",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              const pid = yield* Effect.scoped(
                Effect.gen(function* () {
                  const other = yield* LibcontainerdLive.make({ stateDir }).pipe(
                    Effect.provideService(
                      BackendTag,
                      makeBackend(() => Effect.void),
                    ),
                  )
                  yield* backend.prepare("survivor", "init", cat)
                  yield* other.create("survivor", backend.spec("survivor", cat.args))
                  return yield* other.start("survivor", { withStdin: true })
                }),
              )
              const { captured, attach } = yield* capture
              assert.deepStrictEqual(yield* client.restore("survivor", attach), { alive: true, pid })
              assert.strictEqual(yield* client.status("survivor"), "running")
              const io = yield* captured.io
              yield* io.stdin!.write(new TextEncoder().encode("still here\n"))
              yield* client.closeStdin("survivor", "init")
              assert.deepInclude((yield* exitOf("survivor")).info, { pid, exitCode: 0 })
              assert.strictEqual(yield* captured.stdout, "still here\n")
              assert.deepStrictEqual(yield* failure(client.restore("survivor")), {
                _tag: "Conflict",
                message: "id already in use",
              })
              yield* remove("survivor")
              assert.strictEqual((yield* failure(client.restore("survivor")))._tag, "NotFound")
            }),
        )

        it.effect.skipIf(caps.criu)(
          "without CRIU: createCheckpoint and start from a checkpoint dir fail with System; the task runs on, no task is left",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              const scratch = Fs.mkdtempSync(Path.join(scratchDir, "contract-checkpoint-"))
              yield* Effect.gen(function* () {
                yield* create("cp", sleeper)
                const pid = yield* client.start("cp")
                const target = Path.join(scratch, "cp")
                assert.strictEqual(
                  (yield* failure(client.createCheckpoint("cp", target, true)))._tag,
                  "System",
                )
                assert.strictEqual(yield* client.status("cp"), "running")
                assert.include(yield* client.listPids("cp"), pid)
                assert.isFalse(Fs.existsSync(target), "nothing extracted")

                const image = Path.join(scratch, "image")
                Fs.mkdirSync(image)
                Fs.writeFileSync(Path.join(image, "inventory.img"), "not a CRIU image")
                yield* create("cp-start", sleeper)
                const refused = yield* failure(client.start("cp-start", { checkpointDir: image }))
                assert.strictEqual(refused._tag, "System")
                assert.strictEqual(
                  (yield* failure(client.status("cp-start")))._tag,
                  "NotFound",
                  "no task left",
                )
                yield* client.start("cp-start")
                assert.strictEqual(yield* client.status("cp-start"), "running")
                yield* remove("cp")
                yield* remove("cp-start")
              }).pipe(
                Effect.ensuring(Effect.sync(() => Fs.rmSync(scratch, { recursive: true, force: true }))),
              )
            }),
        )

        it.effect.skipIf(!caps.criu)(
          "createCheckpoint with exit stops the task; start from the checkpoint dir resumes it (needs capability criu)",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              const scratch = Fs.mkdtempSync(Path.join(scratchDir, "contract-checkpoint-"))
              yield* Effect.gen(function* () {
                yield* create("cpr", sleeper)
                yield* client.start("cpr")
                const dir = Path.join(scratch, "cpr")
                yield* client.createCheckpoint("cpr", dir, true)
                assert.isAbove(Fs.readdirSync(dir).length, 0, "the checkpoint is in the dir")
                yield* exitOf("cpr")
                yield* client.deleteTask("cpr")
                yield* client.start("cpr", { checkpointDir: dir })
                assert.strictEqual(yield* client.status("cpr"), "running")
                yield* client.signalProcess("cpr", "init", "SIGKILL")
                yield* awaitEvents(
                  "cpr",
                  "second exit",
                  (events) => events.filter(isExit("cpr")).length === 2,
                )
                yield* client.deleteTask("cpr")
                yield* client.delete("cpr")
              }).pipe(
                Effect.ensuring(Effect.sync(() => Fs.rmSync(scratch, { recursive: true, force: true }))),
              )
            }),
        )

        // ---- errors (the table of Libcontainerd.ts) ----

        it.effect("create with an id in use: Conflict(id already in use)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("dup", sleeper)
            assert.deepStrictEqual(yield* failure(client.create("dup", backend.spec("dup", ["true"]))), {
              _tag: "Conflict",
              message: "id already in use",
            })
            yield* client.delete("dup")
          }),
        )

        it.effect("every operation on an unknown container: NotFound(no such container)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            const id = "ghost"
            const operations: ReadonlyArray<Operation> = [
              ["start", client.start(id)],
              ["exec", client.exec(id, "e1", Spec.makeProcess({ args: ["true"] }))],
              ["delete", client.delete(id)],
              ["status", client.status(id)],
              ...taskOperations(client, id),
            ]
            for (const [name, operation] of operations) {
              assert.deepStrictEqual(
                yield* failure(operation),
                { _tag: "NotFound", message: "no such container" },
                name,
              )
            }
            // restore asks containerd, which has never heard of it
            assert.strictEqual((yield* failure(client.restore(id)))._tag, "NotFound", "restore")
          }),
        )

        it.effect("start on a started container: Conflict(container already started)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("twice", sleeper)
            yield* client.start("twice")
            assert.deepStrictEqual(yield* failure(client.start("twice")), {
              _tag: "Conflict",
              message: "container already started",
            })
            yield* remove("twice")
          }),
        )

        it.effect(
          "exec without a task: InvalidParameter(container is not running); with an id in use: Conflict(id already in use)",
          () =>
            Effect.gen(function* () {
              const client = yield* Libcontainerd
              yield* create("execs", sleeper)
              assert.deepStrictEqual(yield* failure(exec("execs", "e1", noop)), {
                _tag: "InvalidParameter",
                message: "container is not running",
              })
              yield* client.start("execs")
              yield* exec("execs", "e1", sleeper)
              for (const taken of ["e1", "init", "execs"]) {
                assert.deepStrictEqual(
                  yield* failure(exec("execs", taken, noop)),
                  { _tag: "Conflict", message: "id already in use" },
                  taken,
                )
              }
              yield* remove("execs")
            }),
        )

        it.effect("process operations without a task: NotFound(container is not running)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            const id = "idle"
            yield* create(id, sleeper)
            const operations = taskOperations(client, id)
            for (const [name, operation] of operations) {
              assert.deepStrictEqual(
                yield* failure(operation),
                { _tag: "NotFound", message: "container is not running" },
                name,
              )
            }
            assert.strictEqual((yield* failure(client.status(id)))._tag, "NotFound", "status")
            yield* client.delete(id)
          }),
        )

        it.effect("process operations on an unknown exec: NotFound(no such exec)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("noexec", sleeper)
            yield* client.start("noexec")
            const operations: ReadonlyArray<[string, Effect.Effect<unknown, ContainerdError>]> = [
              ["signalProcess", client.signalProcess("noexec", "phantom", "SIGTERM")],
              ["resizeTerminal", client.resizeTerminal("noexec", "phantom", 80, 24)],
              ["closeStdin", client.closeStdin("noexec", "phantom")],
            ]
            for (const [name, operation] of operations) {
              assert.deepStrictEqual(
                yield* failure(operation),
                { _tag: "NotFound", message: "no such exec" },
                name,
              )
            }
            yield* remove("noexec")
          }),
        )

        it.effect("delete while the container has a task: Conflict(… delete the task first)", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            yield* create("attached", sleeper)
            yield* client.start("attached")
            const refused = yield* failure(client.delete("attached"))
            assert.strictEqual(refused._tag, "Conflict")
            assert.include(refused.message, "delete the task first")
            assert.strictEqual(yield* client.status("attached"), "running", "nothing changed")
            yield* client.signalProcess("attached", "init", "SIGKILL")
            yield* exitOf("attached")
            const stillRefused = yield* failure(client.delete("attached"))
            assert.strictEqual(stillRefused._tag, "Conflict", "a stopped task is still a task")
            yield* remove("attached")
          }),
        )

        it.effect("bad ids, specs, signals, sizes and resources: InvalidParameter, and nothing is made", () =>
          Effect.gen(function* () {
            const client = yield* Libcontainerd
            const before = Fs.readdirSync(stateDir).sort()
            for (const id of ["../escape", "a/b", "x".repeat(77), "", "-x", "."]) {
              assert.strictEqual(
                (yield* failure(client.create(id, backend.spec("x", ["true"]))))._tag,
                "InvalidParameter",
                JSON.stringify(id),
              )
            }
            const noArgs = yield* failure(
              client.create("bad", Spec.withArgs(backend.spec("bad", ["true"]), [])),
            )
            assert.strictEqual(noArgs._tag, "InvalidParameter")
            assert.include(noArgs.message, "process.args")
            assert.deepStrictEqual(Fs.readdirSync(stateDir).sort(), before, "no bundle dir made")
            assert.strictEqual((yield* failure(client.status("bad")))._tag, "NotFound", "not registered")

            yield* create("checks", sleeper)
            yield* client.start("checks")
            const invalid: ReadonlyArray<[string, Effect.Effect<unknown, ContainerdError>]> = [
              ["signal name", client.signalProcess("checks", "init", "SIGNOPE" as NodeJS.Signals)],
              ["signal 0", client.signalProcess("checks", "init", 0)],
              ["signal 65", client.signalProcess("checks", "init", 65)],
              ["width", client.resizeTerminal("checks", "init", -1, 24)],
              ["height", client.resizeTerminal("checks", "init", 80, 70000)],
              ["memory limit", client.updateResources("checks", { memory: { limit: -5 } })],
              ["exec id", client.exec("checks", "../x", Spec.makeProcess({ args: ["true"] }))],
              ["checkpoint dir", client.createCheckpoint("checks", "relative/dir", false)],
            ]
            for (const [name, operation] of invalid) {
              assert.strictEqual((yield* failure(operation))._tag, "InvalidParameter", name)
            }
            assert.strictEqual(yield* client.status("checks"), "running", "nothing changed")
            assert.strictEqual((yield* client.stats("checks")).pids.current, 1n, "no exec was made")
            yield* remove("checks")
          }),
        )
      },
    )
  })
}
