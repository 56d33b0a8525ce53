/**
 * `Containerd` in memory: containers, tasks and execs as containerd 1.6's
 * state machines, scripted processes, live events, a content store with real
 * sha256 digests, images and leases — no daemon, deterministic under
 * `TestClock`.
 *
 * What a client observes follows containerd 1.6 with the runc v2 shim: the
 * same gRPC codes and message shapes (`container "x" in namespace "ns": not
 * found`, `task x not found`, `process already finished: not found`, `cannot
 * delete a running process`, …), the same events in the same order
 * (`/containers/create`, `/tasks/create`, `/tasks/start`, `/tasks/exit`,
 * `/tasks/delete`, `/containers/delete`, …) with payloads encoded as the real
 * protobuf messages, and the same traps: deleting a container with a live
 * task succeeds and orphans it (only `tasks.list` still shows it), an exec's
 * stdin can only be closed once it started, events are delivered only to
 * subscriptions open at the time. The init's exit kills the execs (137); an
 * init is PID 1 of its pid namespace and ignores every signal but SIGKILL
 * unless its script says it `diesOfSignals` (an exec dies of them); a
 * paused (frozen) process gets signals at resume, except a SIGKILL to the init
 * (runc thaws for it); deleting a CREATED task kills it (137, no `/tasks/exit`).
 * Every call acts in the namespace of
 * `Containerd.withNamespace` (the layer's default otherwise), uploads run
 * under `Containerd.withLease`.
 *
 * Processes are played by scripts (`ContainerdMemory.script`): output
 * (after a delay if asked, made from the process's state when written),
 * exit status, how long they run on Effect's Clock (paused time does not
 * count), OOM, `cat`-like stdin echo, ignored signals. A script starts
 * running once the caller of `tasks.start` lets other fibers run: a fatal
 * signal sent before that ends the process with the signal's status, even
 * one whose script would exit at once. A process's stdio goes
 * through `ProcessIOMemory`: `tasks.create` waits until the client opened the
 * read ends of the FIFO set it names, like the shim does. Built-in commands
 * when no script matches: `cat`, `true`, `false`, `sleep N`, `echo …`,
 * `sh -c "exit N"`; anything else exits 0 at once with no output.
 *
 * Not modelled: checkpoint/restore (fails with a `System` error: CRIU),
 * a terminal's echo of its input, snapshots and rootfs mounts, namespaces
 * as objects, image unpacking, signals stopping a process (SIGSTOP), the
 * daemon's own restart beyond `disconnect`.
 *
 * ```ts
 * const TestLayer = ContainerdMemory.layerWithProcessIO()
 *
 * Effect.gen(function* () {
 *   const memory = yield* ContainerdMemory.ContainerdMemory
 *   yield* memory.script({ args: ["my-job"] }, { stdout: "done\n", duration: "5 seconds", exitCode: 3 })
 *   // … run the client; TestClock.adjust("5 seconds") lets the job finish
 * }).pipe(Effect.provide(TestLayer))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { Envelope, ProcessRef, TaskStatus } from "../domain/Types.js"
import type { ContainerdError, InvalidParameter } from "../errors/ContainerdError.js"
import * as Content from "../internal/memory/content.js"
import * as Events from "../internal/memory/events.js"
import * as Runtime from "../internal/memory/runtime.js"
import type * as Scripts from "../internal/memory/scripts.js"
import { Namespaces } from "../internal/memory/state.js"
import { Containerd, validateIdentifier } from "../services/Containerd.js"
import type { ProcessIO } from "../services/ProcessIO.js"
import * as ProcessIOMemory from "./ProcessIOMemory.js"

/** What a scripted process writes: bytes, text, or text made from the process's state when it writes (`stty size`, say). */
export type Output = Uint8Array | string | ((process: ProcessView) => Uint8Array | string)

