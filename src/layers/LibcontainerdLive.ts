/**
 * The `Libcontainerd` client over `Containerd`, `ProcessIO` and a `Backend`.
 *
 * Every operation that creates something in containerd runs its RPC and the
 * registry update uninterruptibly, and undoes what it made when a later step
 * fails or is interrupted: no half-created task, no FIFO, no registry entry is
 * left behind.
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import type * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import type { EventInfo, EventType, ProcessedEvent } from "../domain/Event.js"
import { initProcessName } from "../domain/Event.js"
import type { TaskEvent, TaskEventsItem } from "../domain/TaskEvent.js"
import * as Spec from "../domain/Spec.js"
import * as Stats from "../domain/Stats.js"
import type { Descriptor, ProcessRecord, RuncOptions, Timestamp } from "../domain/Types.js"
import {
  Conflict,
  type ContainerdError,
  InvalidParameter,
  NotFound,
  System,
} from "../errors/ContainerdError.js"
import { Backend } from "../services/Backend.js"
import * as Checkpoint from "../internal/checkpoint.js"
import * as EventQueue from "../internal/eventQueue.js"
import * as Telemetry from "../internal/telemetry.js"
import { Signal } from "../internal/signal.js"
import * as TaskEventsLive from "./TaskEventsLive.js"
import {
  Containerd,
  currentNamespace,
  leased,
  validateIdentifier,
  withNamespace,
} from "../services/Containerd.js"
import { type AttachStdio, Libcontainerd, type StartOptions, type Status } from "../services/Libcontainerd.js"
import { type DirectIO, ProcessIO } from "../services/ProcessIO.js"
import { TaskEvents } from "../services/TaskEvents.js"

/** Options of the client layer. */
export interface Options {
  /** Absolute dir holding one bundle dir per container (`<stateDir>/<id>`). */
  readonly stateDir: string
  /** containerd namespace of every call (default: the `Containerd` layer's). */
  readonly namespace?: string
  /** Runtime of new containers (default `io.containerd.runc.v2`). */
  readonly runtime?: string
  /** Pass `NoPivotRoot` to runc (for a root on a ramdisk; the seed's `DOCKER_RAMDISK`). */
  readonly noPivotRoot?: boolean
  /** Keep bundle dirs on `delete` (the seed's `LIBCONTAINERD_NOCLEAN`). */
  readonly noClean?: boolean
  /** Delays between event resubscriptions (default: exponential from 100 ms, jittered, capped at 5 s). */
  readonly eventsRetry?: Schedule.Schedule<unknown, ContainerdError>
}

/** How long an exit found by reconciliation waits for the stream to deliver it first. */
export const reconcileGrace = "250 millis"

/** The default runtime. */
export const defaultRuntime = "io.containerd.runc.v2"

/**
 * How long a process's release waits, once its outputs have ended, for the fibers `attachStdio` forked to finish
 * (a reader folding the last chunks, completing what it reports through) before the scope's close interrupts them.
 */
export const readersGrace = "2 seconds"

/** One process the client tracks: a task's init or an exec. */
interface ProcessEntry {
  readonly processId: string
  pid: number
  /** Owns the process's FIFOs, fds and the fibers `attachStdio` forked. */
  readonly scope: Scope.CloseableScope
  /** Absent for a restored task in UNKNOWN state, or one created without stdio. */
  readonly io: DirectIO | undefined
  /** Waits (at most `readersGrace`) for the fibers `attachStdio` forked that still run. */
  readonly readersDone: Effect.Effect<void>
  /**
   * Set once an exec's start returned (with `pid` set, or left 0 when the start failed). Until then `pid` is 0,
   * and an exit of this exec id waits for it: it may be a late exit of an earlier exec of the same id.
   */
  readonly pidKnown?: Signal
  /** Set when an exit of this process was queued for the Backend: later exits are duplicates. */
  exitSeen?: boolean
}

/** One container the client tracks. */
interface ContainerEntry {
  readonly id: string
  readonly bundleDir: string
  readonly spec: Spec.Spec
  /** "creating" while `create` runs, "starting" while `start` runs. */
  phase: "creating" | "ready" | "starting" | "deleting"
  task: ProcessEntry | undefined
  readonly execs: Map<string, ProcessEntry | "pending">
  oomKilled: boolean
  /** Serializes exec starts: containerd 1.6.20 is very slow with concurrent ones. */
  readonly execStarts: Effect.Semaphore
}

const signalNumber = (signal: number | NodeJS.Signals): Effect.Effect<number, InvalidParameter> => {
  if (typeof signal === "number") {
    return Number.isInteger(signal) && signal > 0 && signal < 65
      ? Effect.succeed(signal)
      : Effect.fail(new InvalidParameter({ message: `signal: ${signal} is not a signal number (1–64)` }))
  }
  const n = (Os.constants.signals as Record<string, number | undefined>)[signal]
  return n === undefined
    ? Effect.fail(new InvalidParameter({ message: `signal: unknown signal name ${JSON.stringify(signal)}` }))
    : Effect.succeed(n)
}

/** The host uid/gid mapped to container root in a user namespace (the seed's `getSpecUser`). */
export const specUser = (spec: Spec.Spec): { readonly uid: number; readonly gid: number } => {
  const hasUserNs = spec.linux?.namespaces?.some((ns) => ns.type === "user") ?? false
  if (!hasUserNs) return { uid: 0, gid: 0 }
  // the host id of container id 0: the mapping whose range holds 0 (the seed's hostIDFromMap), else 0
  const root = (
    mappings: ReadonlyArray<{ containerID: number; hostID: number; size: number }> | undefined,
  ) => {
    const m = mappings?.find((m) => m.containerID <= 0 && 0 < m.containerID + m.size)
    return m === undefined ? 0 : m.hostID - m.containerID
  }
  return { uid: root(spec.linux?.uidMappings), gid: root(spec.linux?.gidMappings) }
}

const statusOf = (s: string): Status => s.toLowerCase() as Status

/**
 * Wires a process's IO. Without `attachStdio` the output is read and dropped, so the process never blocks on a
 * full pipe. With it, the fibers it forks are tracked: the effect returned waits for those still running (at most
 * `readersGrace`), for the release to run once the outputs have ended.
 */
