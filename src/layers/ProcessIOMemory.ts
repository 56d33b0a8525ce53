/**
 * `ProcessIO` over in-memory pipes, for tests of its consumers.
 *
 * It keeps the live layer's rules — the same layout, validation, ownership of
 * files, lifecycle signals, drain bound and stdin close hook — with no file
 * made on disk. The in-memory containerd plays the shim through
 * `ProcessIOMemory`: `processSide(paths)` hands it the process's ends of a set
 * (write stdout/stderr, read stdin, `closeIO`), found by the same path strings
 * `Tasks.Create` receives.
 *
 * Pipe semantics follow the FIFOs: a writer waits while the reader's buffer is
 * full or no reader is attached; the process sees stdin EOF only once the
 * client closed its writer and `closeIO` came; writes into a removed set are
 * dropped. The shim opens stdin's read end when it takes the process side
 * (`processSide`); bytes still queued when the client's last writer closes
 * before that are lost, as the kernel frees a FIFO's buffer once its last
 * opener closes.
 *
 * @since 0.1.0
 */
import type * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { type ContainerdError, NotFound, System } from "../errors/ContainerdError.js"
import {
  ChunkQueue,
  durationOption,
  type InputEnd,
  pipeViaCopy,
  queueCopy,
  makeDirectIO,
  Notice,
  type OutputEnd,
  removedOnClose,
  type SetState,
} from "../internal/fifo.js"
import { Signal } from "../internal/signal.js"
import {
  type DirectIO,
  type FifoSet,
  fromPaths,
  layout,
  type OpenOptions,
  ProcessIO,
  paths as setPaths,
} from "../services/ProcessIO.js"

/** The process's end of its stdout or stderr. */
export interface ProcessOutput {
  /** Writes a chunk; waits while the client's buffer is full or no client is attached; dropped once closed or removed. */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void>
  /** Closes the process's write end: the client's stream ends after what it has queued. */
  readonly close: Effect.Effect<void>
}

/** The process's end of its stdin. */
export interface ProcessInput {
  /** What the client writes; ends once the client closed its writer and `closeIO` came. */
  readonly read: Stream.Stream<Uint8Array>
  /**
   * `read` one pull at a time, without a stream: every chunk written since the last pull (waiting for one), or
   * `None` at the end.
   */
  readonly pull: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<never>>
  /** What containerd's `CloseIO{stdin: true}` does: the shim closes its write end. */
  readonly closeIO: Effect.Effect<void>
}

/** The process's side of a FIFO set: what the shim holds. */
export interface ProcessSide {
  readonly set: FifoSet
  /** Completes once a client has opened the set's read ends (what `Tasks.Create` waits for). */
  readonly opened: Effect.Effect<void>
  /** Whether a client has opened the set's read ends: `opened` completes at once then. */
  readonly isOpened: () => boolean
  readonly stdout: ProcessOutput
  /** Absent with a terminal: write stderr bytes to `stdout`, as a pty merges them. */
  readonly stderr: ProcessOutput | undefined
  readonly stdin: ProcessInput | undefined
  /** Closes stdout and stderr, as a process exiting with no child holding them does. */
  readonly exit: Effect.Effect<void>
}

/** One in-memory FIFO file. */
export interface MemoryFile {
  readonly path: string
  readonly uid: number | undefined
  readonly gid: number | undefined
}

/** The shim's view of the in-memory layer. */
export declare namespace ProcessIOMemory {
  /** Access to the process sides of sets and to the files that exist. */
  export interface Service {
    /** The process side of the set whose stdout (or stdin/stderr) is at one of these paths; opens its stdin's read end. */
    readonly processSide: (paths: {
      readonly stdin?: string
      readonly stdout?: string
      readonly stderr?: string
    }) => Effect.Effect<ProcessSide, NotFound>
    /** `processSide` as a plain call, for a shim already in synchronous code: `undefined` when no set is found. */
    readonly unsafeProcessSide: (paths: {
      readonly stdin?: string
      readonly stdout?: string
      readonly stderr?: string
    }) => ProcessSide | undefined
    /** Every in-memory FIFO that exists now. */
    readonly files: Effect.Effect<ReadonlyArray<MemoryFile>>
  }
}

/** The in-memory layer's shim-side handle, provided beside `ProcessIO` by `layer`. */
export class ProcessIOMemory extends Context.Tag("effect-containerd/ProcessIOMemory")<
  ProcessIOMemory,
  ProcessIOMemory.Service
>() {}

/** Options of the in-memory layer. */
export interface Options {
  /** How long outputs may take to reach EOF after `markExited` (default 2 s). */
  readonly drainTimeout?: Duration.DurationInput
  /** Bytes a pipe holds before its writer waits (default 64 KiB, a Linux pipe's size). */
  readonly highWaterMark?: number
}

