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
}

/** The default drain bound after a process exits. */
export const defaultDrainTimeout: Duration.Duration = Duration.seconds(2)

/** The default per-output buffer bound. */
export const defaultHighWaterMark = 256 * 1024

/** Builds the live service. */
export const make = (options: Options = {}): ProcessIO.Service => {
  const drainTimeout = durationOption(options.drainTimeout, defaultDrainTimeout)
  const highWaterMark = Math.max(1, options.highWaterMark ?? defaultHighWaterMark)
  const states = new WeakMap<FifoSet, SetState>()

  /**
   * Opens a set's ends in one uninterruptible step (each open returns at once) and hands them to the DirectIO,
   * whose finalizer in the current scope closes them all; an open that fails closes the ends opened before it.
   */
  const openSet = (set: FifoSet, state: SetState, openOptions: OpenOptions | undefined) =>
    Effect.uninterruptible(
      Effect.gen(function* () {
        const stdout = yield* openReader(set.stdout, highWaterMark)
        const stderr =
          set.stderr === undefined
            ? undefined
            : yield* Effect.catchAll(openReader(set.stderr, highWaterMark), (e) =>
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
