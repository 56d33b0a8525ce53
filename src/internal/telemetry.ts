/**
 * The library's metrics. Every `Libcontainerd` operation also runs in a span
 * `Libcontainerd.<operation>` with the container id, process id and
 * namespace as attributes; these metrics count and time the same operations.
 *
 * The span is made when a tracer is installed (`@effect/opentelemetry`,
 * `Effect.withTracer`, a `Layer.setTracer`) and tracing is enabled. Under
 * Effect's built-in tracer, whose spans reach no exporter, an operation makes
 * no span of its own: `Effect.currentSpan` inside it (in an `attachStdio`
 * callback, say) is the caller's. The metrics are recorded either way.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import { isContainerdError } from "../errors/ContainerdError.js"

const operationsKey = MetricKey.counter("effect_containerd_operations_total", {
  description: "Libcontainerd operations started",
  incremental: true,
})

const failuresKey = MetricKey.counter("effect_containerd_operation_failures_total", {
  description: "Libcontainerd operations that failed, by error tag",
  incremental: true,
})

const durationKey = MetricKey.histogram(
  "effect_containerd_operation_duration_ms",
  MetricBoundaries.exponential({ start: 0.5, factor: 2, count: 16 }),
  "Libcontainerd operation duration in milliseconds",
)

/** Operations started, tagged `operation`. */
export const operations = Metric.fromMetricKey(operationsKey)

/** Operations that failed, tagged `operation` and `error` (the error's tag). */
export const failures = Metric.fromMetricKey(failuresKey)

/** Operation duration in milliseconds, tagged `operation`. */
export const duration = Metric.fromMetricKey(durationKey)

/** Delay between containerd publishing a task event and the client dispatching it, in milliseconds. */
export const eventLag = Metric.histogram(
  "effect_containerd_event_lag_ms",
  MetricBoundaries.exponential({ start: 0.25, factor: 2, count: 16 }),
  "Delay from containerd publishing a task event to its dispatch, in milliseconds",
)

/** Resubscriptions of the task event stream after a failure. */
export const reconnects = Metric.counter("effect_containerd_event_reconnects_total", {
  description: "Task event stream resubscriptions after a failure",
  incremental: true,
})

interface Tagged {
  readonly operations: Metric.Metric.Counter<number>
  readonly duration: Metric.Metric.Histogram<number>
  readonly failures: Map<string, Metric.Metric.Counter<number>>
}

/** The metrics of each operation, tagged once. */
const taggedByOperation = new Map<string, Tagged>()

// Each tagged metric is made from its tagged key: its hook is looked up once, not on every update
// (`Metric.tagged` merges the tags and looks the key up in the registry at each update).
const withTags = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  tags: Record<string, string>,
) =>
  Metric.fromMetricKey(
    MetricKey.taggedWithLabels(
      key,
      Object.entries(tags).map(([name, value]) => MetricLabel.make(name, value)),
    ),
  )

const tagged = (operation: string): Tagged => {
  let found = taggedByOperation.get(operation)
  if (found === undefined) {
    found = {
      operations: withTags(operationsKey, { operation }),
      duration: withTags(durationKey, { operation }),
      failures: new Map(),
    }
    taggedByOperation.set(operation, found)
  }
  return found
}

const failureCounter = (metrics: Tagged, operation: string, tag: string) => {
  let counter = metrics.failures.get(tag)
  if (counter === undefined) {
    counter = withTags(failuresKey, { operation, error: tag })
    metrics.failures.set(tag, counter)
  }
  return counter
}

/** Records one run's end: a typed failure counts under its tag, then the run counts and its duration. */
const record = (
  metrics: Tagged,
  operation: string,
  exit: Exit.Exit<unknown, unknown>,
  labels: ReadonlyArray<MetricLabel.MetricLabel>,
  start: number,
): void => {
  if (Exit.isFailure(exit)) {
    const error = Cause.failureOption(exit.cause)
    if (Option.isSome(error)) {
      const tag = isContainerdError(error.value) ? error.value._tag : "other"
      failureCounter(metrics, operation, tag).unsafeUpdate(1, labels)
    }
  }
  metrics.operations.unsafeUpdate(1, labels)
  metrics.duration.unsafeUpdate(performance.now() - start, labels)
}

