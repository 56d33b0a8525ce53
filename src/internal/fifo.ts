/**
 * FIFO plumbing shared by the ProcessIO layers: libc `mkfifo` through koffi,
 * non-blocking opens wrapped in `net.Socket`, a byte-bounded chunk queue, and
 * the lifecycle state machine of a `DirectIO`.
 *
 * @internal
 */
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Net from "node:net"
import * as Util from "node:util"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { type ContainerdError, InvalidParameter, System } from "../errors/ContainerdError.js"
import type { DirectIO, FifoSet, Stdin, WritableTarget } from "../services/ProcessIO.js"
import { Signal } from "./signal.js"

// ---------------------------------------------------------------------------
// errors

const describe = (u: unknown): string => {
  if (u instanceof Error) return u.message
  return String(u)
}

/** A `System` error naming the operation and the path. */
export const fsError = (op: string, path: string, cause: unknown): System =>
  new System({ message: `${op} ${path}: ${describe(cause)}`, cause })

const errnoError = (op: string, path: string, errno: number): System => {
  const entry = Util.getSystemErrorMap().get(-errno)
  const text = entry === undefined ? `errno ${errno}` : `${entry[0]} (${entry[1]})`
  const cause = Object.assign(new Error(text), { errno: -errno, code: entry?.[0], syscall: op, path })
  return new System({ message: `${op} ${path}: ${text}`, cause })
}

// ---------------------------------------------------------------------------
// making and removing FIFOs

interface Libc {
  readonly mkfifo: (path: string, mode: number) => number
  /** `fcntl(fd, cmd, int arg)`. */
  readonly fcntl: (fd: number, cmd: number, arg: number) => number
  readonly errno: () => number
}

let libc: Libc | undefined

/** libc's `mkfifo` and `fcntl` through koffi, loaded on first use (the in-memory layer never loads them). */
const loadLibc = (): Libc => {
  if (libc !== undefined) return libc
  const require = createRequire(import.meta.url)
  const koffi = require("koffi") as typeof import("koffi")
  let lib: ReturnType<typeof koffi.load>
  try {
    lib = koffi.load("libc.so.6")
  } catch {
    lib = koffi.load("libc.so")
  }
  const mkfifo = lib.func("int mkfifo(const char *path, uint32_t mode)") as (
    path: string,
    mode: number,
  ) => number
  // variadic in C: the int argument is passed with its type
  const fcntl = lib.func("int fcntl(int fd, int cmd, ...)") as (
    fd: number,
    cmd: number,
    type: "int",
    arg: number,
  ) => number
  libc = { mkfifo, fcntl: (fd, cmd, arg) => fcntl(fd, cmd, "int", arg), errno: () => koffi.errno() }
  return libc
}

const EEXIST = 17

/** Makes (or reuses, when a FIFO is already there) one FIFO with mode 0700, owned by uid/gid when given. */
const makeFifo = (path: string, uid: number | undefined, gid: number | undefined): void => {
  const c = loadLibc()
  let made = true
  if (c.mkfifo(path, 0o700) !== 0) {
    const errno = c.errno()
    if (errno !== EEXIST) throw errnoError("mkfifo", path, errno)
    if (!Fs.lstatSync(path).isFIFO())
      throw new System({ message: `mkfifo ${path}: exists and is not a FIFO` })
    made = false
  }
  let op = "chmod"
  try {
    // mkfifo's mode is filtered by the umask; 0700 is what containerd's cio uses.
    Fs.chmodSync(path, 0o700)
    op = "chown"
    if (uid !== undefined || gid !== undefined) Fs.lchownSync(path, uid ?? -1, gid ?? -1)
  } catch (cause) {
    if (made) removeFifosSync([path])
    throw fsError(op, path, cause)
  }
}

/** Makes every FIFO of a set, all or none: on a failure the ones already made are removed. */
export const makeFifos = (
  paths: ReadonlyArray<string>,
  uid: number | undefined,
  gid: number | undefined,
): Effect.Effect<void, System> =>
  Effect.suspend(() => {
    const made: Array<string> = []
    for (const path of paths) {
      try {
        makeFifo(path, uid, gid)
        made.push(path)
      } catch (cause) {
        removeFifosSync(made)
        return Effect.fail(cause instanceof System ? cause : fsError("mkfifo", path, cause))
      }
    }
    return Effect.void
  })

const removeFifosSync = (paths: ReadonlyArray<string>): void => {
  for (const path of paths) {
    try {
      Fs.unlinkSync(path)
    } catch {
      // already gone, or the bundle dir went first
    }
  }
}