/** What a scripted process does once started. */
export interface Script {
  /** The exit status when the script has run (default 0). */
  readonly exitCode?: number
  /** Waits this long from its start (paused time excluded) before writing any output, like `sleep N; echo …`. */
  readonly delay?: Duration.DurationInput
  /**
   * A resize of its terminal ends `delay` early (one before the delay began ends it at once), as SIGWINCH wakes a
   * process that waits for it (`trap … WINCH`): its output then shows the new size whenever the resize comes.
   */
  readonly wakesOnResize?: boolean
  /** Written to stdout first; a function is called when the output is written (after `delay`), with the process as it is then. */
  readonly stdout?: Output
  /**
   * Written to stderr next (to stdout with a terminal, as a pty merges them); a function as for `stdout`.
   * With a terminal every output's "\n" goes out as "\r\n", as a pty's line discipline sends it.
   */
  readonly stderr?: Output
  /** How long the process runs from its start, on Effect's Clock, paused time excluded (default 0; `Duration.infinity`: until killed); it exits once its output is out, too. */
  readonly duration?: Duration.DurationInput
  /** Copies stdin to stdout until EOF (like `cat`) before `duration` starts. */
  readonly echoStdin?: boolean
  /** Hits the memory limit at the end: a `/tasks/oom` event, then exit 137. */
  readonly oom?: boolean
  /**
   * Whether the process dies of the fatal signals it gets (exit 128 + n), as one without handlers does. Default: true
   * for an exec, false for an init — PID 1 of its pid namespace, which the kernel shields from every signal it has no
   * handler for but SIGKILL, so `sleep 60` as the init survives SIGTERM (and SIGINT, SIGHUP, …) on the real daemon.
   * `true` on an init models a PID 1 whose handlers exit (a shell trap, an init such as tini); `ignoreSigterm` and
   * `ignoreSignals` still apply then.
   */
  readonly diesOfSignals?: boolean
  /** Ignores SIGTERM (an init ignores it anyway unless `diesOfSignals`). */
  readonly ignoreSigterm?: boolean
  /** Further signals the process ignores when it `diesOfSignals` (SIGKILL cannot be ignored). */
  readonly ignoreSignals?: ReadonlyArray<number>
  /** `tasks.start` fails with this message (gRPC UNKNOWN, as an OCI runtime error); the process stays CREATED. */
  readonly startError?: string
}

/** The process a script is chosen for. */
export interface ProcessInfo {
  readonly namespace: string
  readonly containerId: string
  /** The exec id; "" for a task's init process. */
  readonly execId: string
  /** `process.args` of the container's spec (init) or of the exec's process spec. */
  readonly args: ReadonlyArray<string>
  readonly terminal: boolean
}

/** Which processes a script is for: every given field must match. */
export interface Match {
  readonly namespace?: string
  readonly containerId?: string
  /** The exec id; "" matches init processes only. */
  readonly execId?: string
  /** Exactly these args, or args the predicate accepts. */
  readonly args?: ReadonlyArray<string> | ((args: ReadonlyArray<string>) => boolean)
}

/** A script, or a function choosing one per process. */
export type ScriptSource = Script | ((process: ProcessInfo) => Script)

/** A process as the in-memory containerd sees it, for assertions. */
export interface ProcessView {
  readonly args: ReadonlyArray<string>
  readonly terminal: boolean
  readonly status: TaskStatus
  readonly pid: number
  /** The last `resizePty` size (terminal processes only). */
  readonly ptySize: { readonly width: number; readonly height: number } | undefined
  /** Every signal sent to the process, in order. */
  readonly signals: ReadonlyArray<number>
  /** Whether `closeIO{stdin}` reached the process. */
  readonly stdinClosed: boolean
  /** The task's Linux resources: the spec's, merged with every `tasks.update`. */
  readonly resources: unknown
  /** Whether the container was deleted while the task lives on. */
  readonly orphaned: boolean
}

/** The test handle of the in-memory containerd. */
export declare namespace ContainerdMemory {
  /** Scripts processes, drives them from outside and controls event delivery. */
  export interface Service {
    /** Adds a script; scripts are tried in the order they were added, the first match wins. */
    readonly script: (match: Match, script: ScriptSource) => Effect.Effect<void>
    /** Ends a running process (or a created init) now with `exitCode`, as if it exited by itself. */
    readonly exit: (ref: ProcessRef, exitCode: number) => Effect.Effect<void, ContainerdError>
    /** The container hits its memory limit: `/tasks/oom`, then its init exits with 137. */
    readonly oom: (containerId: string) => Effect.Effect<void, ContainerdError>
    /** A process's state as the shim sees it, even for an orphaned task. */
    readonly inspect: (ref: ProcessRef) => Effect.Effect<ProcessView, ContainerdError>
    /** Fails every open `events.subscribe` stream with `System` code 14 "transport is closing". */
    readonly disconnectSubscribers: Effect.Effect<void>
    /** What a client sees of a containerd restart: subscriptions and pending `tasks.wait` calls fail with code 14; tasks live on. */
    readonly disconnect: Effect.Effect<void>
    /** While the scope is open, envelopes matching the predicate are lost (a shim that gave up publishing). */
    readonly dropEvents: (
      predicate: (envelope: Envelope) => boolean,
    ) => Effect.Effect<void, never, Scope.Scope>
    /** While the scope is open, envelopes are held; at its close they go to the subscriptions open then. */
    readonly pauseEvents: Effect.Effect<void, never, Scope.Scope>
    /**
     * The envelopes published so far, delivered or not, oldest first: every one up to 10,000; past that the oldest
     * are dropped, keeping at least the newest 5,000, so that a long run's memory stays bounded.
     */
    readonly published: Effect.Effect<ReadonlyArray<Envelope>>
    /** How many `events.subscribe` streams are open. */
    readonly subscribers: Effect.Effect<number>
  }
}