const defaultDrainTimeout = Duration.seconds(2)

/** A pipe from the process to the client. */
class OutPipe {
  private reader: { readonly queue: ChunkQueue; readonly ended: Notice } | undefined
  private attached = new Signal()
  private writerClosed = false
  private removed = false

  constructor(
    private readonly capacity: number,
    private readonly path: string,
  ) {}

  readonly write = (chunk: Uint8Array): Effect.Effect<void> =>
    Effect.suspend((): Effect.Effect<void> => {
      if (this.removed || this.writerClosed) return Effect.void
      if (this.reader !== undefined) return this.reader.queue.offer(chunk)
      return Effect.zipRight(this.attached.await, this.write(chunk))
    })

  readonly closeWriter: Effect.Effect<void> = Effect.sync(() => {
    this.writerClosed = true
    if (this.reader !== undefined) {
      this.reader.queue.end()
      this.reader.ended.fire()
    }
  })

  remove(): void {
    this.removed = true
    this.attached.succeed()
  }

  attach(): OutputEnd {
    const reader = { queue: new ChunkQueue(this.capacity), ended: new Notice() }
    if (this.writerClosed) {
      reader.queue.end()
      reader.ended.fire()
    }
    this.reader = reader
    const attached = this.attached
    this.attached = new Signal()
    attached.succeed()
    const copy = queueCopy(reader.queue, this.path)
    return {
      take: reader.queue.take,
      ended: reader.ended,
      destroy: (done) => {
        reader.queue.end()
        reader.ended.fire()
        if (this.reader === reader) this.reader = undefined
        done()
      },
      discard: () => reader.queue.discard(),
      copy,
      pipe: pipeViaCopy(copy),
    }
  }
}

/** A pipe from the client to the process. */
class InPipe {
  private readonly queue: ChunkQueue
  private clientWriters = 0
  private shimOpen = true
  /** Whether the shim has opened its read end (`processSide`): until then the client's writers are the only openers. */
  private readerOpened = false
  readonly read: Stream.Stream<Uint8Array>
  readonly pull: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<never>>

  constructor(capacity: number) {
    this.queue = new ChunkQueue(capacity)
    // the queue ends without a failure here: every end is the end of input
    this.pull = Effect.mapError(this.queue.take, () => Option.none())
    this.read = Stream.repeatEffectChunkOption(this.pull)
  }

  readonly closeIO: Effect.Effect<void> = Effect.sync(() => {
    this.shimOpen = false
    this.maybeEnd()
  })

  /** The shim opens its read end: from now on the pipe keeps what the client wrote past the client's close. */
  openReader(): void {
    this.readerOpened = true
  }

  private maybeEnd(): void {
    if (!this.shimOpen && this.clientWriters === 0) this.queue.end()
  }

  attach(path: string): InputEnd {
    this.clientWriters += 1
    const closed = new Signal()
    let open = true
    const close = Effect.sync(() => {
      if (!open) return
      open = false
      closed.succeed()
      this.clientWriters -= 1
      // no reader and no other writer: the kernel frees the pipe's buffer
      if (this.clientWriters === 0 && !this.readerOpened) this.queue.clear()
      this.maybeEnd()
    })
    const closedError = () => new System({ message: `write ${path}: stdin is closed` })
    const write = (chunk: Uint8Array): Effect.Effect<void, ContainerdError> =>
      Effect.suspend(() => {
        if (!open) return Effect.fail(closedError())
        // below the pipe's capacity the write is done; over it, it waits for room or the writer's close
        if (this.queue.push(chunk)) return Effect.void
        return Effect.raceFirst(
          this.queue.awaitSpace,
          Effect.zipRight(closed.await, Effect.fail(closedError())),
        )
      })
    return { write, end: close, close }
  }
}

interface MemorySet {
  readonly set: FifoSet
  readonly stdin: InPipe | undefined
  readonly stdout: OutPipe
  readonly stderr: OutPipe | undefined
  readonly opened: Signal
  readonly side: ProcessSide
}

const enoent = (path: string) => new System({ message: `open ${path}: ENOENT (no such file or directory)` })