/** Removes the FIFO files of a set; missing files are fine. */
export const removeFifos = (paths: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.sync(() => removeFifosSync(paths))

// ---------------------------------------------------------------------------
// a byte-bounded queue of whole chunks

/**
 * Single-consumer queue of chunks, bounded in bytes. `push` never copies nor
 * blocks and reports whether the producer should pause; `take` hands over every
 * queued chunk at once and calls `onSpace` so the producer can resume.
 */
export class ChunkQueue {
  private chunks: Array<Uint8Array> = []
  private bytes = 0
  private done = false
  private discarding = false
  private failure: ContainerdError | undefined
  private takers: Array<() => void> = []
  private spaceWaiters: Array<() => void> = []

  constructor(
    readonly capacity: number,
    private readonly onSpace: () => void = () => {},
  ) {}

  /** Whether the queue has ended (chunks may still be queued). */
  get ended(): boolean {
    return this.done
  }

  /** Whether the queued bytes reached the capacity (the producer should pause). */
  get full(): boolean {
    return this.bytes >= this.capacity
  }

  /** The error the queue ended with, if it failed. */
  get error(): ContainerdError | undefined {
    return this.failure
  }

  /** Puts chunks back in front of the queue, in order: what a reader took and did not get to use. */
  requeue(chunks: ReadonlyArray<Uint8Array>): void {
    if (chunks.length === 0) return
    this.chunks = [...chunks, ...this.chunks]
    for (const chunk of chunks) this.bytes += chunk.length
    this.wake()
  }

  /** Every queued chunk, at once and without waiting (possibly none). */
  takeAll(): Array<Uint8Array> {
    const out = this.chunks
    if (out.length === 0) return out
    this.chunks = []
    this.bytes = 0
    this.space()
    return out
  }

  /** Queues a chunk (dropped after the end, or while discarding); false when the producer should pause. */
  push(chunk: Uint8Array): boolean {
    if (this.done || this.discarding) return true
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.bytes += chunk.length
      this.wake()
    }
    return this.bytes < this.capacity
  }

  /** Ends the queue: the consumer gets what is queued, then the end (or the failure). */
  end(failure?: ContainerdError): void {
    if (this.done) return
    this.done = true
    this.failure = failure
    this.wake()
    this.space()
  }

  /** Drops every queued chunk and every later one: for a producer nobody reads. The end still comes. */
  discard(): void {
    this.discarding = true
    this.clear()
  }

  /** Drops every queued chunk, as a pipe whose last opener closed frees its buffer. */
  clear(): void {
    if (this.chunks.length === 0) return
    this.chunks = []
    this.bytes = 0
    this.space()
  }

  /** Every queued chunk, waiting for one; fails with `None` at the end. */
  readonly take: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<ContainerdError>> = Effect.suspend(
    () => {
      if (this.chunks.length > 0) {
        const out = this.chunks
        this.chunks = []
        this.bytes = 0
        this.space()
        return Effect.succeed(Chunk.unsafeFromArray(out))
      }
      if (this.done)
        return Effect.fail(this.failure === undefined ? Option.none() : Option.some(this.failure))
      return Effect.async<Chunk.Chunk<Uint8Array>, Option.Option<ContainerdError>>((resume) => {
        const wake = () => resume(this.take)
        this.takers.push(wake)
        return Effect.sync(() => {
          this.takers = this.takers.filter((w) => w !== wake)
        })
      })
    },
  )

  /** Waits until the queue is below capacity or ended. */
  readonly awaitSpace: Effect.Effect<void> = Effect.suspend(() =>
    this.bytes < this.capacity || this.done
      ? Effect.void
      : Effect.async<void>((resume) => {
          const wake = () => resume(this.awaitSpace)
          this.spaceWaiters.push(wake)
          return Effect.sync(() => {
            this.spaceWaiters = this.spaceWaiters.filter((w) => w !== wake)
          })
        }),
  )

  /** Queues a chunk, then waits for space: what a writer into a full pipe does. */
  offer(chunk: Uint8Array): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.push(chunk)
      return this.awaitSpace
    })
  }

  private wake(): void {
    const takers = this.takers
    if (takers.length === 0) return
    this.takers = []
    for (const wake of takers) wake()
  }

  private space(): void {
    this.onSpace()
    const waiters = this.spaceWaiters
    if (waiters.length === 0) return
    this.spaceWaiters = []
    for (const wake of waiters) wake()
  }
}

// ---------------------------------------------------------------------------
// the client's ends of one process's pipes

/** A one-shot notice with plain callbacks: fired once; a callback added afterwards runs at once. */
export class Notice {
  private callbacks: Array<() => void> | undefined = []

  /** Runs `f` when the notice fires, or now when it has. */
  on(f: () => void): void {
    if (this.callbacks === undefined) f()
    else this.callbacks.push(f)
  }

  /** Fires the notice; later calls do nothing. */
  fire(): void {
    const callbacks = this.callbacks
    if (callbacks === undefined) return
    this.callbacks = undefined
    for (const f of callbacks) f()
  }
}

/**
 * The client's read end of stdout or stderr. Its lifecycle is plain callbacks, so that a process's IO costs no
 * fiber of its own: `makeDirectIO` counts ends and completes one signal.
 */
