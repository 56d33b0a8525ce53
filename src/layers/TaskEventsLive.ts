/**
 * `TaskEvents` over containerd's `Events.Subscribe`.
 *
 * One subscribe call at a time, with the filter
 * `namespace==<ns>,topic~=|^/tasks/|` (plus `topic!="<topic>"` for each of
 * `ignoredTopics`). Envelopes are decoded with
 * `decodeEnvelope`: an unknown type is skipped with a debug log, a malformed
 * payload with a warning naming the topic; neither ends the stream. The call
 * runs through `Containerd.events.forEach` when the layer offers it (the live
 * one does: no Stream per envelope), else through `events.subscribe`.
 *
 * When the call fails or ends, it is first cancelled and finished (the
 * call's finalizer), the failure is logged once as a warning, and a new call
 * starts after the retry schedule's next delay (default: exponential from
 * 100 ms with jitter, each wait capped at 5 s, forever; never less than 10 ms
 * whatever schedule is given). The schedule restarts from its first delay
 * after a subscription that was live. Interruption ends the stream quietly.
 *
 * The `Subscribed` marker of a call is emitted when its first envelope
 * arrives, or once the call has been open for `settle` (default 200 ms) with
 * no failure — whichever comes first — and always before that call's events.
 *
 * Unlike the seed, a gRPC CANCELLED status is not taken as shutdown: this
 * client's own shutdown is interruption, so a CANCELLED it did not cause came
 * from the daemon's side and is retried like any other failure.
 *
 * @since 0.1.0
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { decodeEnvelope, type TaskEventsItem } from "../domain/TaskEvent.js"
import type { Envelope } from "../domain/Types.js"
import { type ContainerdError, InvalidParameter, System } from "../errors/ContainerdError.js"
import { Containerd, validateIdentifier } from "../services/Containerd.js"
import { filterFor, TaskEvents } from "../services/TaskEvents.js"

/** How the live layer subscribes and reconnects. */
export interface Options {
  /** The namespace whose task events to follow; the `Containerd` service's namespace by default. */
  readonly namespace?: string
  /** Delays between subscribe attempts, fed each failure; when it ends, the stream fails with the last failure. */
  readonly retry?: Schedule.Schedule<unknown, ContainerdError>
  /** How long a call must stay open without failing to count as live when no envelope came (default 200 ms). */
  readonly settle?: Duration.DurationInput
  /** Decoded items buffered ahead of a slow consumer before the call is back-pressured (default 1024). */
  readonly bufferSize?: number
  /**
   * Task topics (`/tasks/<name>`, e.g. `/tasks/delete`) the subscription leaves out: containerd does not send
   * them, so a consumer that ignores them pays nothing for them. None by default.
   */
  readonly ignoredTopics?: ReadonlyArray<string>
}

/** The longest wait between two subscribe attempts under the default schedule. */
export const maxRetryDelay: Duration.Duration = Duration.seconds(5)

/** The shortest wait between two subscribe attempts, whatever schedule is given. */
export const minRetryDelay: Duration.Duration = Duration.millis(10)

/** The default retry schedule: exponential from 100 ms, jittered, each wait at most 5 s, forever. */
export const defaultRetry: Schedule.Schedule<Duration.Duration> = Schedule.exponential("100 millis").pipe(
  Schedule.modifyDelay((_, delay) => Duration.min(delay, maxRetryDelay)),
  Schedule.jittered,
  Schedule.modifyDelay((_, delay) => Duration.min(delay, maxRetryDelay)),
)

/** The default settle time of a call that brought no envelope yet. */
export const defaultSettle: Duration.Duration = Duration.millis(200)

const ended = (): ContainerdError => new System({ message: "the event stream ended" })

const taskTopic = /^\/tasks\/[a-z][a-z-]*$/

const checkTopics = (
  topics: ReadonlyArray<string>,
): Effect.Effect<ReadonlyArray<string>, InvalidParameter> => {
  const bad = topics.find((topic) => !taskTopic.test(topic))
  return bad === undefined
    ? Effect.succeed(topics)
    : Effect.fail(
        new InvalidParameter({
          message: `ignoredTopics: ${JSON.stringify(bad)} is not a task topic (expected /tasks/<name>, e.g. /tasks/delete)`,
        }),
      )
}

/** What `once` and the loop hand each item to; it runs in the loop's fiber (or the settle timer's), one at a time. */
type Emit = (item: TaskEventsItem) => Effect.Effect<unknown>

/**
 * The subscribe loop, validated and ready to run: subscribes, resubscribes after failures, and hands every item to
 * `emit` in order. Fails with the last failure when the retry schedule ends.
 */