const attach = <E, R>(
  attachStdio: AttachStdio<E, R> | undefined,
  io: DirectIO,
  processId: string,
): Effect.Effect<Effect.Effect<void>, E, R | Scope.Scope> => {
  if (attachStdio === undefined) return Effect.as(io.discardOutput, Effect.void)
  const readers = Supervisor.unsafeTrack()
  return Effect.as(
    Effect.supervised(attachStdio(io, processId), readers),
    Effect.flatMap(readers.value, (running) => (running.length === 0 ? Effect.void : awaitReaders(running))),
  )
}

const readersGraceMillis = Duration.toMillis(Duration.decode(readersGrace))

/**
 * Waits until every fiber has ended, at most `readersGrace` (real time, like a gRPC deadline). It watches the
 * fibers with observers and one timer, where `Effect.timeout(Fiber.awaitAll(…))` forks two fibers to race.
 */
const awaitReaders = (running: ReadonlyArray<Fiber.RuntimeFiber<unknown, unknown>>): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    let pending = running.length
    let done = false
    const stop = () => {
      done = true
      clearTimeout(timer)
      for (const fiber of running) fiber.removeObserver(onEnd)
    }
    const onEnd = () => {
      pending -= 1
      if (pending > 0 || done) return
      stop()
      resume(Effect.void)
    }
    const timer = setTimeout(() => {
      if (done) return
      stop()
      resume(Effect.void)
    }, readersGraceMillis)
    // an observer added to a fiber that has ended runs at once
    for (const fiber of running) if (!done) fiber.addObserver(onEnd)
    return Effect.sync(stop)
  })

/**
 * The task topics the client does not act on (as the seed, it ignores a task's delete and checkpoint events); its
 * subscription leaves them out, so containerd does not send them.
 */
export const unhandledTopics: ReadonlyArray<string> = ["/tasks/delete", "/tasks/checkpointed"]

