/**
 * `ProcessIO` over real FIFOs.
 *
 * FIFOs are made with libc `mkfifo` through koffi (no process per FIFO), then
 * chmod 0700 and lchown'd to the requested owner. Every open is non-blocking
 * and wrapped in a `net.Socket`, so no FIFO ever parks the event loop or a
 * libuv threadpool thread: read ends `O_RDONLY|O_NONBLOCK` (no early EOF: the
 * kernel reports nothing until a writer has come and gone), stdin
 * `O_RDWR|O_NONBLOCK` (valid before the process exists). Output streams pause
 * their socket while `highWaterMark` bytes wait for the consumer, so a slow
 * consumer slows the process instead of filling memory.
 *
 * Output is read in bursts. A process streaming output fills its FIFO a few
 * KiB at a time, and reading every piece as it lands costs a wake-up and a
 * callback each: most of the reader's CPU. So when small reads come close
 * together, reading rests for `readRest` (1 ms by default) while the pipe
 * fills, then takes what gathered in full reads. The first time, the FIFO's
 * pipe is grown to `pipeSize` (1 MiB by default) so that the writer has room
 * meanwhile; when the kernel grants less than 512 KiB (an unprivileged user's
 * pipe limits), reading never rests. Output that comes now and then is read
 * at once; a stream is held back at most one rest.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import {
  closeEnd,
  type DirectIOParts,
  durationOption,
  makeDirectIO,
  makeFifos,
  openReader,
  openWriter,
  type ReadPacing,
  removeFifos,
  removedOnClose,
  type SetState,
} from "../internal/fifo.js"
import { type FifoSet, fromPaths, layout, type OpenOptions, ProcessIO, paths } from "../services/ProcessIO.js"

/** Options of the live layer. */
export interface Options {
  /** How long outputs may take to reach EOF after `markExited` before they are closed (default 2 s). */
  readonly drainTimeout?: Duration.DurationInput
  /** Bytes an output buffers for a consumer that does not pull before its FIFO is no longer read (default 256 KiB). */
  readonly highWaterMark?: number
  /** Capacity asked for an output FIFO's pipe once its output streams, in bytes, rounded up by the kernel to a power of two pages (default 1 MiB; under 512 KiB reading never rests). */
  readonly pipeSize?: number
  /** How long reading an output rests while it streams in small pieces (default 1 ms, at most 1 s; 0 reads every piece at once). */
  readonly readRest?: Duration.DurationInput
}

/** The default drain bound after a process exits. */
export const defaultDrainTimeout: Duration.Duration = Duration.seconds(2)

/** The default per-output buffer bound. */
export const defaultHighWaterMark = 256 * 1024

/** The default capacity asked for an output FIFO's pipe. */
export const defaultPipeSize = 1024 * 1024

/** The longest rest `readRest` may ask for (a longer one is cut to this). */
const maxReadRestMillis = 1000

/** The default rest of a streaming output's reader. */
export const defaultReadRest: Duration.Duration = Duration.millis(1)

/** Builds the live service. */
export const make = (options: Options = {}): ProcessIO.Service => {
  const drainTimeout = durationOption(options.drainTimeout, defaultDrainTimeout)
  const highWaterMark = Math.max(1, options.highWaterMark ?? defaultHighWaterMark)
  const pacing: ReadPacing = {
    pipeSize: Math.max(0, options.pipeSize ?? defaultPipeSize),
    restMillis: Math.min(
      maxReadRestMillis,
      Duration.toMillis(durationOption(options.readRest, defaultReadRest)),
    ),
  }
  const states = new WeakMap<FifoSet, SetState>()

  /**
   * Opens a set's ends in one uninterruptible step (each open returns at once) and hands them to the DirectIO,
   * whose finalizer in the current scope closes them all; an open that fails closes the ends opened before it.
   */
  const openSet = (set: FifoSet, state: SetState, openOptions: OpenOptions | undefined) =>
    Effect.uninterruptible(
      Effect.gen(function* () {
        const stdout = yield* openReader(set.stdout, highWaterMark, pacing)
        const stderr =
          set.stderr === undefined
            ? undefined
            : yield* Effect.catchAll(openReader(set.stderr, highWaterMark, pacing), (e) =>
                Effect.zipRight(closeEnd(stdout), Effect.fail(e)),
              )
        const stdin =
          set.stdin === undefined
            ? undefined
            : yield* Effect.catchAll(openWriter(set.stdin), (e) =>
                Effect.zipRight(
                  Effect.zipRight(closeEnd(stdout), stderr === undefined ? Effect.void : closeEnd(stderr)),
                  Effect.fail(e),
                ),
              )
        const parts: DirectIOParts = {
          set,
          state,
          stdin,
          stdout,
          stderr,
          drainTimeout,
          remove: removeFifos(paths(set)),
          onStdinClose: openOptions?.onStdinClose,
        }
        return yield* makeDirectIO(parts)
      }),
    )

  return ProcessIO.of({
    create: (options) =>
      Effect.flatMap(layout(options), (set) =>
        Effect.flatMap(Effect.scope, (scope) => {
          const files = paths(set)
          const state: SetState = { created: false, deleted: false }
          // made and registered in one step: the scope removes the files, unless a created process owns them
          return Effect.uninterruptible(
            Effect.zipRight(
              makeFifos(files, options.uid, options.gid),
              Effect.suspend(() => {
                states.set(set, state)
                return Effect.as(
                  Scope.addFinalizer(
                    scope,
                    Effect.suspend(() => (removedOnClose(state) ? removeFifos(files) : Effect.void)),
                  ),
                  set,
                )
              }),
            ),
          )
        }),
      ),
    open: (set, openOptions) =>
      openSet(set, states.get(set) ?? { created: false, deleted: false }, openOptions),
    reattach: (reported, openOptions) =>
      Effect.flatMap(fromPaths(reported), (set) =>
        openSet(set, { created: true, deleted: false }, openOptions),
      ),
  })
}

/** The live layer: real FIFOs. */
export const layer = (options?: Options): Layer.Layer<ProcessIO> => Layer.sync(ProcessIO, () => make(options))