const prepare = (
  containerd: Containerd.Service,
  options: Options,
): Effect.Effect<(emit: Emit) => Effect.Effect<never, ContainerdError>, InvalidParameter> =>
  Effect.map(
    Effect.all([
      validateIdentifier("namespace", options.namespace ?? containerd.namespace),
      checkTopics(options.ignoredTopics ?? []),
    ]),
    ([namespace, ignoredTopics]) => {
      const filter = filterFor(namespace, ignoredTopics)
      const retry = Schedule.modifyDelay(options.retry ?? defaultRetry, (_, delay) =>
        Duration.max(delay, minRetryDelay),
      )
      const settle = Duration.decode(options.settle ?? defaultSettle)
      // the layer's own loop over the call when it has one, else the call's stream
      const events = containerd.events
      const subscribe = (onEnvelope: (envelope: Envelope) => Effect.Effect<unknown>) =>
        events.forEach === undefined
          ? Stream.runForEach(events.subscribe([filter]), onEnvelope)
          : events.forEach([filter], onEnvelope)

      return (emit: Emit) => {
        const handle = (envelope: Envelope): Effect.Effect<unknown> => {
          const decoded = decodeEnvelope(envelope)
          if (Either.isLeft(decoded)) {
            return Effect.logWarning(
              `skipping a malformed task event on ${envelope.topic}`,
              decoded.left.message,
            ).pipe(Effect.annotateLogs({ topic: envelope.topic, typeUrl: decoded.left.typeUrl }))
          }
          if (Option.isNone(decoded.right)) {
            return Effect.logDebug(
              `ignoring an event of type ${envelope.event?.typeUrl} on ${envelope.topic}`,
            ).pipe(Effect.annotateLogs({ topic: envelope.topic }))
          }
          return emit(decoded.right.value)
        }

        // One subscribe call, run to its end; its finalizer cancels the call before this returns.
        // The settle timer runs beside the call in a child fiber rather than merged into its stream: a merge
        // costs a queue hop and a fiber handoff per envelope, the timer only matters until the marker is out.
        const once = (attempt: number, onLive: () => void): Effect.Effect<void, ContainerdError> =>
          Effect.suspend(() => {
            let live = false
            // set once the marker is emitted: the call's events wait for it, wherever it came from
            let marked = false
            const announced = Deferred.unsafeMake<void>(FiberId.none)
            const announce = (confirmed: boolean): Effect.Effect<unknown> => {
              live = true
              onLive()
              return Effect.ensuring(
                emit({ _tag: "Subscribed", attempt, confirmed }),
                Effect.sync(() => {
                  marked = true
                  Deferred.unsafeDone(announced, Exit.void)
                }),
              )
            }
            const onEnvelope = (envelope: Envelope): Effect.Effect<unknown> =>
              marked
                ? handle(envelope)
                : live
                  ? Effect.zipRight(Deferred.await(announced), handle(envelope))
                  : Effect.zipRight(announce(true), handle(envelope))
            const settled = Effect.zipRight(
              Effect.sleep(settle),
              Effect.suspend(() => (live ? Effect.void : announce(false))),
            )
            const call = subscribe(onEnvelope)
            return Effect.gen(function* () {
              const timer = yield* Effect.fork(settled)
              // the call runs until it ends, or until the timer's emit dies (that defect ends the loop as one
              // on the call's side would)
              const exit = yield* Effect.raceFirst(
                Effect.exit(call),
                Effect.zipRight(Fiber.join(timer), Effect.never),
              )
              // the call ended: a marker on its way to `emit` gets there first, the timer goes
              yield* live && !marked ? Fiber.await(timer) : Fiber.interrupt(timer)
              return yield* exit
            })
          })

        return Effect.gen(function* () {
          const driver = yield* Schedule.driver(retry)
          for (let attempt = 1; ; attempt++) {
            let wasLive = false
            const result = yield* Effect.either(
              once(attempt, () => {
                wasLive = true
              }),
            )
            const failure = Either.isLeft(result) ? result.left : ended()
            if (wasLive) yield* driver.reset
            yield* Effect.logWarning("task event subscription failed", failure).pipe(
              Effect.annotateLogs({ attempt, filter }),
            )
            const more = yield* Effect.either(driver.next(failure))
            if (Either.isLeft(more)) return yield* Effect.fail(failure)
          }
        })
      }
    },
  )

/**
 * The live service over a `Containerd` service; fails when `options.namespace` is not a valid identifier or an
 * ignored topic is not a task topic.
 */
export const make = (
  containerd: Containerd.Service,
  options: Options = {},
): Effect.Effect<TaskEvents.Service, InvalidParameter> =>
  Effect.map(prepare(containerd, options), (run) => {
    const capacity = options.bufferSize ?? 1024
    const subscribe: Stream.Stream<TaskEventsItem, ContainerdError> = Stream.unwrapScoped(
      Effect.gen(function* () {
        const mailbox = yield* Mailbox.make<TaskEventsItem, ContainerdError>({ capacity })
        yield* Effect.forkScoped(
          Effect.onExit(
            run((item) => mailbox.offer(item)),
            (exit) => mailbox.done(Exit.asVoid(exit)),
          ),
        )
        return Mailbox.toStream(mailbox)
      }),
    )
    return { subscribe }
  })

/**
 * What `make`'s stream does, for a consumer that handles each item at once: the returned effect subscribes and
 * resubscribes as the stream does and runs `onItem` on each item in order, in its own fiber, with no mailbox and
 * no second stream between the call and the consumer (the call waits while `onItem` runs). It fails as the
 * stream does, when the retry schedule gives up; interruption cancels the call. `onItem` must neither fail nor
 * die: a defect ends the subscription like one of the call's own.
 *
 * ```ts
 * const follow = yield* TaskEventsLive.follow(containerd, { namespace: "jobs" })
 * yield* Effect.forkScoped(follow((item) => item._tag === "Subscribed" ? reconcile : dispatch(item.event)))
 * ```
 */
export const follow = (
  containerd: Containerd.Service,
  options: Options = {},
): Effect.Effect<
  (onItem: (item: TaskEventsItem) => Effect.Effect<void>) => Effect.Effect<never, ContainerdError>,
  InvalidParameter
> => prepare(containerd, options)

/** Provides `TaskEvents` over the `Containerd` service in context. */
export const layer = (options?: Options): Layer.Layer<TaskEvents, InvalidParameter, Containerd> =>
  Layer.effect(
    TaskEvents,
    Effect.flatMap(Containerd, (containerd) => make(containerd, options)),
  )
