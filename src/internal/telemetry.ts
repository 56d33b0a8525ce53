/**
 * The library's metrics. Every `Libcontainerd` operation also runs in a span
 * `Libcontainerd.<operation>` with the container id, process id and
 * namespace as attributes; these metrics count and time the same operations.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import { isContainerdError } from "../errors/ContainerdError.js"

/** Operations started, tagged `operation`. */
export const operations = Metric.counter("effect_containerd_operations_total", {
  description: "Libcontainerd operations started",
  incremental: true,
})

/** Operations that failed, tagged `operation` and `error` (the error's tag). */
export const failures = Metric.counter("effect_containerd_operation_failures_total", {
  description: "Libcontainerd operations that failed, by error tag",
  incremental: true,
})

/** Operation duration in milliseconds, tagged `operation`. */
export const duration = Metric.histogram(
  "effect_containerd_operation_duration_ms",
  MetricBoundaries.exponential({ start: 0.5, factor: 2, count: 16 }),
  "Libcontainerd operation duration in milliseconds",
)

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

/** Counts, times and tags one operation's run. */
export const measured =
  (operation: string) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      const start = performance.now()
      return effect.pipe(
        Effect.tapError((error) =>
          Metric.increment(
            Metric.tagged(
              Metric.tagged(failures, "operation", operation),
              "error",
              isContainerdError(error) ? error._tag : "other",
            ),
          ),
        ),
        Effect.ensuring(
          Effect.zipRight(
            Metric.increment(Metric.tagged(operations, "operation", operation)),
            Metric.update(Metric.tagged(duration, "operation", operation), performance.now() - start),
          ),
        ),
      )
    })