export interface OutputEnd {
  /** Every queued chunk (for `Stream.repeatEffectChunkOption`). */
  readonly take: Effect.Effect<Chunk.Chunk<Uint8Array>, Option.Option<ContainerdError>>
  /** Fires when the last writer closed (EOF), or when the end was closed. */
  readonly ended: Notice
  /** Closes the end now (idempotent); chunks already queued stay readable, then the stream ends. `done` runs once its fd is released. */
  readonly destroy: (done: () => void) => void
  /** From now on drops what is read instead of queueing it: for a process whose output nobody consumes. */
  readonly discard: () => void
  /** Hands every read to `write`, reading on once its effect completed (`DirectIO.copyStdout`); one copy at a time. */
  readonly copy: <E, R>(write: Write<E, R>) => Effect.Effect<void, E | ContainerdError, R>
  /** Writes every read into `target` from the read callback itself (`DirectIO.pipeStdout`); one reader at a time. */
  readonly pipe: (target: WritableTarget) => Effect.Effect<void, ContainerdError>
}

/** Writes a pipe may have pending at once: reading waits while it has that many (the pipe's back-pressure). */
export const pipeDepth = 3

const pipeWriteError = (cause: unknown): System =>
  new System({
    message: `writing to the pipe's target failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause,
  })

/**
 * `OutputEnd.pipe` over `copy`, for an end whose chunks are owned (the in-memory layer): each chunk is written and
 * the next waits for its callback.
 */
export const pipeViaCopy =
  (copy: OutputEnd["copy"]) =>
  (target: WritableTarget): Effect.Effect<void, ContainerdError> =>
    copy((bytes) =>
      Effect.async<void, ContainerdError>((resume) => {
        try {
          target.write(bytes, (error) => resume(error ? Effect.fail(pipeWriteError(error)) : Effect.void))
        } catch (cause) {
          resume(Effect.fail(pipeWriteError(cause)))
        }
      }),
    )

/** Where a copy hands each read: the bytes are lent until the returned effect completes. */
export type Write<E, R> = (bytes: Uint8Array) => Effect.Effect<void, E, R>

/**
 * The copy loop shared by both layers. `first` are chunks the end had queued (owned) when the copy began; `next`
 * gives the read in hand, waiting for one (`undefined` at the end), and `written` tells the source that read was
 * written: it drops it and may read again. On failure or interruption, `leave` gets the rest of `first`; the source
 * still has its read in hand, and keeps both for the next reader.
 */
export const copyLoop = <E, R>(
  first: Array<Uint8Array>,
  next: Effect.Effect<Uint8Array | undefined, ContainerdError>,
  written: () => void,
  leave: (unwritten: Array<Uint8Array>) => void,
  write: Write<E, R>,
): Effect.Effect<void, E | ContainerdError, R> => {
  let queued = 0
  // The loop is uninterruptible but for the waits and the writes (`restore`): a write and the note that it is done
  // have no interruption between them, so nothing is kept twice or lost. One mask for the whole copy, and
  // continuations made once, keep the work per read small (it runs for every read of a busy output).
  const loop = Effect.uninterruptibleMask((restore) => {
    const waitRead = restore(next)
    const afterRead = (): Effect.Effect<void, E | ContainerdError, R> => {
      written()
      return reads
    }
    const onRead = (bytes: Uint8Array | undefined): Effect.Effect<void, E | ContainerdError, R> =>
      bytes === undefined ? Effect.void : Effect.flatMap(restore(write(bytes)), afterRead)
    const reads: Effect.Effect<void, E | ContainerdError, R> = Effect.flatMap(waitRead, onRead)
    const afterQueued = (): Effect.Effect<void, E | ContainerdError, R> => {
      queued += 1
      return fromQueue
    }
    const fromQueue: Effect.Effect<void, E | ContainerdError, R> = Effect.suspend(() =>
      queued < first.length ? Effect.flatMap(restore(write(first[queued]!)), afterQueued) : reads,
    )
    return fromQueue
  })
  return Effect.onExit(loop, (exit) =>
    Effect.sync(() => leave(Exit.isSuccess(exit) ? [] : first.slice(queued))),
  )
}

/** Closes an end and waits until its fd is released. */
export const closeEnd = (end: OutputEnd): Effect.Effect<void> =>
  Effect.async<void>((resume) => end.destroy(() => resume(Effect.void)))

/** The client's write end of stdin. */
export interface InputEnd {
  /** Writes one chunk; waits while the write buffer is over its bound. */
  readonly write: (chunk: Uint8Array) => Effect.Effect<void, ContainerdError>
  /** Flushes what is buffered, then closes. */
  readonly end: Effect.Effect<void>
  /** Closes now, dropping unflushed bytes. Idempotent. */
  readonly close: Effect.Effect<void>
}

/**
 * `net.Socket` takes an fd only when libuv sees a pipe in it, and the only pipes `open` can return are FIFOs (a
 * unix socket cannot be opened): its refusal is the FIFO check, with no `fstat` of our own.
 */
const notAFifo = (cause: unknown): unknown =>
  typeof cause === "object" && cause !== null && (cause as { code?: unknown }).code === "ERR_INVALID_FD_TYPE"
    ? new Error("not a FIFO", { cause })
    : cause

/** `net.Socket`'s constructor takes `onread` as `connect` does; @types/node declares it for `connect` only. */
interface SocketOptions extends Net.SocketConstructorOpts {
  readonly onread?: Net.OnReadOpts
}

/** Opens the FIFO at `path` with `flags` as a socket made with `options(fd)`; the fd is closed if that fails. */
const openSocket = (
  path: string,
  flags: number,
  options: (fd: number) => SocketOptions,
): Effect.Effect<Net.Socket, System> =>
  Effect.suspend(() => {
    let fd: number
    try {
      fd = Fs.openSync(path, flags)
    } catch (cause) {
      return Effect.fail(fsError("open", path, cause))
    }
    try {
      return Effect.succeed(new Net.Socket(options(fd)))
    } catch (cause) {
      Fs.closeSync(fd)
      return Effect.fail(fsError("open", path, notAFifo(cause)))
    }
  })

const closedSignal = (socket: Net.Socket): Signal => {
  const closed = new Signal()
  socket.once("close", () => closed.succeed(undefined))
  return closed
}

/** What a second reader of an output gets while a copy or a pipe reads it. */
const anotherReader = (name: string): InvalidParameter =>
  new InvalidParameter({ message: `${name}: another copy is reading it; one reader per output` })

/**
 * `OutputEnd.copy` over a queue of owned chunks (the in-memory layer): each chunk is written as it is taken, and
 * what a copy that stopped early took but did not write goes back to the front of the queue.
 */
export const queueCopy = (queue: ChunkQueue, name: string) => {
  let copying = false
  // chunks taken from the queue and not written yet; the first is the read in hand
  let taken: Array<Uint8Array> = []
  const next: Effect.Effect<Uint8Array | undefined, ContainerdError> = Effect.suspend(() =>
    taken.length > 0
      ? Effect.succeed(taken[0])
      : Effect.matchEffect(queue.take, {
          onFailure: (end) => (Option.isNone(end) ? Effect.succeed(undefined) : Effect.fail(end.value)),
          onSuccess: (chunks) => {
            taken = Chunk.toArray(chunks)
            return next
          },
        }),
  )
  const written = () => {
    taken.shift()
  }
  const leave = (unwritten: Array<Uint8Array>) => {
    copying = false
    queue.requeue([...unwritten, ...taken])
    taken = []
  }
  return <E, R>(write: Write<E, R>): Effect.Effect<void, E | ContainerdError, R> =>
    Effect.suspend(() => {
      if (copying) return Effect.fail(anotherReader(name))
      copying = true
      return copyLoop(queue.takeAll(), next, written, leave, write)
    })
}

/** Bytes one read asks for: what libuv asks for a stream by default. */
const readSize = 64 * 1024

/** Linux `fcntl` commands setting (it returns the capacity granted) and reading a pipe's capacity. */
const F_SETPIPE_SZ = 1031
const F_GETPIPE_SZ = 1032

/** The least pipe capacity reading may rest on: while it rests, the writer has this much room. */
const minRestCapacity = 512 * 1024

/** How an output's FIFO is read (the live layer's options). */
export interface ReadPacing {
  /** The pipe capacity asked for, in bytes (0: the kernel's default, 64 KiB). */
  readonly pipeSize: number
  /** How long reading rests after a small read that followed another closely; 0 never rests. */
  readonly restMillis: number
}

/** The capacity of the pipe behind `fd` in bytes (tests read it from their own end of a FIFO). */
export const pipeCapacity = (fd: number): number => loadLibc().fcntl(fd, F_GETPIPE_SZ, 0)

/** Grows the pipe behind `fd` to `size` bytes; the capacity granted, 0 when refused (a user's pipe limits). */
const growPipe = (fd: number, size: number): number => {
  if (size <= 0) return 0
  const granted = loadLibc().fcntl(fd, F_SETPIPE_SZ, size)
  return granted > 0 ? granted : 0
}

/** Reads a copy may have lent at once: the reader goes on into a third buffer while the writer has two. */
const lentMax = 2

/**
 * The reading side of one output FIFO. Reads go through `net.Socket`'s `onread` into buffers the reader owns.
 * Queueing (the `stdout` stream), a read of at least half the buffer is handed over as is and the next read gets
 * a new buffer; a smaller one is copied out and the buffer reused. Copying (`copy`), reads are lent to the writer
 * in order from at most three buffers that go round: reading goes on while the writer has one, and stops while it
 * has two. Discarding, every read lands in the same buffer and is dropped.
 */
class FifoReader {
  readonly queue: ChunkQueue
  readonly ended = new Notice()
  readonly closed = new Notice()
  private mode: "queue" | "copy" | "pipe" | "discard" = "queue"
  /** The buffer the next read lands in. */
  private buffer: Uint8Array | undefined
  /** Buffers a copy's writer is done with, for the next reads. */
  private readonly spare: Array<Uint8Array> = []
  /** Reads lent to the copy, oldest first, each with the buffer it lives in. */
  private lent: Array<{ readonly bytes: Uint8Array; readonly buffer: Uint8Array }> = []
  private paused = false
  private waiter: ((read: Exit.Exit<Uint8Array | undefined, ContainerdError>) => void) | undefined
  private copying = false
  /** The pipe's target, its writes not called back yet, and the resumption of the `pipe` effect. */
  private target: WritableTarget | undefined
  private pending = 0
  private pipeDone: ((exit: Exit.Exit<void, ContainerdError>) => void) | undefined
  /** How long reading rests after small reads in a row; 0 once resting is off (asked so, or no room for it). */
  private restMillis: number
  /** Whether the pipe was grown for resting already. */
  private grown = false
  /** The socket's fd, for growing its pipe. */
  fd = -1
  /** When the last read landed (`performance.now()`). */
  private lastRead = Number.NEGATIVE_INFINITY
  /** The timer ending a rest, while reading rests. */
  private resting: ReturnType<typeof setTimeout> | undefined
  socket!: Net.Socket

  constructor(
    private readonly path: string,
    capacity: number,
    private readonly pacing: ReadPacing,
  ) {
    this.queue = new ChunkQueue(capacity, () => this.resume())
    this.restMillis = pacing.restMillis
  }

  /** The buffer the next read lands in (`onread.buffer`). */
  readonly nextBuffer = (): Uint8Array => {
    if (this.buffer === undefined) this.buffer = this.spare.pop() ?? Buffer.allocUnsafe(readSize)
    return this.buffer
  }

  /** Keeps a buffer a copy or a pipe is done with, for the next reads. */
  private keep(buffer: Uint8Array): void {
    this.spare.push(buffer)
  }

  /**
   * One read of `nread` bytes into `buffer` (`onread.callback`); false stops reading until `resume`.
   *
   * A writer streaming output fills the pipe a few KiB at a time, and reading each piece as it comes costs a
   * wake-up and a callback per piece: most of the reader's CPU. So when a read is small (under half the buffer)
   * and came less than two rests after the one before, reading rests for `restMillis` while the pipe fills; then
   * it takes what gathered in full reads. The first time, the pipe is grown to `pacing.pipeSize`; when the kernel
   * grants less than `minRestCapacity`, reading never rests (the writer would stall meanwhile). A lone read is
   * taken at once: output that comes now and then is never held back, a stream at most one rest.
   */
  readonly onRead = (nread: number, buffer: Uint8Array): boolean => {
    const go = this.take(nread, buffer)
    if (this.restMillis === 0) return go
    const now = performance.now()
    const streaming = now - this.lastRead < 2 * this.restMillis
    this.lastRead = now
    if (!go || !streaming || nread * 2 >= buffer.length) return go
    // the pipe is grown the first time reading would rest: a process with little output never pays for it
    if (!this.grown) {
      this.grown = true
      if (growPipe(this.fd, this.pacing.pipeSize) < minRestCapacity) {
        this.restMillis = 0
        return go
      }
    }
    this.paused = true
    this.resting = setTimeout(this.endRest, this.restMillis)
    return false
  }

  private readonly endRest = (): void => {
    this.resting = undefined
    this.resume()
  }

  /** Stops a rest (the end is closing). */
  stopRest(): void {
    if (this.resting === undefined) return
    clearTimeout(this.resting)
    this.resting = undefined
  }

  private take(nread: number, buffer: Uint8Array): boolean {
    switch (this.mode) {
      case "discard":
        return true
      case "copy":
        this.lent.push({ bytes: buffer.subarray(0, nread), buffer })
        this.buffer = undefined
        this.wakeCopy()
        if (this.lent.length < lentMax) return true
        this.paused = true
        return false
      case "pipe":
        // the buffer is the target's until the write calls back
        this.buffer = undefined
        this.send(buffer.subarray(0, nread), buffer)
        if (this.pending < pipeDepth || this.mode !== "pipe") return true
        this.paused = true
        return false
      case "queue": {
        let chunk: Uint8Array
        if (nread * 2 >= buffer.length) {
          chunk = buffer.subarray(0, nread)
          this.buffer = undefined
        } else {
          chunk = Buffer.from(buffer.subarray(0, nread))
        }
        if (this.queue.push(chunk)) return true
        this.paused = true
        return false
      }
    }
  }

  /** Reads again after a pause, unless the queue is full, reading rests, or the socket is gone. */
  resume(): void {
    if (!this.paused || this.resting !== undefined || this.socket.destroyed || this.lent.length >= lentMax)
      return
    if (this.mode === "queue" && this.queue.full) return
    if (this.mode === "pipe" && this.pending >= pipeDepth) return
    this.paused = false
    this.socket.resume()
  }

  /** The end of the reads (EOF, close or a read error). */
  end(failure?: ContainerdError): void {
    this.queue.end(failure)
    this.ended.fire()
    this.wakeCopy()
    this.checkPipeEnd()
  }

  discard(): void {
    this.mode = "discard"
    this.queue.discard()
    this.resume()
  }

  private wakeCopy(): void {
    const waiter = this.waiter
    if (waiter === undefined) return
    const now = this.inHand()
    if (now === undefined) return
    this.waiter = undefined
    waiter(now)
  }

  /** The oldest lent read; `undefined` at the end. */
  private readonly next: Effect.Effect<Uint8Array | undefined, ContainerdError> = Effect.suspend(
    () => this.inHand() ?? this.waitRead,
  )

  /** What `next` gives now (the oldest lent read, or the end), or `undefined` while there is nothing yet. */
  private inHand(): Exit.Exit<Uint8Array | undefined, ContainerdError> | undefined {
    if (this.lent.length > 0) return Exit.succeed(this.lent[0]!.bytes)
    if (!this.queue.ended) return undefined
    const failure = this.queue.error
    return failure === undefined ? Exit.succeed(undefined) : Exit.fail(failure)
  }

  /**
   * Waits for a read or the end; `wakeCopy` resumes it with what is in hand then. No canceler: a resume after
   * the wait was interrupted is ignored, and the next wait replaces the waiter.
   */
  private readonly waitRead = Effect.async<Uint8Array | undefined, ContainerdError>((resume) => {
    this.waiter = resume
  })

  private readonly written = (): void => {
    const done = this.lent.shift()
    if (done !== undefined) this.keep(done.buffer)
    this.resume()
  }

  private readonly leave = (unwritten: Array<Uint8Array>): void => {
    this.copying = false
    this.waiter = undefined
    if (this.mode === "copy") this.mode = "queue"
    // lent reads live in the reader's buffers: what stays is a copy of each
    for (const { bytes, buffer } of this.lent) {
      unwritten.push(Buffer.from(bytes))
      this.keep(buffer)
    }
    this.lent = []
    if (this.mode === "queue") this.queue.requeue(unwritten)
    this.resume()
  }

  /** Hands `bytes` to the pipe's target; `buffer` (when the bytes live in one of ours) comes back with the callback. */
  private send(bytes: Uint8Array, buffer: Uint8Array | undefined): void {
    const target = this.target
    if (target === undefined) return
    this.pending += 1
    let calledBack = false
    const sent = (error?: unknown) => {
      if (calledBack) return
      calledBack = true
      this.pending -= 1
      if (buffer !== undefined) this.keep(buffer)
      if (error && this.target === target) this.finishPipe(Exit.fail(pipeWriteError(error)))
      else {
        this.resume()
        this.checkPipeEnd()
      }
    }
    try {
      target.write(bytes, sent)
    } catch (cause) {
      sent(cause ?? new Error("write threw"))
    }
  }

  /** Ends the pipe once the output ended and every write called back. */
  private checkPipeEnd(): void {
    if (this.pipeDone === undefined || !this.queue.ended || this.pending > 0) return
    const failure = this.queue.error
    this.finishPipe(failure === undefined ? Exit.void : Exit.fail(failure))
  }

  private finishPipe(exit: Exit.Exit<void, ContainerdError>): void {
    const done = this.pipeDone
    this.leavePipe()
    done?.(exit)
  }

  /** Stops piping: later reads queue for the next reader; writes handed over stay the target's. */
  private leavePipe(): void {
    this.pipeDone = undefined
    this.target = undefined
    this.copying = false
    if (this.mode === "pipe") this.mode = "queue"
    this.resume()
  }

  pipe(target: WritableTarget): Effect.Effect<void, ContainerdError> {
    return Effect.suspend(() => {
      if (this.copying) return Effect.fail(anotherReader(this.path))
      this.copying = true
      this.target = target
      return Effect.async<void, ContainerdError>((resume) => {
        this.pipeDone = resume
        // what was queued before the pipe began goes first
        for (const chunk of this.queue.takeAll()) this.send(chunk, undefined)
        if (this.mode === "queue" && this.target === target) this.mode = "pipe"
        this.resume()
        this.checkPipeEnd()
        return Effect.sync(() => {
          if (this.target === target) this.leavePipe()
        })
      })
    })
  }

  copy<E, R>(write: Write<E, R>): Effect.Effect<void, E | ContainerdError, R> {
    return Effect.suspend(() => {
      if (this.copying) return Effect.fail(anotherReader(this.path))
      this.copying = true
      if (this.mode === "queue") this.mode = "copy"
      // what was queued before the copy began goes first
      return copyLoop(this.queue.takeAll(), this.next, this.written, this.leave, write)
    })
  }
}

/**
 * Opens a read end `O_RDONLY|O_NONBLOCK` (returns at once, parks no thread) as a `net.Socket`: epoll reports
 * nothing until a writer has come, so there is no early EOF, and EOF once the last writer closes. Reading stops
 * while `capacity` bytes wait for the consumer (see `FifoReader` for where reads land).
 */
export const openReader = (
  path: string,
  capacity: number,
  pacing: ReadPacing = { pipeSize: 0, restMillis: 0 },
): Effect.Effect<OutputEnd, System> =>
  Effect.suspend(() => {
    const reader = new FifoReader(path, capacity, pacing)
    const options = (fd: number): SocketOptions => {
      reader.fd = fd
      return {
        fd,
        readable: true,
        writable: false,
        onread: { buffer: reader.nextBuffer, callback: reader.onRead },
      }
    }
    return Effect.map(
      openSocket(path, Fs.constants.O_RDONLY | Fs.constants.O_NONBLOCK, options),
      (socket) => {
        reader.socket = socket
        socket.once("end", () => reader.end())
        socket.on("error", (cause) => reader.end(fsError("read", path, cause)))
        socket.once("close", () => {
          reader.stopRest()
          reader.end()
          reader.closed.fire()
        })
        return {
          take: reader.queue.take,
          ended: reader.ended,
          destroy: (done) => {
            reader.closed.on(done)
            socket.destroy()
          },
          discard: () => reader.discard(),
          copy: (write) => reader.copy(write),
          pipe: (target) => reader.pipe(target),
        }
      },
    )
  })

/**
 * Opens stdin's write end `O_RDWR|O_NONBLOCK` (never blocks, works before the process exists) as a `net.Socket`.
 * `write` resolves once the socket took the chunk, or after `drain` when its buffer is over the bound.
 */
export const openWriter = (path: string): Effect.Effect<InputEnd, System> =>
  Effect.map(
    openSocket(path, Fs.constants.O_RDWR | Fs.constants.O_NONBLOCK, (fd) => ({
      fd,
      readable: false,
      writable: true,
    })),
    (socket) => {
      const closed = closedSignal(socket)
      let failure: System | undefined
      socket.on("error", (cause) => {
        failure ??= fsError("write", path, cause)
      })
      const closedError = () => failure ?? new System({ message: `write ${path}: stdin is closed` })
      const write = (chunk: Uint8Array): Effect.Effect<void, ContainerdError> =>
        Effect.async<void, ContainerdError>((resume) => {
          if (socket.destroyed || socket.writableEnded) return resume(Effect.fail(closedError()))
          if (chunk.length === 0 || socket.write(chunk)) return resume(Effect.void)
          const onDrain = () => {
            cleanup()
            resume(Effect.void)
          }
          const onClose = () => {
            cleanup()
            resume(Effect.fail(closedError()))
          }
          const cleanup = () => {
            socket.off("drain", onDrain)
            socket.off("close", onClose)
          }
          socket.on("drain", onDrain)
          socket.on("close", onClose)
          return Effect.sync(cleanup)
        })
      return {
        write,
        end: Effect.zipRight(
          Effect.sync(() => {
            if (!socket.destroyed) socket.end()
          }),
          closed.await,
        ),
        close: Effect.zipRight(
          Effect.sync(() => socket.destroy()),
          closed.await,
        ),
      }
    },
  )

// ---------------------------------------------------------------------------
// the DirectIO state machine, the same for every layer

/** Who owns a set's files: a created, not yet deleted process keeps them past the client's scope. */
export interface SetState {
  created: boolean
  deleted: boolean
}

/**
 * Whether the scope that made a set still has to remove its files when it closes: not while a created process
 * lives on (a later re-attach needs them), and not after `processDeleted`, which removed them already.
 */
export const removedOnClose = (state: SetState): boolean => !state.created && !state.deleted

/** What a layer hands `makeDirectIO`: the opened ends and how to remove the files. */
export interface DirectIOParts {
  readonly set: FifoSet
  readonly state: SetState
  readonly stdin: InputEnd | undefined
  readonly stdout: OutputEnd
  readonly stderr: OutputEnd | undefined
  readonly drainTimeout: Duration.Duration
  readonly remove: Effect.Effect<void>
  readonly onStdinClose: Effect.Effect<void, ContainerdError> | undefined
}

const outputStream = (end: OutputEnd): Stream.Stream<Uint8Array, ContainerdError> =>
  Stream.repeatEffectChunkOption(end.take)

/** The clock of Effect's default services: `makeDirectIO` times its drain cut with a plain timer on it. */
const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/** The longest delay `setTimeout` keeps (a longer one fires at once). */
const maxTimerMillis = 2 ** 31 - 1

const noop = (): void => {}

/**
 * Builds a `DirectIO` over opened ends; its scope's close closes every end.
 *
 * Stdin close: `closeStdin` sets `requested`, `processCreated` sets `created`; each checks both in one synchronous
 * step, so exactly one of them starts the hook, forked in the scope (an interrupted caller does not cancel it),
 * and its result lands in a signal. Drain: `markExited` drops stdin and, unless every output has reached EOF
 * already, starts the cut of the outputs at `drainTimeout` (a timer on the live clock, a fiber on any other), which
 * is stopped once they all end. The ends' EOF and close are counted by plain callbacks, so an IO costs no fiber of
 * its own on the live clock.
 */
export const makeDirectIO = (parts: DirectIOParts): Effect.Effect<DirectIO, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { set, state, stdin, stdout, stderr } = parts
    const scope = yield* Effect.scope
    const outputs = stderr === undefined ? [stdout] : [stdout, stderr]
    // signals, not Deferreds: a process makes four, and a Deferred costs about 3 µs and garbage to make
    const exited = new Signal()
    const hook = new Signal<Effect.Effect<void, ContainerdError>>()
    const stdinCloseDone = new Signal<void, ContainerdError>()
    if (parts.onStdinClose !== undefined) hook.succeed(parts.onStdinClose)
    let hasExited = false
    let closeRequested = false
    let hookStarted = false

    // every output ended (EOF, cut or closed): one signal, completed by counting
    const drained = new Signal()
    // stops the pending drain cut, if there is one
    let stopCut: (() => void) | undefined
    let open = outputs.length
    const onEnded = () => {
      open -= 1
      if (open > 0) return
      drained.succeed(undefined)
      stopCut?.()
      stopCut = undefined
    }
    for (const end of outputs) end.ended.on(onEnded)

    const closeOutputs = Effect.async<void>((resume) => {
      let pending = outputs.length
      const onClosed = () => {
        pending -= 1
        if (pending === 0) resume(Effect.void)
      }
      for (const end of outputs) end.destroy(onClosed)
    })
    const closeAll = Effect.zipRight(closeOutputs, stdin === undefined ? Effect.void : stdin.close)
    yield* Effect.addFinalizer(() => closeAll)

    const markExited = Effect.suspend(() => {
      if (hasExited) return Effect.void
      hasExited = true
      exited.succeed(undefined)
      const cut = open === 0 ? Effect.void : Effect.clockWith(startCut)
      return stdin === undefined ? cut : Effect.zipRight(stdin.close, cut)
    })

    // The drain cut. On Effect's live clock it is a plain timer: no fiber per exited process whose output is still
    // open. On any other clock (a TestClock) it is a fiber sleeping on that clock, so that the bound passes with it.
    const startCut = (clock: Clock.Clock): Effect.Effect<void> => {
      const millis = Duration.toMillis(parts.drainTimeout)
      if (clock === liveClock && millis <= maxTimerMillis) {
        const timer = setTimeout(() => {
          stopCut = undefined
          for (const end of outputs) end.destroy(noop)
        }, millis)
        timer.unref()
        stopCut = () => clearTimeout(timer)
        return Effect.void
      }
      return Effect.sleep(parts.drainTimeout).pipe(
        Effect.zipRight(closeOutputs),
        Effect.forkIn(scope),
        Effect.flatMap((fiber) =>
          Effect.sync(() => {
            if (open === 0) fiber.unsafeInterruptAsFork(FiberId.none)
            else stopCut = () => fiber.unsafeInterruptAsFork(FiberId.none)
          }),
        ),
      )
    }

    const claimHook = (): boolean => {
      if (!state.created || !closeRequested || hookStarted) return false
      hookStarted = true
      return true
    }
    const runHook = hook.await.pipe(
      Effect.flatten,
      Effect.onExit((exit) => Effect.sync(() => stdinCloseDone.complete(exit))),
      Effect.forkIn(scope),
      Effect.asVoid,
    )

    const closeStdin: Effect.Effect<void, ContainerdError> =
      stdin === undefined
        ? Effect.void
        : Effect.gen(function* () {
            yield* Effect.raceFirst(stdin.end, exited.await).pipe(Effect.ensuring(stdin.close))
            closeRequested = true
            const created = state.created
            if (claimHook()) yield* runHook
            if (created) yield* stdinCloseDone.await
          })

    const processCreated = Effect.suspend(() => {
      state.created = true
      return claimHook() ? runHook : Effect.void
    })

    const processDeleted = Effect.suspend(() => {
      state.deleted = true
      hasExited = true
      exited.succeed(undefined)
      return Effect.zipRight(closeAll, parts.remove)
    })

    const exitedError = (path: string) => new System({ message: `write ${path}: the process has exited` })
    const stdinApi: Stdin | undefined =
      stdin === undefined || set.stdin === undefined
        ? undefined
        : (() => {
            const path = set.stdin
            const write = (chunk: Uint8Array): Effect.Effect<void, ContainerdError> =>
              hasExited ? Effect.fail(exitedError(path)) : stdin.write(chunk)
            return { write, sink: Sink.forEach(write), close: closeStdin }
          })()

    const io: { -readonly [K in keyof DirectIO]: DirectIO[K] } = {
      set,
      stdout: outputStream(stdout),
      copyStdout: stdout.copy,
      pipeStdout: stdout.pipe,
      closeStdin,
      onStdinClose: (h) => Effect.sync(() => hook.succeed(h)),
      stdinClosed: stdinCloseDone.await,
      processCreated,
      markExited,
      awaitDrained: drained.await,
      processDeleted,
      discardOutput: Effect.sync(() => {
        for (const end of outputs) end.discard()
      }),
    }
    if (stdinApi !== undefined) io.stdin = stdinApi
    if (stderr !== undefined) {
      io.stderr = outputStream(stderr)
      io.copyStderr = stderr.copy
      io.pipeStderr = stderr.pipe
    }
    return io
  })

/** `Duration` of a layer option, with a default. */
export const durationOption = (
  input: Duration.DurationInput | undefined,
  fallback: Duration.DurationInput,
): Duration.Duration => Duration.decode(input ?? fallback)