/** The tag of the in-memory containerd's test handle. */
export class ContainerdMemory extends Context.Tag("effect-containerd/ContainerdMemory")<
  ContainerdMemory,
  ContainerdMemory.Service
>() {}

/** Options of the in-memory containerd. */
export interface Options {
  /** The namespace of calls made without `withNamespace` (default "default"). */
  readonly namespace?: string
  /** The first pid handed out (default 10000). */
  readonly firstPid?: number
}

/** Builds the service and its handle in a Scope; process fibers live in that Scope. */
export const make = (
  options: Options = {},
): Effect.Effect<
  { readonly containerd: Containerd.Service; readonly memory: ContainerdMemory.Service },
  InvalidParameter,
  ProcessIOMemory.ProcessIOMemory | Scope.Scope
> =>
  Effect.gen(function* () {
    const namespace = yield* validateIdentifier("namespace", options.namespace ?? "default")
    const shim = yield* ProcessIOMemory.ProcessIOMemory
    const namespaces = new Namespaces(namespace)
    const bus = new Events.Bus()
    const scripts: Array<Scripts.Entry> = []
    const runtime = Runtime.make({
      namespaces,
      bus,
      scripts,
      shim,
      firstPid: options.firstPid ?? 10000,
    })
    const store = Content.make(namespaces, bus)
    yield* Effect.addFinalizer(() => Effect.sync(() => bus.disconnect()))
    // process fibers live in the layer's scope: they end first when it closes
    yield* Effect.addFinalizer(() => runtime.hooks.stopProcesses)

    const containerd: Containerd.Service = {
      namespace,
      version: Effect.succeed({ version: "memory", revision: "effect-containerd" }),
      health: Effect.succeed("SERVING"),
      containers: runtime.containers,
      tasks: runtime.tasks,
      content: store.content,
      images: store.images,
      leases: store.leases,
      events: { subscribe: (filters) => bus.subscribe(filters) },
    }

    const memory: ContainerdMemory.Service = {
      script: (match, script) =>
        Effect.sync(() => {
          scripts.push({ match, script })
        }),
      exit: runtime.hooks.exit,
      oom: runtime.hooks.oom,
      inspect: runtime.hooks.inspect,
      disconnectSubscribers: Effect.sync(() => bus.disconnect()),
      disconnect: Effect.zipRight(
        Effect.sync(() => bus.disconnect()),
        runtime.hooks.cutWaits,
      ),
      dropEvents: (predicate) => bus.drop(predicate),
      pauseEvents: bus.hold(),
      published: Effect.sync(() => [...bus.log]),
      subscribers: Effect.sync(() => bus.subscriberCount),
    }

    return { containerd, memory }
  })

/** `Containerd` and its test handle in memory, over the `ProcessIOMemory` shim side. */
export const layer = (
  options?: Options,
): Layer.Layer<Containerd | ContainerdMemory, InvalidParameter, ProcessIOMemory.ProcessIOMemory> =>
  Layer.scopedContext(
    Effect.map(make(options), ({ containerd, memory }) =>
      Context.make(Containerd, containerd).pipe(Context.add(ContainerdMemory, memory)),
    ),
  )

/** `layer` with its own in-memory `ProcessIO`: everything a `Libcontainerd` test needs but the `Backend`. */
export const layerWithProcessIO = (
  options?: Options & { readonly processIO?: ProcessIOMemory.Options },
): Layer.Layer<
  Containerd | ContainerdMemory | ProcessIO | ProcessIOMemory.ProcessIOMemory,
  InvalidParameter
> => layer(options).pipe(Layer.provideMerge(ProcessIOMemory.layer(options?.processIO)))