/** Builds the in-memory service and its shim-side handle, sharing one set of pipes. */
export const make = (
  options: Options = {},
): { readonly processIO: ProcessIO.Service; readonly memory: ProcessIOMemory.Service } => {
  const drainTimeout = durationOption(options.drainTimeout, defaultDrainTimeout)
  const capacity = Math.max(1, options.highWaterMark ?? 64 * 1024)
  const files = new Map<
    string,
    { readonly set: MemorySet; readonly uid: number | undefined; readonly gid: number | undefined }
  >()
  const states = new WeakMap<FifoSet, SetState>()

  const lookup = (path: string | undefined): MemorySet | undefined =>
    path === undefined || path === "" ? undefined : files.get(path)?.set

  const remove = (set: FifoSet) =>
    Effect.sync(() => {
      for (const path of setPaths(set)) {
        const entry = files.get(path)
        if (entry === undefined) continue
        files.delete(path)
        entry.set.stdout.remove()
        entry.set.stderr?.remove()
      }
    })

  const makeSet = (set: FifoSet): MemorySet => {
    const existing = lookup(set.stdout)
    const stdin = set.stdin === undefined ? undefined : (lookup(set.stdin)?.stdin ?? new InPipe(capacity))
    const stdout = existing?.stdout ?? new OutPipe(capacity, set.stdout)
    const stderr =
      set.stderr === undefined ? undefined : (lookup(set.stderr)?.stderr ?? new OutPipe(capacity, set.stderr))
    const opened = existing?.opened ?? new Signal()
    const side: ProcessSide = {
      set,
      opened: opened.await,
      isOpened: () => opened.isDone,
      stdout: { write: stdout.write, close: stdout.closeWriter },
      stderr: stderr === undefined ? undefined : { write: stderr.write, close: stderr.closeWriter },
      stdin: stdin === undefined ? undefined : { read: stdin.read, pull: stdin.pull, closeIO: stdin.closeIO },
      exit: Effect.zipRight(stdout.closeWriter, stderr === undefined ? Effect.void : stderr.closeWriter),
    }
    return { set, stdin, stdout, stderr, opened, side }
  }

  const openSet = (
    set: FifoSet,
    state: SetState,
    openOptions: OpenOptions | undefined,
  ): Effect.Effect<DirectIO, ContainerdError, Scope.Scope> =>
    Effect.suspend(() => {
      const memory = lookup(set.stdout)
      if (memory === undefined) return Effect.fail(enoent(set.stdout))
      for (const path of setPaths(set)) {
        if (lookup(path) !== memory) return Effect.fail(enoent(path))
      }
      // the ends are attached and handed to the DirectIO in one uninterruptible step: its scope closes them all
      return Effect.uninterruptible(
        Effect.suspend(() => {
          const stdout = memory.stdout.attach()
          const stderr = memory.stderr?.attach()
          const stdin =
            memory.stdin === undefined || set.stdin === undefined ? undefined : memory.stdin.attach(set.stdin)
          memory.opened.succeed()
          return makeDirectIO({
            set,
            state,
            stdin,
            stdout,
            stderr,
            drainTimeout,
            remove: remove(set),
            onStdinClose: openOptions?.onStdinClose,
          })
        }),
      )
    })

  const processIO = ProcessIO.of({
    create: (createOptions) =>
      Effect.flatMap(layout(createOptions), (set) =>
        // the files and the finalizer removing them come in one uninterruptible step
        Effect.uninterruptible(
          Effect.flatMap(Effect.scope, (scope) => {
            const state: SetState = { created: false, deleted: false }
            const memory = makeSet(set)
            for (const path of setPaths(set)) {
              files.set(path, { set: memory, uid: createOptions.uid, gid: createOptions.gid })
            }
            states.set(set, state)
            return Effect.as(
              Scope.addFinalizer(
                scope,
                Effect.suspend(() => (removedOnClose(state) ? remove(set) : Effect.void)),
              ),
              set,
            )
          }),
        ),
      ),
    open: (set, openOptions) =>
      openSet(set, states.get(set) ?? { created: false, deleted: false }, openOptions),
    reattach: (reported, openOptions) =>
      Effect.flatMap(fromPaths(reported), (set) =>
        openSet(set, { created: true, deleted: false }, openOptions),
      ),
  })

  const unsafeProcessSide: ProcessIOMemory.Service["unsafeProcessSide"] = (paths) => {
    const found = lookup(paths.stdout) ?? lookup(paths.stdin) ?? lookup(paths.stderr)
    found?.stdin?.openReader()
    return found?.side
  }

  const memory = ProcessIOMemory.of({
    processSide: (paths) =>
      Effect.suspend(() => {
        const side = unsafeProcessSide(paths)
        return side === undefined
          ? Effect.fail(
              new NotFound({ message: `no FIFO set at ${paths.stdout ?? paths.stdin ?? paths.stderr}` }),
            )
          : Effect.succeed(side)
      }),
    unsafeProcessSide,
    files: Effect.sync(() => [...files].map(([path, entry]) => ({ path, uid: entry.uid, gid: entry.gid }))),
  })

  return { processIO, memory }
}

/** The in-memory layer: `ProcessIO` and its shim-side handle `ProcessIOMemory`. */
export const layer = (options?: Options): Layer.Layer<ProcessIO | ProcessIOMemory> =>
  Layer.syncContext(() => {
    const { processIO, memory } = make(options)
    return Context.make(ProcessIO, processIO).pipe(Context.add(ProcessIOMemory, memory))
  })
