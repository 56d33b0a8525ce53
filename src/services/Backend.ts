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
import * as Ref from "effect/Ref"
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

/** A Backend that records every event, for tests. */
export class Recorder extends Context.Tag("effect-containerd/Backend/Recorder")<
  Recorder,
  { readonly events: Effect.Effect<ReadonlyArray<Recorded>>; readonly clear: Effect.Effect<void> }
>() {}

/** Provides a recording `Backend` and the `Recorder` to read what it saw. */
export const layerRecorder: Layer.Layer<Backend | Recorder> = Layer.effectContext(
  Effect.map(Ref.make<ReadonlyArray<Recorded>>([]), (ref) =>
    Context.make(
      Backend,
      make((containerId, type, info) => Ref.update(ref, (all) => [...all, { containerId, type, info }])),
    ).pipe(Context.add(Recorder, { events: Ref.get(ref), clear: Ref.set(ref, []) })),
  ),
)
