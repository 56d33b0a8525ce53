/**
 * `TaskEvents` fed by hand, for tests and for the in-memory containerd.
 *
 * `TaskEventsMemory.publish` delivers an event to every live subscription;
 * `disconnect` ends them all as a failed connection would. Each subscription
 * emits `Subscribed` once it is registered, so, as with the live layer, every
 * event published after the marker reaches that subscriber. Events published
 * while disconnected are dropped: containerd keeps no backlog either.
 *
 * ```ts
 * Effect.gen(function* () {
 *   const memory = yield* TaskEventsMemory
 *   // the exit is lost; the consumer must find it when it reconciles after the new Subscribed
 *   yield* memory.disconnect(memory.publish(exit))
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import { type TaskEvent, type TaskEventEnvelope, type TaskEventsItem, topicOf } from "../domain/TaskEvent.js"
import type { Timestamp } from "../domain/Types.js"
import { TaskEvents } from "../services/TaskEvents.js"

/** The handle's interface. */
export declare namespace TaskEventsMemory {
  /** What a test does to the in-memory event stream. */
  export interface Handle {
    /** Envelopes an event (its topic, the layer's namespace, the clock's time unless given) and publishes it. */
    readonly publish: (
      event: TaskEvent,
      envelope?: { readonly topic?: string; readonly namespace?: string; readonly timestamp?: Timestamp },
    ) => Effect.Effect<void>
    /** Publishes an envelope as it is. */
    readonly publishEnvelope: (envelope: TaskEventEnvelope) => Effect.Effect<void>
    /**
     * Ends every live subscription as a failed connection does, runs `during`
     * while disconnected (what it publishes is lost), then lets the
     * subscriptions subscribe again, each with a new `Subscribed` marker.
     */
    readonly disconnect: <A = void, E = never, R = never>(
      during?: Effect.Effect<A, E, R>,
    ) => Effect.Effect<A | undefined, E, R>
    /** How many subscriptions are registered now. */
    readonly subscribers: Effect.Effect<number>
  }
}

/** The in-memory event stream's handle, provided beside `TaskEvents` by `layer`. */
export class TaskEventsMemory extends Context.Tag("effect-containerd/TaskEventsMemory")<
  TaskEventsMemory,
  TaskEventsMemory.Handle
>() {}

/** How the in-memory layer envelopes events. */
export interface Options {
  /** The namespace `publish` puts on envelopes (default `"default"`). */
  readonly namespace?: string
}

const disconnected: unique symbol = Symbol("effect-containerd/TaskEventsMemory/disconnected")

type Message = TaskEventEnvelope | typeof disconnected

const now: Effect.Effect<Timestamp> = Effect.map(Clock.currentTimeNanos, (nanos) => ({
  seconds: nanos / 1_000_000_000n,
  nanos: Number(nanos % 1_000_000_000n),
}))

/** The service and its handle, sharing one in-memory hub. */
export const make = (
  options: Options = {},
): Effect.Effect<{ readonly service: TaskEvents.Service; readonly handle: TaskEventsMemory.Handle }> =>
  Effect.map(PubSub.unbounded<Message>(), (hub) => {
    const namespace = options.namespace ?? "default"
    let connected = true
    let reconnected = Deferred.unsafeMake<void>(FiberId.none)
    let registered = 0

    const whenConnected = Effect.suspend(() => (connected ? Effect.void : Deferred.await(reconnected)))

    const publishEnvelope = (envelope: TaskEventEnvelope): Effect.Effect<void> =>
      Effect.suspend(() => (connected ? Effect.asVoid(PubSub.publish(hub, envelope)) : Effect.void))

    const publish: TaskEventsMemory.Handle["publish"] = (event, envelope = {}) =>
      Effect.flatMap(
        envelope.timestamp === undefined ? now : Effect.succeed(envelope.timestamp),
        (timestamp) =>
          publishEnvelope({
            _tag: "TaskEventEnvelope",
            topic: envelope.topic ?? topicOf(event),
            namespace: envelope.namespace ?? namespace,
            timestamp,
            event,
          }),
      )

    const disconnect = <A = void, E = never, R = never>(
      during?: Effect.Effect<A, E, R>,
    ): Effect.Effect<A | undefined, E, R> =>
      Effect.acquireUseRelease(
        Effect.suspend(() => {
          connected = false
          reconnected = Deferred.unsafeMake<void>(FiberId.none)
          return PubSub.publish(hub, disconnected)
        }),
        (): Effect.Effect<A | undefined, E, R> => during ?? Effect.succeed(undefined),
        () =>
          Effect.suspend(() => {
            connected = true
            return Deferred.succeed(reconnected, undefined)
          }),
      )

    const subscription = (attempt: number): Stream.Stream<TaskEventsItem> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          yield* whenConnected
          const messages = yield* PubSub.subscribe(hub)
          yield* Effect.acquireRelease(
            Effect.sync(() => registered++),
            () => Effect.sync(() => registered--),
          )
          const events: Stream.Stream<TaskEventsItem> = Stream.fromQueue(messages).pipe(
            Stream.takeWhile((m): m is TaskEventEnvelope => m !== disconnected),
          )
          return Stream.concat(
            Stream.succeed({ _tag: "Subscribed", attempt, confirmed: true } as const),
            events,
          )
        }),
      )

    const service: TaskEvents.Service = {
      subscribe: Stream.flatMap(
        Stream.iterate(1, (n) => n + 1),
        subscription,
      ),
    }
    const handle: TaskEventsMemory.Handle = {
      publish,
      publishEnvelope,
      disconnect,
      subscribers: Effect.sync(() => registered),
    }
    return { service, handle }
  })

/** Provides an in-memory `TaskEvents` and the `TaskEventsMemory` handle that feeds it. */
export const layer = (options?: Options): Layer.Layer<TaskEvents | TaskEventsMemory> =>
  Layer.effectContext(
    Effect.map(make(options), ({ handle, service }) =>
      Context.make(TaskEvents, service).pipe(Context.add(TaskEventsMemory, handle)),
    ),
  )
