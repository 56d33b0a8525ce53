/**
 * Containers and tasks of the in-memory containerd: container records, task
 * and exec state machines with containerd 1.6's (runc shim v2's) answers and
 * events, scripted processes driven by Effect's Clock, and the process side
 * of their stdio through `ProcessIOMemory`.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import { Metrics as CgroupV1Metrics } from "../../../generated/cgroups/v1/metrics.js"
import * as Spec from "../../domain/Spec.js"
import type * as T from "../../domain/Types.js"
import { zeroTimestamp } from "../../domain/Types.js"
import { type ContainerdError, isContainerdError, type System } from "../../errors/ContainerdError.js"
import type { Output, ProcessView, Script } from "../../layers/ContainerdMemory.js"
import type * as ProcessIOMemory from "../../layers/ProcessIOMemory.js"
import {
  type Containerd,
  identifierPattern,
  type Started,
  validateIdentifier,
} from "../../services/Containerd.js"
import * as Events from "./events.js"
import * as Filters from "./filters.js"
import * as Scripts from "./scripts.js"
import { Signal } from "../signal.js"
import {
  alreadyExists,
  argsOf,
  containerNotFound,
  type Ctx,
  failedPrecondition,
  invalidArgument,
  type NamespaceState,
  type Namespaces,
  notFound,
  now,
  path,
  positiveBigint,
  type Proc,
  type Task,
  unavailable,
  unknown,
  withContext,
} from "./state.js"

/** What the runtime is built from. */
export interface Deps {
  readonly namespaces: Namespaces
  readonly bus: Events.Bus
  readonly scripts: ReadonlyArray<Scripts.Entry>
  readonly shim: ProcessIOMemory.ProcessIOMemory.Service
  readonly firstPid: number
}

/** The default runtime of a container created without one. */
export const defaultRuntime = "io.containerd.runc.v2"

/** The error of every checkpoint and restore. */
export const checkpointUnsupported = "checkpoint needs CRIU; the in-memory containerd does not model it"

/** The media type containerd accepts for a checkpoint at task create. */
export const checkpointMediaType = "application/vnd.containerd.container.criu.checkpoint.criu.tar"

/** cgroup v1's "no limit" for memory. */
export const unlimitedMemory = 9223372036854771712n

const bytesPerProcess = 4n * 1024n * 1024n

const defaultIgnored: ReadonlySet<number> = new Set([0, 17, 18, 19, 20, 21, 22, 23, 28])
/** What a PID 1 without handlers ignores: every signal (1–64) but SIGKILL. */
const allButSigkill: ReadonlySet<number> = new Set(
  Array.from({ length: 64 }, (_, i) => i + 1).filter((n) => n !== 9),
)

const toBytes = (data: Uint8Array | string): Uint8Array =>
  typeof data === "string" ? new TextEncoder().encode(data) : data

/** What a pty's line discipline does to output (`ONLCR`, on by default): every "\n" goes out as "\r\n". */
const onlcr = (bytes: Uint8Array): Uint8Array => {
  let newlines = 0
  for (const byte of bytes) if (byte === 10) newlines++
  if (newlines === 0) return bytes
  const out = new Uint8Array(bytes.byteLength + newlines)
  let at = 0
  for (const byte of bytes) {
    if (byte === 10) out[at++] = 13
    out[at++] = byte
  }
  return out
}

const exitCodeOf = (code: number): number => ((Math.trunc(code) % 256) + 256) % 256

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const merge = (base: unknown, update: unknown): unknown => {
  if (!isPlainObject(base) || !isPlainObject(update)) return update === undefined ? base : update
  const out: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(update)) out[key] = merge(base[key], value)
  return out
}

/**
 * A deep copy of plain data (plain objects, arrays, primitives), for what a task keeps of a caller's value; any
 * other object is shared as is. Resources are decoded spec data, plain by construction: `structuredClone`, which
 * serializes and parses them, was the in-memory layer's largest own cost in a client lifecycle's profile.
 */
const copy = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(copy)
  if (typeof value !== "object" || value === null) return value
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return value
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value)) out[key] = copy((value as Record<string, unknown>)[key])
  return out
}

const newProc = (fields: {
  readonly execId: string
  readonly args: ReadonlyArray<string>
  readonly terminal: boolean
  readonly paths: Proc["paths"]
  readonly side: ProcessIOMemory.ProcessSide | undefined
  readonly pid: number
}): Proc => ({
  // no object spread: V8 builds a literal that spreads `fields` then adds more properties in the slow way
  execId: fields.execId,
  args: fields.args,
  terminal: fields.terminal,
  paths: fields.paths,
  side: fields.side,
  pid: fields.pid,
  state: "CREATED",
  exitStatus: 0,
  exitedAt: undefined,
  exited: new Signal<T.ExitStatus>(),
  fiber: undefined,
  killedWith: undefined,
  ignored: defaultIgnored,
  pending: [],
  signals: [],
  ptySize: undefined,
  resized: undefined,
  stdinClosed: false,
  startedAtNanos: 0n,
  pausedBaselineMillis: 0,
})

const statusOf = (task: Task, proc: Proc): T.TaskStatus => {
  if (proc.state === "STOPPED") return "STOPPED"
  if (task.paused) return "PAUSED"
  return proc.state
}

const recordOf = (task: Task, proc: Proc): T.ProcessRecord => ({
  containerId: task.containerId,
  id: proc.execId === "" ? task.containerId : proc.execId,
  pid: proc.pid,
  status: statusOf(task, proc),
  stdin: proc.paths.stdin,
  stdout: proc.paths.stdout,
  stderr: proc.paths.stderr,
  terminal: proc.terminal,
  exitStatus: proc.exitStatus,
  exitedAt: proc.exitedAt,
})

