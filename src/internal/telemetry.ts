/**
 * The library's metrics. Every `Libcontainerd` operation also runs in a span
 * `Libcontainerd.<operation>` with the container id, process id and
 * namespace as attributes; these metrics count and time the same operations.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
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

/**
 * Counts, times and tags one operation's run: a typed failure counts under its tag, then the run counts and its
 * duration is recorded, whatever the end (interruption included). The updates happen in one synchronous step at the
 * end, with the fiber's metric labels of that moment (what `Metric.update` would read).
 */
export const measured = (operation: string) => {
  const metrics = tagged(operation)
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.withFiberRuntime((fiber) => {
      const start = performance.now()
      return Effect.onExit(effect, (exit) =>
        Effect.sync(() => {
          const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
          if (Exit.isFailure(exit)) {
            const error = Cause.failureOption(exit.cause)
            if (Option.isSome(error)) {
              const tag = isContainerdError(error.value) ? error.value._tag : "other"
              failureCounter(metrics, operation, tag).unsafeUpdate(1, labels)
            }
          }
          metrics.operations.unsafeUpdate(1, labels)
          metrics.duration.unsafeUpdate(performance.now() - start, labels)
        }),
      )
    })
}
