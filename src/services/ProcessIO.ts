/**
 * The stdio of containerd processes: FIFO sets and their Effect streams.
 *
 * containerd's shim talks to a process's client through named pipes in the
 * container's bundle dir. `ProcessIO` makes those pipes (`create`), opens them
 * without ever parking Node's event loop or libuv's threadpool (`open`),
 * re-opens the pipes of a process found at restore (`reattach`), and exposes
 * the process's stdio as a `DirectIO`: stdout and stderr as back-pressured
 * `Stream`s of whole chunks, stdin as a writer and a `Sink`.
 *
 * A `DirectIO` also carries the process-lifecycle signals the client gives it:
 *
 * | signal            | when the client gives it                    | effect                                                        |
 * |-------------------|---------------------------------------------|---------------------------------------------------------------|
 * | `processCreated`  | `Tasks.Create` / `Tasks.Exec` returned      | a deferred stdin close is sent now; files outlive the scope   |
 * | `markExited`      | the process's exit is known                 | stdin is dropped; stdout/stderr get `drainTimeout` to reach EOF |
 * | `awaitDrained`    | before `Tasks.Delete` / `DeleteProcess`     | waits for EOF on every output (bounded once exited)           |
 * | `processDeleted`  | the process is gone                         | closes every fd now and removes the FIFO files                |
 *
 * Ownership of the files: closing the scope of `create` removes them unless the
 * process was created and not yet deleted: such a process outlives the client
 * (live restore), and a later client re-attaches to its FIFOs by path.
 *
 * ```ts
 * const io = yield* ProcessIO
 * const set = yield* io.create({ bundleDir, processId: "init", stdin: true, terminal: false })
 * const dio = yield* io.open(set, { onStdinClose: closeIO(containerId, "") })
 * yield* tasksCreate({ stdin: set.stdin ?? "", stdout: set.stdout, stderr: set.stderr ?? "" })
 * yield* dio.processCreated
 * ```
 *
 * @since 0.1.0
 */
import * as Path from "node:path"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Sink from "effect/Sink"
import type * as Stream from "effect/Stream"
import { type ContainerdError, InvalidParameter } from "../errors/ContainerdError.js"

/** The FIFO paths of one process, as handed to `Tasks.Create` / `Tasks.Exec` (absent means none: send ""). */
export interface FifoSet {
  /** `<bundleDir>/<processId>-stdin`, only when stdin was asked for. */
  readonly stdin?: string
  /** `<bundleDir>/<processId>-stdout`, always. */
  readonly stdout: string
  /** `<bundleDir>/<processId>-stderr`, only without a terminal (a pty merges stderr into stdout). */
  readonly stderr?: string
  /** Whether the process runs with a terminal. */
  readonly terminal: boolean
}

/** What `create` needs to lay out and make a FIFO set. */
export interface CreateOptions {
  /** Absolute bundle dir of the container; the FIFOs are made inside it. */
  readonly bundleDir: string
  /** The process id (`init` for a task's init process): containerd's identifier rule, at most 76 chars. */
  readonly processId: string
  /** Whether to make a stdin FIFO. */
  readonly stdin: boolean
  /** Whether the process has a terminal (then no stderr FIFO). */
  readonly terminal: boolean
  /** Owner of the FIFOs, e.g. the host uid mapping container root in a user namespace. */
  readonly uid?: number
  /** Group of the FIFOs. */
  readonly gid?: number
}

/** The stdio paths of an existing process as `Tasks.Get` reports them ("" or absent means none). */
export interface ReattachPaths {
  readonly stdin?: string
  readonly stdout?: string
  readonly stderr?: string
  readonly terminal: boolean
}

/** Options of `open` and `reattach`. */
export interface OpenOptions {
  /** What closing stdin must send to containerd: `CloseIO{stdin: true}` on this process (see `DirectIO.onStdinClose`). */
  readonly onStdinClose?: Effect.Effect<void, ContainerdError>
}

/** The client's end of a process's stdin. */
export interface Stdin {
  /** Writes one chunk; waits while the pipe and the write buffer are full; fails once stdin is closed or the process exited. */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, ContainerdError>
  /** Writes every chunk it receives; does not close stdin at the end. */
  readonly sink: Sink.Sink<void, Uint8Array, never, ContainerdError>
  /** The same as `DirectIO.closeStdin`. */
  readonly close: Effect.Effect<void, ContainerdError>
}

/**
 * What `pipeStdout` writes into: a Node `Writable` (a file, a socket, `process.stdout`) or anything with its
 * `write(chunk, callback)`. The chunk is lent: it stays valid until the callback.
 */