const firstPath = (paths: Proc["paths"]): string =>
  [paths.stdout, paths.stderr, paths.stdin].find((p) => p !== "") ?? ""

/** Builds the containers and tasks services and the runtime's test hooks. */
export const make = (deps: Deps) => {
  const { bus, namespaces, shim } = deps
  let nextPid = deps.firstPid
  let waitsCut = new Signal<never, System>()
  /** The fibers of running processes: the layer's scope interrupts them when it closes. */
  const running = new Set<Fiber.RuntimeFiber<void>>()

  // Every call reads the caller's context and does its work in plain code, in one step where it can: the
  // in-memory containerd is driven by tests, and each Effect step of its own is paid by every test.
  const withCtx = <A, E, R>(f: (ctx: Ctx) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    withContext(namespaces, f)

  const publish = (
    ctx: Ctx,
    topic: string,
    typeName: string,
    value: Uint8Array,
    fields: Readonly<Record<string, string>>,
  ): void => bus.publish(ctx.ns, ctx.clock, topic, typeName, value, fields)

  /** containerd resolves a task through its container: an orphaned task is not found. */
  const findTask = (ns: NamespaceState, containerId: string): Task | ContainerdError => {
    if (!ns.containers.has(containerId)) return containerNotFound(ns, containerId)
    return ns.tasks.get(containerId) ?? notFound(`task ${containerId} not found`)
  }

  const findProc = (task: Task, execId: string): Proc | ContainerdError =>
    execId === ""
      ? task.init
      : (task.execs.get(execId) ?? notFound(`process does not exist ${execId}: not found`))

  /** Runs `f` on the container's task, or fails as containerd does when there is none. */
  const withTask = <A, E>(
    containerId: string,
    f: (ctx: Ctx, task: Task) => Effect.Effect<A, E | ContainerdError>,
  ): Effect.Effect<A, E | ContainerdError> =>
    withCtx((ctx) => {
      const task = findTask(ctx.ns, containerId)
      return isContainerdError(task) ? Effect.fail(task) : f(ctx, task)
    })

  /** Runs `f` on a process of the container's task (`execId` "" for the init). */
  const withProc = <A, E>(
    containerId: string,
    execId: string,
    f: (ctx: Ctx, task: Task, proc: Proc) => Effect.Effect<A, E | ContainerdError>,
  ): Effect.Effect<A, E | ContainerdError> =>
    withTask(containerId, (ctx, task) => {
      const proc = findProc(task, execId)
      return isContainerdError(proc) ? Effect.fail(proc) : f(ctx, task, proc)
    })

  /** The process side of the FIFO set at `paths` (`undefined` without paths), or what the shim fails with. */
  const findSide = (
    paths: Proc["paths"],
    failure: (path: string) => ContainerdError,
  ): ProcessIOMemory.ProcessSide | undefined | ContainerdError => {
    const first = firstPath(paths)
    if (first === "") return undefined
    // "" is no path: the shim looks each path up, and finds none at ""
    return shim.unsafeProcessSide(paths) ?? failure(first)
  }

  // ---- process lifecycle ----

  const freeze = (ctx: Ctx, task: Task): void => {
    task.paused = true
    task.pausedAtMillis = ctx.clock.unsafeCurrentTimeMillis()
    task.gate.unsafeClose()
  }

  const thaw = (ctx: Ctx, task: Task): void => {
    if (!task.paused) return
    task.pausedTotalMillis += ctx.clock.unsafeCurrentTimeMillis() - (task.pausedAtMillis ?? 0)
    task.pausedAtMillis = undefined
    task.paused = false
    task.gate.unsafeOpen()
  }

  /** How long a process has been running (not paused) at `nowMillis`. */
  const runningMillis = (task: Task, proc: Proc, nowMillis: number): number =>
    nowMillis -
    Number(proc.startedAtNanos / 1_000_000n) -
    (task.pausedTotalMillis - proc.pausedBaselineMillis) -
    (task.pausedAtMillis === undefined ? 0 : nowMillis - task.pausedAtMillis)

  /** A process as the shim sees it, for the test handle and for scripts' outputs. */
  const viewOf = (ctx: Ctx, task: Task, proc: Proc): ProcessView => ({
    args: proc.args,
    terminal: proc.terminal,
    status: statusOf(task, proc),
    pid: proc.pid,
    ptySize: proc.ptySize,
    signals: [...proc.signals],
    stdinClosed: proc.stdinClosed,
    resources: task.resources,
    orphaned: !ctx.ns.containers.has(task.containerId),
  })

  /** Marks a process exited, closes its outputs, publishes the exit; the init's exit kills the execs. */
  const finish = (ctx: Ctx, task: Task, proc: Proc, code: number, publishExit = true): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (proc.state === "STOPPED") return Effect.void
      proc.state = "STOPPED"
      proc.exitStatus = code
      const exitedAt = now(ctx.clock)
      proc.exitedAt = exitedAt
      const done = Effect.sync(() => {
        if (publishExit) {
          const id = proc.execId === "" ? task.containerId : proc.execId
          publish(
            ctx,
            "/tasks/exit",
            "TaskExit",
            Events.task.exit({
              containerId: task.containerId,
              id,
              pid: proc.pid,
              exitStatus: code,
              exitedAt,
            }),
            { container_id: task.containerId, id },
          )
        }
        proc.exited.succeed({ exitStatus: code, exitedAt })
        if (proc.execId === "") {
          thaw(ctx, task)
          for (const exec of task.execs.values()) {
            if (exec.state === "RUNNING") kill(exec, 137)
          }
        }
      })
      return proc.side === undefined ? done : Effect.zipRight(proc.side.exit, done)
    })

  /** Ends a running process from outside with `code` (the first code wins): its fiber is interrupted. */
  const kill = (proc: Proc, code: number): void => {
    proc.killedWith ??= code
    proc.fiber?.unsafeInterruptAsFork(FiberId.none)
  }

  /** Ends a process from outside with `code`: a running one through its fiber, a created init at once. */
  const terminate = (ctx: Ctx, task: Task, proc: Proc, code: number): Effect.Effect<void> => {
    switch (proc.state) {
      case "RUNNING":
        kill(proc, code)
        return Effect.void
      case "CREATED":
        return proc.execId === "" ? finish(ctx, task, proc, code) : Effect.void
      case "STOPPED":
        return Effect.void
    }
  }

  /**
   * Delivers a signal as the kernel would: SIGKILL always kills, others unless ignored; a frozen process gets them
   * at thaw. Plain code; the Effect is not `void` only when a created init is ended.
   */
  const deliver = (ctx: Ctx, task: Task, proc: Proc, sig: number, viaRunc: boolean): Effect.Effect<void> => {
    if (proc.state === "STOPPED") return Effect.void
    proc.signals.push(sig)
    // runc thaws a frozen container for SIGKILL (cgroup v1 would otherwise hold the signal)
    if (sig === 9 && viaRunc) thaw(ctx, task)
    if (task.paused && proc.state === "RUNNING") {
      proc.pending.push(sig)
      return Effect.void
    }
    return act(ctx, task, proc, sig)
  }

  /** What a delivered signal does to a process that is not frozen. */
  const act = (ctx: Ctx, task: Task, proc: Proc, sig: number): Effect.Effect<void> =>
    sig !== 9 && (proc.ignored.has(sig) || defaultIgnored.has(sig))
      ? Effect.void
      : terminate(ctx, task, proc, 128 + sig)

  /**
   * Waits until the process has been running for `totalMillis` since its start (a deadline fixed at start,
   * whenever its fiber gets to run); time spent paused does not count. It sleeps until the deadline as it stands,
   * then looks again: a pause meanwhile moved the deadline by its length (and a task still paused is waited for).
   */
  const runUntil = (ctx: Ctx, task: Task, proc: Proc, totalMillis: number): Effect.Effect<void> => {
    const loop: Effect.Effect<void> = Effect.suspend(() => {
      if (task.paused) return Effect.zipRight(task.gate.await, loop)
      const left = totalMillis - runningMillis(task, proc, ctx.clock.unsafeCurrentTimeMillis())
      if (left <= 0) return Effect.void
      if (!Number.isFinite(left)) return Effect.never
      return Effect.zipRight(ctx.clock.sleep(Duration.millis(left)), loop)
    })
    return loop
  }

  /** Waits out a script's delay: at most `totalMillis` of running time, less when a resize wakes the process. */
  const delayed = (ctx: Ctx, task: Task, proc: Proc, totalMillis: number, wakesOnResize: boolean) => {
    if (!wakesOnResize) return runUntil(ctx, task, proc, totalMillis)
    if (proc.ptySize !== undefined) return Effect.void
    proc.resized ??= new Signal()
    return Effect.raceFirst(runUntil(ctx, task, proc, totalMillis), proc.resized.await)
  }

  /** What a started process does, as its script says; the result is its exit status. */
  const behaviour = (ctx: Ctx, task: Task, proc: Proc, script: Script): Effect.Effect<number> =>
    Effect.gen(function* () {
      const side = proc.side
      const out = side?.stdout
      const err = side?.stderr ?? side?.stdout
      const write = (target: ProcessIOMemory.ProcessOutput | undefined, data: Output) =>
        Effect.suspend(() => {
          if (target === undefined) return Effect.void
          const raw = toBytes(typeof data === "function" ? data(viewOf(ctx, task, proc)) : data)
          const bytes = proc.terminal ? onlcr(raw) : raw
          if (bytes.byteLength === 0) return Effect.void
          // a frozen process writes nothing until it thaws
          return task.paused ? Effect.zipRight(task.gate.await, target.write(bytes)) : target.write(bytes)
        })
      if (script.delay !== undefined) {
        const delay = Duration.toMillis(Duration.decode(script.delay))
        yield* delayed(ctx, task, proc, delay, script.wakesOnResize === true)
      }
      if (script.stdout !== undefined) yield* write(out, script.stdout)
      if (script.stderr !== undefined) yield* write(err, script.stderr)
      if (script.echoStdin === true && side?.stdin !== undefined) {
        const { pull } = side.stdin
        // pulled without a stream: a stream costs hundreds of Effect steps to run, even for one chunk
        const echo: Effect.Effect<void> = Effect.matchEffect(pull, {
          onFailure: () => Effect.void,
          onSuccess: (chunks) =>
            Effect.zipRight(
              Effect.forEach(chunks, (chunk) => write(out, chunk), { discard: true }),
              echo,
            ),
        })
        yield* echo
      }
      if (script.duration !== undefined) {
        yield* runUntil(ctx, task, proc, Duration.toMillis(Duration.decode(script.duration)))
      }
      if (task.paused) yield* task.gate.await
      if (script.oom === true) {
        publishOom(ctx, task)
        return 137
      }
      return exitCodeOf(script.exitCode ?? 0)
    })

  const publishOom = (ctx: Ctx, task: Task): void =>
    publish(ctx, "/tasks/oom", "TaskOOM", Events.task.oom({ containerId: task.containerId }), {
      container_id: task.containerId,
    })

  /**
   * What a process's fiber runs: its script, then its exit — with the script's status, or with the one it was
   * ended with when `kill` interrupted it (before the fiber ran, too). An interruption without a kill is the
   * layer's scope closing: no exit then.
   */
  const life = (ctx: Ctx, task: Task, proc: Proc, script: Script): Effect.Effect<void> =>
    Effect.withFiberRuntime<void>((fiber) => {
      if (proc.killedWith !== undefined) return finish(ctx, task, proc, proc.killedWith)
      proc.fiber = fiber as Fiber.RuntimeFiber<void>
      return Effect.onExit(behaviour(ctx, task, proc, script), (exit) => {
        proc.fiber = undefined
        if (Exit.isSuccess(exit)) return finish(ctx, task, proc, exit.value)
        return proc.killedWith === undefined ? Effect.void : finish(ctx, task, proc, proc.killedWith)
      })
    })

  /**
   * Marks the process running and starts its fiber, which lives until the script ends, `kill` or the layer's
   * scope. Call it uninterruptibly: the process must not be left running without its fiber.
   */
  const launch = (ctx: Ctx, task: Task, proc: Proc, script: Script): Effect.Effect<void> => {
    // an init is PID 1 of its pid namespace: the kernel drops every signal it has no handler for but SIGKILL
    proc.ignored =
      (script.diesOfSignals ?? proc.execId !== "")
        ? new Set([...(script.ignoreSignals ?? []), ...(script.ignoreSigterm === true ? [15] : [])])
        : allButSigkill
    proc.state = "RUNNING"
    proc.startedAtNanos = ctx.clock.unsafeCurrentTimeNanos()
    proc.pausedBaselineMillis = task.pausedTotalMillis
    // forked from an uninterruptible region: the fiber must still be interruptible (kill, layer shutdown)
    return Effect.map(Effect.forkDaemon(Effect.interruptible(life(ctx, task, proc, script))), (fiber) => {
      running.add(fiber)
      fiber.addObserver(() => {
        running.delete(fiber)
      })
    })
  }

  const resolveScript = (ctx: Ctx, task: Task, proc: Proc): Script =>
    Scripts.resolve(deps.scripts, {
      namespace: ctx.ns.name,
      containerId: task.containerId,
      execId: proc.execId,
      args: proc.args,
      terminal: proc.terminal,
    })

  /** A terminal whose stdin was closed is hung up: its process gets SIGHUP. */
  const hangUpIfClosed = (ctx: Ctx, task: Task, proc: Proc): Effect.Effect<void> =>
    proc.terminal && proc.stdinClosed && proc.paths.stdin !== ""
      ? deliver(ctx, task, proc, 1, false)
      : Effect.void

  // ---- containers ----

  const containerAdaptor =
    (container: T.Container): Filters.Adaptor =>
    (fieldpath) => {
      switch (fieldpath[0]) {
        case "id":
          return container.id
        case "image":
          return container.image
        case "snapshotter":
          return container.snapshotter
        case "runtime":
          return fieldpath[1] === "name" || fieldpath.length === 1 ? container.runtime.name : undefined
        case "labels":
          return container.labels[fieldpath.slice(1).join(".")]
        default:
          return undefined
      }
    }

  const updatableFields = new Set(["labels", "spec", "image", "extensions", "snapshotkey"])

  const containers: Containerd.Service["containers"] = {
    create: (input) =>
      Effect.zipRight(
        validateIdentifier("id", input.id),
        Effect.flatMap(Spec.decode(input.spec), (spec) =>
          withCtx((ctx): Effect.Effect<T.Container, ContainerdError> => {
            const { ns } = ctx
            if (ns.containers.has(input.id)) {
              return Effect.fail(alreadyExists(`container "${input.id}": already exists`))
            }
            const runtime = input.runtime?.name ?? defaultRuntime
            if (runtime === "") return Effect.fail(invalidArgument("Container.Runtime.Name must be set"))
            const at = now(ctx.clock)
            const container: T.Container = {
              id: input.id,
              labels: { ...input.labels },
              image: input.image ?? "",
              runtime: {
                name: runtime,
                ...(input.runtime?.options === undefined ? {} : { options: { ...input.runtime.options } }),
              },
              spec,
              snapshotter: "",
              snapshotKey: "",
              createdAt: at,
              updatedAt: at,
            }
            ns.containers.set(input.id, container)
            publish(
              ctx,
              "/containers/create",
              "ContainerCreate",
              Events.containerCreate(input.id, container.image, runtime),
              {
                id: input.id,
                image: container.image,
                "runtime.name": runtime,
              },
            )
            return Effect.succeed(container)
          }),
        ),
      ),
    get: (id) =>
      Effect.zipRight(
        validateIdentifier("id", id),
        withCtx((ctx) => {
          const container = ctx.ns.containers.get(id)
          return container === undefined
            ? Effect.fail(containerNotFound(ctx.ns, id))
            : Effect.succeed(container)
        }),
      ),
    list: (filters = []) =>
      withCtx((ctx) => {
        const parsed = Filters.parseAll(filters)
        if (Either.isLeft(parsed)) return Effect.fail(invalidArgument(parsed.left))
        const all = [...ctx.ns.containers.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        return Effect.succeed(all.filter((c) => parsed.right(containerAdaptor(c))))
      }),
    update: (input, fieldPaths = []) =>
      Effect.zipRight(
        validateIdentifier("id", input.id),
        withCtx((ctx) =>
          Effect.gen(function* () {
            const decoded = yield* Spec.decode(input.spec)
            const current = ctx.ns.containers.get(input.id)
            if (current === undefined) return yield* containerNotFound(ctx.ns, input.id)
            const paths = fieldPaths.length > 0 ? fieldPaths : ["labels", "spec", "image"]
            if (fieldPaths.length === 0 && (input.runtime?.name ?? defaultRuntime) !== current.runtime.name) {
              return yield* invalidArgument("container.Runtime.Name field is immutable: invalid argument")
            }
            let labels: Record<string, string> = { ...current.labels }
            let spec = current.spec
            let image = current.image
            for (const field of paths) {
              if (field.startsWith("labels.")) {
                const key = field.slice("labels.".length)
                const value = input.labels?.[key]
                if (value === undefined || value === "") delete labels[key]
                else labels[key] = value
                continue
              }
              if (field.startsWith("extensions.")) continue
              if (!updatableFields.has(field)) {
                return yield* invalidArgument(
                  `cannot update ${JSON.stringify(field)} field on ${JSON.stringify(input.id)}: invalid argument`,
                )
              }
              if (field === "labels") labels = { ...input.labels }
              if (field === "spec") spec = decoded
              if (field === "image") image = input.image ?? ""
            }
            const updated: T.Container = { ...current, labels, spec, image, updatedAt: now(ctx.clock) }
            ctx.ns.containers.set(input.id, updated)
            publish(
              ctx,
              "/containers/update",
              "ContainerUpdate",
              Events.containerUpdate(input.id, image, labels),
              {
                id: input.id,
                image,
              },
            )
            return updated
          }),
        ),
      ),
    delete: (id) =>
      Effect.zipRight(
        validateIdentifier("id", id),
        withCtx((ctx) => {
          if (!ctx.ns.containers.has(id)) return Effect.fail(containerNotFound(ctx.ns, id))
          // containerd does not look at tasks here: a live task is orphaned (only Tasks.List shows it)
          ctx.ns.containers.delete(id)
          publish(ctx, "/containers/delete", "ContainerDelete", Events.single(id), { id })
          return Effect.void
        }),
      ),
  }

  // ---- tasks ----

  const create: Containerd.Service["tasks"]["create"] = (input) =>
    withCtx((ctx) => {
      const { ns } = ctx
      const id = input.containerId
      const container = ns.containers.get(id)
      if (container === undefined) return Effect.fail(containerNotFound(ns, id))
      if (ns.tasks.has(id) || ns.creating.has(id))
        return Effect.fail(alreadyExists(`task ${id}: already exists`))
      if (input.checkpoint !== undefined) {
        if (input.checkpoint.mediaType !== checkpointMediaType) {
          return Effect.fail(
            invalidArgument(
              `unsupported checkpoint type ${JSON.stringify(input.checkpoint.mediaType)}: invalid argument`,
            ),
          )
        }
        return Effect.fail(unknown(checkpointUnsupported))
      }
      const paths = { stdin: input.stdin ?? "", stdout: input.stdout ?? "", stderr: input.stderr ?? "" }
      const terminal = input.terminal ?? false
      const side = findSide(paths, (p) =>
        unknown(
          `failed to create shim task: OCI runtime create failed: open ${p}: no such file or directory: unknown`,
        ),
      )
      if (isContainerdError(side)) return Effect.fail(side)
      const made = (): Started => {
        ns.creating.delete(id)
        const pid = nextPid++
        const init = newProc({
          execId: "",
          args: argsOf(path(container.spec, "process")),
          terminal,
          paths,
          side,
          pid,
        })
        const task: Task = {
          containerId: id,
          namespace: ns.name,
          bundle: `/run/containerd/io.containerd.runtime.v2.task/${ns.name}/${id}`,
          init,
          execs: new Map(),
          paused: false,
          gate: Effect.unsafeMakeLatch(true),
          pausedTotalMillis: 0,
          pausedAtMillis: undefined,
          resources: copy(path(container.spec, "linux", "resources")),
          annotations: {},
        }
        ns.tasks.set(id, task)
        publish(
          ctx,
          "/tasks/create",
          "TaskCreate",
          Events.task.create({
            containerId: id,
            bundle: task.bundle,
            rootfs: (input.rootfs ?? []).map((m) => ({
              type: m.type,
              source: m.source,
              target: m.target ?? "",
              options: [...m.options],
            })),
            io: { stdin: paths.stdin, stdout: paths.stdout, stderr: paths.stderr, terminal },
            checkpoint: "",
            pid,
          }),
          { container_id: id },
        )
        return { pid }
      }
      // the shim opens the outputs for writing: that blocks until the client's readers are open
      if (side === undefined || side.isOpened()) return Effect.succeed(made())
      ns.creating.add(id)
      return Effect.zipRight(side.opened, Effect.sync(made)).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            ns.creating.delete(id)
          }),
        ),
      )
    })

  /** Runs the process and publishes its start (`started`); uninterruptible, like the shim's start. */
  const run = (ctx: Ctx, task: Task, proc: Proc, script: Script, started: () => void) =>
    Effect.uninterruptible(
      Effect.flatMap(
        Effect.suspend(() => launch(ctx, task, proc, script)),
        (): Effect.Effect<Started> => {
          started()
          return Effect.as(hangUpIfClosed(ctx, task, proc), { pid: proc.pid })
        },
      ),
    )

  const startInit = (ctx: Ctx, task: Task): Effect.Effect<Started, ContainerdError> => {
    const init = task.init
    if (init.state === "STOPPED") return Effect.fail(unknown("cannot start a stopped process"))
    if (task.paused) return Effect.fail(unknown("cannot start a paused process"))
    if (init.state === "RUNNING") return Effect.fail(unknown("cannot start a running process"))
    const script = resolveScript(ctx, task, init)
    if (script.startError !== undefined) return Effect.fail(unknown(script.startError))
    return run(ctx, task, init, script, () =>
      publish(
        ctx,
        "/tasks/start",
        "TaskStart",
        Events.task.start({ containerId: task.containerId, pid: init.pid }),
        {
          container_id: task.containerId,
        },
      ),
    )
  }

  const execStartError = (task: Task): ContainerdError | undefined => {
    if (task.init.state === "STOPPED") {
      return unknown("OCI runtime exec failed: exec failed: cannot exec in a stopped container: unknown")
    }
    if (task.paused)
      return unknown("OCI runtime exec failed: exec failed: cannot exec in a paused container: unknown")
    return undefined
  }

  const startExec = (ctx: Ctx, task: Task, proc: Proc): Effect.Effect<Started, ContainerdError> => {
    const check = (): ContainerdError | undefined => {
      if (proc.state === "RUNNING") return unknown("cannot start a running process")
      if (proc.state === "STOPPED") return unknown("cannot start a stopped process")
      return execStartError(task)
    }
    const before = check()
    if (before !== undefined) return Effect.fail(before)
    const side = findSide(proc.paths, (p) =>
      unknown(`OCI runtime exec failed: open ${p}: no such file or directory: unknown`),
    )
    if (isContainerdError(side)) return Effect.fail(side)
    const start = (): Effect.Effect<Started, ContainerdError> => {
      const after = check()
      if (after !== undefined) return Effect.fail(after)
      if (task.execs.get(proc.execId) !== proc || ctx.ns.tasks.get(task.containerId) !== task) {
        return Effect.fail(notFound(`process does not exist ${proc.execId}: not found`))
      }
      const script = resolveScript(ctx, task, proc)
      if (script.startError !== undefined) return Effect.fail(unknown(script.startError))
      proc.side = side
      proc.pid = nextPid++
      return run(ctx, task, proc, script, () =>
        publish(
          ctx,
          "/tasks/exec-started",
          "TaskExecStarted",
          Events.task.execStarted({ containerId: task.containerId, execId: proc.execId, pid: proc.pid }),
          { container_id: task.containerId, exec_id: proc.execId },
        ),
      )
    }
    return side === undefined || side.isOpened()
      ? start()
      : Effect.zipRight(side.opened, Effect.suspend(start))
  }

  const deleted = (task: Task, proc: Proc): T.DeletedProcess => ({
    id: proc.execId === "" ? task.containerId : proc.execId,
    pid: proc.pid,
    exitStatus: proc.exitStatus,
    exitedAt: proc.exitedAt ?? zeroTimestamp,
  })

  /** Forgets a task whose processes have all stopped, and publishes its delete. */
  const removeTask = (ctx: Ctx, task: Task): T.DeletedProcess => {
    const init = task.init
    if (ctx.ns.tasks.get(task.containerId) === task) ctx.ns.tasks.delete(task.containerId)
    const result = deleted(task, init)
    publish(
      ctx,
      "/tasks/delete",
      "TaskDelete",
      Events.task.delete({
        containerId: task.containerId,
        pid: init.pid,
        exitStatus: init.exitStatus,
        exitedAt: result.exitedAt,
        id: task.containerId,
      }),
      { container_id: task.containerId, id: task.containerId },
    )
    return result
  }

  const metricOf = (ctx: Ctx, task: Task): T.TaskMetric => {
    const nowNanos = ctx.clock.unsafeCurrentTimeNanos()
    const live = [task.init, ...task.execs.values()].filter(
      (p) => p.state === "RUNNING" || (p.execId === "" && p.state === "CREATED"),
    )
    const usage = BigInt(live.length) * bytesPerProcess
    const limit = positiveBigint(path(task.resources, "memory", "limit")) ?? unlimitedMemory
    const cpu = live.reduce(
      (total, p) => total + (p.state === "RUNNING" ? (nowNanos - p.startedAtNanos) / 100n : 0n),
      0n,
    )
    const metrics = CgroupV1Metrics.fromPartial({
      pids: {
        current: BigInt(live.length),
        limit: positiveBigint(path(task.resources, "pids", "limit")) ?? 0n,
      },
      cpu: { usage: { total: cpu, user: (cpu * 2n) / 3n, kernel: cpu - (cpu * 2n) / 3n, perCpu: [cpu] } },
      memory: {
        rss: usage,
        totalRss: usage,
        hierarchicalMemoryLimit: limit,
        usage: { usage, limit, max: usage, failcnt: 0n },
      },
    })
    return { id: task.containerId, timestamp: now(ctx.clock), data: { _tag: "v1", metrics } }
  }

  /** Runs effects one after the other, skipping the ones that do nothing. */
  const sequence = (effects: ReadonlyArray<Effect.Effect<void>>): Effect.Effect<void> => {
    const pending = effects.filter((e) => e !== Effect.void)
    return pending.length === 0 ? Effect.void : Effect.all(pending, { discard: true })
  }

  const tasks: Containerd.Service["tasks"] = {
    create,
    start: (ref) =>
      withProc(ref.containerId, ref.execId ?? "", (ctx, task, proc) =>
        proc.execId === "" ? startInit(ctx, task) : startExec(ctx, task, proc),
      ),
    get: (ref) =>
      withProc(ref.containerId, ref.execId ?? "", (_, task, proc) => Effect.succeed(recordOf(task, proc))),
    // containerd 1.6 ignores the filter of Tasks.List; orphaned tasks are listed too
    list: () =>
      withCtx((ctx) => Effect.succeed([...ctx.ns.tasks.values()].map((task) => recordOf(task, task.init)))),
    delete: (ref) =>
      withTask(ref.containerId, (ctx, task) => {
        const init = task.init
        if (init.state === "RUNNING") {
          return Effect.fail(
            unknown(task.paused ? "cannot delete a paused process" : "cannot delete a running process"),
          )
        }
        const busy = (): ReadonlyArray<Proc> => [...task.execs.values()].filter((e) => e.state === "RUNNING")
        if (init.state === "STOPPED" && busy().length === 0) return Effect.succeed(removeTask(ctx, task))
        return Effect.gen(function* () {
          // runc deletes a created container by killing it
          if (init.state === "CREATED") yield* finish(ctx, task, init, 137, false)
          for (const exec of busy()) yield* exec.exited.await
          return removeTask(ctx, task)
        }).pipe(Effect.uninterruptible)
      }),
    deleteProcess: (ref) =>
      withTask(ref.containerId, (_, task) => {
        if (ref.execId === "")
          return Effect.fail(invalidArgument("exec id must not be empty: invalid argument"))
        const proc = findProc(task, ref.execId)
        if (isContainerdError(proc)) return Effect.fail(proc)
        if (proc.state === "RUNNING") return Effect.fail(unknown("cannot delete a running process"))
        task.execs.delete(ref.execId)
        return Effect.succeed(deleted(task, proc))
      }),
    kill: (input) =>
      withProc(input.containerId, input.execId ?? "", (ctx, task, proc) => {
        const all = input.all ?? false
        if (proc.execId !== "") {
          if (proc.state === "CREATED")
            return Effect.fail(failedPrecondition("process not created: failed precondition"))
          if (proc.state === "STOPPED") return Effect.fail(notFound("process already finished: not found"))
          return deliver(ctx, task, proc, input.signal, false)
        }
        if (proc.state === "STOPPED" && !all)
          return Effect.fail(notFound("process already finished: not found"))
        const delivered = [deliver(ctx, task, proc, input.signal, true)]
        if (all) {
          for (const exec of task.execs.values()) {
            if (exec.state === "RUNNING") delivered.push(deliver(ctx, task, exec, input.signal, true))
          }
        }
        return sequence(delivered)
      }),
    exec: (input) =>
      Effect.flatMap(Spec.decodeProcess(input.spec), (processSpec) =>
        withCtx((ctx) => {
          if (input.execId === "") return Effect.fail(invalidArgument("exec id cannot be empty"))
          const task = findTask(ctx.ns, input.containerId)
          if (isContainerdError(task)) return Effect.fail(task)
          if (!identifierPattern.test(input.execId)) {
            return Effect.fail(
              invalidArgument(
                `exec id ${JSON.stringify(input.execId)} must match ${identifierPattern.source}: invalid argument`,
              ),
            )
          }
          if (task.init.state === "STOPPED") return Effect.fail(unknown("cannot exec in a stopped state"))
          if (task.paused) return Effect.fail(unknown("cannot exec in a paused state"))
          if (task.execs.has(input.execId)) {
            return Effect.fail(alreadyExists(`id ${input.execId}: already exists`))
          }
          const proc = newProc({
            execId: input.execId,
            args: argsOf(processSpec),
            terminal: input.terminal ?? false,
            paths: { stdin: input.stdin ?? "", stdout: input.stdout ?? "", stderr: input.stderr ?? "" },
            side: undefined,
            pid: 0,
          })
          task.execs.set(input.execId, proc)
          publish(
            ctx,
            "/tasks/exec-added",
            "TaskExecAdded",
            Events.task.execAdded({ containerId: task.containerId, execId: input.execId }),
            { container_id: task.containerId, exec_id: input.execId },
          )
          return Effect.void
        }),
      ),
    resizePty: (input) =>
      withProc(input.containerId, input.execId ?? "", (_, __, proc) => {
        if (proc.state === "STOPPED") return Effect.fail(unknown("cannot resize a stopped container"))
        if (proc.terminal) {
          proc.ptySize = { width: input.width, height: input.height }
          proc.resized?.succeed()
        }
        return Effect.void
      }),
    closeIO: (input) =>
      withProc(input.containerId, input.execId ?? "", (ctx, task, proc) => {
        if (!input.stdin || proc.paths.stdin === "") return Effect.void
        // the shim opens an exec's stdin when the exec starts: a close before that is lost
        if (proc.execId !== "" && proc.state === "CREATED") return Effect.void
        if (proc.stdinClosed) return Effect.void
        proc.stdinClosed = true
        const closed = proc.side?.stdin?.closeIO ?? Effect.void
        return proc.state === "RUNNING" ? Effect.zipRight(closed, hangUpIfClosed(ctx, task, proc)) : closed
      }),
    pause: (containerId) =>
      withTask(containerId, (ctx, task) => {
        if (task.init.state === "CREATED") return Effect.fail(unknown("cannot pause task in created state"))
        if (task.init.state === "STOPPED") return Effect.fail(unknown("cannot pause a stopped container"))
        if (task.paused) return Effect.fail(unknown("cannot pause a paused container"))
        freeze(ctx, task)
        publish(ctx, "/tasks/paused", "TaskPaused", Events.task.paused({ containerId }), {
          container_id: containerId,
        })
        return Effect.void
      }),
    resume: (containerId) =>
      withTask(containerId, (ctx, task) => {
        if (task.init.state === "CREATED") return Effect.fail(unknown("cannot resume task in created state"))
        if (task.init.state === "STOPPED") return Effect.fail(unknown("cannot resume a stopped container"))
        if (!task.paused) return Effect.fail(unknown("cannot resume a running process"))
        thaw(ctx, task)
        publish(ctx, "/tasks/resumed", "TaskResumed", Events.task.resumed({ containerId }), {
          container_id: containerId,
        })
        const acted: Array<Effect.Effect<void>> = []
        for (const proc of [task.init, ...task.execs.values()]) {
          for (const sig of proc.pending.splice(0)) acted.push(act(ctx, task, proc, sig))
        }
        return sequence(acted)
      }),
    listPids: (containerId) =>
      withTask(containerId, (_, task) => {
        if (task.init.state === "STOPPED") return Effect.succeed([])
        const pids: Array<T.PidInfo> = [{ pid: task.init.pid }]
        for (const exec of task.execs.values()) {
          if (exec.state === "RUNNING") pids.push({ pid: exec.pid, execId: exec.execId })
        }
        return Effect.succeed(pids)
      }),
    checkpoint: (input) => withTask(input.containerId, () => Effect.fail(unknown(checkpointUnsupported))),
    update: (input) =>
      withTask(input.containerId, (_, task) => {
        if (task.init.state === "STOPPED") return Effect.fail(unknown("cannot update a stopped container"))
        task.resources = merge(task.resources, copy(input.resources))
        task.annotations = { ...task.annotations, ...input.annotations }
        return Effect.void
      }),
    wait: (ref) =>
      withProc(ref.containerId, ref.execId ?? "", (_, __, proc) =>
        proc.exited.isDone
          ? proc.exited.await
          : // the exit, or the cut of every pending wait (a disconnect), whichever comes first
            Effect.async<T.ExitStatus, ContainerdError>((resume) => {
              let offExit = () => {}
              let offCut = () => {}
              const off = () => {
                offExit()
                offCut()
              }
              offExit = proc.exited.on((result) => {
                off()
                resume(result)
              })
              offCut = waitsCut.on((result) => {
                off()
                resume(result)
              })
              return Effect.sync(off)
            }),
      ),
    metrics: (filters) =>
      withCtx((ctx) => {
        const parsed = Filters.parseAll(filters)
        if (Either.isLeft(parsed)) return Effect.fail(invalidArgument(parsed.left))
        const filter = parsed.right
        return Effect.succeed(
          [...ctx.ns.tasks.values()]
            .filter((task) =>
              filter((fieldpath) =>
                fieldpath[0] === "id"
                  ? task.containerId
                  : fieldpath[0] === "namespace"
                    ? task.namespace
                    : undefined,
              ),
            )
            .map((task) => metricOf(ctx, task)),
        )
      }),
  }

  // ---- test hooks ----

  /** The task of a container, even an orphaned one (the shim still has it). */
  const withAnyTask = <A>(
    containerId: string,
    f: (ctx: Ctx, task: Task) => Effect.Effect<A, ContainerdError>,
  ): Effect.Effect<A, ContainerdError> =>
    withCtx((ctx) => {
      const task = ctx.ns.tasks.get(containerId)
      return task === undefined ? Effect.fail(notFound(`task ${containerId} not found`)) : f(ctx, task)
    })

  const hooks = {
    /** Ends a process now with `exitCode`, as if it ended by itself. */
    exit: (ref: T.ProcessRef, exitCode: number): Effect.Effect<void, ContainerdError> =>
      withAnyTask(ref.containerId, (ctx, task) => {
        const proc = findProc(task, ref.execId ?? "")
        if (isContainerdError(proc)) return Effect.fail(proc)
        if (proc.state === "STOPPED") return Effect.fail(notFound("process already finished: not found"))
        if (proc.state === "CREATED" && proc.execId !== "") {
          return Effect.fail(failedPrecondition("process not created: failed precondition"))
        }
        return terminate(ctx, task, proc, exitCodeOf(exitCode))
      }),
    /** The container hits its memory limit: TaskOOM, then the init exits with 137. */
    oom: (containerId: string): Effect.Effect<void, ContainerdError> =>
      withAnyTask(containerId, (ctx, task) => {
        if (task.init.state === "STOPPED") return Effect.fail(notFound("process already finished: not found"))
        publishOom(ctx, task)
        thaw(ctx, task)
        return terminate(ctx, task, task.init, 137)
      }),
    /** What a process looks like from inside. */
    inspect: (ref: T.ProcessRef): Effect.Effect<ProcessView, ContainerdError> =>
      withAnyTask(ref.containerId, (ctx, task) => {
        const proc = findProc(task, ref.execId ?? "")
        return isContainerdError(proc) ? Effect.fail(proc) : Effect.succeed(viewOf(ctx, task, proc))
      }),
    /** Fails every pending `tasks.wait` with UNAVAILABLE "transport is closing". */
    cutWaits: Effect.sync(() => {
      const cut = waitsCut
      waitsCut = new Signal<never, System>()
      cut.complete(Exit.fail(unavailable("transport is closing")))
    }),
    /** Interrupts the fibers of running processes (the layer's scope closes): no exit is published. */
    stopProcesses: Effect.suspend(() => Fiber.interruptAll([...running])),
  }

  return { containers, tasks, hooks }
}
