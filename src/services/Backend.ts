/**
 * The consumer's side of the event stream: `processEvent` is called for each
 * task event of a tracked container, one container's events strictly in order
 * (the seed's `libcontainerdtypes.Backend`).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { EventInfo, EventType } from "../domain/Event.js"

/** The service's interface. */
export declare namespace Backend {
  /** What the client calls for every processed event. */
  export interface Service {
    /** Handles one event. A failure is logged with the container and event; the stream goes on. */
    readonly processEvent: (
      containerId: string,
      type: EventType,
      info: EventInfo,
    ) => Effect.Effect<void, unknown>
  }
}

/** The consumer's event handler. */
export class Backend extends Context.Tag("effect-containerd/Backend")<Backend, Backend.Service>() {}

/** A Backend from a function. */
export const make = (
  processEvent: (containerId: string, type: EventType, info: EventInfo) => Effect.Effect<void, unknown>,
): Backend.Service => ({ processEvent })

/** A Backend that ignores every event (for users who read `Libcontainerd.events` instead). */
export const layerNoop: Layer.Layer<Backend> = Layer.succeed(
  Backend,
  make(() => Effect.void),
)

/** One event a `Recorder` saw. */
export interface Recorded {
  readonly containerId: string
  readonly type: EventType
  readonly info: EventInfo
}

/** What a recording Backend saw, for tests. */
export declare namespace Recorder {
  /** The service's interface. */
  export interface Service {
    /** Every event recorded so far, oldest first. */
    readonly events: Effect.Effect<ReadonlyArray<Recorded>>
    /** Forgets what was recorded. */
    readonly clear: Effect.Effect<void>
    /**
     * Waits until the events recorded so far satisfy `done` (checked now, then at each new event) and returns
     * them: a test waits for an event without polling. Interrupting the wait removes it.
     */
    readonly waitFor: (
      done: (events: ReadonlyArray<Recorded>) => boolean,
    ) => Effect.Effect<ReadonlyArray<Recorded>>
  }
}

/** A Backend that records every event, for tests. */
export class Recorder extends Context.Tag("effect-containerd/Backend/Recorder")<
  Recorder,
  Recorder.Service
>() {}

/** Provides a recording `Backend` and the `Recorder` to read what it saw. */
export const layerRecorder: Layer.Layer<Backend | Recorder> = Layer.syncContext(() => {
  let recorded: Array<Recorded> = []
  const waiters = new Set<() => void>()
  const backend = make((containerId, type, info) =>
    Effect.sync(() => {
      recorded.push({ containerId, type, info })
      for (const check of [...waiters]) check()
    }),
  )
  const waitFor = (done: (events: ReadonlyArray<Recorded>) => boolean) =>
    Effect.async<ReadonlyArray<Recorded>>((resume) => {
      const check = () => {
        const snapshot = recorded.slice()
        if (!done(snapshot)) return
        waiters.delete(check)
        resume(Effect.succeed(snapshot))
      }
      waiters.add(check)
      check()
      return Effect.sync(() => waiters.delete(check))
    })
  return Context.make(Backend, backend).pipe(
    Context.add(
      Recorder,
      Recorder.of({
        events: Effect.sync(() => recorded.slice()),
        clear: Effect.sync(() => {
          recorded = []
        }),
        waitFor,
      }),
    ),
  )
})