export interface WritableTarget {
  write(chunk: Uint8Array, callback: (error?: Error | null) => void): boolean
}

/** The stdio of one process, owned by the Scope `open` / `reattach` ran in. */
export interface DirectIO {
  /** The FIFO paths this IO is attached to. */
  readonly set: FifoSet
  /** The process's stdin, when the set has one. */
  readonly stdin?: Stdin
  /**
   * The process's stdout as whole chunks, ending on EOF (or at the drain bound after `markExited`, or when the IO
   * is closed). Single consumer; while it does not pull, at most the buffer bound is read and then the writer waits.
   */
  readonly stdout: Stream.Stream<Uint8Array, ContainerdError>
  /** The process's stderr (absent with a terminal), like `stdout`. */
  readonly stderr?: Stream.Stream<Uint8Array, ContainerdError>
  /**
   * Copies stdout to `write` the way `cat` or Go's `io.Copy` do: reads land in one buffer the reader reuses, and
   * the next read waits until the effect `write` returned has completed. The bytes are lent — valid only until
   * then, so copy what you keep. For bulk output this is faster than `stdout`, which allocates a buffer per read.
   * What was read before the copy began comes first. Completes at EOF (or at the drain bound, or when the IO is
   * closed); fails with `write`'s error or a read error. One reader per output: use it instead of `stdout`, not
   * beside it; a second copy while one runs fails with InvalidParameter. A copy that fails or is interrupted
   * leaves what it read and did not write for the next reader (the stream or another copy).
   */
  readonly copyStdout: <E = never, R = never>(
    write: (bytes: Uint8Array) => Effect.Effect<void, E, R>,
  ) => Effect.Effect<void, E | ContainerdError, R>
  /** Copies stderr (absent with a terminal), like `copyStdout`. */
  readonly copyStderr?: <E = never, R = never>(
    write: (bytes: Uint8Array) => Effect.Effect<void, E, R>,
  ) => Effect.Effect<void, E | ContainerdError, R>
  /**
   * Writes stdout into a Node `Writable` — a file, a socket, an HTTP response, `process.stdout` — as it is read,
   * with no Effect step per read: each read is handed to `target.write` from the read callback itself, and its
   * buffer is lent until that write calls back. At most three writes are pending at once; reading waits while they
   * are, so a slow target slows the process (back-pressure), and memory stays bounded. What was read before the
   * pipe began is written first. Completes at EOF (or the drain bound, or when the IO is closed) once every write
   * has called back; it does not end `target`. Fails with the first write error (then later reads queue for the
   * next reader) or a read error; the target's `'error'` event is the caller's to handle, as for any Node stream.
   * Interrupting it stops the hand-over: writes already handed over stay the target's. One reader per output, as
   * `copyStdout`. The fastest way to move bulk output (see BENCHMARKS.md, group stdio).
   */
  readonly pipeStdout: (target: WritableTarget) => Effect.Effect<void, ContainerdError>
  /** Writes stderr (absent with a terminal) into `target`, like `pipeStdout`. */
  readonly pipeStderr?: (target: WritableTarget) => Effect.Effect<void, ContainerdError>
  /**
   * Flushes and closes the client's stdin writer, then has the `onStdinClose` hook (`CloseIO`) run exactly once as soon
   * as the process exists. After `processCreated` it waits for the hook and fails with the hook's error; before, it
   * returns at once and the hook runs when `processCreated` comes (its result is `stdinClosed`). A no-op without stdin.
   * Known limit: bytes written and then closed before the process exists are lost (our write end was the pipe's
   * only opener, so the kernel drops them); write before creation and close after it.
   */
  readonly closeStdin: Effect.Effect<void, ContainerdError>
  /** Registers the hook closing stdin at containerd (first registration wins); a pending close waits for it. */
  readonly onStdinClose: (hook: Effect.Effect<void, ContainerdError>) => Effect.Effect<void>
  /** Waits until the stdin close hook has run, and fails with its error. */
  readonly stdinClosed: Effect.Effect<void, ContainerdError>
  /** Tells the IO that containerd has created the process: a requested stdin close is sent now. Idempotent. */
  readonly processCreated: Effect.Effect<void>
  /** Tells the IO the process has exited: stdin is dropped, outputs get at most `drainTimeout` to reach EOF. Idempotent. */
  readonly markExited: Effect.Effect<void>
  /** Waits until every output reached EOF or was cut (at the drain bound or by closing); await it before deleting. */
  readonly awaitDrained: Effect.Effect<void>
  /** Tells the IO the process is deleted: closes every fd now and removes the FIFO files. Idempotent. */
  readonly processDeleted: Effect.Effect<void>
  /**
   * Reads stdout and stderr from now on and drops what comes, with no consumer and no fiber: for a process whose
   * output nobody wants (the client's default when `start`/`exec` get no `attachStdio`). The streams then end
   * without more chunks; the drain bound still applies.
   */
  readonly discardOutput: Effect.Effect<void>
}