/** Builds the client in a Scope: closing it releases handles and fibers, never containers. */
export const make = (options: Options) =>
  Effect.gen(function* () {
    const containerd = yield* Containerd
    const processIO = yield* ProcessIO
    const backend = yield* Backend
    const clientScope = yield* Effect.scope

    if (!Path.isAbsolute(options.stateDir)) {
      return yield* new InvalidParameter({
        message: `stateDir: ${JSON.stringify(options.stateDir)} must be an absolute path`,
      })
    }
    const namespace = yield* validateIdentifier("namespace", options.namespace ?? containerd.namespace)
    const stateDir = Path.resolve(options.stateDir)
    yield* Effect.try({
      try: () => Fs.mkdirSync(stateDir, { recursive: true, mode: 0o711 }),
      catch: (cause) =>
        new System({ message: `cannot create the state dir ${stateDir}: ${String(cause)}`, cause }),
    })
    const runtime = options.runtime ?? defaultRuntime
    const inNamespace = withNamespace(namespace)
    const ownNamespace = Option.some(namespace)
    /**
     * Runs a Containerd call in the client's namespace. A call uses the fiber's namespace override, else the
     * service's default; when that is the client's namespace already (the usual case: the client takes the
     * `Containerd` layer's), the call runs as it is, without an override of its own (a FiberRef swap per RPC).
     */
    const call = <A>(effect: Effect.Effect<A, ContainerdError>): Effect.Effect<A, ContainerdError> =>
      Effect.withFiberRuntime((fiber) => {
        const override = fiber.getFiberRef(currentNamespace)
        return (Option.isSome(override) ? override.value : containerd.namespace) === namespace
          ? effect
          : Effect.locally(effect, currentNamespace, ownNamespace)
      })

    const containers = new Map<string, ContainerEntry>()
    const events = yield* PubSub.unbounded<ProcessedEvent>()

    // the span names the operation (no stack trace: one per call costs more than the call's own work)
    const span = (name: string, attributes: Record<string, string>) =>
      Telemetry.traced(name, `Libcontainerd.${name}`, { ...attributes, "containerd.namespace": namespace })

    // ---- registry look-ups (the seed's getContainer / getProcess) ----

    const getContainer = (id: string): Effect.Effect<ContainerEntry, ContainerdError> => {
      const entry = containers.get(id)
      return entry === undefined || entry.phase === "creating"
        ? Effect.fail(new NotFound({ message: "no such container" }))
        : Effect.succeed(entry)
    }

    const getTask = (containerId: string): Effect.Effect<[ContainerEntry, ProcessEntry], ContainerdError> =>
      Effect.flatMap(getContainer(containerId), (entry) =>
        entry.task === undefined
          ? Effect.fail(new NotFound({ message: "container is not running" }))
          : Effect.succeed([entry, entry.task] as [ContainerEntry, ProcessEntry]),
      )

    /** The exec id to send to containerd: "" for the init process. */
    const getProcess = (
      containerId: string,
      processId: string,
    ): Effect.Effect<
      { readonly entry: ContainerEntry; readonly execId: string; readonly process: ProcessEntry },
      ContainerdError
    > =>
      Effect.flatMap(getTask(containerId), ([entry, task]) => {
        if (processId === initProcessName || processId === containerId) {
          return Effect.succeed({ entry, execId: "", process: task })
        }
        const exec = entry.execs.get(processId)
        return exec === undefined || exec === "pending"
          ? Effect.fail(new NotFound({ message: "no such exec" }))
          : Effect.succeed({ entry, execId: processId, process: exec })
      })

    const checkIds = (containerId: string, processId?: string) =>
      Effect.zipRight(
        validateIdentifier("containerId", containerId),
        processId === undefined ? Effect.void : validateIdentifier("processId", processId),
      )

    // ---- process IO ----

    /** What closing a process's stdin sends once it exists; a daemon going away meanwhile is not an error. */
    const closeStdinHook = (containerId: string, execId: string) =>
      call(containerd.tasks.closeIO({ containerId, execId, stdin: true })).pipe(
        Effect.catchIf(
          (e) => e.message.includes("transport is closing"),
          () => Effect.void,
        ),
      )

    /**
     * `Effect.onError` for a step of an operation that runs uninterruptibly (inside the operation's
     * `uninterruptibleMask`, outside `restore`): there a failure handler runs on every failure, interruption of a
     * restored part included, so the step needs no mask of its own, which `onError` adds to every call.
     */
    const onFailureMasked =
      <E, R2>(undo: (cause: Cause.Cause<E>) => Effect.Effect<unknown, never, R2>) =>
      <A, E1 extends E, R>(effect: Effect.Effect<A, E1, R>): Effect.Effect<A, E1, R | R2> =>
        Effect.tapErrorCause(effect, undo)

    /** `Effect.ensuring` for a step that runs uninterruptibly, as `onFailureMasked`. */
    const ensuringMasked =
      (finalizer: Effect.Effect<unknown>) =>
      <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
        Effect.matchCauseEffect(effect, {
          onFailure: (cause) => Effect.zipRight(finalizer, Effect.failCause(cause)),
          onSuccess: (a) => Effect.as(finalizer, a),
        })

    /**
     * `Scope.extend(scope)` for a step that runs uninterruptibly (as `onFailureMasked`): the scope is added to the
     * fiber's context with `FiberRef.set`, and the caller's context set back when `effect` ends, instead of the
     * acquire-use-release of `Scope.extend` (26 Effect steps against 8). `effect` keeps its own interruptibility
     * (a `restore` inside it).
     */
    const extendMasked =
      (scope: Scope.Scope) =>
      <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, Scope.Scope>> =>
        Effect.withFiberRuntime((fiber) => {
          const context = fiber.currentContext
          const restoreContext = FiberRef.set(FiberRef.currentContext, context)
          return Effect.zipRight(
            FiberRef.set(FiberRef.currentContext, Context.add(context, Scope.Scope, scope)),
            Effect.matchCauseEffect(effect as Effect.Effect<A, E, Exclude<R, Scope.Scope>>, {
              onFailure: (cause) => Effect.zipRight(restoreContext, Effect.failCause(cause)),
              onSuccess: (a) => Effect.as(restoreContext, a),
            }),
          )
        })

    /** Runs `effect` in a process's scope, and closes that scope when it fails. */
    const ownedBy =
      (scope: Scope.CloseableScope) =>
      <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, Exclude<R, Scope.Scope>> =>
        effect.pipe(
          Scope.extend(scope),
          Effect.onExit((exit) => (Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void)),
        )

    /**
     * Makes a process's FIFOs and opens them in a fresh scope of its own, runs `attachStdio` there; all of it
     * interruptibly, through the operation's `restore` (this runs inside its `uninterruptibleMask`). On failure the
     * scope is closed, then `undo` runs.
     */
    const prepareProcess = <E, R>(
      restore: <A, E2, R2>(effect: Effect.Effect<A, E2, R2>) => Effect.Effect<A, E2, R2>,
      entry: ContainerEntry,
      processId: string,
      withStdin: boolean,
      terminal: boolean,
      execId: string,
      attachStdio: AttachStdio<E, R> | undefined,
      undo: Effect.Effect<void>,
    ) =>
      Effect.flatMap(Scope.fork(clientScope, ExecutionStrategy.sequential), (scope) => {
        const { uid, gid } = specUser(entry.spec)
        return restore(
          Effect.gen(function* () {
            const set = yield* processIO.create({
              bundleDir: entry.bundleDir,
              processId,
              stdin: withStdin,
              terminal,
              ...(uid === 0 ? {} : { uid }),
              ...(gid === 0 ? {} : { gid }),
            })
            const io = yield* processIO.open(set, { onStdinClose: closeStdinHook(entry.id, execId) })
            const readersDone = yield* attach(attachStdio, io, processId)
            return { io, readersDone }
          }),
        ).pipe(
          extendMasked(scope),
          onFailureMasked((cause) => Effect.zipRight(Scope.close(scope, Exit.failCause(cause)), undo)),
          Effect.map(({ io, readersDone }) => ({ scope, io, readersDone })),
        )
      })

    /**
     * Releases a process's IO after its exit: bounded drain, then every fd and FIFO goes. `gone` runs once the
     * FIFOs are removed (an exec's id is freed there: a new exec of that id makes FIFOs of the same paths).
     */
    const releaseProcess = (process: ProcessEntry, gone: Effect.Effect<void> = Effect.void) => {
      // the outputs have ended: readers finish with what was queued before the scope's close interrupts them
      const rest = Effect.zipRight(
        Effect.zipRight(process.readersDone, gone),
        Effect.suspend(() => Scope.close(process.scope, Exit.void)),
      )
      const io = process.io
      return io === undefined
        ? rest
        : Effect.zipRight(
            Effect.zipRight(Effect.zipRight(io.markExited, io.awaitDrained), io.processDeleted),
            rest,
          )
    }

    /** Releases IO of a process that was never created in containerd (or is gone). */
    const abandonProcess = (prepared: { scope: Scope.CloseableScope; io: DirectIO }) =>
      Effect.zipRight(prepared.io.processDeleted, Scope.close(prepared.scope, Exit.void))

    /**
     * Kill, then delete; when the delete is refused because the process still
     * runs, wait (bounded) and delete again. A CREATED task refuses a plain
     * delete; a created exec that never started is deleted without a wait
     * (its wait would never return).
     */
    const forceDelete = (
      kill: Effect.Effect<void, ContainerdError>,
      wait: Effect.Effect<unknown, ContainerdError>,
      remove: Effect.Effect<unknown, ContainerdError>,
    ) =>
      kill.pipe(
        Effect.ignore,
        Effect.zipRight(
          remove.pipe(
            Effect.catchIf(
              (e) => e._tag !== "NotFound",
              () =>
                Effect.interruptible(wait).pipe(
                  Effect.timeout("10 seconds"),
                  Effect.ignore,
                  Effect.zipRight(Effect.ignore(remove)),
                ),
            ),
            Effect.ignore,
          ),
        ),
        Effect.uninterruptible,
      )

    const forceDeleteTask = (containerId: string) =>
      forceDelete(
        call(containerd.tasks.kill({ containerId, signal: 9, all: true })),
        call(containerd.tasks.wait({ containerId })),
        call(containerd.tasks.delete({ containerId })),
      )

    const forceDeleteProcess = (containerId: string, execId: string) =>
      forceDelete(
        call(containerd.tasks.kill({ containerId, execId, signal: 9 })),
        call(containerd.tasks.wait({ containerId, execId })),
        call(containerd.tasks.deleteProcess({ containerId, execId })),
      )

    // ---- operations ----

    const create: Libcontainerd.Service["create"] = (id, spec, runtimeOptions) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          yield* validateIdentifier("id", id)
          if (containers.has(id)) return yield* new Conflict({ message: "id already in use" })
          const valid = yield* restore(Spec.validateDecoded(spec))
          const bundleDir = Path.join(stateDir, id)
          const entry: ContainerEntry = {
            id,
            bundleDir,
            spec: valid,
            phase: "creating",
            task: undefined,
            execs: new Map(),
            oomKilled: false,
            execStarts: Effect.unsafeMakeSemaphore(1),
          }
          containers.set(id, entry)
          const madeDir = !Fs.existsSync(bundleDir)
          const undo = Effect.sync(() => {
            containers.delete(id)
            if (madeDir) Fs.rmSync(bundleDir, { recursive: true, force: true })
          })
          yield* Effect.gen(function* () {
            const { uid, gid } = specUser(valid)
            yield* Effect.try({
              try: () => {
                Fs.mkdirSync(bundleDir, { recursive: true, mode: 0o711 })
                if (uid !== 0 || gid !== 0) Fs.chownSync(bundleDir, uid, gid)
              },
              catch: (cause) =>
                new System({ message: `prepare bundle dir failed: ${bundleDir}: ${String(cause)}`, cause }),
            })
            yield* call(
              containerd.containers.create({
                id,
                spec: valid,
                runtime: {
                  name: runtime,
                  ...(runtimeOptions === undefined ? {} : { options: runtimeOptions }),
                },
              }),
            ).pipe(
              onFailureMasked((cause: Cause.Cause<ContainerdError>) =>
                // unless the id was taken already, the daemon may have made the container before the failure reached us
                Cause.failureOption(cause).pipe(
                  Option.filter((e) => e._tag === "Conflict"),
                  Option.match({
                    onSome: () => Effect.void,
                    onNone: () => call(containerd.containers.delete(id)).pipe(Effect.ignore),
                  }),
                ),
              ),
            )
          }).pipe(onFailureMasked(() => undo))
          entry.phase = "ready"
        }),
      ).pipe(span("create", { "container.id": id }))

    const start: Libcontainerd.Service["start"] = (id, startOptions = {}) => {
      const checkpointDir = startOptions.checkpointDir
      if (checkpointDir === undefined || checkpointDir === "") {
        return startTask(id, startOptions, undefined).pipe(span("start", { "container.id": id }))
      }
      return Effect.gen(function* () {
        yield* validateIdentifier("id", id)
        if (!Path.isAbsolute(checkpointDir)) {
          return yield* new InvalidParameter({
            message: `checkpointDir: ${JSON.stringify(checkpointDir)} must be an absolute path`,
          })
        }
        yield* getContainer(id)
        // the blob lives under a lease while the task is created, and is deleted afterwards whatever happens
        return yield* inNamespace(
          leased(() =>
            Effect.acquireUseRelease(
              Checkpoint.uploadCheckpoint(id, checkpointDir),
              (descriptor) => startTask(id, startOptions, descriptor),
              (descriptor) =>
                containerd.content
                  .delete(descriptor.digest)
                  .pipe(
                    Effect.catchAll((e) =>
                      Effect.logWarning("failed to delete temporary checkpoint entry", e).pipe(
                        Effect.annotateLogs({ ref: checkpointDir, digest: descriptor.digest }),
                      ),
                    ),
                  ),
            ),
          ),
        ).pipe(Effect.provideService(Containerd, containerd))
      }).pipe(span("start", { "container.id": id }))
    }

    const startTask = <E, R>(
      id: string,
      startOptions: StartOptions<E, R>,
      checkpoint: Descriptor | undefined,
    ) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          yield* validateIdentifier("id", id)
          const entry = yield* getContainer(id)
          if (entry.task !== undefined || entry.phase !== "ready") {
            return yield* new Conflict({ message: "container already started" })
          }
          entry.phase = "starting"
          const prepared = yield* prepareProcess(
            restore,
            entry,
            initProcessName,
            startOptions.withStdin ?? false,
            entry.spec.process?.terminal ?? false,
            "",
            startOptions.attachStdio,
            Effect.sync(() => {
              entry.phase = "ready"
            }),
          )
          const { uid, gid } = specUser(entry.spec)
          const taskOptions: RuncOptions = {
            ...(uid === 0 ? {} : { ioUid: uid }),
            ...(gid === 0 ? {} : { ioGid: gid }),
            ...(options.noPivotRoot ? { noPivotRoot: true } : {}),
          }
          const created = yield* call(
            containerd.tasks.create({
              containerId: id,
              stdin: prepared.io.set.stdin ?? "",
              stdout: prepared.io.set.stdout,
              stderr: prepared.io.set.stderr ?? "",
              terminal: prepared.io.set.terminal,
              ...(checkpoint === undefined ? {} : { checkpoint }),
              ...(Object.keys(taskOptions).length > 0 ? { options: taskOptions } : {}),
            }),
          ).pipe(
            // the daemon may have made the task before the failure reached us (interruption right after the call)
            onFailureMasked(() =>
              Effect.all([
                forceDeleteTask(id),
                abandonProcess(prepared),
                Effect.sync(() => {
                  entry.phase = "ready"
                }),
              ]),
            ),
          )
          const task: ProcessEntry = { processId: initProcessName, pid: created.pid, ...prepared }
          entry.task = task
          entry.oomKilled = false
          yield* prepared.io.processCreated
          const started = yield* restore(call(containerd.tasks.start({ containerId: id }))).pipe(
            onFailureMasked(() =>
              Effect.gen(function* () {
                yield* forceDeleteTask(id)
                entry.task = undefined
                entry.phase = "ready"
                yield* releaseProcess(task)
              }),
            ),
          )
          task.pid = started.pid
          entry.phase = "ready"
          return started.pid
        }),
      )

    const exec: Libcontainerd.Service["exec"] = (containerId, processId, processSpec, execOptions = {}) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          yield* checkIds(containerId, processId)
          const entry = yield* getContainer(containerId)
          if (entry.task === undefined)
            return yield* new InvalidParameter({ message: "container is not running" })
          if (processId === initProcessName || processId === containerId || entry.execs.has(processId)) {
            return yield* new Conflict({ message: "id already in use" })
          }
          const spec = yield* Spec.validateProcessDecoded(processSpec)
          entry.execs.set(processId, "pending")
          const unreserve = Effect.sync(() => {
            if (entry.execs.get(processId) === "pending") entry.execs.delete(processId)
          })
          const prepared = yield* prepareProcess(
            restore,
            entry,
            processId,
            execOptions.withStdin ?? false,
            spec.terminal ?? false,
            processId,
            execOptions.attachStdio,
            unreserve,
          )
          yield* restore(entry.execStarts.take(1)).pipe(
            onFailureMasked(() => Effect.zipRight(abandonProcess(prepared), unreserve)),
          )
          return yield* Effect.gen(function* () {
            yield* call(
              containerd.tasks.exec({
                containerId,
                execId: processId,
                stdin: prepared.io.set.stdin ?? "",
                stdout: prepared.io.set.stdout,
                stderr: prepared.io.set.stderr ?? "",
                terminal: prepared.io.set.terminal,
                spec,
              }),
            ).pipe(
              onFailureMasked(() =>
                Effect.all([
                  // a created exec that never started is deleted without kill or wait
                  call(containerd.tasks.deleteProcess({ containerId, execId: processId })).pipe(
                    Effect.ignore,
                    Effect.uninterruptible,
                  ),
                  abandonProcess(prepared),
                  unreserve,
                ]),
              ),
            )
            // a Signal, not a Deferred: a Deferred copies Effect's commit prototype (about 2 KB each)
            const pidKnown = new Signal()
            const process: ProcessEntry = { processId, pid: 0, pidKnown, ...prepared }
            entry.execs.set(processId, process)
            const started = yield* restore(
              call(containerd.tasks.start({ containerId, execId: processId })),
            ).pipe(
              onFailureMasked(() =>
                Effect.gen(function* () {
                  pidKnown.succeed(undefined)
                  yield* forceDeleteProcess(containerId, processId)
                  entry.execs.delete(processId)
                  yield* releaseProcess(process)
                }),
              ),
            )
            process.pid = started.pid
            pidKnown.succeed(undefined)
            // the shim makes an exec's stdin when it starts: only now can a close be sent
            yield* prepared.io.processCreated
            return started.pid
          }).pipe(ensuringMasked(entry.execStarts.release(1)))
        }),
      ).pipe(span("exec", { "container.id": containerId, "process.id": processId }))

    const signalProcess: Libcontainerd.Service["signalProcess"] = (containerId, processId, signal) =>
      Effect.gen(function* () {
        yield* checkIds(containerId, processId)
        const n = yield* signalNumber(signal)
        const { execId } = yield* getProcess(containerId, processId)
        yield* call(containerd.tasks.kill({ containerId, execId, signal: n }))
      }).pipe(span("signalProcess", { "container.id": containerId, "process.id": processId }))

    const resizeTerminal: Libcontainerd.Service["resizeTerminal"] = (containerId, processId, width, height) =>
      Effect.gen(function* () {
        yield* checkIds(containerId, processId)
        for (const [field, value] of [
          ["width", width],
          ["height", height],
        ] as const) {
          if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
            return yield* new InvalidParameter({
              message: `${field}: ${value} is not a terminal size (0–65535)`,
            })
          }
        }
        const { execId } = yield* getProcess(containerId, processId)
        yield* call(containerd.tasks.resizePty({ containerId, execId, width, height }))
      }).pipe(span("resizeTerminal", { "container.id": containerId, "process.id": processId }))

    const closeStdin: Libcontainerd.Service["closeStdin"] = (containerId, processId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId, processId)
        const { execId, process } = yield* getProcess(containerId, processId)
        if (process.io?.stdin !== undefined) {
          yield* process.io.closeStdin
        } else {
          yield* call(containerd.tasks.closeIO({ containerId, execId, stdin: true }))
        }
      }).pipe(span("closeStdin", { "container.id": containerId, "process.id": processId }))

    const pause: Libcontainerd.Service["pause"] = (containerId) =>
      Effect.zipRight(
        Effect.zipRight(checkIds(containerId), getTask(containerId)),
        call(containerd.tasks.pause(containerId)),
      ).pipe(span("pause", { "container.id": containerId }))

    const resume: Libcontainerd.Service["resume"] = (containerId) =>
      Effect.zipRight(
        Effect.zipRight(checkIds(containerId), getTask(containerId)),
        call(containerd.tasks.resume(containerId)),
      ).pipe(span("resume", { "container.id": containerId }))

    const stats: Libcontainerd.Service["stats"] = (containerId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        yield* getTask(containerId)
        const metrics = yield* call(containerd.tasks.metrics([`id==${containerId}`]))
        const metric = metrics.find((m) => m.id === containerId) ?? metrics[0]
        if (metric === undefined)
          return yield* new NotFound({ message: `no metrics for container ${containerId}` })
        const decoded = Stats.fromMetric(metric)
        if (decoded === undefined) {
          return yield* new System({
            message: `metrics of container ${containerId} have an unknown type: ${metric.data._tag === "unknown" ? metric.data.data.typeUrl : metric.data._tag}`,
          })
        }
        return decoded
      }).pipe(span("stats", { "container.id": containerId }))

    const listPids: Libcontainerd.Service["listPids"] = (containerId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        yield* getTask(containerId)
        const pids = yield* call(containerd.tasks.listPids(containerId))
        return pids.map((p) => p.pid)
      }).pipe(span("listPids", { "container.id": containerId }))

    const summary: Libcontainerd.Service["summary"] = (containerId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        yield* getTask(containerId)
        return yield* call(containerd.tasks.listPids(containerId))
      }).pipe(span("summary", { "container.id": containerId }))

    const deleteTask: Libcontainerd.Service["deleteTask"] = (containerId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        const [entry, task] = yield* getTask(containerId)
        const deleted = yield* call(containerd.tasks.delete({ containerId }))
        entry.task = undefined
        const execs = [...entry.execs.values()].filter((p): p is ProcessEntry => p !== "pending")
        entry.execs.clear()
        for (const p of [task, ...execs]) yield* releaseProcess(p)
        return { exitCode: deleted.exitStatus, exitedAt: deleted.exitedAt }
      }).pipe(Effect.uninterruptible, span("deleteTask", { "container.id": containerId }))

    const deleteContainer: Libcontainerd.Service["delete"] = (containerId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        const entry = yield* getContainer(containerId)
        if (entry.task !== undefined || entry.phase !== "ready") {
          return yield* new Conflict({
            message: `container ${containerId} has a task: delete the task first (deleteTask)`,
          })
        }
        entry.phase = "deleting"
        yield* call(containerd.containers.delete(containerId)).pipe(
          onFailureMasked(() =>
            Effect.sync(() => {
              entry.phase = "ready"
            }),
          ),
        )
        containers.delete(containerId)
        if (!options.noClean) {
          yield* Effect.try({
            try: () => Fs.rmSync(entry.bundleDir, { recursive: true, force: true }),
            catch: (cause) => new System({ message: `failed to remove ${entry.bundleDir}`, cause }),
          }).pipe(
            Effect.catchAll((e) =>
              Effect.logError("failed to remove bundle dir", e).pipe(
                Effect.annotateLogs({ container: containerId, bundle: entry.bundleDir }),
              ),
            ),
          )
        }
      }).pipe(Effect.uninterruptible, span("delete", { "container.id": containerId }))

    const status: Libcontainerd.Service["status"] = (containerId) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        const entry = yield* getContainer(containerId)
        if (entry.task === undefined) return yield* new NotFound({ message: "no such task" })
        const record = yield* call(containerd.tasks.get({ containerId }))
        return statusOf(record.status)
      }).pipe(span("status", { "container.id": containerId }))

    const updateResources: Libcontainerd.Service["updateResources"] = (containerId, resources) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        const valid = yield* Spec.validateResources(resources)
        yield* getTask(containerId)
        yield* call(containerd.tasks.update({ containerId, resources: valid }))
      }).pipe(span("updateResources", { "container.id": containerId }))

    /** Re-opens a live process's FIFOs by the paths containerd reports, in a scope of its own. */
    const reattachProcess = <E, R>(
      containerId: string,
      processId: string,
      execId: string,
      record: ProcessRecord,
      attachStdio: AttachStdio<E, R> | undefined,
    ) =>
      Effect.gen(function* () {
        const scope = yield* Scope.fork(clientScope, ExecutionStrategy.sequential)
        if (record.status === "UNKNOWN" || record.stdout === "") {
          return {
            processId,
            pid: record.pid,
            scope,
            io: undefined,
            readersDone: Effect.void,
          } satisfies ProcessEntry
        }
        const { io, readersDone } = yield* Effect.gen(function* () {
          const io = yield* processIO.reattach(
            { stdin: record.stdin, stdout: record.stdout, stderr: record.stderr, terminal: record.terminal },
            { onStdinClose: closeStdinHook(containerId, execId) },
          )
          yield* io.processCreated
          const readersDone = yield* attach(attachStdio, io, processId)
          return { io, readersDone }
        }).pipe(ownedBy(scope))
        return { processId, pid: record.pid, scope, io, readersDone } satisfies ProcessEntry
      })

    const restoreContainer: Libcontainerd.Service["restore"] = (id, attachStdio) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          yield* validateIdentifier("id", id)
          if (containers.has(id)) return yield* new Conflict({ message: "id already in use" })
          const reserved: ContainerEntry = {
            id,
            bundleDir: Path.join(stateDir, id),
            spec: {} as Spec.Spec,
            phase: "creating",
            task: undefined,
            execs: new Map(),
            oomKilled: false,
            execStarts: yield* Effect.makeSemaphore(1),
          }
          containers.set(id, reserved)
          const opened: Array<ProcessEntry> = []
          return yield* restore(
            Effect.gen(function* () {
              const container = yield* call(containerd.containers.get(id))
              const taskRecord = yield* call(containerd.tasks.get({ containerId: id })).pipe(
                Effect.map(Option.some),
                Effect.catchTag("NotFound", () => Effect.succeedNone),
              )
              const entry: ContainerEntry = { ...reserved, spec: container.spec ?? ({} as Spec.Spec) }
              if (Option.isNone(taskRecord)) {
                entry.phase = "ready"
                containers.set(id, entry)
                return { alive: false, pid: 0 }
              }
              const task: ProcessEntry = yield* reattachProcess(
                id,
                initProcessName,
                "",
                taskRecord.value,
                attachStdio,
              )
              opened.push(task)
              entry.task = task
              const alive = taskRecord.value.status !== "STOPPED"
              if (alive) {
                const pids = yield* call(containerd.tasks.listPids(id))
                for (const { execId } of pids) {
                  if (execId === undefined) continue
                  const record = yield* call(containerd.tasks.get({ containerId: id, execId })).pipe(
                    Effect.map(Option.some),
                    Effect.catchTag("NotFound", () => Effect.succeedNone),
                  )
                  if (Option.isNone(record)) continue
                  if (record.value.status === "STOPPED") {
                    // finished while no client ran: nobody will wait for it; delete it and its FIFOs
                    yield* call(containerd.tasks.deleteProcess({ containerId: id, execId })).pipe(
                      Effect.ignore,
                    )
                    yield* Effect.sync(() => {
                      for (const path of [record.value.stdin, record.value.stdout, record.value.stderr]) {
                        if (path !== "" && path.startsWith(`${reserved.bundleDir}/`))
                          Fs.rmSync(path, { force: true })
                      }
                    })
                    continue
                  }
                  const exec = yield* reattachProcess(id, execId, execId, record.value, attachStdio)
                  opened.push(exec)
                  entry.execs.set(execId, exec)
                }
              }
              entry.phase = "ready"
              containers.set(id, entry)
              if (!alive) {
                // it exited before the restore: `alive: false` tells the caller, no exit event follows
                task.exitSeen = true
              } else {
                // an exit that came while the container was not registered yet was dropped: look again
                const restored: Array<[string, string, ProcessEntry]> = [[id, "", task]]
                for (const [execId, exec] of entry.execs) {
                  if (exec !== "pending") restored.push([execId, execId, exec])
                }
                for (const [processId, execId, process] of restored) {
                  const record = yield* call(
                    containerd.tasks.get(execId === "" ? { containerId: id } : { containerId: id, execId }),
                  ).pipe(Effect.option)
                  if (
                    Option.isSome(record) &&
                    record.value.status === "STOPPED" &&
                    process.exitSeen !== true
                  ) {
                    yield* deliverExit(
                      entry,
                      processId,
                      record.value.pid,
                      record.value.exitStatus,
                      record.value.exitedAt,
                    )
                  }
                }
              }
              yield* Effect.logDebug("restored container").pipe(
                Effect.annotateLogs({ container: id, alive, pid: taskRecord.value.pid }),
              )
              return { alive, pid: taskRecord.value.pid }
            }),
          ).pipe(
            Effect.onError(() =>
              Effect.gen(function* () {
                containers.delete(id)
                // the processes live on in containerd: close our handles, keep their FIFOs
                yield* Effect.forEach(opened, (p) => Scope.close(p.scope, Exit.void), { discard: true })
              }),
            ),
          )
        }),
      ).pipe(span("restore", { "container.id": id }))

    const createCheckpoint: Libcontainerd.Service["createCheckpoint"] = (containerId, checkpointDir, exit) =>
      Effect.gen(function* () {
        yield* checkIds(containerId)
        if (!Path.isAbsolute(checkpointDir)) {
          return yield* new InvalidParameter({
            message: `checkpointDir: ${JSON.stringify(checkpointDir)} must be an absolute path`,
          })
        }
        yield* getTask(containerId)
        // the daemon writes the checkpoint's blobs under our lease: nothing refers to them until the image exists
        const image = yield* inNamespace(
          leased(() =>
            Effect.flatMap(
              call(containerd.tasks.checkpoint({ containerId, options: { exit } })),
              (descriptors) => Checkpoint.checkpointImage(containerId, descriptors),
            ),
          ),
        )
        // whatever happens, the checkpoint image goes
        yield* inNamespace(Checkpoint.extractCheckpointImage(image, checkpointDir)).pipe(
          Effect.ensuring(
            call(containerd.images.delete(image, { sync: true })).pipe(
              Effect.catchAll((e) =>
                Effect.logWarning("failed to delete checkpoint image", e).pipe(
                  Effect.annotateLogs({ image }),
                ),
              ),
            ),
          ),
        )
      }).pipe(
        Effect.provideService(Containerd, containerd),
        span("createCheckpoint", { "container.id": containerId }),
      )

    // ---- events (the seed's processEventStream / processEvent) ----

    const queue = yield* EventQueue.make
    // a TaskEvents in the context wins (tests feed events by hand); else follow the client's namespace, handing
    // each item to the handler straight from the subscription (no mailbox and second stream in between)
    type Follow = (
      onItem: (item: TaskEventsItem) => Effect.Effect<void>,
    ) => Effect.Effect<void, ContainerdError>
    const follow: Follow = yield* Effect.serviceOption(TaskEvents).pipe(
      Effect.flatMap(
        Option.match({
          onSome: (taskEvents) =>
            Effect.succeed<Follow>((onItem) => Stream.runForEach(taskEvents.subscribe, onItem)),
          onNone: () =>
            TaskEventsLive.follow(containerd, {
              namespace,
              ignoredTopics: unhandledTopics,
              ...(options.eventsRetry === undefined ? {} : { retry: options.eventsRetry }),
            }),
        }),
      ),
    )

    /** Hands one event to the Backend and the `events` stream, in the container's order. */
    const dispatch = (type: EventType, info: EventInfo, after?: Effect.Effect<void>) => {
      const processed = Effect.zipRight(
        PubSub.publish(events, { containerId: info.containerId, type, info }),
        // the Backend is called when the task runs; a failure of its effect is logged, a throw is the task's defect
        Effect.suspend(() =>
          backend
            .processEvent(info.containerId, type, info)
            .pipe(
              Effect.catchAllCause((cause) =>
                Effect.logError("failed to process event", cause).pipe(
                  Effect.annotateLogs({ container: info.containerId, event: type, process: info.processId }),
                ),
              ),
            ),
        ),
      )
      queue.unsafeAppend(
        info.containerId,
        after === undefined ? processed : Effect.zipRight(processed, after),
      )
    }

    /** The exit of a process, delivered once: duplicates (shim retries, reconciliation) are dropped. */
    const deliverExit = (
      entry: ContainerEntry,
      processId: string,
      pid: number,
      exitCode: number,
      exitedAt: Timestamp | undefined,
      pidSettled = false,
    ): Effect.Effect<void> => {
      const isInit = processId === entry.id
      const process = isInit ? entry.task : entry.execs.get(processId)
      if (process === undefined || process === "pending") {
        return Effect.logDebug("exit of a process the client does not track").pipe(
          Effect.annotateLogs({ container: entry.id, process: processId }),
        )
      }
      if (!pidSettled && process.pid === 0 && pid !== 0 && process.pidKnown !== undefined) {
        // the exec's start is in flight: this exit is its own (a fast process) or a late one of an earlier exec
        // of the same id, which must not end it; its start's pid tells them apart
        return Effect.flatMap(process.pidKnown.await, () =>
          deliverExit(entry, processId, pid, exitCode, exitedAt, true),
        )
      }
      if (process.exitSeen === true || (process.pid !== 0 && pid !== 0 && process.pid !== pid)) {
        return Effect.logDebug("duplicate or stale exit dropped").pipe(
          Effect.annotateLogs({ container: entry.id, process: processId, pid }),
        )
      }
      process.exitSeen = true
      const info: EventInfo = {
        containerId: entry.id,
        processId,
        pid,
        exitCode,
        exitedAt,
        oomKilled: entry.oomKilled,
      }
      // the init's outputs get the drain bound; an exec is deleted and its IO released (the seed's exec cleanup)
      const after = isInit
        ? process.io === undefined
          ? Effect.void
          : process.io.markExited
        : Effect.gen(function* () {
            yield* call(containerd.tasks.deleteProcess({ containerId: entry.id, execId: processId })).pipe(
              Effect.catchAll((e) =>
                Effect.logWarning("failed to delete process", e).pipe(
                  Effect.annotateLogs({ container: entry.id, process: processId }),
                ),
              ),
            )
            yield* releaseProcess(
              process,
              Effect.sync(() => {
                if (entry.execs.get(processId) === process) entry.execs.delete(processId)
              }),
            )
          })
      return Effect.sync(() => dispatch("exit", info, after))
    }

    const handleEvent = (event: TaskEvent): Effect.Effect<void> => {
      const containerId = event.containerId
      // the kinds of `unhandledTopics`, which the live subscription leaves out; another TaskEvents (the in-memory
      // one) may still send them, and a task's delete usually arrives after the client forgot the container
      if (event._tag === "TaskDelete" || event._tag === "TaskCheckpointed") {
        return Effect.logDebug("ignoring event").pipe(
          Effect.annotateLogs({ container: containerId, event: event._tag }),
        )
      }
      const entry = containers.get(containerId)
      if (entry === undefined || entry.phase === "creating") {
        return Effect.logWarning("event for an unknown container").pipe(
          Effect.annotateLogs({ container: containerId, event: event._tag }),
        )
      }
      const info = (processId: string, pid = 0): EventInfo => ({
        containerId,
        processId,
        pid,
        exitCode: 0,
        exitedAt: undefined,
        oomKilled: entry.oomKilled,
      })
      switch (event._tag) {
        case "TaskCreate":
          return Effect.sync(() => dispatch("create", info(containerId, event.pid)))
        case "TaskStart":
          return Effect.sync(() => dispatch("start", info(containerId, event.pid)))
        case "TaskExit":
          return deliverExit(entry, event.id, event.pid, event.exitStatus, event.exitedAt)
        case "TaskOOM":
          return Effect.sync(() => {
            entry.oomKilled = true
            dispatch("oom", { ...info(containerId), oomKilled: true })
          })
        case "TaskExecAdded":
          return Effect.sync(() => dispatch("exec-added", info(event.execId)))
        case "TaskExecStarted":
          return Effect.sync(() => dispatch("exec-started", info(event.execId, event.pid)))
        case "TaskPaused":
          return Effect.sync(() => dispatch("paused", info(containerId)))
        case "TaskResumed":
          return Effect.sync(() => dispatch("resumed", info(containerId)))
      }
    }

    /**
     * After every (re)subscription: an exit that happened while no
     * subscription was live is found with `Tasks.Get` and delivered once.
     * It runs beside the stream, and a found exit waits a grace period
     * before it is delivered: events the new subscription already carries
     * (the process's create, start or OOM, or the exit itself, republished
     * by the shim) are dispatched first, in their order, and an exit they
     * deliver makes the found one a duplicate.
     */
    const reconcile = Effect.suspend(() => {
      const found: Array<Effect.Effect<void>> = []
      return Effect.forEach(
        [...containers.values()],
        (entry) =>
          Effect.gen(function* () {
            const processes: Array<[string, string, ProcessEntry]> = []
            if (entry.task !== undefined) processes.push([entry.id, "", entry.task])
            for (const [execId, p] of entry.execs) if (p !== "pending") processes.push([execId, execId, p])
            for (const [processId, execId, process] of processes) {
              if (process.exitSeen === true) continue
              const record = yield* call(
                containerd.tasks.get(
                  execId === "" ? { containerId: entry.id } : { containerId: entry.id, execId },
                ),
              ).pipe(Effect.option)
              if (Option.isSome(record) && record.value.status === "STOPPED") {
                found.push(
                  deliverExit(
                    entry,
                    processId,
                    record.value.pid,
                    record.value.exitStatus,
                    record.value.exitedAt,
                  ),
                )
              }
            }
          }),
        { concurrency: 8, discard: true },
      ).pipe(
        Effect.zipRight(
          Effect.suspend(() =>
            found.length === 0
              ? Effect.void
              : Effect.zipRight(Effect.sleep(reconcileGrace), Effect.all(found, { discard: true })),
          ),
        ),
      )
    }).pipe(Effect.catchAllCause((cause) => Effect.logWarning("reconciliation incomplete", cause)))

    /** Records an event's lag, with the fiber's metric labels (what `Metric.update` would use). */
    const recordLag = (fiber: Fiber.RuntimeFiber<unknown, unknown>, published: Timestamp): void => {
      if (published.seconds <= 0n) return
      Telemetry.eventLag.unsafeUpdate(
        Date.now() - (Number(published.seconds) * 1000 + published.nanos / 1e6),
        fiber.getFiberRef(FiberRef.currentMetricLabels),
      )
    }

    let subscriptions = 0
    yield* follow((item) =>
      item._tag === "Subscribed"
        ? Effect.zipRight(
            subscriptions++ > 0 ? Metric.increment(Telemetry.reconnects) : Effect.void,
            Effect.asVoid(Effect.forkIn(reconcile, clientScope)),
          )
        : Effect.withFiberRuntime((fiber) => {
            recordLag(fiber, item.timestamp)
            return handleEvent(item.event)
          }),
    ).pipe(
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError("task event stream stopped", cause),
      ),
      Effect.forkScoped,
    )

    const service: Libcontainerd.Service = {
      version: call(containerd.version),
      create,
      start,
      exec,
      signalProcess,
      resizeTerminal,
      closeStdin,
      pause,
      resume,
      stats,
      listPids,
      summary,
      deleteTask,
      delete: deleteContainer,
      status,
      updateResources,
      restore: restoreContainer,
      createCheckpoint,
      events: Stream.fromPubSub(events),
    }
    return service
  })