/**
 * Counts, times and tags one operation's run: a typed failure counts under its tag, then the run counts and its
 * duration is recorded, whatever the end (interruption included). The updates happen in one synchronous step at the
 * end, with the fiber's metric labels of that moment (what `Metric.update` would read).
 */
export const measured = (operation: string) => {
  const metrics = tagged(operation)
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) => measuring(metrics, operation, fiber, effect))
}

/** `effect`, counted and timed in `fiber` (see `measured`). */
const measuring = <A, E, R>(
  metrics: Tagged,
  operation: string,
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  effect: Effect.Effect<A, E, R>,
): Effect.Effect<A, E, R> => {
  const start = performance.now()
  return Effect.onExit(effect, (exit) =>
    Effect.sync(() =>
      record(metrics, operation, exit, fiber.getFiberRef(FiberRef.currentMetricLabels), start),
    ),
  )
}

/** Effect's built-in tracer: its spans are kept by nobody (no exporter sees them). */
const builtInTracer: Tracer.Tracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * `measured(operation)` inside a span: what `Effect.withSpan(measured(operation)(effect), spanName, { attributes,
 * kind: "client", captureStackTrace: false })` does — the span is made by the fiber's tracer (a child of the
 * caller's span), is the effect's parent span while it runs, and ends with the effect's exit after the metrics are
 * updated — with one exit handler and no `provideService` (whose set-and-restore of the context costs about twenty
 * Effect steps): the context is set and restored with `FiberRef.set` inside one uninterruptible region, the effect
 * itself running with the caller's interruptibility.
 *
 * The span is made only when someone can see it: when the fiber's tracer is one that was installed (an exporter
 * such as `@effect/opentelemetry`, `Effect.withTracer`) and tracing is enabled. Under Effect's built-in tracer,
 * which hands its spans to no one, the operation is only measured: making, parenting and ending a span is most
 * of what an operation's own bookkeeping costs (about 6 of 8 µs per operation, hot).
 */
export const traced = (operation: string, spanName: string, attributes: Record<string, unknown>) => {
  const metrics = tagged(operation)
  const options: Tracer.SpanOptions = { attributes, kind: "client", captureStackTrace: false }
  const makeSpan = Effect.makeSpan(spanName, options)
  const spanned = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(makeSpan, (span) =>
        Effect.withFiberRuntime<A, E, R>((fiber) => {
          const timing = fiber.getFiberRef(FiberRef.currentTracerTimingEnabled)
          const start = performance.now()
          const context = fiber.getFiberRef(FiberRef.currentContext)
          const restoreContext = FiberRef.set(FiberRef.currentContext, context)
          const end = (exit: Exit.Exit<unknown, unknown>): void => {
            record(metrics, operation, exit, fiber.getFiberRef(FiberRef.currentMetricLabels), start)
            if (span.status._tag === "Ended") return
            const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
            span.end(timing ? clock.unsafeCurrentTimeNanos() : 0n, exit)
          }
          return Effect.zipRight(
            FiberRef.set(FiberRef.currentContext, Context.add(context, Tracer.ParentSpan, span)),
            Effect.matchCauseEffect(restore(effect), {
              onFailure: (cause) => {
                end(Exit.failCause(cause))
                return Effect.zipRight(restoreContext, Effect.failCause(cause))
              },
              onSuccess: (a) => {
                end(Exit.succeed(a))
                return Effect.as(restoreContext, a)
              },
            }),
          )
        }),
      ),
    )
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime<A, E, R>((fiber) =>
      fiber.currentTracer === builtInTracer || !fiber.getFiberRef(FiberRef.currentTracerEnabled)
        ? measuring(metrics, operation, fiber, effect)
        : spanned(effect),
    )
}