/** How processes' stdio is made and opened. */
export declare namespace ProcessIO {
  /** The service: make, open and re-open FIFO sets. */
  export interface Service {
    /** Makes the FIFOs of one process (mode 0700, owned by uid/gid); the scope's close removes them unless the process lives on. */
    readonly create: (options: CreateOptions) => Effect.Effect<FifoSet, ContainerdError, Scope.Scope>
    /** Opens the client's ends of a set now, without blocking: read ends first, as `Tasks.Create` waits for them. */
    readonly open: (
      set: FifoSet,
      options?: OpenOptions,
    ) => Effect.Effect<DirectIO, ContainerdError, Scope.Scope>
    /** Opens the existing FIFOs of a restored process by the paths containerd reports; `processDeleted` removes them. */
    readonly reattach: (
      paths: ReattachPaths,
      options?: OpenOptions,
    ) => Effect.Effect<DirectIO, ContainerdError, Scope.Scope>
  }
}

/** The stdio of containerd processes: FIFO sets and their streams. */
export class ProcessIO extends Context.Tag("effect-containerd/ProcessIO")<ProcessIO, ProcessIO.Service>() {}

/** containerd's identifier rule, which process ids must follow. */
export const identifierPattern: RegExp = /^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$/

/** The longest identifier containerd accepts. */
export const identifierMaxLength = 76

const maxId = 0xfffffffe

const invalid = (message: string) => new InvalidParameter({ message })

const checkPath = (field: string, path: string): Effect.Effect<void, InvalidParameter> =>
  !Path.isAbsolute(path)
    ? Effect.fail(invalid(`${field}: must be an absolute path, got ${JSON.stringify(path)}`))
    : path.includes("\0")
      ? Effect.fail(invalid(`${field}: must not contain NUL`))
      : Effect.void

const checkOwner = (field: string, id: number | undefined): Effect.Effect<void, InvalidParameter> =>
  id === undefined || (Number.isInteger(id) && id >= 0 && id <= maxId)
    ? Effect.void
    : Effect.fail(invalid(`${field}: must be an integer in [0, ${maxId}], got ${id}`))

/** Validates `create`'s options and lays out the set: `<bundleDir>/<processId>-stdin|-stdout|-stderr`. */
export const layout = (options: CreateOptions): Effect.Effect<FifoSet, InvalidParameter> =>
  Effect.gen(function* () {
    const { bundleDir, processId } = options
    if (processId.length > identifierMaxLength || !identifierPattern.test(processId)) {
      return yield* Effect.fail(
        invalid(
          `processId: ${JSON.stringify(processId)} is not a valid identifier (${identifierPattern.source}, ≤ 76)`,
        ),
      )
    }
    yield* checkPath("bundleDir", bundleDir)
    yield* checkOwner("uid", options.uid)
    yield* checkOwner("gid", options.gid)
    const base = Path.join(bundleDir, processId)
    const set: { -readonly [K in keyof FifoSet]: FifoSet[K] } = {
      stdout: `${base}-stdout`,
      terminal: options.terminal,
    }
    if (options.stdin) set.stdin = `${base}-stdin`
    if (!options.terminal) set.stderr = `${base}-stderr`
    return set
  })

/** Validates the paths of `reattach` and turns them into a set: stdout is required, "" means none. */
export const fromPaths = (paths: ReattachPaths): Effect.Effect<FifoSet, InvalidParameter> =>
  Effect.gen(function* () {
    if (paths.stdout === undefined || paths.stdout === "") {
      return yield* Effect.fail(invalid("stdout: a process without a stdout FIFO cannot be re-attached"))
    }
    yield* checkPath("stdout", paths.stdout)
    const set: { -readonly [K in keyof FifoSet]: FifoSet[K] } = {
      stdout: paths.stdout,
      terminal: paths.terminal,
    }
    if (paths.stdin !== undefined && paths.stdin !== "") {
      yield* checkPath("stdin", paths.stdin)
      set.stdin = paths.stdin
    }
    if (paths.stderr !== undefined && paths.stderr !== "") {
      yield* checkPath("stderr", paths.stderr)
      set.stderr = paths.stderr
    }
    return set
  })

/** The paths of a set, stdin first. */
export const paths = (set: FifoSet): ReadonlyArray<string> =>
  [set.stdin, set.stdout, set.stderr].filter((path): path is string => path !== undefined)