/** The client as a layer over `Containerd`, `ProcessIO` and `Backend`. */
export const layer = (
  options: Options,
): Layer.Layer<Libcontainerd, ContainerdError, Containerd | ProcessIO | Backend> =>
  Layer.scoped(Libcontainerd, make(options))

/**
 * `layer` configured from the environment: `LIBCONTAINERD_STATE_DIR` (required),
 * `CONTAINERD_NAMESPACE`, `DOCKER_RAMDISK` (any value → noPivotRoot) and
 * `LIBCONTAINERD_NOCLEAN` ("1" → keep bundle dirs), as the seed reads them.
 */
export const layerConfig: Layer.Layer<Libcontainerd, ContainerdError, Containerd | ProcessIO | Backend> =
  Layer.unwrapEffect(
    Config.all({
      stateDir: Config.string("LIBCONTAINERD_STATE_DIR"),
      namespace: Config.option(Config.string("CONTAINERD_NAMESPACE")),
      ramdisk: Config.string("DOCKER_RAMDISK").pipe(Config.withDefault("")),
      noClean: Config.string("LIBCONTAINERD_NOCLEAN").pipe(Config.withDefault("")),
    }).pipe(
      Effect.mapError(
        (error) =>
          new InvalidParameter({
            message: `LIBCONTAINERD_STATE_DIR: must be set to the client's state dir (${String(error)})`,
          }),
      ),
      Effect.map((config) =>
        layer({
          stateDir: config.stateDir,
          ...(Option.isSome(config.namespace) ? { namespace: config.namespace.value } : {}),
          noPivotRoot: config.ramdisk !== "",
          noClean: config.noClean === "1",
        }),
      ),
    ),
  )
