/**
 * The container client: what Docker's `libcontainerd/remote` client does, as
 * an Effect service. It keeps a registry of the containers it created or
 * restored (bundle dir, task, execs, OOM mark), runs every operation through
 * `Containerd`, wires each process's stdio through `ProcessIO`, and hands the
 * task events of its containers to the `Backend`, in order per container.
 *
 * Errors keep the seed's kinds and messages:
 *
 * | situation                                   | error                                          |
 * |---------------------------------------------|------------------------------------------------|
 * | `create` with an id already in the registry | `Conflict("id already in use")`                |
 * | any operation on an unknown container       | `NotFound("no such container")`                |
 * | `start` on a started container              | `Conflict("container already started")`        |
 * | `exec` on a container without a task        | `InvalidParameter("container is not running")` |
 * | `exec` with an exec id in use               | `Conflict("id already in use")`                |
 * | a process operation without a task          | `NotFound("container is not running")`         |
 * | a process operation on an unknown exec      | `NotFound("no such exec")`                     |
 * | `delete` while the container has a task     | `Conflict(…"delete the task first")`           |
 * | an id that breaks containerd's rule, a bad spec | `InvalidParameter` naming the field, before any RPC |
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type { ProcessedEvent } from "../domain/Event.js"
import type { LinuxResources, Process, Spec } from "../domain/Spec.js"
import type { Stats } from "../domain/Stats.js"
import type { RuncOptions, Timestamp } from "../domain/Types.js"
import type { ContainerdError } from "../errors/ContainerdError.js"
import type { DirectIO } from "./ProcessIO.js"

/**
 * Wires a process's stdio: the Effect form of the seed's `StdioCallback`.
 * It runs in the process's own Scope, so fibers it forks with
 * `Effect.forkScoped` (readers of stdout, say) end when the process is deleted.
 * After the exit, once the outputs have ended, the client waits for those
 * fibers to finish with what was read (at most `readersGrace`, 2 s) before it
 * closes that Scope, which interrupts the ones still running.
 */
export type AttachStdio<E = ContainerdError, R = never> = (
  io: DirectIO,
  processId: string,
) => Effect.Effect<void, E, R | Scope.Scope>

/** Options of `start`. */
export interface StartOptions<E = never, R = never> {
  /** Make a stdin FIFO for the init process. */
  readonly withStdin?: boolean
  /** Wires the stdio; without it the output is read and dropped so the process never blocks on a full pipe. */
  readonly attachStdio?: AttachStdio<E, R>
  /** Restore the task from this checkpoint directory (see the restore issue). */
  readonly checkpointDir?: string
}

/** Options of `exec`. */
export interface ExecOptions<E = never, R = never> {
  readonly withStdin?: boolean
  readonly attachStdio?: AttachStdio<E, R>
}

/** How a task ended, from `deleteTask`. */
export interface TaskExit {
  readonly exitCode: number
  readonly exitedAt: Timestamp
}

/** The state of a container's task. */
export type Status = "unknown" | "created" | "running" | "stopped" | "paused" | "pausing"

/** One process of a container, from `summary`: `execId` is set for exec processes. */
export interface Summary {
  readonly pid: number
  readonly execId?: string
}

/** What `restore` found. */
export interface Restored {
  readonly alive: boolean
  readonly pid: number
}

/** The client's interface. */
export declare namespace Libcontainerd {
  /** Every operation of the client. `processId` "init" names a container's init process. */
  export interface Service {
    /** The daemon's version. */
    readonly version: Effect.Effect<{ readonly version: string; readonly revision: string }, ContainerdError>
    /** Creates the container and its bundle dir `<stateDir>/<id>`; no task yet. */
    readonly create: (
      id: string,
      spec: Spec,
      runtimeOptions?: RuncOptions,
    ) => Effect.Effect<void, ContainerdError>
    /** Creates and starts the container's task with its stdio; returns the init's pid. */
    readonly start: <E = never, R = never>(
      id: string,
      options?: StartOptions<E, R>,
    ) => Effect.Effect<number, ContainerdError | E, R>
    /** Adds and starts an exec process; returns its pid. Starts are serialized per container. */
    readonly exec: <E = never, R = never>(
      containerId: string,
      processId: string,
      spec: Process,
      options?: ExecOptions<E, R>,
    ) => Effect.Effect<number, ContainerdError | E, R>
    /** Sends a signal (number or name such as "SIGTERM") to a process. */
    readonly signalProcess: (
      containerId: string,
      processId: string,
      signal: number | NodeJS.Signals,
    ) => Effect.Effect<void, ContainerdError>
    /** Resizes a process's terminal. */
    readonly resizeTerminal: (
      containerId: string,
      processId: string,
      width: number,
      height: number,
    ) => Effect.Effect<void, ContainerdError>
    /** Closes a process's stdin: the process reads EOF. */
    readonly closeStdin: (containerId: string, processId: string) => Effect.Effect<void, ContainerdError>
    /** Freezes every process of the container. */
    readonly pause: (containerId: string) => Effect.Effect<void, ContainerdError>
    /** Thaws the container. */
    readonly resume: (containerId: string) => Effect.Effect<void, ContainerdError>
    /** The container's resource usage. */
    readonly stats: (containerId: string) => Effect.Effect<Stats, ContainerdError>
    /** The pids of every process in the container. */
    readonly listPids: (containerId: string) => Effect.Effect<ReadonlyArray<number>, ContainerdError>
    /** The container's processes, exec processes named by their exec id. */
    readonly summary: (containerId: string) => Effect.Effect<ReadonlyArray<Summary>, ContainerdError>
    /**
     * Deletes the stopped task and releases its stdio; returns its exit code and time.
     * Unlike the seed (which answered 255/now silently), a container without a task fails with `NotFound`.
     */
    readonly deleteTask: (containerId: string) => Effect.Effect<TaskExit, ContainerdError>
    /** Deletes the container (refused while it has a task) and its bundle dir unless `noClean`. */
    readonly delete: (containerId: string) => Effect.Effect<void, ContainerdError>
    /** The state of the container's task. */
    readonly status: (containerId: string) => Effect.Effect<Status, ContainerdError>
    /** Changes the running task's resource limits. */
    readonly updateResources: (
      containerId: string,
      resources: LinuxResources,
    ) => Effect.Effect<void, ContainerdError>
    /**
     * Loads a container and its task (and its running execs) from containerd and
     * re-attaches their stdio; `attachStdio` is called once per process.
     */
    readonly restore: <E = never, R = never>(
      id: string,
      attachStdio?: AttachStdio<E, R>,
    ) => Effect.Effect<Restored, ContainerdError | E, R>
    /** Checkpoints the task into `checkpointDir`; `exit` stops the task afterwards. */
    readonly createCheckpoint: (
      containerId: string,
      checkpointDir: string,
      exit: boolean,
    ) => Effect.Effect<void, ContainerdError>
    /** Every processed event, as handed to the Backend; each subscriber sees the events after it subscribed. */
    readonly events: Stream.Stream<ProcessedEvent>
  }
}

/** The container client's tag. */
export class Libcontainerd extends Context.Tag("effect-containerd/Libcontainerd")<
  Libcontainerd,
  Libcontainerd.Service
>() {}
